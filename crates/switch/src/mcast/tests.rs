#![allow(clippy::cast_possible_truncation)]
//! Scenario tests of the snooper with real packets and an injected clock.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::build::*;
use super::wire::{self, Message, Version, IGMP_MRD_ADV, IGMP_MRD_TERM, PROTO_PIM};
use super::*;
use crate::{Millis, PortId, PortSet, Vid};

fn a4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn a6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
fn g4(s: &str) -> GroupAddr {
    GroupAddr::V4(a4(s))
}
fn g6(s: &str) -> GroupAddr {
    GroupAddr::V6(a6(s))
}
fn p(n: u16) -> PortId {
    PortId(n)
}
fn set(ports: &[u16]) -> PortSet {
    ports.iter().map(|n| PortId(*n)).collect()
}
fn ms(t: u64) -> Millis {
    Millis(t)
}
const S: u64 = 1000;
/// Group membership interval with the defaults: 2 × 125 s + 10 s.
const GMI: u64 = 260 * S;
/// Other querier present interval with the defaults: 2 × 125 s + 5 s.
const OQPI: u64 = 255 * S;

fn host4(n: u16) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, n as u8)
}
fn host6(n: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, n)
}

/// Sends a control packet and expects it to be accepted.
fn ctl(s: &Snooper, port: u16, vid: Vid, ip: &[u8], t: u64) -> SnoopAction {
    s.on_control(p(port), vid, ip, ms(t)).expect("accepted")
}

fn join4(s: &Snooper, port: u16, g: &str, t: u64) -> SnoopAction {
    ctl(s, port, 1, &igmp_v2_report(host4(port), a4(g)), t)
}
fn leave4(s: &Snooper, port: u16, g: &str, t: u64) -> SnoopAction {
    ctl(s, port, 1, &igmp_leave(host4(port), a4(g)), t)
}

fn members(s: &Snooper, g: GroupAddr, vid: Vid, t: u64) -> Option<PortSet> {
    match s.egress_ports(g, vid, ms(t)) {
        McastEgress::Registered(ports) => Some(ports),
        _ => None,
    }
}

fn general_query4(src: &str, kind: QueryKind, qrv: u8, qqi_s: u64, max_resp_ms: u64) -> Vec<u8> {
    let q = QueryParams {
        kind,
        group: None,
        max_resp_ms,
        robustness: qrv,
        query_interval_s: qqi_s,
        suppress: false,
    };
    ipv4_igmp(a4(src), ALL_SYSTEMS, &igmp_query(&q))
}

fn querier_cfg(ip: &str) -> SnoopConfig {
    let mut c = SnoopConfig::default();
    c.querier.enabled = true;
    c.querier.ip4 = a4(ip);
    c
}

/// The parsed IP part of a query frame we emitted.
fn query_of(q: &QueryToSend) -> wire::Query {
    let ip = &q.frame[14..];
    match wire::parse(ip).unwrap().unwrap().msg {
        Message::Query(q) => q,
        m => panic!("not a query: {m:?}"),
    }
}

#[test]
fn join_refresh_timeout() {
    let s = Snooper::new(SnoopConfig::default());
    let g = g4("239.1.1.1");
    assert_eq!(
        s.egress_ports(g, 1, ms(0)),
        McastEgress::Unregistered {
            policy: UnregisteredPolicy::Flood,
            routers: PortSet::EMPTY
        }
    );
    let a = join4(&s, 1, "239.1.1.1", 0);
    // No router port: the report goes nowhere.
    assert_eq!(a.forward, ControlForward::Routers(PortSet::EMPTY));
    assert_eq!(members(&s, g, 1, 0), Some(set(&[1])));
    // Other VLAN, other group: not registered.
    assert_eq!(members(&s, g, 2, 0), None);
    assert_eq!(members(&s, g4("239.1.1.2"), 1, 0), None);
    // Exact expiry at the membership interval, even before tick runs.
    assert_eq!(members(&s, g, 1, GMI - 1), Some(set(&[1])));
    assert_eq!(members(&s, g, 1, GMI), None);
    // A refresh at 100 s extends it.
    join4(&s, 1, "239.1.1.1", 100 * S);
    assert_eq!(members(&s, g, 1, GMI), Some(set(&[1])));
    assert_eq!(s.entries(ms(GMI)).len(), 1);
    s.tick(ms(100 * S + GMI));
    assert!(s.entries(ms(100 * S + GMI)).is_empty());
    assert_eq!(s.stats().groups_expired, 1);
    assert_eq!(s.stats().reports, 2);
}

