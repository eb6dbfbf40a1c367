//! Jumbo frames (issue 19): a port's `mtu=` reaches a QEMU guest as VIRTIO_NET_F_MTU and
//! a tap as its interface MTU; 9000-byte packets cross the switch both ways between a
//! guest and a tap, and between two veths (AF_PACKET); a packet longer than its
//! destination port's MTU is dropped and counted as `mtu_exceeded`, although the
//! destination's interface would take it.

mod common;

use common::{mac, Guest, GuestSpec, Netns, NicSpec, Process, TempDir, TestScope};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(90);
const STEP: Duration = Duration::from_secs(60);
/// ICMP payload of a 9000-byte IPv4 packet (20 IP + 8 ICMP header bytes).
const JUMBO: &str = "8972";

struct Daemon {
    ctl: PathBuf,
    _proc: Process,
}

/// `ringswitch run` inside `ns` with `ports`, ready once it says so.
fn start(ns: &Netns, dir: &Path, ports: &[String]) -> Daemon {
    let ctl = dir.join("ctl.sock");
    let mut args: Vec<String> = vec!["run".into(), "--workers".into(), "1".into()];
    for p in ports {
        args.extend(["--port".into(), p.clone()]);
    }
    args.extend(["--ctl".into(), ctl.display().to_string()]);
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = ns
        .spawn("ringswitch", env!("CARGO_BIN_EXE_ringswitch"), &argv)
        .expect("spawn ringswitch");
    p.wait_for("ringswitch running", Duration::from_secs(20))
        .expect("ringswitch starts");
    Daemon { ctl, _proc: p }
}

