//! Live migration of a QEMU guest between two ringswitch vhost-user ports (issue 19;
//! vhost-user spec, "Migration"): the source QEMU is on port A, the destination QEMU
//! (`-incoming`) on port B, both on the same ringswitch; a second guest on port C pings
//! the migrating guest every 100 ms and streams a TCP file into it throughout. Migration
//! must complete with ringswitch logging every page it writes into the guest's memory
//! (RX buffers, used rings): the stream's checksum must match on the destination, pings
//! resume after a bounded gap, and the switch knows the guest's MAC is on port B from
//! the guest's own announcement (GUEST_ANNOUNCE). Then a migration back is cancelled
//! (`migrate_cancel`): logging stops and the guest keeps working where it is.
//!
//! The migration stream goes over a unix socket in the test's directory, the guests'
//! traffic through ringswitch inside a namespace of the test.

mod common;

use common::qemu::Qmp;
use common::{mac, Guest, GuestSpec, Netns, NicSpec, Process, TempDir, TestScope};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(60);
const LIMIT: Duration = Duration::from_secs(300);
/// Lost pings allowed around the switch-over (10 s at one per 100 ms): the guest is
/// paused for the last copy, then announces itself from the destination.
const MAX_PING_GAP: u64 = 100;

use common::skip_without_qemu;

struct Daemon {
    ctl: PathBuf,
    proc: Process,
}