#[test]
fn link_local_always_floods() {
    let s = Snooper::new(SnoopConfig::default());
    // A report for a link-local group is forwarded but never learnt.
    join4(&s, 1, "224.0.0.251", 0);
    assert!(s.entries(ms(0)).is_empty());
    assert_eq!(
        s.egress_ports(g4("224.0.0.251"), 1, ms(0)),
        McastEgress::LinkLocal
    );
    assert_eq!(
        s.egress_ports(g6("ff02::fb"), 1, ms(0)),
        McastEgress::LinkLocal
    );
    ctl(&s, 1, 1, &mld_v1_report(host6(1), a6("ff02::1:ff00:1")), 0);
    assert!(s.entries(ms(0)).is_empty());
}

#[test]
fn leave_lowers_timer_without_querier() {
    let s = Snooper::new(SnoopConfig::default());
    let g = g4("239.1.1.1");
    join4(&s, 1, "239.1.1.1", 0);
    join4(&s, 2, "239.1.1.1", 0);
    let a = leave4(&s, 1, "239.1.1.1", 10 * S);
    // Not our querier: no query of our own, the router asks.
    assert!(a.queries.is_empty());
    // Last member query time = 2 × 1 s.
    assert_eq!(members(&s, g, 1, 12 * S - 1), Some(set(&[1, 2])));
    assert_eq!(members(&s, g, 1, 12 * S), Some(set(&[2])));
    // A port that answers the router's group-specific query stays.
    join4(&s, 1, "239.1.1.1", 20 * S);
    leave4(&s, 1, "239.1.1.1", 30 * S);
    join4(&s, 1, "239.1.1.1", 31 * S);
    assert_eq!(members(&s, g, 1, 40 * S), Some(set(&[1, 2])));
    // A leave from a non-member changes nothing.
    leave4(&s, 3, "239.1.1.1", 40 * S);
    assert_eq!(s.stats().leaves, 3);
}

#[test]
fn fast_leave_is_immediate() {
    let s = Snooper::new(SnoopConfig::default());
    s.set_fast_leave(p(1), true);
    let g = g4("239.1.1.1");
    join4(&s, 1, "239.1.1.1", 0);
    join4(&s, 2, "239.1.1.1", 0);
    leave4(&s, 1, "239.1.1.1", 5 * S);
    assert_eq!(members(&s, g, 1, 5 * S), Some(set(&[2])));
    assert_eq!(s.stats().fast_leaves, 1);
    s.set_fast_leave(p(2), true);
    leave4(&s, 2, "239.1.1.1", 5 * S);
    assert_eq!(members(&s, g, 1, 5 * S), None);
    assert!(s.entries(ms(5 * S)).is_empty());
}

#[test]
fn leave_with_our_querier_sends_group_specific_queries() {
    let s = Snooper::new(querier_cfg("198.18.0.254"));
    let g = g4("239.1.1.1");
    join4(&s, 1, "239.1.1.1", 0);
    let a = leave4(&s, 1, "239.1.1.1", 10 * S);
    assert_eq!(a.queries.len(), 1);
    let q = &a.queries[0];
    assert_eq!((q.vid, q.group), (1, Some(g)));
    assert_eq!(&q.frame[..6], &g.mac().0);
    let parsed = query_of(q);
    assert_eq!(parsed.group, Some(g));
    assert_eq!(parsed.max_resp_ms, 1000);
    assert_eq!(parsed.version, Version::IgmpV3);
    // The second one a last member interval later (general queries may come too).
    let later: Vec<QueryToSend> = s
        .tick(ms(11 * S))
        .into_iter()
        .filter(|q| q.group.is_some())
        .collect();
    assert_eq!(later.len(), 1);
    assert!(s.tick(ms(12 * S)).iter().all(|q| q.group.is_none()));
    s.tick(ms(12 * S));
    assert_eq!(members(&s, g, 1, 12 * S), None);
    assert!(s.entries(ms(12 * S)).is_empty());
}