impl Daemon {
    fn ctl(&self, args: &[&str]) -> String {
        let o = common::ringswitch_command()
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

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ctl(&a)).expect("ctl json")
    }

    /// The `mtu` that `ctl ports` shows for `port`.
    fn mtu(&self, port: &str) -> u64 {
        let v = self.json(&["ports"]);
        v["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == port))
            .and_then(|p| p["mtu"].as_u64())
            .unwrap_or_else(|| panic!("no mtu for {port}: {v:#}"))
    }

    /// `port`'s drops for `reason` in `ctl stats`.
    fn drops(&self, port: &str, reason: &str) -> u64 {
        let s = self.json(&["stats"]);
        s["stats"]["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == port))
            .and_then(|p| p["drops"].as_array())
            .and_then(|d| d.iter().find(|d| d[0] == reason))
            .and_then(|d| d[1].as_u64())
            .unwrap_or(0)
    }
}

/// iputils ping with DF set and no local fragmentation (`-M do`): a packet that does
/// not fit is never split into ones that would.
fn ping_df(ns: &Netns, addr: &str, size: &str) -> common::Result<String> {
    ns.exec(
        "ping",
        &[
            "-M", "do", "-s", size, "-c", "3", "-i", "0.2", "-W", "2", addr,
        ],
    )
}

/// Guest ↔ tap at MTU 9000, then the tap re-added at `mtu=1500` (its interface raised to
/// 9000 by hand, so only the switch stands in the way).
#[test]
fn guest_and_tap_carry_jumbo_frames_and_a_small_port_drops_them() {
    if common::skip_without(
        "qemu-system-x86_64",
        common::qemu_available(),
        "cargo xtask test installs it",
    ) {
        return;
    }
    let _scope = TestScope::start("mtu_guest_tap", Duration::from_secs(240));
    let _slot = common::heavy_slot();
    let dir = TempDir::new("mtu").unwrap();
    let host = Netns::new("host").unwrap();
    let sock = dir.path().join("g.sock");
    let g_port = sock.display().to_string();
    let rs = start(
        &host,
        dir.path(),
        &[
            format!("vhost-user:path={g_port},mac={},mtu=9000", mac(1)),
            "tap:name=rst0,mtu=9000".into(),
        ],
    );
    assert_eq!(rs.mtu(&g_port), 9000);
    assert_eq!(rs.mtu("rst0"), 9000);
    // The daemon set the tap's MTU.
    assert!(host
        .ip(&["link", "show", "rst0"])
        .unwrap()
        .contains("mtu 9000"));
    host.addr("rst0", "198.18.0.100/24").unwrap();
    let mut spec = GuestSpec::new("mtu");
    let mut nic = NicSpec::new(&sock, &mac(1));
    // QEMU offers VIRTIO_NET_F_MTU only with host_mtu (and only if the backend does).
    nic.device_opts.push("host_mtu=9000".into());
    spec.nics.push(nic);
    spec.ip.push("198.18.0.1/24".into());
    let g = Guest::start(spec).unwrap();
    g.wait_ready(BOOT).unwrap();
    let mtu = g.run_ok("cat /sys/class/net/eth0/mtu", STEP);
    assert_eq!(mtu.trim(), "9000", "the guest driver took VIRTIO_NET_F_MTU");
    // Busybox ping in the guest: with the route MTU 9000 its 9000-byte packets go out
    // whole with DF set (IP_PMTUDISC_WANT), so they pass only a 9000-byte path.
    g.ping_ok("198.18.0.100", 60, STEP);
    g.run_ok(
        &format!("ping -c 3 -i 0.2 -W 2 -s {JUMBO} 198.18.0.100"),
        STEP,
    );
    ping_df(&host, "198.18.0.1", JUMBO).unwrap();
    assert_eq!(rs.drops(&g_port, "mtu_exceeded"), 0);

    // The same tap at the default MTU of 1500: the interface is raised to 9000 again, so
    // the host would take the jumbo packet; the switch does not send it.
    rs.ctl(&["del-port", "rst0"]);
    rs.ctl(&["add-port", "tap:name=rst0,mtu=1500"]);
    assert_eq!(rs.mtu("rst0"), 1500);
    host.ip(&["link", "set", "rst0", "mtu", "9000"]).unwrap();
    host.addr("rst0", "198.18.0.100/24").unwrap();
    // The new tap has a new MAC: the guest asks again rather than waiting out its entry.
    g.run_ok("ip neigh flush dev eth0", STEP);
    g.ping_ok("198.18.0.100", 60, STEP);
    let out = g
        .run(
            &format!("ping -c 3 -i 0.2 -W 1 -s {JUMBO} 198.18.0.100"),
            STEP,
        )
        .unwrap();
    assert_ne!(out.rc, 0, "jumbo ping through a 1500 port: {}", out.output);
    assert_eq!(
        rs.drops(&g_port, "mtu_exceeded"),
        3,
        "{}",
        rs.ctl(&["stats"])
    );
}

/// Two containers with 9000-byte veths on afpacket ports with `mtu=9000` exchange jumbo
/// packets; toward a third whose port keeps the default 1500 (its veth is 9000) they are
/// dropped as `mtu_exceeded`, and a port asking for more than its interface has gets the
/// interface's MTU.
#[test]
fn veths_carry_jumbo_frames_up_to_each_ports_mtu() {
    if common::skip_without("root", common::is_root(), "network namespaces need root") {
        return;
    }
    let _scope = TestScope::start("mtu_veth", Duration::from_secs(60));
    let dir = TempDir::new("mtuv").unwrap();
    let sw = Netns::new("sw").unwrap();
    let c: Vec<Netns> = (1..=4)
        .map(|i| Netns::new(&format!("c{i}")).unwrap())
        .collect();
    for (i, ns) in c.iter().enumerate() {
        let n = i + 1;
        sw.veth(&format!("v{n}"), ns, "eth0").unwrap();
        // The fourth keeps Linux's 1500 on both ends.
        if n < 4 {
            sw.ip(&["link", "set", &format!("v{n}"), "mtu", "9000"])
                .unwrap();
            ns.ip(&["link", "set", "eth0", "mtu", "9000"]).unwrap();
        }
        ns.addr("eth0", &format!("198.18.0.{n}/24")).unwrap();
    }
    let rs = start(
        &sw,
        dir.path(),
        &[
            "afpacket:ifname=v1,mtu=9000".into(),
            "afpacket:ifname=v2,mtu=9000".into(),
            "afpacket:ifname=v3".into(),
            "afpacket:ifname=v4,mtu=9000".into(),
        ],
    );
    assert_eq!(
        (rs.mtu("v1"), rs.mtu("v2"), rs.mtu("v3"), rs.mtu("v4")),
        (9000, 9000, 1500, 1500),
        "v3: the default; v4: its interface's MTU, not more"
    );
    ping_df(&c[0], "198.18.0.2", JUMBO).unwrap();
    ping_df(&c[1], "198.18.0.1", JUMBO).unwrap();
    assert_eq!(rs.drops("v1", "mtu_exceeded"), 0);
    // c1 → c3: a 1500-byte packet passes, a 9000-byte one is refused by v3's MTU.
    ping_df(&c[0], "198.18.0.3", "1472").unwrap();
    assert!(ping_df(&c[0], "198.18.0.3", JUMBO).is_err());
    assert_eq!(rs.drops("v1", "mtu_exceeded"), 3, "{}", rs.ctl(&["stats"]));
    assert!(rs.ctl(&["stats"]).contains("mtu_exceeded"));
}
