//! VXLAN ports in the daemon (issue 23): `ringswitch run` in a "host" network namespace
//! switches a container (AF_PACKET on a veth) and a `vxlan:` port; a second host, joined
//! by an underlay veth, is either Linux (`ip link add vx0 type vxlan` on a bridge with its
//! container) or a second `ringswitch run`. Ping and a TCP transfer with its content
//! compared, both ways, IPv4 and IPv6; `ctl fdb` names the remote VTEP a MAC was learned
//! behind, `ctl stats` counts malformed VXLAN packets under their reasons and TCP frames
//! cut smaller to fit the underlay. In the two-ringswitch case each host also runs a QEMU
//! guest whose TSO frames are cut to the underlay MTU on their way to the other host.
//!
//! Addresses: containers 198.18.0.N/24 and 2001:db8::N/64, guests 198.18.0.1N and
//! 2001:db8::1N (the overlay), hosts 198.18.100.N/24 or 2001:db8:100::N/64 (the
//! underlay, MTU 1500).

mod common;

use common::{
    mac, ringswitch_command, Guest, GuestSpec, Netns, NicSpec, Process, TempDir, TestScope,
};
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

    /// Port `name`'s entry in `ctl ports --json`.
    fn port(&self, name: &str) -> Value {
        let p = self.json(&["ports"]);
        p["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|x| x["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no port {name} in {p:#}"))
    }

    /// Counter `field` of port `name` in `ctl stats --json`.
    fn port_stat(&self, name: &str, field: &str) -> u64 {
        let s = self.json(&["stats"]);
        s["stats"]["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .and_then(|p| p[field].as_u64())
            .unwrap_or_else(|| panic!("no {field} of {name} in {s:#}"))
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

/// Two ringswitch hosts over an IPv6 underlay, each with a container (MTU 1500) and a
/// QEMU guest (vhost-user, MTU 1500, TSO negotiated): host A's ports are on VLAN 10 (the
/// VNI maps onto it), B's untagged. Everything reaches everything over VXLAN, v4 and v6,
/// with ping and TCP streams whose content is compared. TCP frames do not fit the
/// underlay once encapsulated and are cut smaller (counted as resegmented), none is
/// dropped for its size; the guests' streams leave their NICs as TSO frames (more bytes
/// per frame than an MTU-sized frame has) and arrive whole at the remote guest.
#[test]
fn two_ringswitch_hosts() {
    if skip() || common::skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start("vxlan_two", Duration::from_secs(240));
    let _slot = common::heavy_slot();
    let dir = TempDir::new("vxlan2").unwrap();
    let u = underlay(true);
    let c1 = container(&u.a, 1);
    let c2 = container(&u.b, 2);
    let (sock_a, sock_b) = (dir.path().join("ga.sock"), dir.path().join("gb.sock"));
    let a = start(
        &u.a,
        dir.path(),
        &[
            "afpacket:ifname=h1,vlan=10".into(),
            vxlan_spec(u.a_ip, u.b_ip, ",vlan=10"),
            format!(
                "vhost-user:path={},mac={},vlan=10",
                sock_a.display(),
                mac(0xa)
            ),
        ],
    );
    let b = start(
        &u.b,
        dir.path(),
        &[
            "afpacket:ifname=h2".into(),
            vxlan_spec(u.b_ip, u.a_ip, ""),
            format!("vhost-user:path={},mac={}", sock_b.display(), mac(0xb)),
        ],
    );
    // Both guests boot (in parallel) while the containers talk.
    let ga = boot_guest("vxga", &sock_a, 0xa, GA);
    let gb = boot_guest("vxgb", &sock_b, 0xb, GB);
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
    ga.wait_ready(BOOT).unwrap();
    gb.wait_ready(BOOT).unwrap();
    // Every remote pair: guest ↔ guest, guest ↔ container, both families.
    for (g, to) in [(&ga, GB), (&ga, CONTAINER2), (&gb, CONTAINER1)] {
        g.ping_ok(to.0, 50, STEP);
        g.ping_ok(to.1, 50, STEP);
    }
    ping(&c2, GA.0);
    ping(&c1, GB.1);
    assert_eq!(a.vtep_of(&mac(0xb)).as_deref(), Some(u.b_ip));
    assert_eq!(b.vtep_of(&mac(0xa)).as_deref(), Some(u.a_ip));
    // TSO as the guests negotiated it, and their streams to each other (v4 one way, v6
    // the other).
    for (d, sock, feature) in [(&a, &sock_a, "HOST_TSO4"), (&b, &sock_b, "HOST_TSO6")] {
        let port = d.port(&sock.display().to_string());
        assert!(
            port["features"].to_string().contains(feature),
            "{feature} not negotiated: {port:#}"
        );
    }
    for g in [&ga, &gb] {
        let k = g.run_ok("ethtool -k eth0", STEP);
        assert!(k.contains("tcp-segmentation-offload: on"), "{k}");
    }
    guest_stream(&a, &sock_a, &ga, &gb, GB.0, 5010);
    guest_stream(&b, &sock_b, &gb, &ga, GA.1, 5011);
    for d in [&a, &b] {
        let s = d.vxlan_stats();
        let resegmented = s["vxlan"]["resegmented"].as_u64().unwrap_or(0);
        assert!(resegmented > 0, "no frame was resegmented: {s:#}");
        assert_eq!(d.drops("vxlan_mtu_exceeded"), 0, "{s:#}");
        assert!(d.ctl(&["stats"]).contains("VXLAN-RESEGMENTED"));
    }
}

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);
/// The guests' and containers' addresses (v4, v6).
const GA: (&str, &str) = ("198.18.0.11", "2001:db8::11");
const GB: (&str, &str) = ("198.18.0.12", "2001:db8::12");
const CONTAINER1: (&str, &str) = ("198.18.0.1", "2001:db8::1");
const CONTAINER2: (&str, &str) = ("198.18.0.2", "2001:db8::2");
/// Bytes of each guest's stream (4 MiB).
const GUEST_STREAM_KIB: u32 = 4096;

/// A guest on vhost-user socket `sock` with MAC `mac(n)` and addresses `ip`.
fn boot_guest(name: &str, sock: &Path, n: u8, ip: (&str, &str)) -> Guest {
    common::wait_path(sock, Duration::from_secs(20)).unwrap();
    let mut spec = GuestSpec::new(name);
    spec.nics.push(NicSpec::new(sock, &mac(n)));
    spec.ip.push(format!("{}/24", ip.0));
    spec.ip6.push(format!("{}/64", ip.1));
    Guest::start(spec).unwrap()
}

/// A TCP stream of random bytes from guest `from` (on `d`'s port `sock`) to `to_addr`
/// in guest `to`: its SHA-256 at the receiver must be the sender's; the sender's frames
/// carried more bytes each than an MTU-sized frame can (TSO), and `d`'s VXLAN port cut
/// frames to fit the underlay while it ran.
fn guest_stream(d: &Daemon, sock: &Path, from: &Guest, to: &Guest, to_addr: &str, port: u16) {
    let (listen, connect) = if to_addr.contains(':') {
        (
            format!("TCP6-LISTEN:{port},reuseaddr"),
            format!("TCP6:[{to_addr}]:{port},retry=50,interval=0.1"),
        )
    } else {
        (
            format!("TCP4-LISTEN:{port},reuseaddr"),
            format!("TCP4:{to_addr}:{port},retry=50,interval=0.1"),
        )
    };
    to.run_ok(
        &format!(
            "rm -f /tmp/rx{port}.sum; ( socat -u {listen} - | sha256sum >/tmp/rx{port}.part; \
             mv /tmp/rx{port}.part /tmp/rx{port}.sum ) </dev/null >/dev/null 2>&1 &"
        ),
        STEP,
    );
    let name = sock.display().to_string();
    let (rx0, bytes0) = (
        d.port_stat(&name, "rx_packets"),
        d.port_stat(&name, "rx_bytes"),
    );
    let reseg0 = d.vxlan_stats()["vxlan"]["resegmented"]
        .as_u64()
        .unwrap_or(0);
    let sent = from.run_ok(
        &format!(
            "dd if=/dev/urandom of=/tmp/tx bs=1k count={GUEST_STREAM_KIB} 2>/dev/null && \
             socat -u OPEN:/tmp/tx {connect} && sha256sum </tmp/tx"
        ),
        STEP,
    );
    let sent_sum = sent.split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(sent_sum.len(), 64, "{sent}");
    let got = to.run_ok(
        &format!(
            "i=0; while [ ! -e /tmp/rx{port}.sum ] && [ $i -lt 300 ]; do sleep 0.1; \
             i=$((i + 1)); done; cat /tmp/rx{port}.sum"
        ),
        STEP,
    );
    assert_eq!(
        got.split_whitespace().next(),
        Some(sent_sum.as_str()),
        "{} -> {to_addr}: the stream arrived altered or not at all: {got}",
        from.name()
    );
    let frames = d.port_stat(&name, "rx_packets") - rx0;
    let bytes = d.port_stat(&name, "rx_bytes") - bytes0;
    assert!(frames > 0, "no frame from {}", from.name());
    // 1514 bytes is the largest frame of a 1500-byte MTU: more on average means TSO.
    assert!(
        bytes / frames > 1514,
        "{}: {bytes} bytes in {frames} frames, no TSO",
        from.name()
    );
    let reseg = d.vxlan_stats()["vxlan"]["resegmented"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        reseg > reseg0,
        "{}'s TSO frames were not cut to the underlay MTU: {reseg0} -> {reseg}",
        from.name()
    );
    eprintln!(
        "{} -> {to_addr}: {GUEST_STREAM_KIB} KiB intact, {frames} frames of {} bytes on \
         average from the guest, {} cut to the underlay",
        from.name(),
        bytes / frames,
        reseg - reseg0
    );
}
