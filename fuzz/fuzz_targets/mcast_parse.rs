//! IGMP/MLD/PIM/MRD parser and snooper state machine on arbitrary bytes: never panics,
//! and what the data path sees agrees with the control plane's MDB.
//!
//! Input: a sequence of chunks `[port, vid, step, mode, len, bytes…]`. `mode` 0 feeds the
//! bytes raw as an IP packet; 1–4 wrap them as the message of a well-formed IGMP, ICMPv6,
//! PIM-over-IPv4 or PIM-over-IPv6 packet (valid checksums, router alert) so the fuzzer
//! reaches the message parsers and the MDB rather than stopping at checksums.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, Ipv6Addr};
use switch::mcast::build::{ipv4_igmp, ipv4_packet, ipv6_icmpv6, ipv6_packet};
use switch::mcast::wire::{self, Message, PROTO_PIM};
use switch::mcast::{McastEgress, RouterMode, SnoopConfig, Snooper};
use switch::{Millis, PortId};

fuzz_target!(|data: &[u8]| {
    // The parser alone, on the raw input.
    if let Ok(Some(c)) = wire::parse(data) {
        if let Message::ReportV3 { records } = c.msg {
            for r in records.iter() {
                assert!(r.group.is_multicast());
                assert_eq!(r.source_addrs().count(), usize::from(r.sources));
            }
        }
    }
    let _ = wire::is_control(data);
    let _ = wire::dst_group(data);

    let mut cfg = SnoopConfig {
        group_limit: 3,
        ..SnoopConfig::default()
    };
    cfg.querier.enabled = data.first().is_some_and(|b| b & 1 == 1);
    cfg.querier.ip4 = Ipv4Addr::new(198, 18, 0, 100);
    let s = Snooper::new(cfg);
    s.set_fast_leave(PortId(1), true);
    s.set_router_mode(PortId(2), RouterMode::Never);
    s.set_router_mode(PortId(3), RouterMode::Static);
    let mut now = 0u64;
    let mut rest = data;
    while rest.len() >= 5 {
        let (port, vid, step, mode, len) = (
            rest[0] % 8,
            u16::from(rest[1] % 4),
            rest[2],
            rest[3] % 5,
            usize::from(rest[4]),
        );
        let body = &rest[5..(5 + len).min(rest.len())];
        rest = &rest[(5 + len).min(rest.len())..];
        let src4 = Ipv4Addr::new(198, 18, 0, port);
        let src6 = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(port));
        let dst4 = match body.get(4..8) {
            Some(d) => Ipv4Addr::new(d[0], d[1], d[2], d[3]),
            None => Ipv4Addr::new(224, 0, 0, 22),
        };
        let pkt = match mode {
            0 => body.to_vec(),
            1 => ipv4_igmp(src4, dst4, body),
            2 => ipv6_icmpv6(src6, "ff02::16".parse().unwrap(), body),
            3 => ipv4_packet(src4, wire::ALL_PIM_ROUTERS_V4, PROTO_PIM, body),
            _ => ipv6_packet(src6, wire::ALL_PIM_ROUTERS_V6, PROTO_PIM, body),
        };
        now += u64::from(step) * 100;
        let _ = s.on_control(PortId(u16::from(port)), vid, &pkt, Millis(now));
        if step & 1 == 1 {
            for q in s.tick(Millis(now)) {
                // Our own queries parse as valid queries.
                let parsed = wire::parse(&q.frame[14..]);
                assert!(matches!(parsed, Ok(Some(c)) if matches!(c.msg, Message::Query(_))));
            }
        }
        // Every MDB entry is visible on the data path with its ports (unless a publish was
        // postponed by the storm budget, which lags by design).
        if s.stats().publish_deferred > 0 {
            continue;
        }
        for e in s.entries(Millis(now)) {
            assert!(e.ports.len() <= 8);
            match s.egress_ports(e.group, e.vid, Millis(now)) {
                McastEgress::Registered(ports) => {
                    for (p, _) in &e.ports {
                        assert!(ports.contains(*p));
                    }
                }
                other => panic!("entry {e:?} not registered: {other:?}"),
            }
        }
    }
});
