//! Crash-safe restart (issue 19): ringswitch killed with SIGKILL in the middle of guest TX
//! load, restarted on the same socket, several times; the guest never sees a used-ring
//! entry for a chain it did not have out, and its TX keeps working.
//!
//! Why it can fail: the guest's TX chains complete in any order inside ringswitch (a
//! frame written to the tap completes when io_uring reports the write; a frame the
//! switch drops completes at once). After a crash QEMU's vhost-user-net rewinds the
//! ring's last avail index to the used index; if the used ring held a chain popped after
//! one still pending, that chain is popped and used a second time, and the guest's
//! virtio driver stops the queue ("id N is not a head!"). The load therefore mixes frames
//! to the tap peer with frames the switch drops (sent to the guest's own MAC, which the
//! switch learned on the guest's port: IEEE 802.1Q §8.6.3, never back out of the port
//! they came in on).

mod common;

use common::{mac, Guest, GuestSpec, Netns, NicSpec, Process, SocketMode, TempDir, TestScope};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(30);
const CYCLES: usize = 3;

/// Whether a guest kernel line says its TX ring went bad: a used entry for a chain the
/// driver does not have out (Linux's virtio ring code, `BAD_RING`: "id N is not a
/// head!", "id N out of range", "unexpected …"), or the watchdog of a TX queue that
/// stopped moving.
fn is_bad_ring(line: &str) -> bool {
    line.contains("is not a head")
        || line.contains("NETDEV WATCHDOG")
        || (line.contains("virtio")
            && (line.contains("unexpected") || line.contains("out of range")))
}

use common::skip_without_qemu;

struct Daemon {
    proc: Process,
    ctl: PathBuf,
}

impl Daemon {
    /// Starts ringswitch in `ns` with the guest's port on `sock` and a tap `rst0`; returns
    /// once both are there (the tap with its host address).
    fn spawn(ns: &Netns, dir: &Path, sock: &Path) -> Daemon {
        let ctl = dir.join("ctl.sock");
        // A SIGKILLed daemon leaves its sockets behind: wait for the new ones.
        let _ = std::fs::remove_file(sock);
        let _ = std::fs::remove_file(&ctl);
        let port = format!("vhost-user:path={},mac={}", sock.display(), mac(1));
        let ctl_s = ctl.display().to_string();
        let argv = [
            "run",
            "--workers",
            "1",
            "--port",
            &port,
            "--port",
            "tap:name=rst0",
            "--ctl",
            &ctl_s,
        ];
        let proc = ns
            .spawn("ringswitch", env!("CARGO_BIN_EXE_ringswitch"), &argv)
            .expect("spawn ringswitch");
        common::wait_path(sock, Duration::from_secs(20)).expect("vhost socket");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ns.ip(&["link", "show", "rst0"]).is_err() {
            assert!(Instant::now() < deadline, "{}", proc.output().tail(20));
            std::thread::sleep(Duration::from_millis(50));
        }
        ns.addr("rst0", "198.18.0.100/24").unwrap();
        Daemon { proc, ctl }
    }

    /// [`spawn`](Self::spawn), then waits for the guest's QEMU to reconnect (it retries
    /// every second: `reconnect=1`).
    fn restart(ns: &Netns, dir: &Path, sock: &Path) -> Daemon {
        let d = Daemon::spawn(ns, dir, sock);
        d.proc
            .wait_for("frontend connected", STEP)
            .expect("QEMU reconnects");
        d
    }

    /// Frames ringswitch took from the guest's TX ring since it started.
    fn guest_rx_packets(&self, sock: &Path) -> u64 {
        let out = common::ringswitch_command()
            .args(["ctl", "--ctl"])
            .arg(&self.ctl)
            .args(["stats", "--json"])
            .output()
            .expect("ctl");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let name = sock.display().to_string();
        v["stats"]["ports"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name.as_str()))
            .and_then(|p| p["rx_packets"].as_u64())
            .unwrap_or(0)
    }

    /// SIGKILL: no GET_VRING_BASE, no goodbye; frames in flight stay in flight.
    fn kill(mut self) {
        self.proc.signal(libc::SIGKILL);
        let _ = self.proc.wait_exit(Duration::from_secs(10));
    }
}

/// The guest's kernel messages (`dmesg`, through the command console, which is a serial
/// line of its own) that say its TX ring went bad.
fn bad_ring_lines(g: &Guest) -> Vec<String> {
    g.run_ok("dmesg", STEP)
        .lines()
        .filter(|l| is_bad_ring(l))
        .map(str::to_string)
        .collect()
}

