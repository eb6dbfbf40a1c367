//! VXLAN ports (RFC 7348) against Linux's vxlan driver and against each other: two
//! "hosts" (network namespaces joined by an underlay veth), a container on each. Host A
//! runs the data plane with a vxlan port and an AF_PACKET port to its container; host B
//! runs either Linux `vxlan` + bridge or a second data plane. Ping and a TCP stream both
//! ways, learned VTEPs, malformed packets counted, and guest-sized TSO frames cut to the
//! underlay MTU without IP fragmentation.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

mod common;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{container, iperf3, ping, prefix, Container, Ns};
use switch::{Mac, Millis, Switch, SwitchConfig};
use uring_net::{Dataplane, DataplaneConfig, PortSpec, VxlanConfig, VxlanStats};

const VNI: u32 = 4242;

struct Underlay {
    a: Ns,
    b: Ns,
    a_ip: String,
    b_ip: String,
}

/// Hosts A and B joined by veth `ul` (198.18.100.0/24 or 2001:db8:100::/64; MTU 1500).
fn underlay(pfx: &str, v6: bool) -> Underlay {
    let a = Ns::new(format!("{pfx}A"));
    let b = Ns::new(format!("{pfx}B"));
    a.ip(&[
        "link", "add", "ul", "type", "veth", "peer", "name", "ul", "netns", &b.name,
    ]);
    let (a_ip, b_ip, len) = if v6 {
        ("2001:db8:100::1", "2001:db8:100::2", "64")
    } else {
        ("198.18.100.1", "198.18.100.2", "24")
    };
    for (ns, ip) in [(&a, a_ip), (&b, b_ip)] {
        ns.ip(&["addr", "add", &format!("{ip}/{len}"), "dev", "ul", "nodad"]);
        ns.ip(&["link", "set", "ul", "up"]);
    }
    Underlay {
        a,
        b,
        a_ip: a_ip.into(),
        b_ip: b_ip.into(),
    }
}

fn dataplane() -> Dataplane {
    let sw = Arc::new(Switch::new(SwitchConfig::default()));
    Dataplane::new(
        sw,
        DataplaneConfig {
            workers: 2,
            ..Default::default()
        },
    )
    .expect("dataplane")
}

/// A data plane in `host` switching `c` (AF_PACKET) and a vxlan port to `remote`.
fn ringswitch_host(
    host: &Ns,
    c: &Container,
    local: &str,
    remote: &str,
) -> (Dataplane, switch::PortId) {
    let dp = dataplane();
    let vx = host.run_in(|| {
        dp.add_port(PortSpec::afpacket(&c.host_if)).unwrap();
        dp.add_port(PortSpec::vxlan(
            "vx0",
            VxlanConfig {
                local: local.parse().unwrap(),
                remotes: vec![remote.parse().unwrap()],
                vni: VNI,
                dstport: 4789,
            },
        ))
        .unwrap()
    });
    (dp, vx)
}

/// Linux vxlan `vx0` (VNI, dstport 4789) and `c`'s host end on bridge `br0` in `host`.
fn linux_host(host: &Ns, c: &Container, local: &str, remote: &str) {
    host.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        &VNI.to_string(),
        "local",
        local,
        "remote",
        remote,
        "dstport",
        "4789",
        "dev",
        "ul",
    ]);
    host.ip(&["link", "add", "br0", "type", "bridge"]);
    host.ip(&["link", "set", "vx0", "master", "br0"]);
    host.ip(&["link", "set", &c.host_if, "master", "br0"]);
    for l in ["vx0", "br0"] {
        host.ip(&["link", "set", l, "up"]);
    }
}

fn vstats(dp: &Dataplane, vx: switch::PortId) -> VxlanStats {
    dp.vxlan(vx).expect("vxlan port").stats()
}

