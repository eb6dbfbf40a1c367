//! Property test: random sequences of IGMP/MLD joins, leaves, router queries, clock steps
//! and ticks go through the real snooper (as packets) and through a small, independently
//! written reference model of RFC 4541 group-granular snooping; every data-frame lookup
//! must agree.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

#[path = "../../../tests/common/prereq.rs"]
mod prereq;

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
    /// IS_IN (allow false) or ALLOW (allow true) with the first `n` of three sources.
    Include {
        port: u16,
        group: usize,
        vid: usize,
        n: u16,
        allow: bool,
    },
    /// BLOCK of the first `n` sources.
    Block {
        port: u16,
        group: usize,
        vid: usize,
        n: u16,
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
        2 => (0..PORTS, 0..5usize, 0..2usize, 1..4u16, any::<bool>())
            .prop_map(|(port, group, vid, n, allow)| Op::Include { port, group, vid, n, allow }),
        2 => (0..PORTS, 0..5usize, 0..2usize, 1..4u16)
            .prop_map(|(port, group, vid, n)| Op::Block { port, group, vid, n }),
        1 => (0..2usize).prop_map(|vid| Op::RouterQuery { vid }),
        3 => prop_oneof![Just(0u64), Just(500), Just(1_000), Just(2_000), Just(60_000), Just(200_000)]
            .prop_map(Op::Advance),
        1 => Just(Op::Tick),
    ]
}

/// The reference: entries stay until a tick removes them (and count towards the limit
/// until then), like the real MDB.
/// A member port: expiry, and INCLUDE source mask (None: EXCLUDE mode).
type Member = (u64, Option<u8>);

#[derive(Default)]
struct Model {
    /// (group, vid) → port → member.
    members: HashMap<(usize, u16), HashMap<u16, Member>>,
    routers: HashMap<(u16, bool), u64>,
}

impl Model {
    fn count(&self, port: u16) -> usize {
        self.members
            .values()
            .filter(|m| m.contains_key(&port))
            .count()
    }

    /// Joins with `include` sources (None: EXCLUDE mode, any source).
    fn join(&mut self, port: u16, key: (usize, u16), now: u64, include: Option<u8>) {
        if key.0 == 2 {
            return; // link-local: never learnt
        }
        let known = self.members.get(&key).and_then(|m| m.get(&port)).copied();
        if known.is_none() && self.count(port) >= LIMIT {
            return;
        }
        let mode = match (known, include) {
            (_, None) => None,
            (None, Some(s)) => Some(s),
            (Some((_, Some(old))), Some(s)) => Some(old | s),
            // EXCLUDE stays EXCLUDE on IS_IN/ALLOW.
            (Some((_, None)), Some(_)) => None,
        };
        self.members
            .entry(key)
            .or_default()
            .insert(port, (now + GMI, mode));
    }

    fn leave(&mut self, port: u16, key: (usize, u16), now: u64) {
        let Some(m) = self.members.get_mut(&key) else {
            return;
        };
        let Some(e) = m.get_mut(&port) else {
            return;
        };
        e.1 = Some(0);
        if FAST_LEAVE.contains(&port) {
            m.remove(&port);
            if m.is_empty() {
                self.members.remove(&key);
            }
        } else {
            e.0 = e.0.min(now + LMQT);
        }
    }

    fn block(&mut self, port: u16, key: (usize, u16), now: u64, srcs: u8) {
        let Some(e) = self.members.get_mut(&key).and_then(|m| m.get_mut(&port)) else {
            return;
        };
        if let Some(set) = e.1 {
            e.1 = Some(set & !srcs);
            if set & !srcs == 0 {
                self.leave(port, key, now);
            }
        }
    }