impl Daemon {
    fn start(ns: &Netns, dir: &Path, ports: &[String]) -> Daemon {
        let ctl = dir.join("ctl.sock");
        let mut args: Vec<String> = vec!["run".into(), "--workers".into(), "1".into()];
        for p in ports {
            args.push("--port".into());
            args.push(p.clone());
        }
        args.push("--ctl".into());
        args.push(ctl.display().to_string());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = ns
            .spawn("ringswitch", env!("CARGO_BIN_EXE_ringswitch"), &argv)
            .expect("spawn ringswitch");
        let d = Daemon { ctl, proc };
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.try_ctl("ports").is_none() {
            assert!(Instant::now() < deadline, "{}", d.proc.output().tail(40));
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }

    fn try_ctl(&self, what: &str) -> Option<Value> {
        let out = common::ringswitch_command()
            .args(["ctl", "--ctl"])
            .arg(&self.ctl)
            .args([what, "--json"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// The port the FDB has `mac` on, if any.
    fn fdb_port(&self, mac: &str) -> Option<String> {
        let fdb = self.try_ctl("fdb")?;
        fdb["entries"]
            .as_array()?
            .iter()
            .find(|e| e["mac"] == mac)
            .and_then(|e| e["port"].as_str().map(String::from))
    }

    /// Waits until ringswitch logged a line containing `pattern` after the first
    /// `after` lines of its output; returns the line count then.
    fn wait_log(&self, pattern: &str, after: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.proc.output().text();
            let lines: Vec<&str> = text.lines().collect();
            if let Some(i) = lines.iter().skip(after).position(|l| l.contains(pattern)) {
                return after + i + 1;
            }
            assert!(
                Instant::now() < deadline,
                "ringswitch never logged {pattern:?}:\n{}",
                self.proc.output().tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_lines(&self) -> usize {
        self.proc.output().text().lines().count()
    }
}

fn run_ok(g: &Guest, script: &str) -> String {
    g.run_ok(script, STEP)
}

/// Pings `addr` until it answers (at most ~20 s), then asserts 3 more answers.
fn ping_ok(g: &Guest, addr: &str) {
    g.ping_ok(addr, 100, STEP)
}

/// Polls `query-migrate` until the status is one of `until`; returns it.
fn wait_migration(q: &mut Qmp, until: &[&str], timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let st = q.execute("query-migrate", json!({})).unwrap();
        let s = st["status"].as_str().unwrap_or("");
        if until.contains(&s) {
            return st;
        }
        assert!(
            !matches!(s, "failed" | "cancelled") || until.contains(&s),
            "migration ended as {s}: {st:#}"
        );
        assert!(Instant::now() < deadline, "migration still {s}: {st:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The migrating guest: MAC mac(1), 198.18.0.1/24, a NIC with `queues` queue pairs on
/// `socket`, QMP on `qmp`.
fn mover_spec(name: &str, socket: &Path, qmp: &Path, queues: u16) -> GuestSpec {
    let mut g = GuestSpec::new(name);
    let mut nic = NicSpec::new(socket, &mac(1));
    nic.queues = queues;
    g.nics.push(nic);
    g.ip.push("198.18.0.1/24".into());
    g.qmp = Some(qmp.to_path_buf());
    g
}

/// Sequence numbers answered in busybox ping output (`… seq=N ttl=…`).
fn answered(ping_log: &str) -> Vec<u64> {
    ping_log
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| {
            l.split("seq=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// What [`migrate_under_traffic`] leaves running: the daemon, the guest on the
/// destination (port B) with its QMP, the peer, and the source QEMU (paused).
struct Migrated {
    // Fields drop in this order: the guests, then the daemon, then their namespace and
    // directory.
    src: Guest,
    qs: Qmp,
    dst: Guest,
    qd: Qmp,
    peer: Guest,
    d: Daemon,
    port_b: String,
    // Last: the namespace and directory outlive every process in them.
    _sw: Netns,
    dir: TempDir,
}

/// Boots the migrating guest on port A (and its destination QEMU on port B) with
/// `queues` queue pairs, and the peer on port C; migrates A -> B while the peer pings
/// the guest every 100 ms and streams 2 MiB into it, and checks what the issue asks:
/// migration completed with ringswitch logging, the stream's checksum, the ping gap,
/// and the guest's MAC on port B from its announcement.
fn migrate_under_traffic(tag: &str, queues: u16) -> Migrated {
    let dir = TempDir::new(tag).unwrap();
    let sw = Netns::new(tag).unwrap();
    let p = |n: &str| dir.path().join(n);
    let (sa, sb, sc) = (p("a.sock"), p("b.sock"), p("c.sock"));
    let d = Daemon::start(
        &sw,
        dir.path(),
        &[
            format!("vhost-user:path={},queues={queues}", sa.display()),
            format!("vhost-user:path={},queues={queues}", sb.display()),
            format!("vhost-user:path={},mac={}", sc.display(), mac(3)),
        ],
    );
    let port_a = sa.display().to_string();
    let port_b = sb.display().to_string();

    let src = Guest::start(mover_spec("migsrc", &sa, &p("src.qmp"), queues)).unwrap();
    let mut peer_spec = GuestSpec::new("migpeer");
    peer_spec.nics.push(NicSpec::new(&sc, &mac(3)));
    peer_spec.ip.push("198.18.0.3/24".into());
    let peer = Guest::start(peer_spec).unwrap();
    let mig_uri = format!("unix:{}", p("mig.sock").display());
    let dst =
        Guest::start_incoming(mover_spec("migdst", &sb, &p("dst.qmp"), queues), &mig_uri).unwrap();
    src.wait_ready(BOOT).unwrap();
    peer.wait_ready(BOOT).unwrap();
    ping_ok(&peer, "198.18.0.1");
    assert_eq!(d.fdb_port(&mac(1)).as_deref(), Some(port_a.as_str()));

    // Traffic into the guest for the whole migration: a TCP stream of 2 MiB of random
    // bytes sent in 64 paced chunks, and a ping every 100 ms.
    run_ok(
        &src,
        "(socat -u TCP-LISTEN:5001,reuseaddr - | sha256sum >/tmp/rx.sum) \
         </dev/null >/dev/null 2>&1 &",
    );
    let sent = run_ok(
        &peer,
        "dd if=/dev/urandom of=/tmp/data bs=32k count=64 2>/dev/null; \
         sha256sum </tmp/data; \
         (i=0; while [ $i -lt 64 ]; do dd if=/tmp/data bs=32k skip=$i count=1 2>/dev/null; \
          sleep 0.1; i=$((i+1)); done | socat -u - TCP:198.18.0.1:5001,retry=20; \
          touch /tmp/tx.done) </dev/null >/tmp/tx.log 2>&1 & \
         ping -i 0.1 -W 1 198.18.0.1 </dev/null >/tmp/ping.log 2>&1 & echo $! >/tmp/ping.pid",
    );
    let sent_sum = sent.split_whitespace().next().unwrap_or("").to_string();
    assert_eq!(sent_sum.len(), 64, "{sent}");

    // Migrate A -> B, in the middle of the stream; at 64 MiB/s the copy takes a while.
    // The peer captures what reaches it meanwhile, to find the guest's announcement.
    std::thread::sleep(Duration::from_secs(1));
    run_ok(
        &peer,
        "socat -u INTERFACE:eth0 OPEN:/tmp/cap,creat </dev/null >/dev/null 2>&1 & \
         echo $! >/tmp/cap.pid",
    );
    let lines = d.log_lines();
    let mut qs = Qmp::connect(&p("src.qmp"), STEP).unwrap();
    qs.execute(
        "migrate-set-parameters",
        json!({"max-bandwidth": 64u64 << 20, "downtime-limit": 500}),
    )
    .unwrap();
    qs.execute("migrate", json!({"uri": mig_uri})).unwrap();
    let st = wait_migration(&mut qs, &["completed"], STEP);
    eprintln!(
        "migration: {} ms, downtime {} ms, {} dirty-sync rounds",
        st["total-time"], st["downtime"], st["ram"]["dirty-sync-count"]
    );
    // ringswitch logged while it ran.
    d.wait_log("dirty log mapped", lines, Duration::from_secs(1));
    d.wait_log("dirty-page logging on", lines, Duration::from_secs(1));
    let mut qd = Qmp::connect(&p("dst.qmp"), STEP).unwrap();
    let run = qd.execute("query-status", json!({})).unwrap();
    assert_eq!(run["status"], "running", "{run:#}");

    // The switch learns the guest's new place from its announcement, at once.
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.fdb_port(&mac(1)).as_deref() != Some(port_b.as_str()) {
        assert!(
            Instant::now() < deadline,
            "{} not moved to port B: {:?}\n{}",
            mac(1),
            d.try_ctl("fdb"),
            d.proc.output().tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let answered_at_switch = answered(&run_ok(&peer, "cat /tmp/ping.log")).len();

    // It was the guest's own announcement (QEMU's GUEST_ANNOUNCE: the driver sends a
    // gratuitous ARP, sender and target 198.18.0.1, target MAC zero) that reached the
    // peer: the source never sends one, and QEMU cannot for a vhost-user NIC.
    std::thread::sleep(Duration::from_secs(2));
    let garp = format!("{}c6120001000000000000c6120001", mac(1).replace(':', ""));
    let n = run_ok(
        &peer,
        &format!(
            "kill $(cat /tmp/cap.pid); sleep 0.3; od -An -v -tx1 /tmp/cap | tr -d ' \\n' \
             | grep -o {garp} | wc -l"
        ),
    );
    let n: u32 = n.trim().parse().unwrap_or(0);
    assert!(
        n >= 1,
        "no gratuitous ARP from the migrated guest reached the peer"
    );

    // The stream completes on the destination with the content sent.
    run_ok(
        &peer,
        "i=0; until [ -e /tmp/tx.done ]; do i=$((i+1)); [ $i -ge 250 ] && exit 1; sleep 0.2; done",
    );
    let got = run_ok(
        &dst,
        "i=0; until [ -s /tmp/rx.sum ]; do i=$((i+1)); [ $i -ge 100 ] && exit 1; sleep 0.2; done; \
         cat /tmp/rx.sum",
    );
    assert_eq!(
        got.split_whitespace().next(),
        Some(sent_sum.as_str()),
        "stream content changed across the migration; sender: {}",
        run_ok(&peer, "cat /tmp/tx.log")
    );

    // Pings resumed after a bounded gap.
    std::thread::sleep(Duration::from_secs(2));
    let log = run_ok(
        &peer,
        "kill -INT $(cat /tmp/ping.pid); sleep 0.5; cat /tmp/ping.log",
    );
    let seqs = answered(&log);
    assert!(seqs.len() > 20, "{log}");
    let gap = seqs
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]).saturating_sub(1))
        .max()
        .unwrap_or(0);
    let after = seqs.len().saturating_sub(answered_at_switch);
    eprintln!(
        "pings: {} answered, longest gap {gap}, {after} after the switch-over",
        seqs.len()
    );
    assert!(gap <= MAX_PING_GAP, "a gap of {gap} pings:\n{log}");
    assert!(
        after >= 10,
        "pings did not resume on the destination: {log}"
    );

    Migrated {
        src,
        qs,
        dst,
        qd,
        peer,
        d,
        port_b,
        _sw: sw,
        dir,
    }
}

#[test]
fn guest_migrates_between_ports_with_traffic_then_a_cancelled_migration_leaves_it_working() {
    if skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start("migration", LIMIT);
    let _slot = common::heavy_slot();
    let mut m = migrate_under_traffic("mig", 1);
    let dir = m.dir.path().to_path_buf();
    let p = |n: &str| dir.join(n);
    let sa = p("a.sock");
    let (d, dst, peer, port_b) = (&m.d, &m.dst, &m.peer, &m.port_b);
    let qd = &mut m.qd;

    // The source QEMU goes away: port A's link goes down, the guest stays learnt on B.
    drop(m.qs);
    drop(m.src);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.fdb_port(&mac(1)).as_deref(), Some(port_b.as_str()));

    // A migration back to port A, cancelled while it copies (1 MiB/s: it cannot finish):
    // logging starts, stops at the cancel, and the guest keeps working on port B.
    let back_uri = format!("unix:{}", p("back.sock").display());
    let back =
        Guest::start_incoming(mover_spec("migback", &sa, &p("back.qmp"), 1), &back_uri).unwrap();
    let _qb = Qmp::connect(&p("back.qmp"), STEP).unwrap();
    let lines = d.log_lines();
    qd.execute(
        "migrate-set-parameters",
        json!({"max-bandwidth": 1u64 << 20}),
    )
    .unwrap();
    qd.execute("migrate", json!({"uri": back_uri})).unwrap();
    wait_migration(qd, &["active"], STEP);
    let at = d.wait_log("dirty-page logging on", lines, STEP);
    std::thread::sleep(Duration::from_secs(1));
    qd.execute("migrate_cancel", json!({})).unwrap();
    wait_migration(qd, &["cancelled"], STEP);
    d.wait_log("dirty-page logging off", at, STEP);
    let run = qd.execute("query-status", json!({})).unwrap();
    assert_eq!(run["status"], "running", "{run:#}");
    drop(back);
    ping_ok(peer, "198.18.0.1");
    assert_eq!(d.fdb_port(&mac(1)).as_deref(), Some(port_b.as_str()));
    let out = run_ok(dst, "ping -c 3 -i 0.2 -W 2 198.18.0.3");
    assert!(out.contains(" 0% packet loss"), "{out}");
}

/// The same with 2 queue pairs (QEMU runs one vhost device per pair on the connection:
/// SET_FEATURES per pair, SET_VRING_ADDR per ring).
#[test]
fn guest_with_two_queue_pairs_migrates_between_ports() {
    if skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start("migration_mq", LIMIT);
    let _slot = common::heavy_slot();
    let m = migrate_under_traffic("migmq", 2);
    let out = run_ok(&m.dst, "ls -d /sys/class/net/eth0/queues/rx-* | wc -l");
    assert_eq!(out.trim(), "2", "{out}");
    let out = run_ok(&m.dst, "ping -c 3 -i 0.2 -W 2 198.18.0.3");
    assert!(out.contains(" 0% packet loss"), "{out}");
    drop(m);
}