#[test]
fn router_ports_from_queries() {
    let s = Snooper::new(SnoopConfig::default());
    let q = general_query4("198.18.0.1", QueryKind::IgmpV2, 2, 125, 10_000);
    let a = ctl(&s, 9, 1, &q, 0);
    assert_eq!(a.forward, ControlForward::Flood);
    // Reports now go to the router port only.
    let a = join4(&s, 1, "239.1.1.1", S);
    assert_eq!(a.forward, ControlForward::Routers(set(&[9])));
    assert_eq!(members(&s, g4("239.1.1.1"), 1, S), Some(set(&[1, 9])));
    assert_eq!(
        s.egress_ports(g4("239.2.2.2"), 1, ms(S)),
        McastEgress::Unregistered {
            policy: UnregisteredPolicy::Flood,
            routers: set(&[9])
        }
    );
    // Per VLAN and family.
    assert_eq!(
        s.egress_ports(g4("239.2.2.2"), 2, ms(S)),
        McastEgress::Unregistered {
            policy: UnregisteredPolicy::Flood,
            routers: PortSet::EMPTY
        }
    );
    assert_eq!(
        s.egress_ports(g6("ff05::2"), 1, ms(S)),
        McastEgress::Unregistered {
            policy: UnregisteredPolicy::Flood,
            routers: PortSet::EMPTY
        }
    );
    let r = s.routers(ms(S));
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].vid, r[0].family, r[0].port, r[0].expires),
        (1, Family::V4, p(9), Some(ms(OQPI)))
    );
    // Expires after the other querier present interval.
    assert_eq!(members(&s, g4("239.1.1.1"), 1, OQPI), Some(set(&[1])));
    s.tick(ms(OQPI));
    assert!(s.routers(ms(OQPI)).is_empty());
    // A query from 0.0.0.0 (another snooper's proxy querier) makes no router port.
    ctl(
        &s,
        8,
        1,
        &general_query4("0.0.0.0", QueryKind::IgmpV2, 2, 125, 10_000),
        OQPI,
    );
    assert!(s.routers(ms(OQPI)).is_empty());
    assert_eq!(s.stats().queries, 2);
}

#[test]
fn router_modes_static_and_never() {
    let s = Snooper::new(SnoopConfig::default());
    s.set_router_mode(p(7), RouterMode::Static);
    s.set_router_mode(p(8), RouterMode::Never);
    let q = general_query4("198.18.0.1", QueryKind::IgmpV2, 2, 125, 10_000);
    ctl(&s, 8, 1, &q, 0);
    let a = join4(&s, 1, "239.1.1.1", 0);
    assert_eq!(a.forward, ControlForward::Routers(set(&[7])));
    assert_eq!(members(&s, g4("239.1.1.1"), 1, 0), Some(set(&[1, 7])));
    assert_eq!(members(&s, g4("239.1.1.1"), 1, 10_000 * S), None);
    assert!(matches!(
        s.egress_ports(g4("239.1.1.1"), 1, ms(10_000 * S)),
        McastEgress::Unregistered { routers, .. } if routers == set(&[7])
    ));
    let r = s.routers(ms(0));
    assert_eq!((r.len(), r[0].port, r[0].expires), (1, p(7), None));
    // A learnt router switched to Never is forgotten.
    ctl(&s, 6, 1, &q, 0);
    assert_eq!(s.routers(ms(0)).len(), 2);
    s.set_router_mode(p(6), RouterMode::Never);
    assert_eq!(s.routers(ms(0)).len(), 1);
}