fn report(dp: &Dataplane, vx: switch::PortId) {
    for p in &dp.stats().ports {
        eprintln!(
            "{} {}: rx {} tx {} drops: full {} tx_err {} bad {} switch {:?}",
            p.port,
            p.name,
            p.rx_packets,
            p.tx_packets,
            p.drop_dest_full,
            p.drop_tx_error,
            p.drop_bad_frame,
            p.switch.drops
        );
    }
    eprintln!("vxlan: {:?}", vstats(dp, vx));
}

/// `ip netns exec ns cat /proc/net/snmp`: the namespace's IPv4 `FragCreates` and IPv6
/// `Ip6FragCreates` (fragments its stack made).
fn frag_creates(ns: &Ns) -> u64 {
    let v4 = String::from_utf8_lossy(&ns.exec(&["cat", "/proc/net/snmp"]).stdout).to_string();
    let mut lines = v4.lines().filter(|l| l.starts_with("Ip:"));
    let (names, vals) = (lines.next().unwrap_or(""), lines.next().unwrap_or(""));
    let mut n = names
        .split_whitespace()
        .zip(vals.split_whitespace())
        .find(|(k, _)| *k == "FragCreates")
        .and_then(|(_, v)| v.parse().ok())
        .expect("FragCreates");
    let v6 = String::from_utf8_lossy(&ns.exec(&["cat", "/proc/net/snmp6"]).stdout).to_string();
    for l in v6.lines() {
        let mut it = l.split_whitespace();
        if it.next() == Some("Ip6FragCreates") {
            n += it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    n
}

fn interop(v6: bool) {
    let pfx = prefix(if v6 { "x6" } else { "x4" });
    let u = underlay(&pfx, v6);
    let c1 = container(&u.a, &pfx, 1);
    let c2 = container(&u.b, &pfx, 2);
    // Linux's vx0 has MTU 1450 (1500 minus its headers): the container behind it too.
    c2.ns.ip(&["link", "set", "eth0", "mtu", "1450"]);
    linux_host(&u.b, &c2, &u.b_ip, &u.a_ip);
    let (dp, vx) = ringswitch_host(&u.a, &c1, &u.a_ip, &u.b_ip);
    let r = (|| {
        // Floods (ARP/ND) and learned unicast, both ways, v4 and v6 overlay.
        ping(&c1.ns, &c2.v4)?;
        ping(&c2.ns, &c1.v4)?;
        ping(&c1.ns, &c2.v6)?;
        ping(&c2.ns, &c1.v6)?;
        let ab = iperf3(&c2.ns, &c2.v4, &c1.ns, 1)?;
        let ba = iperf3(&c1.ns, &c1.v4, &c2.ns, 1)?;
        if ab < 1_000_000 || ba < 1_000_000 {
            return Err(format!("TCP moved too little: {ab} / {ba} bytes"));
        }
        Ok(())
    })();
    if let Err(e) = r {
        report(&dp, vx);
        panic!("{e}");
    }
    // The VTEP c2's address was learned behind is host B.
    let mac = Mac(c2.ns.mac("eth0"));
    let port = dp.vxlan(vx).unwrap();
    let b_ip: IpAddr = u.b_ip.parse().unwrap();
    // (Millis(0): any time before the entry ages out; the workers' clock is their own.)
    assert_eq!(port.vtep_of(&mac, Millis(0)), Some(b_ip));
    assert_eq!(frag_creates(&u.a), 0, "host A fragmented outer packets");
    // Malformed VXLAN from B's address, and any VXLAN from an address that is not a
    // remote: each a counted drop, none reaches c1.
    u.b.ip(&[
        "addr",
        "add",
        if v6 {
            "2001:db8:100::3/64"
        } else {
            "198.18.100.3/24"
        },
        "dev",
        "ul",
        "nodad",
    ]);
    let before = vstats(&dp, vx);
    let c1_rx = c1.ns.counter("eth0", "rx_packets");
    let to: SocketAddr = SocketAddr::new(u.a_ip.parse().unwrap(), 4789);
    let good_inner = {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 0x77, 0x88, 0xb5]);
        f.extend_from_slice(&[0u8; 46]);
        f
    };
    let mut bad_flags = switch::vxlan::emit(VNI).to_vec();
    bad_flags[0] = 0;
    bad_flags.extend_from_slice(&good_inner);
    let mut wrong_vni = switch::vxlan::emit(VNI + 1).to_vec();
    wrong_vni.extend_from_slice(&good_inner);
    let truncated = switch::vxlan::emit(VNI)[..6].to_vec();
    let mut from_stranger = switch::vxlan::emit(VNI).to_vec();
    from_stranger.extend_from_slice(&good_inner);
    let stranger = if v6 {
        "[2001:db8:100::3]:0"
    } else {
        "198.18.100.3:0"
    };
    u.b.run_in(|| {
        let s = UdpSocket::bind(SocketAddr::new(u.b_ip.parse().unwrap(), 0)).unwrap();
        for p in [&bad_flags, &wrong_vni, &truncated] {
            s.send_to(p, to).unwrap();
        }
        let s = UdpSocket::bind(stranger.parse::<SocketAddr>().unwrap()).unwrap();
        s.send_to(&from_stranger, to).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let want = |s: &VxlanStats| {
        s.rx_bad_flags > before.rx_bad_flags
            && s.rx_wrong_vni > before.rx_wrong_vni
            && s.rx_truncated > before.rx_truncated
            && s.rx_unknown_vtep > before.rx_unknown_vtep
    };
    while !want(&vstats(&dp, vx)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = vstats(&dp, vx);
    assert!(
        want(&after),
        "malformed packets not all counted: {before:?} -> {after:?}"
    );
    assert!(
        c1.ns.counter("eth0", "rx_packets") < c1_rx + 4,
        "a refused packet reached the container"
    );
    dp.shutdown().unwrap();
}

#[test]
fn interop_with_linux_vxlan_v4() {
    interop(false);
}

#[test]
fn interop_with_linux_vxlan_v6() {
    interop(true);
}

/// Two ringswitch hosts, containers with MTU 1500 on both: TSO frames of MSS 1448 do
/// not fit the underlay once encapsulated and are cut smaller (counted), with no IP
/// fragmentation on the underlay, and TCP flows both ways.
#[test]
fn two_ringswitch_hosts_segment_to_the_underlay_mtu() {
    let pfx = prefix("xx");
    let u = underlay(&pfx, false);
    let c1 = container(&u.a, &pfx, 1);
    let c2 = container(&u.b, &pfx, 2);
    let (dpa, vxa) = ringswitch_host(&u.a, &c1, &u.a_ip, &u.b_ip);
    let (dpb, vxb) = ringswitch_host(&u.b, &c2, &u.b_ip, &u.a_ip);
    let r = (|| {
        ping(&c1.ns, &c2.v4)?;
        ping(&c2.ns, &c1.v6)?;
        let ab = iperf3(&c2.ns, &c2.v4, &c1.ns, 1)?;
        let ba = iperf3(&c1.ns, &c1.v6, &c2.ns, 1)?;
        if ab < 1_000_000 || ba < 1_000_000 {
            return Err(format!("TCP moved too little: {ab} / {ba} bytes"));
        }
        Ok(())
    })();
    if let Err(e) = r {
        report(&dpa, vxa);
        report(&dpb, vxb);
        panic!("{e}");
    }
    let (sa, sb) = (vstats(&dpa, vxa), vstats(&dpb, vxb));
    assert!(
        sa.tx_resegmented > 0 && sb.tx_resegmented > 0,
        "{sa:?} {sb:?}"
    );
    assert_eq!(sa.tx_mtu_exceeded + sb.tx_mtu_exceeded, 0, "{sa:?} {sb:?}");
    assert_eq!(
        frag_creates(&u.a) + frag_creates(&u.b),
        0,
        "outer packets were fragmented"
    );
    dpa.shutdown().unwrap();
    dpb.shutdown().unwrap();
}
