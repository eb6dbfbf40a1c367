//! Proves the e2e harness and the guest image against peers we did not write (DPDK
//! testpmd as the vhost-user backend, Debian's virtio-net driver in the guests): ping over
//! IPv4/IPv6 with two queue pairs, iperf3, socat multicast, the command console, per-NIC
//! configuration, backend restart in both socket directions; and that the namespace,
//! process and time-limit guards clean up whatever happens. The ringswitch daemon's own
//! e2e tests use the same harness with ringswitch in testpmd's place.

mod common;

use common::{
    mac, Guest, GuestSpec, HarnessError, Netns, NicSpec, Process, SocketMode, TempDir, TestScope,
    Testpmd, VhostPort,
};
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(60);

use common::skip_without_qemu;

/// A guest with one NIC of two queue pairs (mq=on, `ethtool -L eth0 combined 2` in /init)
/// that pings `peer` over IPv4 and IPv6.
fn guest(name: &str, socket: &std::path::Path, n: u8, peer: u8) -> GuestSpec {
    let mut g = GuestSpec::new(name);
    let mut nic = NicSpec::new(socket, &mac(n));
    nic.queues = 2;
    g.nics.push(nic);
    g.ip.push(format!("198.18.0.{n}/24"));
    g.ip6.push(format!("2001:db8::{n}/64"));
    g.run = vec![
        format!("ping:198.18.0.{peer}"),
        format!("ping6:2001:db8::{peer}"),
    ];
    g
}

#[test]
fn two_guests_ping_through_testpmd() {
    if skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start("two_guests_ping_through_testpmd", Duration::from_secs(300));
    let _slot = common::heavy_slot();
    let dir = TempDir::new("boot").unwrap();
    let pmd = Testpmd::vhost_backend(dir.path(), 2, 2).unwrap();
    let mut ga = guest("ga", pmd.socket(0), 1, 2);
    ga.run.push("iperf3:198.18.0.2/2".into());
    let mut gb = guest("gb", pmd.socket(1), 2, 1);
    gb.run.insert(0, "iperf3-server".into());
    let a = Guest::start(ga).unwrap();
    let b = Guest::start(gb).unwrap();
    for (g, n) in [(&a, 1), (&b, 2)] {
        g.wait_ready(BOOT).unwrap();
        let iface = g.wait_for("RS-IFACE name=eth0 ", BOOT).unwrap();
        assert!(
            iface.ends_with(&format!("mac={} mtu=1500 queues=2", mac(n))),
            "{iface}"
        );
    }
    for (g, peer) in [(&a, 2), (&b, 1)] {
        for (step, target) in [
            ("ping", format!("198.18.0.{peer}")),
            ("ping6", format!("2001:db8::{peer}")),
        ] {
            let r = g.result(step, STEP).unwrap();
            assert!(r.ok, "{} {step}: {r:?}\n{}", g.name(), g.serial().tail(20));
            assert_eq!(r.get("target"), Some(target.as_str()));
            assert_eq!(r.get("loss"), Some("0"));
        }
    }
    // A TCP stream through testpmd (the rate is TCG-bound; only that it flowed counts).
    assert!(b.result("iperf3-server", STEP).unwrap().ok);
    let r = a.result("iperf3", STEP).unwrap();
    let mbit: f64 = r.get("mbit_s").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    assert!(r.ok && mbit > 0.0, "{r:?}");
    eprintln!("iperf3 ga -> gb through testpmd: {mbit} Mbit/s (TCG-bound)");
    // The command console: the neighbour learned by the pings is the peer's MAC.
    let out = a
        .run("ip neigh show 198.18.0.2; echo to-stderr >&2; exit 3", STEP)
        .unwrap();
    assert_eq!(out.rc, 3, "{out:?}");
    assert!(out.output.contains(&mac(2)), "{out:?}");
    assert!(out.output.contains("to-stderr"), "{out:?}");
    let out = b.run("cat /sys/class/net/eth0/address", STEP).unwrap();
    assert_eq!((out.rc, out.output.trim()), (0, mac(2).as_str()));
    // Multicast with the guest's socat helpers (/etc/rs-profile): A joins one IPv4 and one
    // IPv6 group, its NIC lists both, and B's datagrams to them arrive.
    let out = a
        .run(
            "mrecv 239.1.2.3 5000 /tmp/m4 >/dev/null; mrecv ff0e::1:3 5001 /tmp/m6 >/dev/null; \
             i=0; until ip maddr show dev eth0 | grep -q ff0e::1:3 || [ $i -ge 50 ]; \
             do sleep 0.1; i=$((i+1)); done; ip maddr show dev eth0",
            STEP,
        )
        .unwrap();
    assert!(
        out.output.contains("239.1.2.3") && out.output.contains("ff0e::1:3"),
        "{out:?}"
    );
    let out = b
        .run(
            "msend 239.1.2.3 5000 hello4 && msend ff0e::1:3 5001 hello6",
            STEP,
        )
        .unwrap();
    assert_eq!(out.rc, 0, "{out:?}");
    let out = a
        .run(
            "i=0; until grep -q hello4 /tmp/m4 && grep -q hello6 /tmp/m6 || [ $i -ge 50 ]; \
             do sleep 0.1; i=$((i+1)); done; cat /tmp/m4 /tmp/m6",
            STEP,
        )
        .unwrap();
    assert_eq!(out.output, "hello4\nhello6\n", "{out:?}");
    // Clean power-off from inside: QEMU exits by itself with status 0.
    let st = a.shutdown(STEP).unwrap();
    assert!(st.success(), "{st}");
}

