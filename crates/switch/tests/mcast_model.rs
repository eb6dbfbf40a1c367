//! Property test: random sequences of IGMP/MLD joins, leaves, router queries, clock steps
//! and ticks go through the real snooper (as packets) and through a small, independently
//! written reference model of RFC 4541 group-granular snooping; every data-frame lookup
//! must agree.

use proptest::prelude::*;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use switch::mcast::build::{
    igmp_leave, igmp_query, igmp_v2_report, igmp_v3_report, ipv4_igmp, mld_done, mld_v1_report,
    mld_v2_report, QueryKind, QueryParams, ALL_SYSTEMS,
};
use switch::mcast::{GroupAddr, McastEgress, SnoopConfig, Snooper, UnregisteredPolicy};
use switch::{Millis, PortId, PortSet};

const PORTS: u16 = 5;
const FAST_LEAVE: [u16; 2] = [0, 1];
const ROUTER: u16 = 7;
const LIMIT: usize = 2;
const GMI: u64 = 260_000;
const LMQT: u64 = 2_000;
const OQPI: u64 = 255_000;
const VIDS: [u16; 2] = [1, 2];

fn groups() -> Vec<GroupAddr> {
    vec![
        GroupAddr::V4(Ipv4Addr::new(239, 1, 1, 1)),
        GroupAddr::V4(Ipv4Addr::new(239, 1, 1, 2)),
        GroupAddr::V4(Ipv4Addr::new(224, 0, 0, 251)),
        GroupAddr::V6("ff05::1:3".parse().unwrap()),
        GroupAddr::V6("ff0e::42".parse().unwrap()),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    /// kind 0: v2/MLDv1 report, 1: v3/MLDv2 TO_EX{}, 2: v3/MLDv2 IS_EX{S}.
    Join {
        port: u16,
        group: usize,
        vid: usize,
        kind: u8,
    },
    /// kind 0: v2 leave / MLD done, 1: TO_IN{}.
    Leave {
        port: u16,
        group: usize,
        vid: usize,
        kind: u8,
    },
    RouterQuery {
        vid: usize,
    },
    Advance(u64),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..PORTS, 0..5usize, 0..2usize, 0..3u8)
            .prop_map(|(port, group, vid, kind)| Op::Join { port, group, vid, kind }),
        3 => (0..PORTS, 0..5usize, 0..2usize, 0..2u8)
            .prop_map(|(port, group, vid, kind)| Op::Leave { port, group, vid, kind }),
        1 => (0..2usize).prop_map(|vid| Op::RouterQuery { vid }),
        3 => prop_oneof![Just(0u64), Just(500), Just(1_000), Just(2_000), Just(60_000), Just(200_000)]
            .prop_map(Op::Advance),
        1 => Just(Op::Tick),
    ]
}

/// The reference: entries stay until a tick removes them (and count towards the limit
/// until then), like the real MDB.
#[derive(Default)]
struct Model {
    members: HashMap<(usize, u16), HashMap<u16, u64>>,
    routers: HashMap<(u16, bool), u64>,
}

impl Model {
    fn count(&self, port: u16) -> usize {
        self.members
            .values()
            .filter(|m| m.contains_key(&port))
            .count()
    }

    fn join(&mut self, port: u16, key: (usize, u16), now: u64) {
        if key.0 == 2 {
            return; // link-local: never learnt
        }
        let known = self
            .members
            .get(&key)
            .is_some_and(|m| m.contains_key(&port));
        if !known && self.count(port) >= LIMIT {
            return;
        }
        self.members.entry(key).or_default().insert(port, now + GMI);
    }

    fn leave(&mut self, port: u16, key: (usize, u16), now: u64) {
        let Some(m) = self.members.get_mut(&key) else {
            return;
        };
        let Some(e) = m.get_mut(&port) else {
            return;
        };
        if FAST_LEAVE.contains(&port) {
            m.remove(&port);
            if m.is_empty() {
                self.members.remove(&key);
            }
        } else {
            *e = (*e).min(now + LMQT);
        }
    }

    fn tick(&mut self, now: u64) {
        for m in self.members.values_mut() {
            m.retain(|_, e| now < *e);
        }
        self.members.retain(|_, m| !m.is_empty());
        self.routers.retain(|_, e| now < *e);
    }

