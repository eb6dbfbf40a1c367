//! Port security, storm control, MAC limits and trunk VLANs with containers: network
//! namespaces on veths, their host ends attached to a ringswitch daemon as AF_PACKET ports
//! with the options under test (`--port afpacket:ifname=v1,port-security=on,...` and
//! `ctl set-port` at run time).
//!
//! Counts are exact where the test alone decides what is sent: hostile frames are written
//! by a raw-socket sender (python3) and marked in their padding, a raw-socket counter in
//! the receiving container counts the marked frames that arrive, and `ctl stats --json`
//! must show exactly the drops the switch owes. IPv6 is off in every namespace, so no
//! neighbour discovery or MLD chatter adds frames. Meanwhile another pair of containers
//! pings through the same daemon and must lose nothing.

mod common;

use common::{mac, ringswitch_command, Netns, Process, TempDir, TestScope};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(90);
const START: Duration = Duration::from_secs(30);

/// Raw-socket helper run in a container:
/// `send IFACE COUNT PPS HEX...` sends COUNT frames cycling through the HEX frames at
/// PPS frames per second (0: as fast as possible); `count IFACE SECONDS MARK` prints
/// `ready`, then after SECONDS `count N`: frames received (not sent) containing MARK;
/// `arp IFACE VID SRC_MAC SRC_IP DST_IP` asks who has DST_IP (RFC 826) in 802.1Q VLAN
/// VID (0: untagged) and prints `reply vid=V` (the VLAN the answer arrived in, 0 for
/// untagged; veth hands tags to packet sockets as auxdata, packet(7)) or `none`.
const PY: &str = r#"
import socket, struct, sys, time
mode, ifname = sys.argv[1], sys.argv[2]
if mode == "arp":
    vid, src, sip, dip = int(sys.argv[3]), bytes.fromhex(sys.argv[4]), socket.inet_aton(sys.argv[5]), socket.inet_aton(sys.argv[6])
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((ifname, 0))
    s.setsockopt(263, 8, 1)  # SOL_PACKET, PACKET_AUXDATA
    s.settimeout(0.1)
    tag = struct.pack("!HH", 0x8100, vid) if vid else b""
    req = b"\xff" * 6 + src + tag + b"\x08\x06" + bytes([0, 1, 8, 0, 6, 4, 0, 1]) + src + sip + b"\0" * 6 + dip
    got = None
    for _ in range(3):
        s.send(req.ljust(60, b"\0"))
        end = time.monotonic() + 1.0
        while got is None and time.monotonic() < end:
            try:
                f, anc, _, addr = s.recvmsg(65535, socket.CMSG_SPACE(64))
            except socket.timeout:
                continue
            if addr[2] == socket.PACKET_OUTGOING:
                continue
            rvid = 0
            for level, kind, data in anc:
                if level == 263 and kind == 8 and len(data) >= 20:
                    status, tci = struct.unpack_from("I", data, 0)[0], struct.unpack_from("H", data, 16)[0]
                    if status & 0x10:
                        rvid = tci & 0xfff
            at = 12
            if f[12:14] == b"\x81\x00":
                rvid, at = struct.unpack_from("!H", f, 14)[0] & 0xfff, 16
            arp = f[at + 2:]
            if f[at:at + 2] == b"\x08\x06" and arp[6:8] == b"\0\x02" and arp[14:18] == dip and arp[24:28] == sip:
                got = rvid
        if got is not None:
            break
    print("reply vid=%d" % got if got is not None else "none", flush=True)
elif mode == "send":
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    n, pps = int(sys.argv[3]), float(sys.argv[4])
    frames = [bytes.fromhex(h) for h in sys.argv[5:]]
    t0 = time.monotonic()
    for i in range(n):
        if pps:
            d = t0 + i / pps - time.monotonic()
            if d > 0:
                time.sleep(d)
        s.send(frames[i % len(frames)])
    print("sent", n, flush=True)
else:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((ifname, 0))
    s.settimeout(0.05)
    mark = bytes.fromhex(sys.argv[4])
    end = time.monotonic() + float(sys.argv[3])
    print("ready", flush=True)
    n = 0
    while time.monotonic() < end:
        try:
            f, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] != socket.PACKET_OUTGOING and mark in f:
            n += 1
    print("count", n, flush=True)
"#;

