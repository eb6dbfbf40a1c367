//! Frontend lifecycle (issue 19): a guest that is gone must not keep its resources in
//! ringswitch, and NICs come and go while guest and daemon run.
//!
//! While a QEMU guest is connected to a vhost-user port, the daemon maps the guest's RAM
//! (QEMU's `memory-backend-memfd`, visible as a `/memfd:` mapping in /proc/PID/maps) and
//! holds its fds (the memfd, kick/call eventfds, the socket, the worker threads' exit
//! eventfds). Once the frontend is gone (QEMU killed, the NIC hot-unplugged, or the port
//! deleted), within a bounded time the mapping is gone, `ctl ports` shows the port
//! without frontend and memory, and the daemon's fds are exactly the ones it had before.

mod common;

use common::qemu::Qmp;
use common::{mac, Guest, GuestSpec, Netns, NicSpec, Process, TempDir, TestScope};
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(120);
/// How long the release may take after QEMU died (the socket's EOF, the relay and the
/// vhost-user threads winding down).
const RELEASE: Duration = Duration::from_secs(10);
/// The peer behind the switch's AF_PACKET port, and the guest.
const PEER_IP: &str = "198.18.0.2";
const GUEST_CIDR: &str = "198.18.0.1/24";

use common::skip_without_qemu;

/// The daemon's mappings of memfds (guest RAM; ringswitch creates none of its own).
fn memfd_maps(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("/memfd:"))
        .count()
}

/// What the daemon's fds point at, sorted: sockets by inode, memfds by name, every
/// eventfd as the same `anon_inode:[eventfd]` (so the list counts them).
fn fd_targets(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    v.sort();
    v
}

/// Polls `f` until it holds or `timeout` passes; returns whether it held.
fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the daemon's fds are exactly `idle` (same sockets, same count of every
/// kind) and it maps no guest memory; fails with both lists otherwise.
fn assert_back_to_idle(daemon: &Process, idle: &[String], what: &str) {
    let pid = daemon.pid();
    let released = eventually(RELEASE, || memfd_maps(pid) == 0 && fd_targets(pid) == idle);
    assert!(
        released,
        "{what}: {} memfd mappings, fds {:?}, idle {idle:?}\n{}",
        memfd_maps(pid),
        fd_targets(pid),
        daemon.output().tail(30)
    );
}