/// A guest without NICs runs an `rs.cmd` script, reports it and powers off by itself.
#[test]
fn guest_runs_cmdline_script_and_powers_off() {
    if skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start(
        "guest_runs_cmdline_script_and_powers_off",
        Duration::from_secs(120),
    );
    let mut spec = GuestSpec::new("gcmd");
    spec.stay = false;
    spec.cmd = Some("echo \"RS-RESULT name=uname ok=1 release=$(uname -r)\"; exit 7".into());
    let g = Guest::start(spec).unwrap();
    let r = g.result("uname", BOOT).unwrap();
    assert!(
        r.get("release")
            .is_some_and(|v| v.ends_with("-cloud-amd64")),
        "{r:?}"
    );
    let r = g.result("cmd", STEP).unwrap();
    assert_eq!((r.ok, r.get("rc")), (false, Some("7")), "{r:?}");
    g.wait_for("RS-DONE ok=1", STEP).unwrap();
    // QEMU exits (-no-reboot + poweroff): the serial output closes.
    assert!(matches!(
        g.wait_for("never printed", STEP),
        Err(HarnessError::Exited { .. })
    ));
}

/// Two namespaces joined by a veth pair reach each other; both vanish with their guards.
#[test]
fn netns_veth_pair_pings_and_is_cleaned_up() {
    let _scope = TestScope::start("netns_veth_pair", Duration::from_secs(60));
    let (n1, n2) = (Netns::new("n1").unwrap(), Netns::new("n2").unwrap());
    n1.veth("v1", &n2, "v2").unwrap();
    n1.addr("v1", "198.18.1.1/24").unwrap();
    n2.addr("v2", "198.18.1.2/24").unwrap();
    n1.addr("v1", "2001:db8:1::1/64").unwrap();
    n2.addr("v2", "2001:db8:1::2/64").unwrap();
    n1.exec("ping", &["-c", "1", "-W", "5", "198.18.1.2"])
        .unwrap();
    n2.exec("ping", &["-c", "1", "-W", "5", "2001:db8:1::1"])
        .unwrap();
    // A process spawned in the namespace is killed when the namespace goes.
    let p = n1.spawn("sleeper", "sleep", &["600"]).unwrap();
    let names = [n1.name().to_string(), n2.name().to_string()];
    drop(n1);
    drop(n2);
    assert!(matches!(
        p.wait_for("never printed", Duration::from_secs(10)),
        Err(HarnessError::Exited { .. })
    ));
    let list =
        common::netns::check(std::process::Command::new("ip").args(["netns", "list"])).unwrap();
    for n in names {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str())),
            "{n} left: {list}"
        );
    }
}

/// When a test exceeds its limit, the watchdog kills its children, so a wait that would
/// otherwise last an hour fails at once with the child's exit.
#[test]
fn time_limit_kills_children() {
    let _scope = TestScope::start("time_limit_kills_children", Duration::from_secs(1));
    let mut c = std::process::Command::new("sleep");
    c.arg("3600");
    let p = Process::spawn("sleeper", c).unwrap();
    let r = p.wait_for("never printed", Duration::from_secs(3600));
    assert!(matches!(r, Err(HarnessError::Exited { .. })), "{r:?}");
}

/// A test that panics half-way leaves nothing behind: its QEMU and its processes are gone,
/// its namespace and its socket directory deleted.
#[test]
fn guards_clean_up_when_a_test_panics() {
    if skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start("guards_clean_up", Duration::from_secs(120));
    let seen = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(|| {
        let ns = Netns::new("panic").unwrap();
        let p = ns.spawn("sleeper", "sleep", &["600"]).unwrap();
        let dir = TempDir::new("panic").unwrap();
        let g = Guest::start(GuestSpec::new("gpanic")).unwrap();
        *seen.lock().unwrap() = Some((
            ns.name().to_string(),
            p.pid(),
            dir.path().to_path_buf(),
            g.pid(),
        ));
        panic!("deliberate failure inside a test body");
    });
    assert!(r.is_err());
    let (ns, sleeper, dir, qemu) = seen.lock().unwrap().take().unwrap();
    for pid in [sleeper, qemu] {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} still exists"
        );
    }
    assert!(!dir.exists(), "{} left behind", dir.display());
    let list =
        common::netns::check(std::process::Command::new("ip").args(["netns", "list"])).unwrap();
    assert!(
        !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns.as_str())),
        "{ns} left: {list}"
    );
}