#[test]
fn timers_are_taken_from_observed_queries() {
    let s = Snooper::new(SnoopConfig::default());
    // IGMPv3 query: QRV 3, QQIC 60 s, max resp 5 s: GMI = 3 × 60 + 5 = 185 s.
    ctl(
        &s,
        9,
        1,
        &general_query4("198.18.0.1", QueryKind::IgmpV3, 3, 60, 5000),
        0,
    );
    join4(&s, 1, "239.1.1.1", 0);
    // The router port lasts 3 × 60 + 5 / 2 = 182.5 s.
    assert_eq!(members(&s, g4("239.1.1.1"), 1, 182_499), Some(set(&[1, 9])));
    assert_eq!(
        members(&s, g4("239.1.1.1"), 1, 185 * S - 1),
        Some(set(&[1]))
    );
    assert_eq!(members(&s, g4("239.1.1.1"), 1, 185 * S), None);
    // Other VLANs keep the defaults.
    ctl(&s, 1, 2, &igmp_v2_report(host4(1), a4("239.1.1.1")), 0);
    assert_eq!(members(&s, g4("239.1.1.1"), 2, GMI - 1), Some(set(&[1])));
    let qs = s.queriers(ms(0));
    let v = qs
        .iter()
        .find(|q| q.vid == 1 && q.family == Family::V4)
        .unwrap();
    assert_eq!(v.timers.robustness, 3);
    assert_eq!(v.other, Some(NodeAddr::V4(a4("198.18.0.1"))));
    assert!(!v.active);
}

#[test]
fn per_vlan_policy_and_snooping_off() {
    let s = Snooper::new(SnoopConfig {
        unregistered: UnregisteredPolicy::Flood,
        ..SnoopConfig::default()
    });
    s.set_vlan(
        10,
        VlanSnoopConfig {
            snooping: true,
            querier: false,
            unregistered: UnregisteredPolicy::RouterPorts,
        },
    );
    s.set_vlan(
        20,
        VlanSnoopConfig {
            snooping: false,
            querier: false,
            unregistered: UnregisteredPolicy::Flood,
        },
    );
    let g = g4("239.1.1.1");
    assert_eq!(
        s.egress_ports(g, 10, ms(0)),
        McastEgress::Unregistered {
            policy: UnregisteredPolicy::RouterPorts,
            routers: PortSet::EMPTY
        }
    );
    assert!(matches!(
        s.egress_ports(g, 1, ms(0)),
        McastEgress::Unregistered {
            policy: UnregisteredPolicy::Flood,
            ..
        }
    ));
    let a = ctl(&s, 1, 20, &igmp_v2_report(host4(1), a4("239.1.1.1")), 0);
    assert_eq!(a.forward, ControlForward::Flood);
    assert!(s.entries(ms(0)).is_empty());
    assert_eq!(s.egress_ports(g, 20, ms(0)), McastEgress::NotSnooped);
    let off = Snooper::new(SnoopConfig {
        enabled: false,
        ..SnoopConfig::default()
    });
    assert_eq!(off.egress_ports(g, 1, ms(0)), McastEgress::NotSnooped);
}

#[test]
fn per_port_group_limit() {
    let s = Snooper::new(SnoopConfig {
        group_limit: 2,
        ..SnoopConfig::default()
    });
    s.set_router_mode(p(9), RouterMode::Static);
    s.set_fast_leave(p(1), true);
    join4(&s, 1, "239.0.0.1", 0);
    ctl(&s, 1, 2, &igmp_v2_report(host4(1), a4("239.0.0.1")), 0);
    // The limit counts across VLANs; the report is still forwarded to routers.
    let a = join4(&s, 1, "239.0.0.3", 0);
    assert_eq!(a.forward, ControlForward::Routers(set(&[9])));
    assert_eq!(members(&s, g4("239.0.0.3"), 1, 0), None);
    assert_eq!(s.stats().limit_refused, 1);
    // Refreshes of existing groups are fine; other ports have their own budget.
    join4(&s, 1, "239.0.0.1", 0);
    join4(&s, 2, "239.0.0.3", 0);
    assert_eq!(members(&s, g4("239.0.0.3"), 1, 0), Some(set(&[2, 9])));
    // Leaving frees a slot.
    leave4(&s, 1, "239.0.0.1", 0);
    join4(&s, 1, "239.0.0.3", 0);
    assert_eq!(members(&s, g4("239.0.0.3"), 1, 0), Some(set(&[1, 2, 9])));
    // A per-port override.
    s.set_group_limit(p(3), Some(1));
    join4(&s, 3, "239.0.0.1", 0);
    join4(&s, 3, "239.0.0.2", 0);
    assert_eq!(s.stats().limit_refused, 2);
    // Expiry frees slots too.
    s.tick(ms(GMI));
    join4(&s, 3, "239.0.0.2", GMI);
    assert_eq!(members(&s, g4("239.0.0.2"), 1, GMI), Some(set(&[3, 9])));
}