    fn tick(&mut self, now: u64) {
        for m in self.members.values_mut() {
            m.retain(|_, e| now < e.0);
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
                    .filter(|(_, e)| now < e.0)
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

/// A v3/MLDv2 report with one record of `kind` and the first `n` sources.
fn record_packet(port: u16, g: GroupAddr, kind: u8, n: u16) -> Vec<u8> {
    match g {
        GroupAddr::V4(a) => igmp_v3_report(host4(port), &[(kind, a, n)]),
        GroupAddr::V6(a) => mld_v2_report(host6(port), &[(kind, a, n)]),
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
                    m.join(port, (group, VIDS[vid]), now, None);
                }
                Op::Leave { port, group, vid, kind } => {
                    let pkt = leave_packet(port, gs[group], kind);
                    s.on_control(PortId(port), VIDS[vid], &pkt, Millis(now)).unwrap();
                    m.leave(port, (group, VIDS[vid]), now);
                }
                Op::Include { port, group, vid, n, allow } => {
                    let kind = if allow { 5 } else { 1 };
                    let pkt = record_packet(port, gs[group], kind, n);
                    s.on_control(PortId(port), VIDS[vid], &pkt, Millis(now)).unwrap();
                    m.join(port, (group, VIDS[vid]), now, Some((1u8 << n) - 1));
                }
                Op::Block { port, group, vid, n } => {
                    let pkt = record_packet(port, gs[group], 6, n);
                    s.on_control(PortId(port), VIDS[vid], &pkt, Millis(now)).unwrap();
                    m.block(port, (group, VIDS[vid]), now, (1u8 << n) - 1);
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
            let expect: usize = m.members.values().map(|p| p.values().filter(|e| now < e.0).count()).sum();
            prop_assert_eq!(live, expect);
        }
    }
}

/// Real-stack interoperability: the Linux kernel's own IGMPv3 and MLDv2 reports (captured
/// on a veth inside a network namespace this test creates) must parse, be learnt, and
/// their leaves must remove the membership.
mod linux_reports {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// A network namespace, deleted on drop (also on panic).
    struct Netns(String);
    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    /// A child process killed on drop.
    struct Kid(Child);
    impl Drop for Kid {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn ip(args: &[&str]) -> bool {
        Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Captures every frame on `ifname` inside namespace `ns` (AF_PACKET in a thread that
    /// joined the namespace) until `stop` is set.
    /// Frames sent to the returned sender are written to the interface.
    fn capture(
        ns: &str,
        ifname: &str,
        stop: Arc<AtomicBool>,
    ) -> (mpsc::Receiver<Vec<u8>>, mpsc::Sender<Vec<u8>>) {
        let (tx, rx) = mpsc::channel();
        let (inject, to_send) = mpsc::channel::<Vec<u8>>();
        let path = format!("/run/netns/{ns}\0");
        let ifname = format!("{ifname}\0");
        std::thread::spawn(move || {
            // SAFETY: plain syscalls on NUL-terminated strings we own; the fd is checked and
            // setns only changes this thread's network namespace.
            let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
            assert!(fd >= 0, "open netns");
            // SAFETY: fd is a namespace file we just opened.
            assert_eq!(unsafe { libc::setns(fd, libc::CLONE_NEWNET) }, 0, "setns");
            // SAFETY: socket(2) with constant arguments.
            let s = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    i32::from((libc::ETH_P_ALL as u16).to_be()),
                )
            };
            assert!(s >= 0, "AF_PACKET socket");
            // SAFETY: NUL-terminated name.
            let idx = unsafe { libc::if_nametoindex(ifname.as_ptr().cast()) };
            assert!(idx > 0, "ifindex");
            // SAFETY: zeroed sockaddr_ll is valid; we set the fields bind needs.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = idx as i32;
            // SAFETY: sll is a valid sockaddr_ll of the size given.
            let r = unsafe {
                libc::bind(
                    s,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0, "bind");
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: tv is a valid timeval of the size given.
            unsafe {
                libc::setsockopt(
                    s,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                )
            };
            let _ = tx.send(Vec::new()); // ready
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                while let Ok(f) = to_send.try_recv() {
                    // SAFETY: f is valid for f.len() bytes; the socket is bound to ifname.
                    let n = unsafe { libc::send(s, f.as_ptr().cast(), f.len(), 0) };
                    assert_eq!(n, f.len() as isize, "inject");
                }
                // SAFETY: buf is valid for buf.len() bytes.
                let n = unsafe { libc::recv(s, buf.as_mut_ptr().cast(), buf.len(), 0) };
                if n > 0 && tx.send(buf[..n as usize].to_vec()).is_err() {
                    break;
                }
            }
            // SAFETY: closing descriptors we own.
            unsafe {
                libc::close(s);
                libc::close(fd);
            }
        });
        (rx, inject)
    }

    /// Feeds captured frames to the snooper until `done` holds or 10 s pass.
    fn feed_until(
        s: &Snooper,
        rx: &mpsc::Receiver<Vec<u8>>,
        t0: Instant,
        done: impl Fn(&Snooper, Millis) -> bool,
    ) -> bool {
        while t0.elapsed() < Duration::from_secs(10) {
            let now = Millis(t0.elapsed().as_millis() as u64);
            if done(s, now) {
                return true;
            }
            let Ok(f) = rx.recv_timeout(Duration::from_millis(200)) else {
                continue;
            };
            if f.len() > 14 && matches!(&f[12..14], [0x08, 0x00] | [0x86, 0xdd]) {
                let ip = &f[14..];
                if switch::mcast::is_control(ip) {
                    s.on_control(PortId(1), 1, ip, now)
                        .expect("the kernel's control packets are valid");
                }
            }
        }
        false
    }

    fn has(s: &Snooper, g: GroupAddr, now: Millis) -> bool {
        s.entries(now)
            .iter()
            .any(|e| e.group == g && e.ports.iter().any(|p| p.0 == PortId(1)))
    }

    /// Joins and leaves from the kernel forced to IGMP version `igmp` and MLD version `mld`
    /// (0: the default, IGMPv3/MLDv2). An IGMPv1 host sends no leave: its membership must
    /// outlive the MLD leave.
    fn kernel_join_leave(tag: &str, igmp: u8, mld: u8) {
        let ns = format!("rsm{tag}{}", std::process::id());
        if crate::prereq::skip_without(
            "a network namespace",
            ip(&["netns", "add", &ns]),
            "`ip netns add` needs root and iproute2",
        ) {
            return;
        }
        let _guard = Netns(ns.clone());
        assert!(ip(&[
            "-n", &ns, "link", "add", "mca", "type", "veth", "peer", "name", "mcb"
        ]));
        assert!(ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            "198.18.77.1/24",
            "dev",
            "mca"
        ]));
        for (key, v) in [
            ("net.ipv4.conf.mca.force_igmp_version", igmp),
            ("net.ipv6.conf.mca.force_mld_version", mld),
        ] {
            let set = format!("{key}={v}");
            let ok = Command::new("ip")
                .args(["netns", "exec", &ns, "sysctl", "-qw", &set])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "{set}");
        }
        assert!(ip(&["-n", &ns, "link", "set", "mcb", "up"]));
        assert!(ip(&["-n", &ns, "link", "set", "mca", "up"]));

        let stop = Arc::new(AtomicBool::new(false));
        let (rx, _inject) = capture(&ns, "mca", stop.clone());
        rx.recv_timeout(Duration::from_secs(5))
            .expect("capture ready");

        let s = Snooper::new(SnoopConfig::default());
        s.set_fast_leave(PortId(1), true);
        let t0 = Instant::now();
        let g4 = GroupAddr::V4(Ipv4Addr::new(239, 1, 2, 3));
        let g6 = GroupAddr::V6("ff05::1:3".parse().unwrap());
        let join = |spec: &str| {
            Kid(Command::new("ip")
                .args(["netns", "exec", &ns, "socat", "-u", spec, "-"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("socat"))
        };
        let r4 = join("UDP4-RECV:5000,ip-add-membership=239.1.2.3:mca");
        let r6 = join("UDP6-RECV:5001,ipv6-join-group=[ff05::1:3]:mca");
        assert!(
            feed_until(&s, &rx, t0, |s, now| has(s, g4, now) && has(s, g6, now)),
            "the kernel's reports were learnt: {:?} {:?}",
            s.entries(Millis(t0.elapsed().as_millis() as u64)),
            s.stats()
        );
        let st = s.stats();
        assert!(st.reports >= 2);
        assert_eq!(
            st.drop_bad_checksum + st.drop_bad_length + st.drop_no_router_alert,
            0
        );
        // Closing the sockets makes the kernel leave: TO_IN{} records, IGMPv2 leave or
        // MLDv1 done — none for IGMPv1.
        drop(r4);
        drop(r6);
        let v1 = igmp == 1;
        assert!(
            feed_until(&s, &rx, t0, |s, now| (v1 || !has(s, g4, now))
                && !has(s, g6, now)),
            "the kernel's leaves were seen: {:?}",
            s.stats()
        );
        let now = Millis(t0.elapsed().as_millis() as u64);
        if v1 {
            assert!(has(&s, g4, now), "an IGMPv1 membership has no leave");
            assert!(s.stats().fast_leaves >= 1);
        } else {
            assert!(s.stats().leaves >= 2 && s.stats().fast_leaves >= 2);
        }
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn kernel_igmpv3_and_mldv2_reports() {
        kernel_join_leave("c", 0, 0);
    }

    #[test]
    fn kernel_igmpv2_and_mldv1_reports() {
        kernel_join_leave("d", 2, 1);
    }

    #[test]
    fn kernel_igmpv1_reports() {
        kernel_join_leave("e", 1, 2);
    }

    /// The Linux bridge as querier (mcast_querier 1, IGMPv3, speaking from its address):
    /// its queries are valid, make the port a router port, and win the election against
    /// our querier configured with a higher address.
    #[test]
    fn kernel_bridge_querier() {
        let ns = format!("rsmq{}", std::process::id());
        if crate::prereq::skip_without(
            "a network namespace",
            ip(&["netns", "add", &ns]),
            "`ip netns add` needs root and iproute2",
        ) {
            return;
        }
        let _guard = Netns(ns.clone());
        assert!(ip(&[
            "-n", &ns, "link", "add", "mqa", "type", "veth", "peer", "name", "mqb"
        ]));
        assert!(ip(&[
            "-n",
            &ns,
            "link",
            "add",
            "mqbr",
            "type",
            "bridge",
            "mcast_snooping",
            "1",
            "mcast_querier",
            "1",
            "mcast_query_use_ifaddr",
            "1",
            "mcast_igmp_version",
            "3",
            "mcast_mld_version",
            "2",
        ]));
        assert!(ip(&["-n", &ns, "link", "set", "mqb", "master", "mqbr"]));
        assert!(ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            "198.18.77.2/24",
            "dev",
            "mqbr"
        ]));
        assert!(ip(&["-n", &ns, "link", "set", "mqb", "up"]));
        assert!(ip(&["-n", &ns, "link", "set", "mqa", "up"]));

        let stop = Arc::new(AtomicBool::new(false));
        let (rx, _inject) = capture(&ns, "mqa", stop.clone());
        rx.recv_timeout(Duration::from_secs(5))
            .expect("capture ready");
        // The bridge queries as soon as it comes up.
        assert!(ip(&["-n", &ns, "link", "set", "mqbr", "up"]));

        let mut cfg = SnoopConfig::default();
        cfg.querier.enabled = true;
        cfg.querier.ip4 = Ipv4Addr::new(198, 18, 77, 9);
        let s = Snooper::new(cfg);
        let t0 = Instant::now();
        let router_v4 = |s: &Snooper, now: Millis| {
            s.routers(now)
                .iter()
                .any(|r| r.port == PortId(1) && r.family == switch::mcast::Family::V4)
        };
        assert!(
            feed_until(&s, &rx, t0, router_v4),
            "the bridge's query made a router port: {:?}",
            s.stats()
        );
        let now = Millis(t0.elapsed().as_millis() as u64);
        let q = s.queriers(now);
        let v4 = q
            .iter()
            .find(|q| q.vid == 1 && q.family == switch::mcast::Family::V4)
            .expect("VLAN 1 known");
        assert_eq!(
            v4.other,
            Some(switch::mcast::NodeAddr::V4(Ipv4Addr::new(198, 18, 77, 2)))
        );
        // Our querier stays quiet for IGMP while the bridge is the querier.
        assert!(s
            .tick(now)
            .iter()
            .all(|q| q.family != switch::mcast::Family::V4));
        let st = s.stats();
        assert!(st.queries >= 1);
        assert_eq!(
            st.drop_bad_checksum + st.drop_bad_length + st.drop_no_router_alert,
            0
        );
        stop.store(true, Ordering::Relaxed);
    }

    /// Our querier's frames, injected into a veth, are accepted by the Linux stack behind
    /// it: it answers our general queries with what only a query triggers — current-state
    /// (IS_EX) records to IGMPv3/MLDv2 queries, v2/MLDv1 reports (compatibility mode) to
    /// IGMPv2/MLDv1 queries.
    fn kernel_answers(tag: &str, igmp: QueryKind, mld: QueryKind) {
        use switch::mcast::wire::{parse, Message, RecordType, Version};
        let ns = format!("rsmr{tag}{}", std::process::id());
        if crate::prereq::skip_without(
            "a network namespace",
            ip(&["netns", "add", &ns]),
            "`ip netns add` needs root and iproute2",
        ) {
            return;
        }
        let _guard = Netns(ns.clone());
        assert!(ip(&[
            "-n", &ns, "link", "add", "mra", "type", "veth", "peer", "name", "mrb"
        ]));
        assert!(ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            "198.18.78.2/24",
            "dev",
            "mrb"
        ]));
        assert!(ip(&["-n", &ns, "link", "set", "mrb", "up"]));
        assert!(ip(&["-n", &ns, "link", "set", "mra", "up"]));
        let stop = Arc::new(AtomicBool::new(false));
        let (rx, inject) = capture(&ns, "mra", stop.clone());
        rx.recv_timeout(Duration::from_secs(5))
            .expect("capture ready");
        let join = |spec: &str| {
            Kid(Command::new("ip")
                .args(["netns", "exec", &ns, "socat", "-u", spec, "-"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("socat"))
        };
        let _r4 = join("UDP4-RECV:5002,ip-add-membership=239.3.3.3:mrb");
        let _r6 = join("UDP6-RECV:5003,ipv6-join-group=[ff05::3:3]:mrb");

        let mut cfg = SnoopConfig {
            query_interval_ms: 2000,
            query_response_ms: 1000,
            ..SnoopConfig::default()
        };
        cfg.querier.enabled = true;
        cfg.querier.ip4 = Ipv4Addr::new(198, 18, 78, 1);
        cfg.querier.igmp = igmp;
        cfg.querier.mld = mld;
        let s = Snooper::new(cfg);
        s.set_vlan(
            1,
            switch::mcast::VlanSnoopConfig {
                snooping: true,
                querier: true,
                unregistered: UnregisteredPolicy::Flood,
            },
        );
        let g4 = GroupAddr::V4(Ipv4Addr::new(239, 3, 3, 3));
        let g6 = GroupAddr::V6("ff05::3:3".parse().unwrap());
        let (mut seen4, mut seen6) = (false, false);
        let t0 = Instant::now();
        while !(seen4 && seen6) && t0.elapsed() < Duration::from_secs(15) {
            // The querier repeats (query interval 2 s): the first query may beat the joins.
            for q in s.tick(Millis(t0.elapsed().as_millis() as u64)) {
                inject.send(q.frame).expect("inject");
            }
            let Ok(f) = rx.recv_timeout(Duration::from_millis(100)) else {
                continue;
            };
            if f.len() <= 14 {
                continue;
            }
            let Ok(Some(c)) = parse(&f[14..]) else {
                continue;
            };
            match c.msg {
                Message::ReportV3 { records } => {
                    for r in records
                        .iter()
                        .filter(|r| r.kind == RecordType::ModeIsExclude)
                    {
                        seen4 |= igmp == QueryKind::IgmpV3 && r.group == g4;
                        seen6 |= mld == QueryKind::MldV2 && r.group == g6;
                    }
                }
                Message::Report { version, group } => {
                    seen4 |= igmp == QueryKind::IgmpV2 && version == Version::IgmpV2 && group == g4;
                    seen6 |= mld == QueryKind::MldV1 && version == Version::MldV1 && group == g6;
                }
                _ => {}
            }
        }
        assert!(seen4, "answer to our {igmp:?} general query");
        assert!(seen6, "answer to our {mld:?} general query");
        if igmp == QueryKind::IgmpV3 {
            // Group-specific queries from leave processing. Stop the general queries and
            // let answers to them (max response 1 s) pass; then a leave on another port
            // makes our querier ask each group, and only that query can bring new IS_EX
            // records (the kernel's own state changes are TO_EX).
            let t1 = Instant::now();
            while t1.elapsed() < Duration::from_millis(1500) {
                let _ = rx.recv_timeout(Duration::from_millis(100));
            }
            let now = Millis(t0.elapsed().as_millis() as u64);
            let h4 = Ipv4Addr::new(198, 18, 78, 50);
            let h6: Ipv6Addr = "fe80::50".parse().unwrap();
            let mut gsq = Vec::new();
            for (join, leave) in [
                (
                    igmp_v2_report(h4, Ipv4Addr::new(239, 3, 3, 3)),
                    igmp_leave(h4, Ipv4Addr::new(239, 3, 3, 3)),
                ),
                (
                    mld_v1_report(h6, "ff05::3:3".parse().unwrap()),
                    mld_done(h6, "ff05::3:3".parse().unwrap()),
                ),
            ] {
                s.on_control(PortId(2), 1, &join, now).expect("join");
                gsq.extend(
                    s.on_control(PortId(2), 1, &leave, now)
                        .expect("leave")
                        .queries,
                );
            }
            assert_eq!(gsq.len(), 2, "one group-specific query per family");
            for q in gsq {
                assert!(q.group.is_some());
                inject.send(q.frame).expect("inject");
            }
            let (mut gs4, mut gs6) = (false, false);
            let t2 = Instant::now();
            while !(gs4 && gs6) && t2.elapsed() < Duration::from_secs(5) {
                let Ok(f) = rx.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                if let Some(Ok(Some(c))) = f.get(14..).map(parse) {
                    if let Message::ReportV3 { records } = c.msg {
                        for r in records
                            .iter()
                            .filter(|r| r.kind == RecordType::ModeIsExclude)
                        {
                            gs4 |= r.group == g4;
                            gs6 |= r.group == g6;
                        }
                    }
                }
            }
            assert!(
                gs4 && gs6,
                "answers to our group-specific queries: {gs4} {gs6}"
            );
        }
        stop.store(true, Ordering::Relaxed);
    }

    #[test]
    fn kernel_answers_igmpv3_and_mldv2_queries() {
        kernel_answers("a", QueryKind::IgmpV3, QueryKind::MldV2);
    }

    #[test]
    fn kernel_answers_igmpv2_and_mldv1_queries() {
        kernel_answers("b", QueryKind::IgmpV2, QueryKind::MldV1);
    }
}
