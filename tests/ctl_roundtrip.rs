//! The control plane against a running daemon: `ringswitch run` with AF_PACKET ports on
//! veths inside a test namespace, driven through `ringswitch ctl` (tables and JSON),
//! ports added, changed and deleted at run time while traffic keeps flowing, the
//! Prometheus endpoint, and graceful shutdown on SIGTERM. Also: the demo runs to the end.

mod common;

use common::{
    mac, ringswitch_command, Guest, GuestSpec, Netns, NicSpec, Process, TempDir, TestScope,
};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const START: Duration = Duration::from_secs(30);

/// `ringswitch ctl --ctl SOCK ARGS…` from the root namespace: the control socket is a
/// file, reachable from any network namespace.
fn ctl(sock: &Path, args: &[&str]) -> Output {
    ringswitch_command()
        .arg("ctl")
        .arg("--ctl")
        .arg(sock)
        .args(args)
        .output()
        .expect("running ringswitch ctl")
}

fn ctl_ok(sock: &Path, args: &[&str]) -> String {
    let o = ctl(sock, args);
    assert!(
        o.status.success(),
        "ctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ctl_json(sock: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&ctl_ok(sock, &a)).expect("ctl --json prints one JSON object")
}

/// One ping, short timeout: true if the peer answered.
fn ping(from: &Netns, to: &str) -> bool {
    from.command("ping")
        .args(["-c", "1", "-W", "2", to])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Pings until one succeeds (ARP and learning settle within a few tries).
fn reachable(from: &Netns, to: &str) -> bool {
    (0..5).any(|_| ping(from, to))
}

fn port_names(sock: &Path) -> Vec<String> {
    let v = ctl_json(sock, &["ports"]);
    v["ports"]
        .as_array()
        .expect("ports array")
        .iter()
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

struct Lab {
    sw: Netns,
    c: Vec<Netns>,
}

/// A switch namespace with veths v1..v3 to containers c1..c3 (eth0, 198.18.0.n/24).
fn lab() -> Lab {
    let sw = Netns::new("sw").unwrap();
    let mut c = Vec::new();
    for n in 1..=3 {
        let ns = Netns::new(&format!("c{n}")).unwrap();
        sw.veth(&format!("v{n}"), &ns, "eth0").unwrap();
        ns.addr("eth0", &format!("198.18.0.{n}/24")).unwrap();
        c.push(ns);
    }
    Lab { sw, c }
}

fn start_daemon(lab: &Lab, sock: &Path, extra: &[&str]) -> Process {
    let exe = env!("CARGO_BIN_EXE_ringswitch");
    let sock = sock.to_str().unwrap();
    let mut args = vec![
        "run",
        "--port",
        "afpacket:ifname=v1",
        "--port",
        "afpacket:ifname=v2",
        "--workers",
        "1",
        "--ctl",
        sock,
    ];
    args.extend_from_slice(extra);
    let p = lab.sw.spawn("ringswitch", exe, &args).unwrap();
    p.wait_for("ringswitch running", START).unwrap();
    // The daemon logs "running" only once the ctl socket is in place; another log line
    // containing the same words would end the wait early (config::CTL_SOCKET).
    assert!(
        Path::new(sock).exists(),
        "ctl socket missing after `running`"
    );
    p
}

#[test]
fn ctl_round_trips_against_a_running_daemon() {
    let _scope = TestScope::start("ctl_round_trips", Duration::from_secs(240));
    let lab = lab();
    let dir = TempDir::new("ctl").unwrap();
    let sock = dir.path().join("ctl.sock");
    let mut daemon = start_daemon(&lab, &sock, &["--metrics", "127.0.0.1:0"]);

    // The socket is private to the daemon's user.
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&sock).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    assert!(
        reachable(&lab.c[0], "198.18.0.2"),
        "c1 → c2 through the switch"
    );

    // ports: a human table and the same data as JSON.
    let table = ctl_ok(&sock, &["ports"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("NAME"),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    let name_col = lines[0].find("NAME").unwrap();
    for l in &lines[1..] {
        assert!(
            l[name_col..].starts_with('v'),
            "aligned NAME column:\n{table}"
        );
        assert!(l.contains("afpacket"), "{table}");
    }
    assert_eq!(port_names(&sock), ["v1", "v2"]);

    // fdb: c1's address was learned on v1.
    let c1_mac = lab.c[0]
        .exec("cat", &["/sys/class/net/eth0/address"])
        .unwrap();
    let fdb = ctl_json(&sock, &["fdb"]);
    let entries = fdb["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["mac"] == c1_mac.trim() && e["port"] == "v1"),
        "{fdb}"
    );
    assert!(ctl_ok(&sock, &["fdb"]).contains(c1_mac.trim()));

    // mdb: c1 joins 239.1.1.1 (the kernel sends IGMP reports), the snooper records it.
    let mut member = lab.c[0]
        .spawn(
            "socat",
            "socat",
            &["-u", "UDP4-RECV:5000,ip-add-membership=239.1.1.1:eth0", "-"],
        )
        .unwrap();
    let joined = (0..100).any(|_| {
        let mdb = ctl_json(&sock, &["mdb"]);
        let found = mdb["entries"].as_array().unwrap().iter().any(|e| {
            e["group"] == "239.1.1.1" && e["ports"].as_array().unwrap().contains(&"v1".into())
        });
        if !found {
            std::thread::sleep(Duration::from_millis(100));
        }
        found
    });
    assert!(joined, "{}", ctl_ok(&sock, &["mdb"]));
    let mdb = ctl_ok(&sock, &["mdb"]);
    assert!(
        mdb.starts_with("GROUP") && mdb.contains("239.1.1.1"),
        "{mdb}"
    );
    member.stop(Duration::from_secs(5)).unwrap();

    // stats: counters moved on both ports.
    let stats = ctl_json(&sock, &["stats"]);
    let ports = stats["stats"]["ports"].as_array().unwrap();
    for name in ["v1", "v2"] {
        let p = ports.iter().find(|p| p["name"] == name).unwrap();
        assert!(p["rx_packets"].as_u64().unwrap() > 0, "{stats}");
        assert!(p["tx_packets"].as_u64().unwrap() > 0, "{stats}");
    }
    let human = ctl_ok(&sock, &["stats"]);
    assert!(
        human.starts_with("uptime ") && human.contains("RX-PKTS"),
        "{human}"
    );

    // add-port at run time: c3 joins, c1 ↔ c2 keep working.
    let added = ctl_ok(&sock, &["add-port", "afpacket:ifname=v3"]);
    assert!(added.contains("v3"), "{added}");
    assert!(reachable(&lab.c[2], "198.18.0.1"), "c3 → c1 after add-port");
    assert!(ping(&lab.c[0], "198.18.0.2"), "c1 → c2 undisturbed");
    let dup = ctl(&sock, &["add-port", "afpacket:ifname=v3"]);
    assert_eq!(dup.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    // set-port: v3 into access VLAN 10 separates c3 from the native VLAN; back again.
    ctl_ok(&sock, &["set-port", "v3", "vlan=10"]);
    let v3 = ctl_json(&sock, &["ports"])["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "v3")
        .cloned()
        .unwrap();
    assert!(v3["vlan"].as_str().unwrap().contains("10"), "{v3}");
    lab.c[2].exec("ip", &["neigh", "flush", "all"]).unwrap();
    assert!(
        !ping(&lab.c[2], "198.18.0.1"),
        "c3 in VLAN 10 must not reach c1"
    );
    ctl_ok(&sock, &["set-port", "v3", "vlan=none"]);
    assert!(
        reachable(&lab.c[2], "198.18.0.1"),
        "c3 back in the native VLAN"
    );

    // A vhost-user port with a ring limit: shown in the RINGS column and the JSON.
    let vm = dir.path().join("vm.sock");
    let vm = vm.to_str().unwrap();
    let added = ctl_ok(
        &sock,
        &[
            "add-port",
            &format!("vhost-user:path={vm},max-queue-size=1024"),
        ],
    );
    assert!(
        added.contains("RINGS") && added.contains("max 1024"),
        "{added}"
    );
    // No frontend yet: the FRONTEND column says so, the JSON has no memory mapped.
    assert!(
        added.contains("FRONTEND") && added.contains(" none "),
        "{added}"
    );
    let info = ctl_json(&sock, &["ports"])["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == vm)
        .cloned()
        .unwrap();
    assert_eq!(info["max_queue_size"], 1024, "{info}");
    assert_eq!(info["connected"], false, "{info}");
    assert_eq!(info["guest_memory_bytes"], 0, "{info}");
    let bad = ctl(
        &sock,
        &[
            "add-port",
            "vhost-user:path=/tmp/rs-bad.sock,max-queue-size=1000",
        ],
    );
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("a power of two in 1..=32768"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    ctl_ok(&sock, &["del-port", vm]);

    // del-port: v3 is gone, the others still forward.
    ctl_ok(&sock, &["del-port", "v3"]);
    assert_eq!(port_names(&sock), ["v1", "v2"]);
    assert!(ping(&lab.c[0], "198.18.0.2"), "c1 → c2 after del-port");
    let gone = ctl(&sock, &["del-port", "v3"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("no port named \"v3\""),
        "{}",
        String::from_utf8_lossy(&gone.stderr)
    );

    // Prometheus text from inside the switch namespace (the endpoint is on its loopback).
    let line = daemon.wait_for("ringswitch running", START).unwrap();
    let url = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("metrics=").map(str::to_string))
        .expect("the running line names the metrics URL");
    let text = lab
        .sw
        .exec("busybox", &["wget", "-q", "-O", "-", &url])
        .unwrap();
    assert!(
        text.contains("# TYPE ringswitch_port_rx_packets_total counter"),
        "{text}"
    );
    assert!(
        text.contains("ringswitch_port_rx_packets_total{port=\"v1\"}"),
        "{text}"
    );

    // Graceful shutdown: exit 0, control socket removed.
    let status = daemon.stop(Duration::from_secs(20)).unwrap();
    assert!(
        status.success(),
        "exit status {status}: {}",
        daemon.output().tail(20)
    );
    assert!(daemon.output().text().contains("shutting down"));
    assert!(!sock.exists(), "control socket removed on exit");
}

#[test]
fn second_daemon_on_the_same_ctl_socket_is_refused() {
    let _scope = TestScope::start("second_daemon_refused", Duration::from_secs(120));
    let lab = lab();
    let dir = TempDir::new("ctl2").unwrap();
    let sock = dir.path().join("ctl.sock");
    let mut first = start_daemon(&lab, &sock, &["--log-format", "json"]);
    let running = first.wait_for("ringswitch running", START).unwrap();
    let event: serde_json::Value = serde_json::from_str(&running).expect("JSON log lines");
    assert_eq!(event["fields"]["message"], "ringswitch running", "{event}");
    assert_eq!(event["fields"]["ports"], 2, "{event}");
    let out = lab
        .sw
        .command(env!("CARGO_BIN_EXE_ringswitch"))
        .args(["run", "--port", "afpacket:ifname=v3", "--ctl"])
        .arg(&sock)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("held by a live process") && err.contains("another ringswitch"),
        "{err}"
    );
    // The first daemon is unaffected.
    assert_eq!(port_names(&sock), ["v1", "v2"]);
    assert!(first.stop(Duration::from_secs(20)).unwrap().success());

    // A daemon killed with SIGKILL leaves a stale socket: the next one replaces it.
    let mut killed = start_daemon(&lab, &sock, &[]);
    killed.signal(libc::SIGKILL);
    let _ = killed.wait_exit(Duration::from_secs(10));
    assert!(sock.exists());
    let mut next = start_daemon(&lab, &sock, &[]);
    assert_eq!(port_names(&sock), ["v1", "v2"]);
    assert!(next.stop(Duration::from_secs(20)).unwrap().success());
}

#[test]
fn demo_runs_to_completion() {
    let _scope = TestScope::start("demo_runs_to_completion", Duration::from_secs(240));
    let dir = TempDir::new("demo").unwrap();
    let mut cmd = ringswitch_command();
    cmd.args(["demo", "--seconds", "1", "--ctl"])
        .arg(dir.path().join("ctl.sock"));
    let mut demo = Process::spawn("demo", cmd).unwrap();
    let status = demo.wait_exit(Duration::from_secs(200)).unwrap();
    assert!(
        status.success(),
        "demo failed ({status}):\n{}",
        demo.output().tail(60)
    );
}

/// A vhost-user port seen through ctl with a frontend we did not write: DPDK testpmd's
/// `net_virtio_user` connects, negotiates and sends; `ctl ports` shows the port up with
/// its negotiated features by name, `ctl stats` counts its frames, flooded to the veth.
/// On SIGTERM the daemon removes its vhost-user socket.
#[test]
fn vhost_user_port_with_testpmd_frontend() {
    let _scope = TestScope::start("vhost_user_testpmd", Duration::from_secs(180));
    let _slot = common::heavy_slot();
    let lab = lab();
    let dir = TempDir::new("vh").unwrap();
    let sock = dir.path().join("ctl.sock");
    let vm = dir.path().join("vm.sock");
    let vm_spec = format!("vhost-user:path={},mac=02:72:73:00:00:0a", vm.display());
    let mut daemon = start_daemon(&lab, &sock, &["--port", &vm_spec]);
    let vm_name = vm.display().to_string();

    let port = |name: &str| {
        ctl_json(&sock, &["ports"])["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap()
    };
    let before = port(&vm_name);
    assert_eq!(before["kind"], "vhost-user", "{before}");
    assert_ne!(before["state"], "up", "no frontend yet: {before}");
    assert_eq!(before["mac"], "02:72:73:00:00:0a", "{before}");

    // The harness's testpmd removes its EAL runtime directory when dropped.
    let pmd = common::Testpmd::virtio_user(&vm, 1, "txonly", &["--eth-peer=0,02:72:73:00:00:99"])
        .unwrap();

    // Wait (bounded by the scope) until the frontend is up and frames were counted.
    let mut up = serde_json::Value::Null;
    for _ in 0..300 {
        up = port(&vm_name);
        let stats = ctl_json(&sock, &["stats"]);
        let rx = stats["stats"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == vm_name.as_str())
            .and_then(|p| p["rx_packets"].as_u64())
            .unwrap_or(0);
        if up["state"] == "up" && rx > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        up["state"],
        "up",
        "{up}\n{}",
        pmd.process().output().tail(20)
    );
    let features: Vec<&str> = up["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(
        features.iter().any(|f| f.contains("VERSION_1")),
        "negotiated features by name: {features:?}"
    );
    let stats = ctl_json(&sock, &["stats"]);
    let ports = stats["stats"]["ports"].as_array().unwrap();
    let v1 = ports.iter().find(|p| p["name"] == "v1").unwrap();
    assert!(
        v1["tx_packets"].as_u64().unwrap() > 0,
        "flooded to v1: {stats}"
    );
    // testpmd's memory (hugepages or memfd) is mapped while it is connected.
    assert_eq!(up["connected"], true, "{up}");
    assert!(up["guest_memory_bytes"].as_u64().unwrap() > 0, "{up}");
    let table = ctl_ok(&sock, &["ports"]);
    assert!(table.contains("VERSION_1"), "{table}");
    assert!(table.contains("connected "), "{table}");

    drop(pmd);
    drop(_slot);
    assert!(vm.exists());
    assert!(daemon.stop(Duration::from_secs(20)).unwrap().success());
    assert!(!vm.exists(), "vhost-user socket removed on exit");
    assert!(!sock.exists(), "control socket removed on exit");
}

/// A port that cannot be opened fails the start with its name in the message and leaves
/// no control socket behind; a tap added at run time appears with its kind and goes away
/// again (inside the test namespace).
#[test]
fn failed_start_cleans_up_and_tap_comes_and_goes() {
    let _scope = TestScope::start("failed_start_and_tap", Duration::from_secs(120));
    let lab = lab();
    let dir = TempDir::new("fail").unwrap();
    let sock = dir.path().join("ctl.sock");
    let out = lab
        .sw
        .command(env!("CARGO_BIN_EXE_ringswitch"))
        .args(["run", "--port", "afpacket:ifname=nope0", "--ctl"])
        .arg(&sock)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nope0"), "{err}");
    assert!(!sock.exists(), "no control socket left behind");

    let mut daemon = start_daemon(&lab, &sock, &[]);
    let added = ctl_ok(&sock, &["add-port", "tap:name=rst0,queues=1"]);
    assert!(added.contains("rst0") && added.contains("tap"), "{added}");
    lab.sw.ip(&["link", "show", "rst0"]).unwrap();
    let bad = ctl(&sock, &["add-port", "afpacket:ifname=nope1"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nope1"));
    assert_eq!(port_names(&sock), ["v1", "v2", "rst0"]);
    ctl_ok(&sock, &["del-port", "rst0"]);
    assert_eq!(port_names(&sock), ["v1", "v2"]);
    assert!(reachable(&lab.c[0], "198.18.0.2"));
    assert!(daemon.stop(Duration::from_secs(20)).unwrap().success());
}

/// A QEMU guest on a vhost-user port of the daemon reaches a container over AF_PACKET;
/// `ctl` shows the port up with its negotiated features and the guest's MAC learned; on
/// SIGTERM the daemon exits cleanly and the guest sees its link go down.
#[test]
fn guest_sees_link_down_when_the_daemon_stops() {
    if common::skip_without(
        "qemu-system-x86_64",
        common::qemu_available(),
        "cargo xtask test installs it",
    ) {
        return;
    }
    let _scope = TestScope::start("guest_link_down", Duration::from_secs(300));
    let _slot = common::heavy_slot();
    let lab = lab();
    let dir = TempDir::new("guest").unwrap();
    let sock = dir.path().join("ctl.sock");
    let vm = dir.path().join("vm.sock");
    let vm_name = vm.display().to_string();
    let mut daemon = start_daemon(
        &lab,
        &sock,
        &["--port", &format!("vhost-user:path={vm_name}")],
    );

    let mut spec = GuestSpec::new("g1");
    spec.nics.push(NicSpec::new(&vm, &mac(10)));
    spec.ip.push("198.18.0.10/24".into());
    spec.run = vec!["ping:198.18.0.1".into()];
    spec.stay = true;
    let guest = Guest::start(spec).unwrap();
    guest.wait_ready(Duration::from_secs(120)).unwrap();
    let ping = guest.result("ping", Duration::from_secs(120)).unwrap();
    assert!(ping.ok, "guest → c1 through ringswitch: {:?}", ping.fields);

    let port = ctl_json(&sock, &["ports"])["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == vm_name.as_str())
        .cloned()
        .unwrap();
    assert_eq!(port["state"], "up", "{port}");
    assert_eq!(port["queues_enabled"], 1, "{port}");
    let features = port["features"].to_string();
    // By name, as the backend negotiated them (QEMU keeps STATUS to itself).
    assert!(features.contains("\"VERSION_1\""), "{port}");
    let fdb = ctl_json(&sock, &["fdb"]);
    assert!(
        fdb["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == mac(10).as_str() && e["port"] == vm_name.as_str()),
        "{fdb}"
    );
    let carrier = guest
        .run("cat /sys/class/net/eth0/carrier", Duration::from_secs(60))
        .unwrap();
    assert_eq!(carrier.output.trim(), "1", "{carrier:?}");

    assert!(daemon.stop(Duration::from_secs(20)).unwrap().success());
    assert!(!vm.exists(), "vhost-user socket removed on exit");
    // QEMU sees the backend go away and reports link down (VIRTIO_NET_S_LINK_UP clear).
    let down = (0..50).any(|_| {
        let c = guest
            .run("cat /sys/class/net/eth0/carrier", Duration::from_secs(30))
            .unwrap();
        if c.output.trim() == "0" {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
        false
    });
    assert!(down, "the guest's carrier must drop when the daemon stops");
}

/// The port ↔ switch settings of one port, from `ctl ports --json`.
fn port_json(sock: &Path, name: &str) -> serde_json::Value {
    ctl_json(sock, &["ports"])["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no port {name}"))
}

/// A port's drop counter by reason, from `ctl stats --json` (absent: 0).
fn drops(sock: &Path, port: &str, reason: &str) -> u64 {
    let stats = ctl_json(sock, &["stats"]);
    stats["stats"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port)
        .and_then(|p| {
            p["drops"]
                .as_array()?
                .iter()
                .find(|d| d[0] == reason)
                .and_then(|d| d[1].as_u64())
        })
        .unwrap_or(0)
}

/// Port security, limits and trunk settings through `ctl add-port` and `ctl set-port`
/// on a running daemon: shown by `ctl ports` (table and JSON), applied to traffic at
/// once without re-opening the port, and refused with the key named when invalid.
#[test]
fn set_port_security_and_vlan_options_round_trip() {
    let _scope = TestScope::start("set_port_l2", Duration::from_secs(120));
    let lab = lab();
    let dir = TempDir::new("l2").unwrap();
    let sock = dir.path().join("ctl.sock");
    let mut daemon = start_daemon(&lab, &sock, &[]);
    let c3_mac = lab.c[2]
        .exec("cat", &["/sys/class/net/eth0/address"])
        .unwrap()
        .trim()
        .to_string();

    let added = ctl_ok(
        &sock,
        &[
            "add-port",
            &format!(
                "afpacket:ifname=v3,mac={c3_mac},port-security=on,flood-limit=100,mac-limit=2,\
                 trunk=10,20-30,native=1"
            ),
        ],
    );
    assert!(
        added.contains("SECURITY") && added.contains("port-security,flood<=100/s,macs<=2"),
        "{added}"
    );
    let v3 = port_json(&sock, "v3");
    assert_eq!(v3["mac"], c3_mac.as_str(), "{v3}");
    assert_eq!(v3["port_security"], true, "{v3}");
    assert_eq!(v3["flood_limit"], 100, "{v3}");
    assert_eq!(v3["mac_limit"], 2, "{v3}");
    assert_eq!(v3["vlan"], "trunk native 1 allowed 10,20-30", "{v3}");
    assert_eq!(
        v3["rx_filter"], "promisc",
        "mac= of an afpacket port filters nothing"
    );
    assert!(
        reachable(&lab.c[2], "198.18.0.1"),
        "c3 (its own MAC, untagged = native 1) → c1"
    );
    assert_eq!(drops(&sock, "v3", "spoofed_source"), 0);

    // Bind v3 to another MAC: c3's own frames are now spoofed, and counted.
    ctl_ok(&sock, &["set-port", "v3", "mac=02:72:73:00:00:99"]);
    assert_eq!(port_json(&sock, "v3")["mac"], "02:72:73:00:00:99");
    lab.c[2].exec("ip", &["neigh", "flush", "all"]).unwrap();
    assert!(
        !ping(&lab.c[2], "198.18.0.1"),
        "c3's MAC is not the bound one"
    );
    assert!(drops(&sock, "v3", "spoofed_source") > 0);
    assert!(ping(&lab.c[0], "198.18.0.2"), "c1 → c2 undisturbed");
    ctl_ok(
        &sock,
        &["set-port", "v3", "port-security=off,flood-limit=0"],
    );
    let v3 = port_json(&sock, "v3");
    assert_eq!(
        (&v3["port_security"], &v3["flood_limit"]),
        (&false.into(), &0.into())
    );
    assert!(reachable(&lab.c[2], "198.18.0.1"), "security off: c3 back");

    // VLAN modes: native none drops c3's untagged frames; an access VLAN clears the trunk.
    ctl_ok(&sock, &["set-port", "v3", "native=none"]);
    assert_eq!(
        port_json(&sock, "v3")["vlan"],
        "trunk native none allowed 10,20-30"
    );
    lab.c[2].exec("ip", &["neigh", "flush", "all"]).unwrap();
    assert!(
        !ping(&lab.c[2], "198.18.0.1"),
        "untagged frames without a native VLAN"
    );
    assert!(drops(&sock, "v3", "vlan_untagged_not_allowed") > 0);
    ctl_ok(&sock, &["set-port", "v3", "vlan=1"]);
    let v3 = port_json(&sock, "v3");
    assert_eq!(v3["vlan"], "access 1", "{v3}");
    assert_eq!(v3["mac_limit"], 2, "untouched settings stay: {v3}");
    assert!(reachable(&lab.c[2], "198.18.0.1"), "access VLAN 1");
    ctl_ok(&sock, &["set-port", "v3", "trunk=none"]);
    assert_eq!(port_json(&sock, "v3")["vlan"], "trunk native 1 allowed all");

    // Refusals name the key; the daemon and its ports carry on.
    for (port, change, needle) in [
        ("v1", "port-security=on", "add mac=M"),
        ("v1", "vlan=10,trunk=20", "vlan= makes an access port"),
        ("v9", "mac-limit=1", "no port named \"v9\""),
    ] {
        let o = ctl(&sock, &["set-port", port, change]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_ne!(o.status.code(), Some(0), "{change}");
        assert!(err.contains(needle), "{change}: {err}");
    }
    let vm = dir.path().join("vm.sock").display().to_string();
    ctl_ok(
        &sock,
        &[
            "add-port",
            &format!("vhost-user:path={vm},mac=02:72:73:00:00:0a"),
        ],
    );
    let o = ctl(&sock, &["set-port", &vm, "mac=02:72:73:00:00:0b"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("del-port and add-port"));
    ctl_ok(&sock, &["set-port", &vm, "port-security=on"]);
    assert_eq!(port_json(&sock, &vm)["port_security"], true);
    assert!(ping(&lab.c[0], "198.18.0.2"), "c1 → c2 after all of it");
    assert!(daemon.stop(Duration::from_secs(20)).unwrap().success());
}

/// One vhost-user request by hand (header: request, flags VERSION_1 | NEED_REPLY, size),
/// with `fds` as SCM_RIGHTS; returns the reply's u64, or None when the daemon hung up.
fn vhost_request(
    s: &std::os::unix::net::UnixStream,
    req: u32,
    payload: &[u8],
    fds: &[std::os::fd::RawFd],
) -> Option<u64> {
    use std::io::{IoSlice, Read};
    use std::os::fd::AsRawFd;
    let mut msg = req.to_le_bytes().to_vec();
    msg.extend_from_slice(&(0x1u32 | 0x8).to_le_bytes());
    msg.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_le_bytes());
    msg.extend_from_slice(payload);
    let iov = [IoSlice::new(&msg)];
    let rights = [nix::sys::socket::ControlMessage::ScmRights(fds)];
    let cmsgs: &[nix::sys::socket::ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    let sent = nix::sys::socket::sendmsg::<()>(
        s.as_raw_fd(),
        &iov,
        cmsgs,
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .unwrap();
    assert_eq!(sent, msg.len());
    let mut reply = [0u8; 20];
    (&*s).read_exact(&mut reply).ok()?;
    assert_eq!(u32::from_le_bytes(reply[0..4].try_into().unwrap()), req);
    Some(u64::from_le_bytes(reply[12..20].try_into().unwrap()))
}

/// A vhost-user port's frontend-boundary options on the running daemon: `socket-mode=`
/// shapes the socket, `max-mem-regions=` is what GET_MAX_MEM_SLOTS answers, and a
/// memory table past its memfd's end is refused (NACK, hang-up) and shows in `ctl stats`
/// as `frontend_bad_memory_table`; the daemon carries on.
#[test]
fn vhost_frontend_options_and_refusals_show_in_ctl_stats() {
    use std::os::unix::fs::PermissionsExt;
    let _scope = TestScope::start("vhost_frontend_stats", Duration::from_secs(120));
    let lab = lab();
    let dir = TempDir::new("vfb").unwrap();
    let sock = dir.path().join("ctl.sock");
    let vsock = dir.path().join("vm.sock");
    let vs = vsock.to_str().unwrap();
    let port = format!("vhost-user:path={vs},socket-mode=0640,max-mem-regions=4");
    let mut daemon = start_daemon(&lab, &sock, &["--port", &port]);
    common::wait_path(&vsock, START).unwrap();
    let mode = std::fs::metadata(&vsock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let s = std::os::unix::net::UnixStream::connect(&vsock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    const GET_MAX_MEM_SLOTS: u32 = 36;
    const SET_MEM_TABLE: u32 = 5;
    assert_eq!(vhost_request(&s, GET_MAX_MEM_SLOTS, &[], &[]), Some(4));
    // One region of 1 MiB backed by a 4 KiB memfd.
    let fd =
        nix::sys::memfd::memfd_create(c"short", nix::sys::memfd::MemFdCreateFlag::empty()).unwrap();
    let file = std::fs::File::from(fd);
    file.set_len(4096).unwrap();
    let mut table = 1u32.to_le_bytes().to_vec();
    table.extend_from_slice(&[0; 4]);
    for v in [0u64, 1 << 20, 0x7f00_0000_0000, 0] {
        table.extend_from_slice(&v.to_le_bytes());
    }
    use std::os::fd::AsRawFd;
    let r = vhost_request(&s, SET_MEM_TABLE, &table, &[file.as_raw_fd()]);
    assert!(r.is_none_or(|v| v != 0), "refused: {r:?}");
    let stats = ctl_json(&sock, &["stats"]);
    let p = stats["stats"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == vs)
        .cloned()
        .unwrap_or_else(|| panic!("no port {vs}: {stats}"));
    let count = p["drops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d[0] == "frontend_bad_memory_table")
        .and_then(|d| d[1].as_u64());
    assert_eq!(count, Some(1), "{p}");
    // The port serves the next frontend.
    let s = std::os::unix::net::UnixStream::connect(&vsock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(vhost_request(&s, GET_MAX_MEM_SLOTS, &[], &[]), Some(4));
    assert!(daemon.stop(Duration::from_secs(20)).unwrap().success());
}