#[test]
fn guest_tx_survives_sigkill_restarts_mid_load() {
    if skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start("guest_tx_survives_restarts", Duration::from_secs(240));
    let _slot = common::heavy_slot();
    let started = Instant::now();
    let dir = TempDir::new("restart").unwrap();
    let host = Netns::new("rhost").unwrap();
    let sock = dir.path().join("g.sock");
    let mut d = Daemon::spawn(&host, dir.path(), &sock);
    // A sink for the guest's TCP load, and for the checked transfer at the end.
    let _sink = host
        .spawn(
            "sink",
            "socat",
            &["-u", "TCP-LISTEN:5002,reuseaddr,fork", "OPEN:/dev/null"],
        )
        .unwrap();
    let sum_file = dir.path().join("rx.sum");
    let _check = host
        .spawn(
            "check",
            "sh",
            &[
                "-c",
                &format!(
                    "socat -u TCP-LISTEN:5003,reuseaddr - | sha256sum >{}",
                    sum_file.display()
                ),
            ],
        )
        .unwrap();

    let mut spec = GuestSpec::new("rsg");
    let mut nic = NicSpec::new(&sock, &mac(1));
    nic.mode = SocketMode::ClientReconnect;
    spec.nics.push(nic);
    spec.ip.push("198.18.0.1/24".into());
    let g = Guest::start(spec).unwrap();
    g.wait_ready(BOOT).unwrap();
    d.proc
        .wait_for("frontend connected", STEP)
        .expect("QEMU connected");
    g.ping_ok("198.18.0.100", 50, STEP);
    // The load, each sender restarted when it fails (the link goes down while ringswitch
    // is away): UDP and TCP to the tap peer, and UDP to 198.18.0.77, whose neighbour
    // entry is the guest's own MAC, so the switch drops those frames as they come.
    g.run_ok(
        "ip neigh replace 198.18.0.77 lladdr $(cat /sys/class/net/eth0/address) \
         dev eth0 nud permanent; \
         for t in UDP4-DATAGRAM:198.18.0.77:9 UDP4-DATAGRAM:198.18.0.100:9 \
                  TCP:198.18.0.100:5002; do \
           (while [ ! -e /tmp/stop ]; do socat -u /dev/zero $t; sleep 0.1; done) \
             </dev/null >/dev/null 2>&1 & \
         done",
        STEP,
    );

    for cycle in 0..CYCLES {
        // Load in flight: the guest's TX ring is moving before the kill.
        let before = d.guest_rx_packets(&sock);
        let deadline = Instant::now() + STEP;
        while d.guest_rx_packets(&sock) < before + 2000 {
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: no guest TX load through ringswitch\n{}\n{}",
                d.proc.output().tail(20),
                g.serial().tail(20)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d.kill();
        d = Daemon::restart(&host, dir.path(), &sock);
        // Give the resumed ring time to re-pop and complete what the rewind re-offered.
        std::thread::sleep(Duration::from_secs(2));
        let bad = bad_ring_lines(&g);
        assert!(
            bad.is_empty(),
            "cycle {cycle}: the guest's TX ring went bad after the restart:\n{}\n{}",
            bad.join("\n"),
            g.serial().tail(30)
        );
    }
    g.run_ok("touch /tmp/stop; sleep 0.5; killall socat; true", STEP);

    // TX works after the last restart: ping, and a fresh TCP transfer arrives intact.
    g.ping_ok("198.18.0.100", 50, STEP);
    let sent = g.run_ok(
        "dd if=/dev/urandom of=/tmp/data bs=64k count=16 2>/dev/null; \
         socat -u OPEN:/tmp/data TCP:198.18.0.100:5003,retry=20 && sha256sum </tmp/data",
        STEP,
    );
    let sent_sum = sent.split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(sent_sum.len(), 64, "{sent}");
    let deadline = Instant::now() + STEP;
    let got = loop {
        let s = std::fs::read_to_string(&sum_file).unwrap_or_default();
        if s.len() >= 64 {
            break s;
        }
        assert!(Instant::now() < deadline, "the transfer never completed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(got.split_whitespace().next(), Some(sent_sum.as_str()));
    let bad = bad_ring_lines(&g);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    eprintln!(
        "{CYCLES} SIGKILL restarts under load: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