/// Marks the test's frames (in their padding or payload): "rs-portsec".
const MARK: &[u8] = b"rs-portsec";
/// IEEE 802 local experimental EtherType: frames no stack in the containers answers.
const ETH_EXPERIMENTAL: u16 = 0x88b5;
const BROADCAST: [u8; 6] = [0xff; 6];

fn skip() -> bool {
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    let python = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    common::skip_without("root", root, "network namespaces need root; run as root")
        || common::skip_without("python3", python, "cargo xtask deps installs it")
}

fn mac_bytes(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (i, o) in s.split(':').enumerate() {
        m[i] = u8::from_str_radix(o, 16).unwrap();
    }
    m
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// An Ethernet frame padded to the 60-byte minimum, with the test's mark in it.
fn frame(dst: [u8; 6], src: [u8; 6], tag: Option<u16>, ethertype: u16, body: &[u8]) -> String {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(vid) = tag {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f.extend_from_slice(MARK);
    f.resize(f.len().max(60), 0);
    hex(&f)
}

/// A gratuitous ARP reply (RFC 5227 §3 "ARP Announcement" style): `sha` claims `ip`.
fn garp(src: [u8; 6], sha: [u8; 6], ip: [u8; 4]) -> String {
    let mut arp = vec![0, 1, 0x08, 0, 6, 4, 0, 2];
    arp.extend_from_slice(&sha);
    arp.extend_from_slice(&ip);
    arp.extend_from_slice(&BROADCAST);
    arp.extend_from_slice(&ip);
    frame(BROADCAST, src, None, 0x0806, &arp)
}

/// A marked broadcast of the experimental EtherType.
fn bcast(src: [u8; 6], tag: Option<u16>) -> String {
    frame(BROADCAST, src, tag, ETH_EXPERIMENTAL, &[])
}

/// Containers c1..cN (eth0 with MAC 02:72:73:00:00:0n, 198.18.0.n/24 unless the test
/// re-addresses them) on veths v1..vN of the switch namespace; IPv6 off everywhere.
struct Lab {
    sw: Netns,
    c: Vec<Netns>,
}

fn no_ipv6(ns: &Netns) {
    ns.exec(
        "sysctl",
        &[
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
    )
    .unwrap();
}

fn lab(n: u8, addr: bool) -> Lab {
    let sw = Netns::new("psw").unwrap();
    no_ipv6(&sw);
    let mut c = Vec::new();
    for i in 1..=n {
        let ns = Netns::new(&format!("pc{i}")).unwrap();
        // Before the veth exists, so its end here never speaks IPv6 at all.
        no_ipv6(&ns);
        sw.veth(&format!("v{i}"), &ns, "eth0").unwrap();
        ns.ip(&["link", "set", "eth0", "address", &mac(i)]).unwrap();
        if addr {
            ns.addr("eth0", &format!("198.18.0.{i}/24")).unwrap();
        }
        c.push(ns);
    }
    Lab { sw, c }
}

struct Daemon {
    ctl: PathBuf,
    proc: Process,
    _dir: TempDir,
}

fn start(lab: &Lab, ports: &[&str]) -> Daemon {
    let dir = TempDir::new("psec").unwrap();
    let ctl = dir.path().join("ctl.sock");
    let mut args = vec!["run", "--workers", "1", "--ctl", ctl.to_str().unwrap()];
    for p in ports {
        args.extend(["--port", p]);
    }
    let exe = env!("CARGO_BIN_EXE_ringswitch");
    let proc = lab.sw.spawn("ringswitch", exe, &args).unwrap();
    proc.wait_for("ringswitch running", START).unwrap();
    Daemon {
        ctl,
        proc,
        _dir: dir,
    }
}

impl Daemon {
    fn ctl(&self, args: &[&str]) -> String {
        let o = ringswitch_command()
            .arg("ctl")
            .arg("--ctl")
            .arg(&self.ctl)
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ctl {args:?}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ctl(&a)).unwrap()
    }

    /// Drops of `port` by reason, from `ctl stats --json`.
    fn drops(&self, port: &str) -> Vec<(String, u64)> {
        let s = self.json(&["stats"]);
        let p = s["stats"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port)
            .cloned()
            .unwrap_or_else(|| panic!("no port {port}: {s}"));
        p["drops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d[0].as_str().unwrap().to_string(), d[1].as_u64().unwrap()))
            .collect()
    }

    fn drop_count(&self, port: &str, reason: &str) -> u64 {
        self.drops(port)
            .iter()
            .find(|(r, _)| r == reason)
            .map_or(0, |(_, n)| *n)
    }

    /// FDB entries as (mac, vlan, port).
    fn fdb(&self) -> Vec<(String, u64, String)> {
        self.json(&["fdb"])["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["mac"].as_str().unwrap().to_string(),
                    e["vlan"].as_u64().unwrap(),
                    e["port"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    fn fdb_port_of(&self, m: &str) -> Option<String> {
        self.fdb()
            .into_iter()
            .find(|(x, _, _)| x == m)
            .map(|(_, _, p)| p)
    }

    fn stop(mut self) {
        let st = self.proc.stop(Duration::from_secs(20)).unwrap();
        assert!(st.success(), "{st}: {}", self.proc.output().tail(20));
    }
}

fn ping(from: &Netns, to: &str) -> bool {
    from.command("ping")
        .args(["-c", "1", "-W", "1", to])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn reachable(from: &Netns, to: &str) -> bool {
    (0..5).any(|_| ping(from, to))
}

/// `count` frames from `ns`'s `dev`, cycling through `frames`, at `pps` (0: at once).
fn send(ns: &Netns, dev: &str, count: usize, pps: u32, frames: &[String]) {
    let n = count.to_string();
    let pps = pps.to_string();
    let mut args = vec!["-c", PY, "send", dev, &n, &pps];
    args.extend(frames.iter().map(String::as_str));
    ns.exec("python3", &args).unwrap();
}

/// Counts marked frames arriving at `ns`'s eth0 for `secs` seconds.
struct Counter(Process);

impl Counter {
    fn start(ns: &Netns, secs: f32) -> Counter {
        let p = ns
            .spawn(
                "counter",
                "python3",
                &["-c", PY, "count", "eth0", &secs.to_string(), &hex(MARK)],
            )
            .unwrap();
        p.wait_for("ready", Duration::from_secs(10)).unwrap();
        Counter(p)
    }

    fn finish(mut self) -> u64 {
        self.0.wait_exit(Duration::from_secs(30)).unwrap();
        let line = self.0.wait_for("count ", Duration::from_secs(1)).unwrap();
        line.trim().trim_start_matches("count ").parse().unwrap()
    }
}

/// A ping of `n` echoes at 10 per second in the background: the other pair's traffic.
struct Pinger(Process);

impl Pinger {
    fn start(from: &Netns, to: &str, n: u32) -> Pinger {
        let n = n.to_string();
        Pinger(
            from.spawn("pinger", "ping", &["-c", &n, "-i", "0.1", "-W", "1", to])
                .unwrap(),
        )
    }

    /// Asserts every echo was answered.
    fn lossless(mut self, what: &str) {
        let st = self.0.wait_exit(Duration::from_secs(30)).unwrap();
        let out = self.0.output().text();
        assert!(
            st.success() && out.contains(" 0% packet loss"),
            "{what}: {out}"
        );
    }
}

/// `port-security=on` with the container's MAC: gratuitous ARPs claiming the victim's
/// MAC (as Ethernet source, or only as ARP sender) and frames after the container takes
/// the victim's MAC (`ip link set address`) are dropped as `spoofed_source`, exactly as
/// many as were sent, never delivered, and the victim's FDB entry never moves.
#[test]
fn port_security_drops_spoofed_sources() {
    if skip() {
        return;
    }
    let _scope = TestScope::start("port_security", LIMIT);
    let lab = lab(4, true);
    let (m1, m2) = (mac(1), mac(2));
    let d = start(
        &lab,
        &[
            &format!("afpacket:ifname=v1,mac={m1},port-security=on"),
            "afpacket:ifname=v2",
            "afpacket:ifname=v3",
            "afpacket:ifname=v4",
        ],
    );
    let v1 = &d.json(&["ports"])["ports"][0];
    assert_eq!(
        (&v1["name"], &v1["port_security"], &v1["mac"]),
        (&"v1".into(), &true.into(), &m1.as_str().into()),
        "{v1}"
    );
    assert!(
        reachable(&lab.c[0], "198.18.0.2"),
        "c1 with its own MAC → c2"
    );
    assert!(reachable(&lab.c[2], "198.18.0.4"), "c3 → c4");
    assert_eq!(d.fdb_port_of(&m2).as_deref(), Some("v2"));
    assert_eq!(d.drop_count("v1", "spoofed_source"), 0);

    let pinger = Pinger::start(&lab.c[2], "198.18.0.4", 25);
    let (b1, b2) = (mac_bytes(&m1), mac_bytes(&m2));
    let victim_ip = [198, 18, 0, 2];
    let counter = Counter::start(&lab.c[1], 2.0);
    send(&lab.c[0], "eth0", 5, 0, &[garp(b2, b2, victim_ip)]);
    send(&lab.c[0], "eth0", 5, 0, &[garp(b1, b2, victim_ip)]);
    // c1's own announcement passes: the counter sees what is not dropped.
    send(&lab.c[0], "eth0", 3, 0, &[garp(b1, b1, [198, 18, 0, 1])]);
    assert_eq!(counter.finish(), 3, "only c1's true announcements reach c2");
    assert_eq!(d.drop_count("v1", "spoofed_source"), 10);
    assert_eq!(d.fdb_port_of(&m2).as_deref(), Some("v2"), "{:?}", d.fdb());

    // The container takes the victim's MAC.
    lab.c[0]
        .ip(&["link", "set", "eth0", "address", &m2])
        .unwrap();
    let counter = Counter::start(&lab.c[1], 1.5);
    send(&lab.c[0], "eth0", 4, 0, &[bcast(b2, None)]);
    assert_eq!(counter.finish(), 0, "nothing from the stolen MAC arrives");
    assert_eq!(d.drop_count("v1", "spoofed_source"), 14);
    assert!(
        !ping(&lab.c[0], "198.18.0.2"),
        "c1 under c2's MAC is cut off"
    );
    assert!(d.drop_count("v1", "spoofed_source") > 14);
    assert_eq!(d.fdb_port_of(&m2).as_deref(), Some("v2"), "{:?}", d.fdb());
    assert!(
        d.fdb()
            .iter()
            .filter(|(_, _, p)| p == "v1")
            .all(|(m, _, _)| *m == m1),
        "entries on v1 are c1's own: {:?}",
        d.fdb()
    );
    pinger.lossless("c3 → c4 while c1 spoofs");

    // Back to its own MAC: c1 works again, and so does the victim.
    lab.c[0]
        .ip(&["link", "set", "eth0", "address", &m1])
        .unwrap();
    assert!(reachable(&lab.c[0], "198.18.0.2"), "c1 with its MAC again");
    assert!(reachable(&lab.c[1], "198.18.0.3"), "c2 → c3");
    d.stop();
}

/// `flood-limit=50` set at run time: a broadcast storm of 2000 frames at 2000 pps from
/// c1 is cut to the token bucket's rate (burst of one second's worth, then 50/s); every
/// frame not delivered is counted as `storm_limited`. c3 ↔ c4 lose no echo meanwhile;
/// after `flood-limit=0` every broadcast passes again.
#[test]
fn flood_limit_caps_a_broadcast_storm() {
    if skip() {
        return;
    }
    let _scope = TestScope::start("flood_limit", LIMIT);
    let lab = lab(4, true);
    let d = start(
        &lab,
        &[
            "afpacket:ifname=v1",
            "afpacket:ifname=v2",
            "afpacket:ifname=v3",
            "afpacket:ifname=v4",
        ],
    );
    assert!(reachable(&lab.c[0], "198.18.0.2"));
    assert!(reachable(&lab.c[2], "198.18.0.4"));
    d.ctl(&["set-port", "v1", "flood-limit=50"]);
    assert_eq!(d.json(&["ports"])["ports"][0]["flood_limit"], 50);
    let before: u64 = d.drops("v1").iter().map(|(_, n)| n).sum();

    let pinger = Pinger::start(&lab.c[2], "198.18.0.4", 20);
    let counter = Counter::start(&lab.c[1], 3.5);
    let storm = bcast(mac_bytes(&mac(1)), None);
    let t0 = std::time::Instant::now();
    send(&lab.c[0], "eth0", 2000, 2000, std::slice::from_ref(&storm));
    let took = t0.elapsed().as_secs_f64();
    assert!(
        took < 3.0,
        "the sender must finish inside the count window: {took} s"
    );
    let delivered = counter.finish();
    let limited = d.drop_count("v1", "storm_limited");
    let after: u64 = d.drops("v1").iter().map(|(_, n)| n).sum();
    assert_eq!(
        after - before,
        limited,
        "storm_limited is the only new drop: {:?}",
        d.drops("v1")
    );
    assert_eq!(
        limited + delivered,
        2000,
        "every frame delivered or counted"
    );
    // The burst (one second's worth) plus 50/s while the storm lasted, a frame of
    // rounding either way.
    let most = 50 + (50.0 * took).ceil() as u64 + 1;
    assert!(
        (40..=most).contains(&delivered),
        "50 (burst) + 50/s for {took:.2} s get through, not {delivered}"
    );
    pinger.lossless("c3 → c4 during the storm");
    assert!(ping(&lab.c[0], "198.18.0.2"), "c1's unicast is no flood");

    d.ctl(&["set-port", "v1", "flood-limit=0"]);
    let counter = Counter::start(&lab.c[1], 1.5);
    send(&lab.c[0], "eth0", 200, 0, &[storm]);
    assert_eq!(counter.finish(), 200, "no limit: every broadcast floods");
    assert_eq!(d.drop_count("v1", "storm_limited"), limited);
    d.stop();
}

/// `mac-limit=2`: after c1's own MAC and one more source, frames from further new
/// sources are dropped as `mac_limit` (exactly one per frame), known sources still
/// pass, and `ctl fdb` holds at most 2 entries for the port. Lowering the limit at run
/// time forgets the port's entries, which are then learned within the new limit.
#[test]
fn mac_limit_caps_learned_sources() {
    if skip() {
        return;
    }
    let _scope = TestScope::start("mac_limit", LIMIT);
    let lab = lab(4, true);
    let d = start(
        &lab,
        &[
            "afpacket:ifname=v1,mac-limit=2",
            "afpacket:ifname=v2",
            "afpacket:ifname=v3",
            "afpacket:ifname=v4",
        ],
    );
    let on_v1 = |d: &Daemon| -> Vec<String> {
        d.fdb()
            .into_iter()
            .filter(|(_, _, p)| p == "v1")
            .map(|(m, _, _)| m)
            .collect()
    };
    assert!(reachable(&lab.c[0], "198.18.0.2"));
    assert!(reachable(&lab.c[2], "198.18.0.4"));
    assert_eq!(on_v1(&d), [mac(1)]);

    let pinger = Pinger::start(&lab.c[2], "198.18.0.4", 20);
    let src = |n: u8| mac_bytes(&format!("02:72:73:00:01:{n:02x}"));
    let counter = Counter::start(&lab.c[1], 2.0);
    // A macvlan-like container: four more source MACs, one frame each.
    let frames: Vec<String> = (1..=4).map(|n| bcast(src(n), None)).collect();
    send(&lab.c[0], "eth0", 4, 0, &frames);
    // The one learned source again: known, passes.
    send(&lab.c[0], "eth0", 2, 0, &[bcast(src(1), None)]);
    assert_eq!(counter.finish(), 3, "src 1 (three frames) gets through");
    assert_eq!(d.drop_count("v1", "mac_limit"), 3, "sources 2, 3 and 4");
    let mut learned = on_v1(&d);
    learned.sort();
    assert_eq!(learned, [mac(1), "02:72:73:00:01:01".to_string()]);
    assert!(ping(&lab.c[0], "198.18.0.2"), "c1's own MAC still works");
    pinger.lossless("c3 → c4 while c1 churns sources");

    d.ctl(&["set-port", "v1", "mac-limit=1"]);
    assert_eq!(d.json(&["ports"])["ports"][0]["mac_limit"], 1);
    assert!(
        on_v1(&d).is_empty(),
        "lowering the limit forgets the port's entries"
    );
    assert!(ping(&lab.c[0], "198.18.0.2"));
    assert_eq!(on_v1(&d), [mac(1)]);
    send(&lab.c[0], "eth0", 1, 0, &[bcast(src(1), None)]);
    assert_eq!(d.drop_count("v1", "mac_limit"), 4);
    assert!(on_v1(&d).len() <= 1);
    d.stop();
}

/// Who-has `dst` from c1's eth0 in VLAN `vid` (0: untagged): the VLAN the answer came
/// back in, or None.
fn arp_probe(ns: &Netns, vid: u16, src: &str, sip: &str, dst: &str) -> Option<u16> {
    let src = hex(&mac_bytes(src));
    let vid = vid.to_string();
    let out = ns
        .exec("python3", &["-c", PY, "arp", "eth0", &vid, &src, sip, dst])
        .unwrap();
    out.trim()
        .strip_prefix("reply vid=")
        .map(|v| v.parse().unwrap())
}

/// The trunk topology: c1 on the trunk v1 (`trunk=10,20,native=20`); c2 on access VLAN
/// 10 (198.18.10.2), c3 on VLAN 30 (198.18.30.3), c4 on VLAN 20 (198.18.0.4).
fn trunk_lab() -> (Lab, Daemon) {
    let lab = lab(4, false);
    lab.c[0].addr("eth0", "198.18.0.1/24").unwrap();
    lab.c[1].addr("eth0", "198.18.10.2/24").unwrap();
    lab.c[2].addr("eth0", "198.18.30.3/24").unwrap();
    lab.c[3].addr("eth0", "198.18.0.4/24").unwrap();
    let d = start(
        &lab,
        &[
            "afpacket:ifname=v1,trunk=10,20,native=20",
            "afpacket:ifname=v2,vlan=10",
            "afpacket:ifname=v3,vlan=30",
            "afpacket:ifname=v4,vlan=20",
        ],
    );
    assert_eq!(
        d.json(&["ports"])["ports"][0]["vlan"],
        "trunk native 20 allowed 10,20"
    );
    (lab, d)
}

/// A trunk port to a container sending tagged frames: VLAN 10 reaches the access port
/// of VLAN 10 (whose kernel answers; the answer comes back tagged 10), untagged frames
/// the native VLAN 20, VLAN 30 nothing — its frames counted as `vlan_not_allowed`,
/// exactly the ones sent — until `ctl set-port` adds VLAN 30 to the trunk.
#[test]
fn trunk_carries_only_its_vlans() {
    if skip() {
        return;
    }
    let _scope = TestScope::start("trunk_native", LIMIT);
    let (lab, d) = trunk_lab();
    let c1 = &lab.c[0];
    let m1 = mac(1);
    assert!(reachable(c1, "198.18.0.4"), "untagged → native VLAN 20");
    assert!(d
        .fdb()
        .iter()
        .any(|(m, v, p)| *m == m1 && *v == 20 && p == "v1"));
    assert_eq!(
        arp_probe(c1, 10, &m1, "198.18.10.1", "198.18.10.2"),
        Some(10),
        "VLAN 10 → c2, answered in VLAN 10"
    );
    assert_eq!(d.drop_count("v1", "vlan_not_allowed"), 0);

    let pinger = Pinger::start(c1, "198.18.0.4", 20);
    let in30 = Counter::start(&lab.c[2], 2.0);
    let in10 = Counter::start(&lab.c[1], 2.0);
    let b1 = mac_bytes(&m1);
    send(c1, "eth0", 5, 0, &[bcast(b1, Some(30))]);
    send(c1, "eth0", 3, 0, &[bcast(b1, Some(10))]);
    assert_eq!(in30.finish(), 0, "VLAN 30 is not on the trunk");
    assert_eq!(in10.finish(), 3, "VLAN 10 is");
    assert_eq!(d.drop_count("v1", "vlan_not_allowed"), 5);
    assert_eq!(
        arp_probe(c1, 30, &m1, "198.18.30.1", "198.18.30.3"),
        None,
        "nothing answers in VLAN 30"
    );
    assert_eq!(
        d.drop_count("v1", "vlan_not_allowed"),
        8,
        "the probe's 3 tries"
    );
    pinger.lossless("untagged → native VLAN while VLAN 30 is refused");

    d.ctl(&["set-port", "v1", "trunk=10,20,30"]);
    assert_eq!(
        d.json(&["ports"])["ports"][0]["vlan"],
        "trunk native 20 allowed 10,20,30"
    );
    assert_eq!(
        arp_probe(c1, 30, &m1, "198.18.30.1", "198.18.30.3"),
        Some(30),
        "VLAN 30 added at run time"
    );
    assert!(reachable(c1, "198.18.0.4"), "native VLAN unchanged");
    d.stop();
}