#[test]
fn bad_reports_are_dropped_counted_never_learnt() {
    let s = Snooper::new(SnoopConfig::default());
    let mut r = igmp_v2_report(host4(1), a4("239.1.1.1"));
    r[30] ^= 0x40;
    assert_eq!(
        s.on_control(p(1), 1, &r, ms(0)),
        Err(WireError::BadChecksum)
    );
    let r = igmp_v2_report(host4(1), a4("239.1.1.1"));
    assert_eq!(
        s.on_control(p(1), 1, &r[..30], ms(0)),
        Err(WireError::BadLength)
    );
    let mut m = mld_v1_report(host6(1), a6("ff05::1"));
    m[7] = 255;
    assert_eq!(
        s.on_control(p(1), 1, &m, ms(0)),
        Err(WireError::BadHopLimit)
    );
    assert!(s.entries(ms(0)).is_empty());
    let st = s.stats();
    assert_eq!(
        (
            st.drop_bad_checksum,
            st.drop_bad_length,
            st.drop_bad_hop_limit
        ),
        (1, 1, 1)
    );
    assert_eq!(st.reports, 0);
    // Not a snooping message: data.
    let ns = ipv6_icmpv6(host6(1), a6("ff02::1:ff00:1"), &[135, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(ctl(&s, 1, 1, &ns, 0).forward, ControlForward::Data);
}

#[test]
fn igmp_version_mixture() {
    let s = Snooper::new(SnoopConfig::default());
    let g = g4("239.5.5.5");
    for port in [2, 3] {
        s.set_fast_leave(p(port), true);
    }
    // Port 1: an IGMPv1 host; port 2: IGMPv3 EXCLUDE{}; port 3: IGMPv2.
    ctl(&s, 1, 1, &igmp_v1_report(host4(1), a4("239.5.5.5")), 0);
    ctl(
        &s,
        2,
        1,
        &igmp_v3_report(host4(2), &[(4, a4("239.5.5.5"), 0)]),
        0,
    );
    join4(&s, 3, "239.5.5.5", 0);
    assert_eq!(members(&s, g, 1, 0), Some(set(&[1, 2, 3])));
    // A leave on a port with a v1 host is ignored (RFC 2236 §3).
    leave4(&s, 1, "239.5.5.5", S);
    assert_eq!(members(&s, g, 1, 10 * S), Some(set(&[1, 2, 3])));
    assert_eq!(s.stats().leaves_ignored_v1, 1);
    // BLOCK on an EXCLUDE port changes nothing; TO_IN{} is a leave.
    ctl(
        &s,
        2,
        1,
        &igmp_v3_report(host4(2), &[(6, a4("239.5.5.5"), 2)]),
        S,
    );
    assert_eq!(members(&s, g, 1, S), Some(set(&[1, 2, 3])));
    ctl(
        &s,
        2,
        1,
        &igmp_v3_report(host4(2), &[(3, a4("239.5.5.5"), 0)]),
        S,
    );
    assert_eq!(members(&s, g, 1, S), Some(set(&[1, 3])));
    leave4(&s, 3, "239.5.5.5", S);
    assert_eq!(members(&s, g, 1, S), Some(set(&[1])));
    // ALLOW{} and BLOCK on a non-member create nothing.
    ctl(
        &s,
        4,
        1,
        &igmp_v3_report(
            host4(4),
            &[(5, a4("239.6.6.6"), 0), (6, a4("239.6.6.6"), 1)],
        ),
        S,
    );
    assert_eq!(members(&s, g4("239.6.6.6"), 1, S), None);
}

#[test]
fn include_mode_ports_leave_when_last_source_is_blocked() {
    let s = Snooper::new(SnoopConfig::default());
    s.set_fast_leave(p(4), true);
    let g = g4("239.7.7.7");
    // IS_IN{S0, S1} (sources 198.18.0.0 and .1), then BLOCK{S0}: still a member.
    ctl(
        &s,
        4,
        1,
        &igmp_v3_report(host4(4), &[(1, a4("239.7.7.7"), 2)]),
        0,
    );
    assert_eq!(members(&s, g, 1, 0), Some(set(&[4])));
    ctl(
        &s,
        4,
        1,
        &igmp_v3_report(host4(4), &[(6, a4("239.7.7.7"), 1)]),
        0,
    );
    assert_eq!(members(&s, g, 1, 0), Some(set(&[4])));
    // ALLOW{S0} again, then BLOCK{S0, S1}: INCLUDE{} — a leave.
    ctl(
        &s,
        4,
        1,
        &igmp_v3_report(host4(4), &[(5, a4("239.7.7.7"), 1)]),
        0,
    );
    ctl(
        &s,
        4,
        1,
        &igmp_v3_report(host4(4), &[(6, a4("239.7.7.7"), 2)]),
        0,
    );
    assert_eq!(members(&s, g, 1, 0), None);
    // Without fast leave the timer drops to the last member query time.
    ctl(
        &s,
        5,
        1,
        &igmp_v3_report(host4(5), &[(3, a4("239.7.7.7"), 1)]),
        0,
    );
    ctl(
        &s,
        5,
        1,
        &igmp_v3_report(host4(5), &[(6, a4("239.7.7.7"), 1)]),
        10 * S,
    );
    assert_eq!(members(&s, g, 1, 12 * S - 1), Some(set(&[5])));
    assert_eq!(members(&s, g, 1, 12 * S), None);
    let v3 = |port: u16, kind: u8, nsrc: u16, t: u64| {
        ctl(
            &s,
            port,
            1,
            &igmp_v3_report(host4(port), &[(kind, a4("239.7.7.7"), nsrc)]),
            t,
        )
    };
    // EXCLUDE → TO_IN{S} without any querier: nobody would ask, the port stays.
    v3(6, 4, 0, 20 * S);
    v3(6, 3, 1, 20 * S);
    assert_eq!(members(&s, g, 1, 22 * S), Some(set(&[6])));
    // With a querier (a router on port 9): the port must answer the group query.
    let q = general_query4("198.18.0.1", QueryKind::IgmpV3, 2, 125, 10_000);
    ctl(&s, 9, 1, &q, 30 * S);
    v3(7, 4, 0, 30 * S);
    v3(7, 3, 1, 30 * S);
    assert_eq!(members(&s, g, 1, 32 * S - 1), Some(set(&[6, 7, 9])));
    assert_eq!(members(&s, g, 1, 32 * S), Some(set(&[6, 9])));
    // ... and its answer (IS_IN{S}) keeps it.
    v3(8, 4, 0, 40 * S);
    v3(8, 3, 1, 40 * S);
    v3(8, 1, 1, 41 * S);
    assert_eq!(members(&s, g, 1, 50 * S), Some(set(&[6, 8, 9])));
}

#[test]
fn mld_the_same() {
    let s = Snooper::new(SnoopConfig::default());
    s.set_fast_leave(p(2), true);
    let g = g6("ff05::1:3");
    ctl(&s, 1, 1, &mld_v1_report(host6(1), a6("ff05::1:3")), 0);
    ctl(
        &s,
        2,
        1,
        &mld_v2_report(host6(2), &[(4, a6("ff05::1:3"), 0)]),
        0,
    );
    ctl(
        &s,
        3,
        1,
        &mld_v2_report(Ipv6Addr::UNSPECIFIED, &[(2, a6("ff05::1:3"), 1)]),
        0,
    );
    assert_eq!(members(&s, g, 1, 0), Some(set(&[1, 2, 3])));
    // The IPv4 group with the same low bits is a different entry.
    assert_eq!(members(&s, g4("239.0.1.3"), 1, 0), None);
    ctl(
        &s,
        2,
        1,
        &mld_v2_report(host6(2), &[(3, a6("ff05::1:3"), 0)]),
        S,
    );
    assert_eq!(members(&s, g, 1, S), Some(set(&[1, 3])));
    ctl(&s, 1, 1, &mld_done(host6(1), a6("ff05::1:3")), S);
    assert_eq!(members(&s, g, 1, 3 * S), Some(set(&[3])));
    assert_eq!(members(&s, g, 1, GMI), None);
    // MLD router port from an MLDv2 query, separate from IGMP.
    let q = QueryParams {
        kind: QueryKind::MldV2,
        group: None,
        max_resp_ms: 10_000,
        robustness: 2,
        query_interval_s: 125,
        suppress: false,
    };
    ctl(
        &s,
        9,
        1,
        &ipv6_icmpv6(host6(99), ALL_NODES, &mld_query(&q)),
        0,
    );
    let a = ctl(&s, 1, 1, &mld_v1_report(host6(1), a6("ff05::1:3")), S);
    assert_eq!(a.forward, ControlForward::Routers(set(&[9])));
    let a = join4(&s, 1, "239.1.1.1", S);
    assert_eq!(a.forward, ControlForward::Routers(PortSet::EMPTY));
}

#[test]
fn pim_and_mrd_router_ports() {
    let s = Snooper::new(SnoopConfig::default());
    let hello = |hold: u16| {
        let h = hold.to_be_bytes();
        ipv4_packet(
            a4("198.18.0.1"),
            wire::ALL_PIM_ROUTERS_V4,
            PROTO_PIM,
            &[0x20, 0, 0, 0, 0, 1, 0, 2, h[0], h[1]],
        )
    };
    ctl(&s, 5, 1, &hello(30), 0);
    assert_eq!(
        join4(&s, 1, "239.1.1.1", 0).forward,
        ControlForward::Routers(set(&[5]))
    );
    assert_eq!(s.routers(ms(30 * S)).len(), 0);
    ctl(&s, 5, 1, &hello(30), 0);
    ctl(&s, 5, 1, &hello(0), S);
    assert!(s.routers(ms(S)).is_empty());
    // MRD advertisement: three intervals; termination forgets it.
    let adv = ipv4_igmp(
        a4("198.18.0.1"),
        a4("224.0.0.106"),
        &[IGMP_MRD_ADV, 20, 0, 0, 0, 125, 0, 2],
    );
    assert_eq!(ctl(&s, 6, 1, &adv, 0).forward, ControlForward::Flood);
    assert_eq!(s.routers(ms(60 * S - 1)).len(), 1);
    assert_eq!(s.routers(ms(60 * S)).len(), 0);
    ctl(&s, 6, 1, &adv, 0);
    let term = ipv4_igmp(
        a4("198.18.0.1"),
        a4("224.0.0.106"),
        &[IGMP_MRD_TERM, 0, 0, 0],
    );
    ctl(&s, 6, 1, &term, S);
    assert!(s.routers(ms(S)).is_empty());
    assert_eq!(s.stats().pim_hellos, 3);
    assert_eq!(s.stats().mrd, 3);
}

#[test]
fn querier_startup_and_election() {
    let s = Snooper::new(querier_cfg("198.18.0.10"));
    s.set_vlan(
        1,
        VlanSnoopConfig {
            snooping: true,
            querier: true,
            unregistered: UnregisteredPolicy::Flood,
        },
    );
    let q = s.tick(ms(0));
    // One IGMP and one MLD general query.
    assert_eq!(q.len(), 2);
    let v4 = q.iter().find(|q| q.family == Family::V4).unwrap();
    assert_eq!(v4.group, None);
    assert_eq!(&v4.frame[..6], &[0x01, 0, 0x5e, 0, 0, 1]);
    let parsed = query_of(v4);
    assert_eq!(
        (parsed.version, parsed.qrv, parsed.qqi_s),
        (Version::IgmpV3, Some(2), Some(125))
    );
    let v6 = q.iter().find(|q| q.family == Family::V6).unwrap();
    assert_eq!(query_of(v6).version, Version::MldV2);
    // Startup: the second query a quarter interval later, then every interval.
    assert!(s.tick(ms(31_249)).is_empty());
    assert_eq!(s.tick(ms(31_250)).len(), 2);
    assert!(s.tick(ms(156_249)).is_empty());
    assert_eq!(s.tick(ms(156_250)).len(), 2);
    // A higher address does not silence us, a lower one does (IGMP only).
    ctl(
        &s,
        9,
        1,
        &general_query4("198.18.0.20", QueryKind::IgmpV2, 2, 125, 10_000),
        160 * S,
    );
    assert!(s.queriers(ms(160 * S)).iter().all(|q| q.active));
    ctl(
        &s,
        8,
        1,
        &general_query4("198.18.0.5", QueryKind::IgmpV2, 2, 125, 10_000),
        160 * S,
    );
    let q = s.tick(ms(281_250));
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].family, Family::V6);
    let st = s.queriers(ms(281_250));
    let v4 = st
        .iter()
        .find(|q| q.vid == 1 && q.family == Family::V4)
        .unwrap();
    assert!(!v4.active);
    assert_eq!(v4.other, Some(NodeAddr::V4(a4("198.18.0.5"))));
    // Leaves while another querier is elected: no queries from us.
    join4(&s, 1, "239.1.1.1", 200 * S);
    assert!(leave4(&s, 1, "239.1.1.1", 201 * S).queries.is_empty());
    // The other querier goes silent: we take over at once.
    let q = s.tick(ms(160 * S + OQPI));
    assert!(q.iter().any(|q| q.family == Family::V4));
}