/// `ringswitch ctl --ctl SOCK ARGS… --json`, parsed.
fn ctl_json(ctl: &Path, args: &[&str]) -> serde_json::Value {
    let out = common::ringswitch_command()
        .arg("ctl")
        .arg("--ctl")
        .arg(ctl)
        .args(args)
        .arg("--json")
        .output()
        .expect("running ringswitch ctl");
    assert!(
        out.status.success(),
        "ctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("ctl --json prints one JSON object")
}

/// Port `name` as `ctl ports --json` shows it.
fn port(ctl: &Path, name: &Path) -> serde_json::Value {
    let name = name.display().to_string();
    ctl_json(ctl, &["ports"])["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name.as_str())
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

/// Polls `ctl ports` until port `name` satisfies `f`; fails with the last answer.
fn wait_port(ctl: &Path, name: &Path, what: &str, f: impl Fn(&serde_json::Value) -> bool) {
    let mut last = serde_json::Value::Null;
    let ok = eventually(RELEASE, || {
        last = port(ctl, name);
        f(&last)
    });
    assert!(ok, "port {}: {what}: {last}", name.display());
}

/// A port whose guest is gone: no frontend, no memory, no driver.
fn released(p: &serde_json::Value) -> bool {
    p["connected"] == false && p["guest_memory_bytes"] == 0 && p["state"] == "waiting"
}

/// A switch namespace `sw` (the daemon runs there) with veth `v1` to a peer namespace
/// (`eth0`, [`PEER_IP`]): the guest pings the peer through ringswitch.
struct Lab {
    sw: Netns,
    peer: Netns,
}

impl Lab {
    fn new() -> Lab {
        let sw = Netns::new("sw").unwrap();
        let peer = Netns::new("peer").unwrap();
        sw.veth("v1", &peer, "eth0").unwrap();
        peer.addr("eth0", &format!("{PEER_IP}/24")).unwrap();
        Lab { sw, peer }
    }

    /// `ringswitch run` in `sw` with an AF_PACKET port on `v1`, the ctl socket and `extra`.
    fn daemon(&self, ctl: &Path, extra: &[String]) -> Process {
        let mut args: Vec<String> = [
            "run",
            "--workers",
            "1",
            "--port",
            "afpacket:ifname=v1",
            "--ctl",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(ctl.display().to_string());
        args.extend(extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = self
            .sw
            .spawn("ringswitch", env!("CARGO_BIN_EXE_ringswitch"), &args)
            .unwrap();
        p.wait_for("ringswitch running", Duration::from_secs(30))
            .unwrap();
        p
    }
}

/// Two guests in a row, each SIGKILLed: after each the daemon's fds are exactly the idle
/// set again (a per-connection leak of any fd kind fails the second round at the latest).
#[test]
fn killed_guest_memory_and_fds_are_released() {
    if skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start(
        "killed_guest_memory_and_fds_are_released",
        Duration::from_secs(300),
    );
    let _slot = common::heavy_slot();
    let dir = TempDir::new("lifecycle").unwrap();
    let sock = dir.path().join("g.sock");
    let ctl = dir.path().join("ctl.sock");
    let mut cmd = common::ringswitch_command();
    cmd.args(["run", "--workers", "1", "--port"])
        .arg(format!("vhost-user:path={}", sock.display()))
        .arg("--ctl")
        .arg(&ctl);
    let daemon = Process::spawn("ringswitch", cmd).unwrap();
    common::wait_path(&sock, Duration::from_secs(30)).unwrap();
    let pid = daemon.pid();
    // The baseline: the daemon idle, its port waiting for a frontend.
    std::thread::sleep(Duration::from_millis(500));
    let idle = fd_targets(pid);
    assert_eq!(memfd_maps(pid), 0, "no guest yet");

    for round in 1..=2 {
        let mut spec = GuestSpec::new(&format!("lifeg{round}"));
        spec.nics.push(NicSpec::new(&sock, &mac(1)));
        spec.ip.push(GUEST_CIDR.into());
        let g = Guest::start(spec).unwrap();
        g.wait_ready(BOOT).unwrap();
        assert!(
            eventually(RELEASE, || memfd_maps(pid) > 0),
            "round {round}: the guest's memory is never mapped:\n{}",
            daemon.output().tail(30)
        );
        let connected = fd_targets(pid);
        assert!(
            connected.len() > idle.len(),
            "round {round}: a connected guest holds fds: {connected:?} vs idle {idle:?}"
        );
        let p = port(&ctl, &sock);
        assert!(
            p["connected"] == true && p["guest_memory_bytes"] == 256u64 << 20,
            "round {round}: {p}"
        );
        g.kill();
        assert_back_to_idle(
            &daemon,
            &idle,
            &format!("round {round}: after the guest died"),
        );
        wait_port(&ctl, &sock, "released after the kill", released);
        drop(g);
    }
}

/// The guest's interface with MAC `mac`, waited for up to 30 s (after a hot-plug).
fn iface_with_mac(g: &Guest, mac: &str) -> String {
    g.run_ok(
        &format!(
            "i=0; while [ $i -lt 300 ]; do for d in /sys/class/net/*; do \
             [ \"$(cat $d/address)\" = {mac} ] && {{ echo ${{d##*/}}; exit 0; }}; done; \
             sleep 0.1; i=$((i+1)); done; echo none; exit 1"
        ),
        Duration::from_secs(60),
    )
    .trim()
    .to_string()
}

/// NIC hot-unplug and hot-plug over QMP with guest and daemon running: `device_del`
/// (the guest ejects it through ACPI PCI hotplug, the `pc` machine's default) and
/// `netdev_del` end the vhost-user connection, so the port shows no frontend and the
/// guest's memory is unmapped; `chardev-add` + `netdev_add` + `device_add` on the same
/// socket bring a new NIC the guest sees and pings the peer through.
#[test]
fn nic_hot_unplug_and_plug() {
    if skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start("nic_hot_unplug_and_plug", Duration::from_secs(300));
    let _slot = common::heavy_slot();
    let lab = Lab::new();
    let dir = TempDir::new("hotplug").unwrap();
    let sock = dir.path().join("g.sock");
    let ctl = dir.path().join("ctl.sock");
    let qmp_path = dir.path().join("qmp.sock");
    let daemon = lab.daemon(
        &ctl,
        &[
            "--port".into(),
            format!("vhost-user:path={}", sock.display()),
        ],
    );
    let pid = daemon.pid();
    let guest_mac = mac(1);
    let mut spec = GuestSpec::new("hotplug");
    spec.nics.push(NicSpec::new(&sock, &guest_mac));
    spec.ip.push(GUEST_CIDR.into());
    spec.qmp = Some(qmp_path.clone());
    let g = Guest::start(spec).unwrap();
    g.wait_ready(BOOT).unwrap();
    g.ping_ok(PEER_IP, 50, Duration::from_secs(60));
    wait_port(&ctl, &sock, "up with the guest's memory", |p| {
        p["state"] == "up" && p["connected"] == true && p["guest_memory_bytes"] == 256u64 << 20
    });

    let mut qmp = Qmp::connect(&qmp_path, Duration::from_secs(10)).unwrap();
    qmp.execute("device_del", json!({"id": "nic0"})).unwrap();
    qmp.wait_event("DEVICE_DELETED", Duration::from_secs(60), |d| {
        d["device"] == "nic0"
    })
    .unwrap();
    // The device is gone; its netdev (and the chardev it owns) still holds the connection.
    qmp.execute("netdev_del", json!({"id": "net0"})).unwrap();
    wait_port(&ctl, &sock, "released after the unplug", released);
    assert!(
        eventually(RELEASE, || memfd_maps(pid) == 0),
        "the unplugged guest's memory is still mapped:\n{}",
        daemon.output().tail(30)
    );
    assert_eq!(
        g.run_ok(
            "ls /sys/class/net | grep -c '^eth' || true",
            Duration::from_secs(30)
        )
        .trim(),
        "0",
        "the guest saw its NIC go"
    );

    let addr = json!({"type": "unix", "data": {"path": sock.display().to_string()}});
    qmp.execute(
        "chardev-add",
        json!({"id": "vu0", "backend": {"type": "socket", "data": {"addr": addr, "server": false}}}),
    )
    .unwrap();
    qmp.execute(
        "netdev_add",
        json!({"type": "vhost-user", "id": "net0", "chardev": "vu0"}),
    )
    .unwrap();
    qmp.execute(
        "device_add",
        json!({"driver": "virtio-net-pci", "id": "nic0", "netdev": "net0",
            "mac": guest_mac, "vectors": 0}),
    )
    .unwrap();
    let dev = iface_with_mac(&g, &guest_mac);
    g.run_ok(
        &format!("ip addr add {GUEST_CIDR} dev {dev} && ip link set {dev} up"),
        Duration::from_secs(30),
    );
    g.ping_ok(PEER_IP, 50, Duration::from_secs(60));
    wait_port(&ctl, &sock, "up again on the new NIC", |p| {
        p["state"] == "up" && p["connected"] == true && p["guest_memory_bytes"] == 256u64 << 20
    });
    drop(qmp);
    drop(g);
    drop(lab.peer);
}

/// A vhost-user port added at run time (`ctl add-port`) takes a guest that pings the
/// peer; `ctl del-port` ends the connection (the guest's link goes down, its memory is
/// unmapped) and leaves the daemon's fds as they were before the port was added.
#[test]
fn vhost_port_added_and_deleted_at_run_time() {
    if skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start("vhost_port_added_and_deleted", Duration::from_secs(300));
    let _slot = common::heavy_slot();
    let lab = Lab::new();
    let dir = TempDir::new("addport").unwrap();
    let sock = dir.path().join("g.sock");
    let ctl = dir.path().join("ctl.sock");
    let daemon = lab.daemon(&ctl, &[]);
    let pid = daemon.pid();
    std::thread::sleep(Duration::from_millis(500));
    let idle = fd_targets(pid);

    let guest_mac = mac(2);
    let spec = format!("vhost-user:path={},mac={guest_mac}", sock.display());
    let added = ctl_json(&ctl, &["add-port", &spec]);
    let p = &added["port"];
    assert!(
        p["kind"] == "vhost-user" && p["mac"] == guest_mac.as_str() && released(p),
        "{added}"
    );
    assert!(sock.exists(), "the port listens on its socket");

    let mut spec = GuestSpec::new("addport");
    spec.nics.push(NicSpec::new(&sock, &guest_mac));
    spec.ip.push(GUEST_CIDR.into());
    let g = Guest::start(spec).unwrap();
    g.wait_ready(BOOT).unwrap();
    g.ping_ok(PEER_IP, 50, Duration::from_secs(60));
    wait_port(&ctl, &sock, "up with the guest's memory", |p| {
        p["state"] == "up" && p["connected"] == true && p["guest_memory_bytes"] == 256u64 << 20
    });

    let name = sock.display().to_string();
    assert_eq!(
        ctl_json(&ctl, &["del-port", &name])["result"],
        "ok",
        "del-port"
    );
    assert!(
        port(&ctl, &sock).is_null(),
        "the port is gone from ctl ports"
    );
    assert!(!sock.exists(), "its socket is removed");
    // QEMU saw the backend go: the guest's link is down.
    let down = eventually(Duration::from_secs(30), || {
        g.run("cat /sys/class/net/eth0/carrier", Duration::from_secs(30))
            .is_ok_and(|o| o.output.trim() == "0")
    });
    assert!(down, "the guest's link stays up\n{}", g.serial().tail(20));
    assert_back_to_idle(&daemon, &idle, "after del-port");
    drop(g);
    drop(lab.peer);
}