/// Backend restart in both socket directions: guest A's QEMU connects with
/// `reconnect=1` to a socket testpmd listens on, guest B's QEMU listens and testpmd
/// connects (what ringswitch's `client` ports do). After testpmd is replaced by a new
/// one, both sides renegotiate (memory table, vring state) and the guests ping again.
#[test]
fn guests_reconnect_after_backend_restart() {
    if skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start("guests_reconnect", Duration::from_secs(300));
    let _slot = common::heavy_slot();
    let dir = TempDir::new("recon").unwrap();
    let ports = [
        VhostPort::server(dir.path().join("a.sock")),
        VhostPort::client(dir.path().join("b.sock")),
    ];
    let spec = |name: &str, n: u8, mode: SocketMode| {
        let mut g = GuestSpec::new(name);
        let mut nic = NicSpec::new(&ports[usize::from(n) - 1].socket, &mac(n));
        nic.mode = mode;
        g.nics.push(nic);
        g.ip.push(format!("198.18.2.{n}/24"));
        g.ip6.push(format!("2001:db8:2::{n}/64"));
        g
    };
    let b = Guest::start(spec("rb", 2, SocketMode::Server)).unwrap();
    common::wait_path(&ports[1].socket, BOOT).unwrap();
    let pmd = Testpmd::vhost_backend_at(&ports, 1).unwrap();
    let a = Guest::start(spec("ra", 1, SocketMode::ClientReconnect)).unwrap();
    b.wait_ready(BOOT).unwrap();
    let ping = "i=0; until ping -c 1 -W 1 198.18.2.2 >/dev/null; do \
                i=$((i+1)); [ $i -ge 40 ] && exit 1; done; ping -c 3 -i 0.2 -W 2 198.18.2.2 && \
                ping6 -c 3 -i 0.2 -W 2 2001:db8:2::2";
    let out = a.run(ping, STEP).unwrap();
    assert_eq!(out.rc, 0, "before restart: {out:?}");
    drop(pmd);
    let pmd = Testpmd::vhost_backend_at(&ports, 1).unwrap();
    let out = a.run(ping, STEP).unwrap();
    assert_eq!(
        out.rc,
        0,
        "after restart: {out:?}\n{}",
        pmd.process().output().tail(30)
    );
    assert_eq!(
        out.output.matches("3 packets received").count(),
        2,
        "{out:?}"
    );
}

/// Per-interface parameters: a guest with two NICs, wired to each other through testpmd,
/// gets each its own address, MAC override and MTU from the command line, and ARP from
/// eth0 is answered by the kernel through eth1.
#[test]
fn guest_configures_each_nic_from_cmdline() {
    if skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start("guest_two_nics", Duration::from_secs(240));
    let _slot = common::heavy_slot();
    let dir = TempDir::new("nics").unwrap();
    let pmd = Testpmd::vhost_backend(dir.path(), 2, 1).unwrap();
    let mut spec = GuestSpec::new("gnics");
    spec.nics.push(NicSpec::new(pmd.socket(0), &mac(1)));
    spec.nics.push(NicSpec::new(pmd.socket(1), &mac(2)));
    spec.ip = vec!["198.18.6.1/24".into(), "198.18.6.2/24".into()];
    spec.mac = vec![String::new(), mac(0x99)];
    spec.mtu = vec![String::new(), "1280".into()];
    let g = Guest::start(spec).unwrap();
    g.wait_ready(BOOT).unwrap();
    let eth0 = g.wait_for("RS-IFACE name=eth0 ", STEP).unwrap();
    let eth1 = g.wait_for("RS-IFACE name=eth1 ", STEP).unwrap();
    assert!(
        eth0.contains(&format!("mac={} mtu=1500 ", mac(1))),
        "{eth0}"
    );
    assert!(
        eth1.contains(&format!("mac={} mtu=1280 ", mac(0x99))),
        "{eth1}"
    );
    // Duplicate-address-detection probes (sender 0.0.0.0): an ordinary request from
    // 198.18.6.1 would be dropped on eth1 as a martian, the sender being a local address.
    let out = g
        .run("arping -D -c 2 -w 10 -I eth0 198.18.6.2", STEP)
        .unwrap();
    assert!(
        out.output
            .contains(&format!("reply from 198.18.6.2 [{}]", mac(0x99))),
        "{out:?}"
    );
}

/// testpmd as a frontend (virtio-user, txonly) into testpmd as a backend: the helper for
/// frontend-side tests and benchmarks works, and frames arrive.
#[test]
fn testpmd_frontend_reaches_testpmd_backend() {
    let _scope = TestScope::start("testpmd_frontend", Duration::from_secs(120));
    let _slot = common::heavy_slot();
    let dir = TempDir::new("pmdfe").unwrap();
    let backend = Testpmd::vhost_backend(dir.path(), 2, 1).unwrap();
    let _frontend = Testpmd::virtio_user(backend.socket(0), 1, "txonly", &[]).unwrap();
    let rx = backend.wait_rx(0, 0, STEP).unwrap();
    assert!(rx > 0);
}