#[test]
fn unspecified_querier_yields_to_any_router() {
    let s = Snooper::new(querier_cfg("0.0.0.0"));
    s.set_vlan(
        1,
        VlanSnoopConfig {
            snooping: true,
            querier: true,
            unregistered: UnregisteredPolicy::Flood,
        },
    );
    let q = s.tick(ms(0));
    let v4 = q.iter().find(|q| q.family == Family::V4).unwrap();
    assert_eq!(&v4.frame[14 + 12..14 + 16], &[0, 0, 0, 0]);
    ctl(
        &s,
        8,
        1,
        &general_query4("198.18.0.200", QueryKind::IgmpV2, 2, 125, 10_000),
        S,
    );
    assert!(s.tick(ms(125 * S)).iter().all(|q| q.family == Family::V6));
}

#[test]
fn remove_port_and_views() {
    let s = Snooper::new(SnoopConfig::default());
    join4(&s, 1, "239.1.1.1", 0);
    join4(&s, 2, "239.1.1.1", 0);
    join4(&s, 1, "239.1.1.2", 0);
    ctl(
        &s,
        9,
        1,
        &general_query4("198.18.0.1", QueryKind::IgmpV2, 2, 125, 10_000),
        0,
    );
    let e = s.entries(ms(0));
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].group, g4("239.1.1.1"));
    assert_eq!(e[0].ports, vec![(p(1), ms(GMI)), (p(2), ms(GMI))]);
    let v = s.view();
    s.remove_port(p(1));
    s.remove_port(p(9));
    // An old view still answers from its snapshot; a new one sees the change.
    assert_eq!(
        v.egress_ports(g4("239.1.1.1"), 1, ms(0)),
        McastEgress::Registered(set(&[1, 2, 9]))
    );
    assert_eq!(
        s.view().egress_ports(g4("239.1.1.1"), 1, ms(0)),
        McastEgress::Registered(set(&[2]))
    );
    assert_eq!(s.entries(ms(0)).len(), 1);
    assert!(s.routers(ms(0)).is_empty());
    // The port's group budget is reset.
    join4(&s, 1, "239.1.1.3", 0);
    assert_eq!(members(&s, g4("239.1.1.3"), 1, 0), Some(set(&[1])));
}

#[test]
fn snooper_is_shareable() {
    fn assert_sync<T: Send + Sync>() {}
    assert_sync::<Snooper>();
}

#[test]
fn join_leave_storm_is_published_within_budget() {
    let s = Snooper::new(SnoopConfig::default());
    s.set_fast_leave(p(1), true);
    let g = g4("239.1.1.1");
    let before = s.stats().publishes;
    // 400 alternating joins and leaves at one instant: 400 set changes.
    for _ in 0..200 {
        join4(&s, 1, "239.1.1.1", 5);
        leave4(&s, 1, "239.1.1.1", 5);
    }
    join4(&s, 1, "239.1.1.1", 5);
    let st = s.stats();
    assert_eq!(st.publishes - before, u64::from(PUBLISH_BURST));
    assert!(st.publish_deferred > 0);
    // The last join is not visible yet: unregistered (flooded), not lost.
    assert_eq!(members(&s, g, 1, 5), None);
    // Budget refills with time; the next packet or tick publishes.
    s.tick(ms(5 + PUBLISH_REFILL_MS));
    assert_eq!(members(&s, g, 1, 5 + PUBLISH_REFILL_MS), Some(set(&[1])));
    assert_eq!(s.entries(ms(20)).len(), 1);
}
