//! VXLAN ports in the daemon (issue 23): `ringswitch run` in a "host" network namespace
//! switches a container (AF_PACKET on a veth) and a `vxlan:` port; a second host, joined
//! by an underlay veth, is either Linux (`ip link add vx0 type vxlan` on a bridge with its
//! container) or a second `ringswitch run`. Ping and a TCP transfer with its content
//! compared, both ways, IPv4 and IPv6; `ctl fdb` names the remote VTEP a MAC was learned
//! behind, `ctl stats` counts malformed VXLAN packets under their reasons and TCP frames
//! cut smaller to fit the underlay.
//!
//! Addresses: containers 198.18.0.N/24 and 2001:db8::N/64 (the overlay), hosts
//! 198.18.100.N/24 or 2001:db8:100::N/64 (the underlay, MTU 1500).

mod common;

use common::{ringswitch_command, Netns, Process, TempDir, TestScope};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const VNI: u32 = 4242;
const PORT: &str = "vxlan4242";
/// Bytes of each TCP transfer.
const TRANSFER: usize = 3 << 20;

fn skip() -> bool {
    let tool = |t: &str| {
        std::process::Command::new(t)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    common::skip_without("root", common::is_root(), "run the e2e tests as root")
        || common::skip_without("socat", tool("socat"), "cargo xtask deps installs it")
}

/// The underlay: hosts A and B joined by veth `ul`.
struct Underlay {
    a: Netns,
    b: Netns,
    a_ip: &'static str,
    b_ip: &'static str,
    v6: bool,
}

fn underlay(v6: bool) -> Underlay {
    let a = Netns::new("vxA").unwrap();
    let b = Netns::new("vxB").unwrap();
    a.veth("ul", &b, "ul").unwrap();
    let (a_ip, b_ip, len) = if v6 {
        ("2001:db8:100::1", "2001:db8:100::2", 64)
    } else {
        ("198.18.100.1", "198.18.100.2", 24)
    };
    a.addr("ul", &format!("{a_ip}/{len}")).unwrap();
    b.addr("ul", &format!("{b_ip}/{len}")).unwrap();
    Underlay {
        a,
        b,
        a_ip,
        b_ip,
        v6,
    }
}

/// Container `i`: a namespace whose `eth0` is a veth to `h<i>` in `host`, with
/// 198.18.0.i/24 and 2001:db8::i/64.
fn container(host: &Netns, i: u8) -> Netns {
    let c = Netns::new(&format!("vxc{i}")).unwrap();
    host.veth(&format!("h{i}"), &c, "eth0").unwrap();
    c.addr("eth0", &format!("198.18.0.{i}/24")).unwrap();
    c.addr("eth0", &format!("2001:db8::{i}/64")).unwrap();
    c
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    ns.exec("cat", &[&format!("/sys/class/net/{dev}/address")])
        .unwrap()
        .trim()
        .to_string()
}

/// Linux's side of the interop: `vx0` (VNI, dstport 4789) and the container's host end
/// `h<i>` on bridge `br0`. vx0's MTU is the underlay's less its headers (1450 over IPv4,
/// 1430 over IPv6), and the container's the same (the bridge drops longer frames).
fn linux_host(u: &Underlay, c: &Netns, i: u8) {
    let b = &u.b;
    let vni = VNI.to_string();
    b.ip(&[
        "link", "add", "vx0", "type", "vxlan", "id", &vni, "local", u.b_ip, "remote", u.a_ip,
        "dstport", "4789", "dev", "ul",
    ])
    .unwrap();
    b.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    for l in ["vx0", &format!("h{i}")] {
        b.ip(&["link", "set", l, "master", "br0"]).unwrap();
    }
    for l in ["vx0", "br0"] {
        b.ip(&["link", "set", l, "up"]).unwrap();
    }
    let mtu = if u.v6 { "1430" } else { "1450" };
    c.ip(&["link", "set", "eth0", "mtu", mtu]).unwrap();
}

struct Daemon {
    ctl: PathBuf,
    _proc: Process,
}

/// `ringswitch run --workers 1` in `ns` with `ports`, ready once it says so.
fn start(ns: &Netns, dir: &Path, ports: &[String]) -> Daemon {
    let ctl = dir.join(format!("{}.sock", ns.name()));
    let mut args: Vec<String> = vec!["run".into(), "--workers".into(), "1".into()];
    for p in ports {
        args.extend(["--port".into(), p.clone()]);
    }
    args.extend(["--ctl".into(), ctl.display().to_string()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = ns
        .spawn("ringswitch", env!("CARGO_BIN_EXE_ringswitch"), &argv)
        .expect("spawn ringswitch");
    proc.wait_for("ringswitch running", Duration::from_secs(20))
        .expect("ringswitch starts");
    Daemon { ctl, _proc: proc }
}

impl Daemon {
    fn ctl(&self, args: &[&str]) -> String {
        let o = ringswitch_command()
            .arg("ctl")
            .arg("--ctl")
            .arg(&self.ctl)
            .args(args)
            .output()
            .expect("ctl");
        assert!(
            o.status.success(),
            "ctl {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// A ctl command that must fail: its stderr.
    fn ctl_err(&self, args: &[&str]) -> String {
        let o = ringswitch_command()
            .arg("ctl")
            .arg("--ctl")
            .arg(&self.ctl)
            .args(args)
            .output()
            .expect("ctl");
        assert!(!o.status.success(), "ctl {args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ctl(&a)).expect("ctl json")
    }

    /// The VTEP `ctl fdb --json` shows for `mac` on the vxlan port, if any.
    fn vtep_of(&self, mac: &str) -> Option<String> {
        let v = self.json(&["fdb"]);
        v["entries"]
            .as_array()?
            .iter()
            .find(|e| e["mac"] == mac && e["port"] == PORT)
            .and_then(|e| e["vtep"].as_str())
            .map(str::to_string)
    }

    /// The vxlan port's entry in `ctl stats --json`.
    fn vxlan_stats(&self) -> Value {
        let s = self.json(&["stats"]);
        s["stats"]["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == PORT))
            .cloned()
            .unwrap_or_else(|| panic!("no {PORT} in {s:#}"))
    }

    fn drops(&self, reason: &str) -> u64 {
        self.vxlan_stats()["drops"]
            .as_array()
            .and_then(|d| d.iter().find(|d| d[0] == reason))
            .and_then(|d| d[1].as_u64())
            .unwrap_or(0)
    }
}

fn vxlan_spec(local: &str, remote: &str, extra: &str) -> String {
    format!("vxlan:local={local},remote={remote},vni={VNI}{extra}")
}

fn ping(from: &Netns, to: &str) {
    if let Err(e) = from.exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", to]) {
        panic!("ping {to} from {}: {e}", from.name());
    }
}

/// Deterministic, incompressible-looking test data (xorshift64).
fn data(seed: u64) -> Vec<u8> {
    let mut s = seed | 1;
    let mut out = Vec::with_capacity(TRANSFER);
    while out.len() < TRANSFER {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// Sends a file over TCP from `from` to `to_addr` (in `to`) with socat and compares what
/// arrived with what was sent.
fn transfer(dir: &Path, from: &Netns, to: &Netns, to_addr: &str, port: u16) {
    let tag = format!("{}-{port}", to.name());
    let (tx, rx) = (dir.join(format!("{tag}.tx")), dir.join(format!("{tag}.rx")));
    let sent = data(u64::from(port));
    std::fs::write(&tx, &sent).unwrap();
    let (listen, connect) = if to_addr.contains(':') {
        (
            format!("TCP6-LISTEN:{port},reuseaddr,bind=[{to_addr}]"),
            format!("TCP6:[{to_addr}]:{port},retry=50,interval=0.1"),
        )
    } else {
        (
            format!("TCP4-LISTEN:{port},reuseaddr,bind={to_addr}"),
            format!("TCP4:{to_addr}:{port},retry=50,interval=0.1"),
        )
    };
    let out = format!("OPEN:{},creat,trunc", rx.display());
    let mut srv = to
        .spawn("socat-rx", "socat", &["-u", &listen, &out])
        .unwrap();
    let input = format!("OPEN:{}", tx.display());
    if let Err(e) = from.exec("timeout", &["20", "socat", "-u", &input, &connect]) {
        panic!("TCP to {to_addr}: {e}");
    }
    let st = srv.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(st.success(), "receiving socat: {st}");
    let got = std::fs::read(&rx).unwrap();
    assert!(
        got == sent,
        "TCP to {to_addr}: {} bytes arrived of {}, content {}",
        got.len(),
        sent.len(),
        if got.len() == sent.len() {
            "differs"
        } else {
            "cut short"
        }
    );
}

/// One UDP datagram `bytes` from `ns` (bound to `src`) to `dst`:4789, by socat from a
/// single printf write.
fn send_udp(ns: &Netns, src: &str, dst: &str, bytes: &[u8]) {
    let octal: String = bytes.iter().map(|b| format!("\\{b:03o}")).collect();
    let (family, d, s) = if dst.contains(':') {
        ("UDP6", format!("[{dst}]"), format!("[{src}]"))
    } else {
        ("UDP4", dst.to_string(), src.to_string())
    };
    ns.sh(&format!(
        "printf '{octal}' | socat -u - {family}-DATAGRAM:{d}:4789,bind={s}"
    ))
    .unwrap();
}

/// Malformed VXLAN packets from B's address (I flag clear, another VNI, cut short) and a
/// good one from an address that is not a remote: each a drop of the vxlan port under
/// its reason in `ctl stats`.
fn malformed_are_counted(u: &Underlay, d: &Daemon) {
    let stranger = if u.v6 {
        "2001:db8:100::3"
    } else {
        "198.18.100.3"
    };
    let len = if u.v6 { 64 } else { 24 };
    u.b.addr("ul", &format!("{stranger}/{len}")).unwrap();
    let header = |flags: u8, vni: u32| {
        let v = vni.to_be_bytes();
        let mut h = vec![flags, 0, 0, 0, v[1], v[2], v[3], 0];
        // An inner broadcast frame of an unassigned EtherType, padded to 60 bytes.
        h.extend_from_slice(&[0xff; 6]);
        h.extend_from_slice(&[2, 0, 0, 0, 0, 0x77, 0x88, 0xb5]);
        h.extend_from_slice(&[0; 46]);
        h
    };
    let reasons = [
        "vxlan_bad_flags",
        "vxlan_wrong_vni",
        "vxlan_truncated",
        "vxlan_unknown_vtep",
    ];
    let before: Vec<u64> = reasons.iter().map(|r| d.drops(r)).collect();
    send_udp(&u.b, u.b_ip, u.a_ip, &header(0x00, VNI));
    send_udp(&u.b, u.b_ip, u.a_ip, &header(0x08, VNI + 1));
    send_udp(&u.b, u.b_ip, u.a_ip, &header(0x08, VNI)[..6]);
    send_udp(&u.b, stranger, u.a_ip, &header(0x08, VNI));
    // Arrival, not speed: the packets are on their way once socat returned.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now: Vec<u64> = reasons.iter().map(|r| d.drops(r)).collect();
        if now.iter().zip(&before).all(|(n, b)| n > b) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "drops {reasons:?} went from {before:?} to {now:?}: {:#}",
            d.vxlan_stats()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Host A ringswitch, host B Linux vxlan + bridge. The v4 run adds the vxlan port at run
/// time (`ctl add-port`) and removes it at the end (`ctl del-port`: its sockets close);
/// the v6 run starts with it (`--port`).
fn interop(v6: bool) {
    let dir = TempDir::new("vxlan").unwrap();
    let u = underlay(v6);
    let c1 = container(&u.a, 1);
    let c2 = container(&u.b, 2);
    linux_host(&u, &c2, 2);
    let vx = vxlan_spec(u.a_ip, u.b_ip, "");
    let mut ports = vec!["afpacket:ifname=h1".to_string()];
    if v6 {
        ports.push(vx.clone());
    }
    let d = start(&u.a, dir.path(), &ports);
    if !v6 {
        let out = d.ctl(&["add-port", &vx]);
        assert!(out.contains(PORT) && out.contains("vxlan"), "{out}");
        // A second VNI on the same UDP endpoint would share its receive sockets.
        let other = vxlan_spec(u.a_ip, u.b_ip, "").replace("vni=4242", "vni=43");
        let e = d.ctl_err(&["add-port", &other]);
        assert!(e.contains("is already vxlan port"), "{e}");
    }
    let p = d.json(&["ports"]);
    let port = p["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == PORT))
        .unwrap_or_else(|| panic!("{p:#}"));
    assert_eq!(port["kind"], "vxlan", "{port:#}");
    assert_eq!(port["vxlan"]["vni"], VNI, "{port:#}");
    assert_eq!(port["vxlan"]["remotes"][0], u.b_ip, "{port:#}");
    // Floods (ARP, neighbour solicitations) and then learned unicast, both ways.
    ping(&c1, "198.18.0.2");
    ping(&c2, "198.18.0.1");
    ping(&c1, "2001:db8::2");
    ping(&c2, "2001:db8::1");
    transfer(dir.path(), &c1, &c2, "198.18.0.2", 5001);
    transfer(dir.path(), &c2, &c1, "2001:db8::1", 5002);
    // The container behind B was learned with B's address as its VTEP.
    let m2 = mac_of(&c2, "eth0");
    assert_eq!(
        d.vtep_of(&m2).as_deref(),
        Some(u.b_ip),
        "{}",
        d.ctl(&["fdb"])
    );
    let fdb = d.ctl(&["fdb"]);
    assert!(fdb.lines().next().unwrap_or("").ends_with("VTEP"), "{fdb}");
    let line = fdb.lines().find(|l| l.starts_with(&m2)).unwrap_or("");
    assert!(
        line.contains(PORT) && line.ends_with(u.b_ip),
        "{m2} not shown behind {}: {fdb}",
        u.b_ip
    );
    // Host A's own container is on the afpacket port, with no VTEP.
    assert_eq!(d.vtep_of(&mac_of(&c1, "eth0")), None);
    malformed_are_counted(&u, &d);
    assert!(d.ctl(&["stats"]).contains("vxlan_bad_flags"));
    if !v6 {
        d.ctl(&["del-port", PORT]);
        let left = u.a.exec("ss", &["-Huln", "sport = :4789"]).unwrap();
        assert!(
            left.trim().is_empty(),
            "sockets left after del-port: {left}"
        );
        assert!(!d.ctl(&["ports"]).contains(PORT));
    }
}

#[test]
fn interop_with_linux_vxlan_v4() {
    if skip() {
        return;
    }
    let _scope = TestScope::start("vxlan_linux4", Duration::from_secs(60));
    interop(false);
}

#[test]
fn interop_with_linux_vxlan_v6() {
    if skip() {
        return;
    }
    let _scope = TestScope::start("vxlan_linux6", Duration::from_secs(60));
    interop(true);
}

/// Two ringswitch hosts over an IPv6 underlay, containers at MTU 1500 on both: host A's
/// ports are on VLAN 10 (the VNI maps onto it), B's untagged. Everything reaches
/// everything v4 and v6; TCP frames do not fit the underlay once encapsulated and are
/// cut smaller (counted as resegmented), none is dropped for its size.
#[test]
fn two_ringswitch_hosts() {
    if skip() {
        return;
    }
    let _scope = TestScope::start("vxlan_two", Duration::from_secs(60));
    let dir = TempDir::new("vxlan2").unwrap();
    let u = underlay(true);
    let c1 = container(&u.a, 1);
    let c2 = container(&u.b, 2);
    let a = start(
        &u.a,
        dir.path(),
        &[
            "afpacket:ifname=h1,vlan=10".into(),
            vxlan_spec(u.a_ip, u.b_ip, ",vlan=10"),
        ],
    );
    let b = start(
        &u.b,
        dir.path(),
        &["afpacket:ifname=h2".into(), vxlan_spec(u.b_ip, u.a_ip, "")],
    );
    ping(&c1, "198.18.0.2");
    ping(&c2, "2001:db8::1");
    transfer(dir.path(), &c1, &c2, "2001:db8::2", 5003);
    transfer(dir.path(), &c2, &c1, "198.18.0.1", 5004);
    assert_eq!(
        a.vtep_of(&mac_of(&c2, "eth0")).as_deref(),
        Some(u.b_ip),
        "{}",
        a.ctl(&["fdb"])
    );
    assert_eq!(
        b.vtep_of(&mac_of(&c1, "eth0")).as_deref(),
        Some(u.a_ip),
        "{}",
        b.ctl(&["fdb"])
    );
    for d in [&a, &b] {
        let s = d.vxlan_stats();
        let resegmented = s["vxlan"]["resegmented"].as_u64().unwrap_or(0);
        assert!(resegmented > 0, "no frame was resegmented: {s:#}");
        assert_eq!(d.drops("vxlan_mtu_exceeded"), 0, "{s:#}");
        assert!(d.ctl(&["stats"]).contains("VXLAN-RESEGMENTED"));
    }
}