    fn egress(&self, group: usize, g: GroupAddr, vid: u16, now: u64) -> McastEgress {
        if group == 2 {
            return McastEgress::LinkLocal;
        }
        let v6 = matches!(g, GroupAddr::V6(_));
        let mut routers = PortSet::EMPTY;
        if self.routers.get(&(vid, v6)).is_some_and(|e| now < *e) {
            routers.insert(PortId(ROUTER));
        }
        let live: PortSet = self
            .members
            .get(&(group, vid))
            .map(|m| {
                m.iter()
                    .filter(|(_, e)| now < **e)
                    .map(|(p, _)| PortId(*p))
                    .collect()
            })
            .unwrap_or(PortSet::EMPTY);
        if live.is_empty() {
            McastEgress::Unregistered {
                policy: UnregisteredPolicy::Flood,
                routers,
            }
        } else {
            McastEgress::Registered(live.union(&routers))
        }
    }
}

fn host4(port: u16) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, 10 + port as u8)
}
fn host6(port: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 10 + port)
}

fn join_packet(port: u16, g: GroupAddr, kind: u8) -> Vec<u8> {
    match (g, kind) {
        (GroupAddr::V4(a), 0) => igmp_v2_report(host4(port), a),
        (GroupAddr::V4(a), 1) => igmp_v3_report(host4(port), &[(4, a, 0)]),
        (GroupAddr::V4(a), _) => igmp_v3_report(host4(port), &[(2, a, 1)]),
        (GroupAddr::V6(a), 0) => mld_v1_report(host6(port), a),
        (GroupAddr::V6(a), 1) => mld_v2_report(host6(port), &[(4, a, 0)]),
        (GroupAddr::V6(a), _) => mld_v2_report(host6(port), &[(2, a, 1)]),
    }
}

fn leave_packet(port: u16, g: GroupAddr, kind: u8) -> Vec<u8> {
    match (g, kind) {
        (GroupAddr::V4(a), 0) => igmp_leave(host4(port), a),
        (GroupAddr::V4(a), _) => igmp_v3_report(host4(port), &[(3, a, 0)]),
        (GroupAddr::V6(a), 0) => mld_done(host6(port), a),
        (GroupAddr::V6(a), _) => mld_v2_report(host6(port), &[(3, a, 0)]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn snooper_matches_model(ops in prop::collection::vec(op(), 1..80)) {
        let gs = groups();
        let s = Snooper::new(SnoopConfig { group_limit: LIMIT as u32, ..SnoopConfig::default() });
        for p in FAST_LEAVE {
            s.set_fast_leave(PortId(p), true);
        }
        let mut m = Model::default();
        let mut now = 1u64;
        for op in &ops {
            match *op {
                Op::Join { port, group, vid, kind } => {
                    let pkt = join_packet(port, gs[group], kind);
                    s.on_control(PortId(port), VIDS[vid], &pkt, Millis(now)).unwrap();
                    m.join(port, (group, VIDS[vid]), now);
                }
                Op::Leave { port, group, vid, kind } => {
                    let pkt = leave_packet(port, gs[group], kind);
                    s.on_control(PortId(port), VIDS[vid], &pkt, Millis(now)).unwrap();
                    m.leave(port, (group, VIDS[vid]), now);
                }
                Op::RouterQuery { vid } => {
                    let q = QueryParams {
                        kind: QueryKind::IgmpV2,
                        group: None,
                        max_resp_ms: 10_000,
                        robustness: 2,
                        query_interval_s: 125,
                        suppress: false,
                    };
                    let pkt = ipv4_igmp(Ipv4Addr::new(198, 18, 0, 1), ALL_SYSTEMS, &igmp_query(&q));
                    s.on_control(PortId(ROUTER), VIDS[vid], &pkt, Millis(now)).unwrap();
                    let e = m.routers.entry((VIDS[vid], false)).or_insert(0);
                    *e = (*e).max(now + OQPI);
                }
                Op::Advance(dt) => now += dt,
                Op::Tick => {
                    prop_assert!(s.tick(Millis(now)).is_empty(), "querier is off");
                    m.tick(now);
                }
            }
            for (gi, g) in gs.iter().enumerate() {
                for vid in VIDS {
                    prop_assert_eq!(
                        s.egress_ports(*g, vid, Millis(now)),
                        m.egress(gi, *g, vid, now),
                        "group {} vid {} at {} after {:?}", g, vid, now, op
                    );
                }
            }
            // The control plane's view agrees with the data path's.
            let live: usize = s.entries(Millis(now)).iter().map(|e| e.ports.len()).sum();
            let expect: usize = m.members.values().map(|p| p.values().filter(|e| now < **e).count()).sum();
            prop_assert_eq!(live, expect);
        }
    }
}
