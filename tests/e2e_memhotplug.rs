//! Guest memory hot-plug under traffic (issue 20): the memory table of a running
//! vhost-user port changes while the guest streams through ringswitch.
//!
//! A QEMU guest (`-m 512M,slots=4,maxmem=2G`) streams TCP to a peer namespace through
//! the switch; meanwhile QMP adds a `pc-dimm` backed by a new shared memfd and later
//! removes it again. QEMU's vhost code tells the backend of each change (vhost-user spec,
//! "Memory regions": with VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS, which ringswitch
//! offers, as VHOST_USER_ADD_MEM_REG / VHOST_USER_REM_MEM_REG; otherwise a new
//! VHOST_USER_SET_MEM_TABLE). Asserted:
//! - the backend saw the change (its relay's debug log names the message) and maps the
//!   DIMM: `ctl ports` shows `guest_memory_bytes` grown by the DIMM's size, one more
//!   memfd mapping — before the guest did anything with the new memory;
//! - the unplug (ACPI eject: the guest kernel offlines and ejects the DIMM by itself)
//!   completes, and then memory, mappings and the daemon's fds are exactly as before;
//! - the stream arrives intact (SHA-256 of every byte the guest sent), and a bystander
//!   port never received a unicast frame for the guest or the peer (0 misdelivered).

mod common;

use common::qemu::Qmp;
use common::{mac, Guest, GuestSpec, Netns, NicSpec, Process, TempDir, TestScope};
use serde_json::json;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(30);
/// The guest's boot memory and the hot-plugged DIMM.
const MEM_MB: u64 = 512;
const DIMM: u64 = 256 << 20;
const PEER_IP: &str = "198.18.0.2";

use common::skip_without_qemu;

fn memfd_maps(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("/memfd:"))
        .count()
}

/// What the daemon's fds point at, sorted (sockets by inode, memfds by name).
fn fd_targets(pid: u32) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    v.sort();
    v
}

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

fn ctl_json(ctl: &Path, args: &[&str]) -> serde_json::Value {
    let out = common::ringswitch_command()
        .arg("ctl")
        .arg("--ctl")
        .arg(ctl)
        .args(args)
        .arg("--json")
        .output()
        .expect("running ringswitch ctl");
    assert!(out.status.success(), "ctl {args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).expect("ctl --json prints one JSON object")
}

/// Field `key` of port `name` in `ctl ports` (or `ctl stats` with `stats`).
fn port_field(ctl: &Path, stats: bool, name: &Path, key: &str) -> u64 {
    let v = if stats {
        ctl_json(ctl, &["stats"])["stats"]["ports"].clone()
    } else {
        ctl_json(ctl, &["ports"])["ports"].clone()
    };
    let name = name.display().to_string();
    v.as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name.as_str()))
        .and_then(|p| p[key].as_u64())
        .unwrap_or(0)
}

/// The relay's `memory table: …` debug lines the daemon printed so far.
fn table_messages(daemon: &Process) -> Vec<String> {
    daemon
        .output()
        .text()
        .lines()
        .filter(|l| l.contains("memory table: "))
        .map(str::to_string)
        .collect()
}

/// Counts, on interface `eth0` of namespace `ns`, every frame that arrives with a
/// unicast destination in `foreign` (MACs of other ports): each one is misdelivered.
struct Bystander {
    stop: Arc<AtomicBool>,
    foreign: Arc<AtomicU64>,
    seen: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bystander {
    fn start(ns: &Netns, foreign: Vec<[u8; 6]>) -> Bystander {
        let path = format!("/run/netns/{}", ns.name());
        let stop = Arc::new(AtomicBool::new(false));
        let (count, seen) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (st, c, s) = (stop.clone(), count.clone(), seen.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let sock = capture_socket(&path, "eth0");
            let _ = tx.send(sock.as_ref().map(|_| ()).map_err(|e| e.to_string()));
            let Ok(sock) = sock else { return };
            let mut buf = [0u8; 2048];
            while !st.load(Ordering::Relaxed) {
                let mut p = libc::pollfd {
                    fd: sock.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: poll(2) on one pollfd we own.
                if unsafe { libc::poll(&mut p, 1, 100) } <= 0 {
                    continue;
                }
                // SAFETY: recv(2) writes at most buf.len() bytes into our buffer.
                let n = unsafe {
                    libc::recv(
                        sock.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 6 {
                    continue;
                }
                s.fetch_add(1, Ordering::Relaxed);
                if foreign.iter().any(|m| buf[..6] == m[..]) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        rx.recv_timeout(STEP)
            .expect("capture thread started")
            .expect("capture socket in the bystander namespace");
        Bystander {
            stop,
            foreign: count,
            seen,
            thread: Some(thread),
        }
    }

    /// (frames seen, of which unicast for another port).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (
            self.seen.load(Ordering::Relaxed),
            self.foreign.load(Ordering::Relaxed),
        )
    }
}

/// A raw AF_PACKET socket for every protocol on `ifname` in the namespace at `path`
/// (this thread enters it; others keep theirs).
fn capture_socket(path: &str, ifname: &str) -> std::io::Result<OwnedFd> {
    let f = std::fs::File::open(path)?;
    // SAFETY: setns(2) on an fd we own; it changes only this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let all = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket(2) has no memory preconditions; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(all)) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = all;
    sll.sll_ifindex = idx as i32;
    // SAFETY: bind(2) reads a sockaddr_ll of the size we pass.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sock)
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut m = [0u8; 6];
    for (b, h) in m.iter_mut().zip(s.trim().split(':')) {
        *b = u8::from_str_radix(h, 16).unwrap();
    }
    m
}

#[test]
fn memory_hotplug_under_traffic() {
    if skip_without_qemu() {
        return;
    }
    let _scope = TestScope::start("memory_hotplug_under_traffic", Duration::from_secs(240));
    let _slot = common::heavy_slot();
    let started = Instant::now();
    let dir = TempDir::new("memhp").unwrap();
    let sock = dir.path().join("g.sock");
    let ctl = dir.path().join("ctl.sock");
    let qmp_path = dir.path().join("qmp.sock");
    let sw = Netns::new("hpsw").unwrap();
    let peer = Netns::new("hppeer").unwrap();
    let by = Netns::new("hpby").unwrap();
    sw.veth("v1", &peer, "eth0").unwrap();
    sw.veth("v2", &by, "eth0").unwrap();
    peer.addr("eth0", &format!("{PEER_IP}/24")).unwrap();
    let guest_mac = mac(1);
    let port = format!("vhost-user:path={},mac={guest_mac}", sock.display());
    let ctl_s = ctl.display().to_string();
    let daemon = sw
        .spawn(
            "ringswitch",
            "env",
            &[
                "RUST_LOG=vring_engine::relay=debug,info",
                env!("CARGO_BIN_EXE_ringswitch"),
                "run",
                "--workers",
                "1",
                "--port",
                "afpacket:ifname=v1",
                "--port",
                "afpacket:ifname=v2",
                "--port",
                &port,
                "--ctl",
                &ctl_s,
            ],
        )
        .unwrap();
    common::wait_path(&sock, STEP).unwrap();
    let pid = daemon.pid();
    // The stream's receiver: the SHA-256 of everything it got.
    let sum_file = dir.path().join("rx.sum");
    let _sink = peer
        .spawn(
            "sink",
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

    let mut spec = GuestSpec::new("memhp");
    spec.mem_mb = u32::try_from(MEM_MB).unwrap();
    spec.maxmem = Some((4, 2048));
    spec.nics.push(NicSpec::new(&sock, &guest_mac));
    spec.ip.push("198.18.0.1/24".into());
    spec.qmp = Some(qmp_path.clone());
    let g = Guest::start(spec).unwrap();
    g.wait_ready(BOOT).unwrap();
    g.ping_ok(PEER_IP, 50, STEP);
    let base_bytes = port_field(&ctl, false, &sock, "guest_memory_bytes");
    assert_eq!(base_bytes, MEM_MB << 20, "the boot memory is mapped");

    // From here on both MACs are learned: any unicast for them at the bystander is
    // misdelivered.
    let peer_mac = parse_mac(&peer.exec("cat", &["/sys/class/net/eth0/address"]).unwrap());
    let bystander = Bystander::start(&by, vec![parse_mac(&guest_mac), peer_mac]);

    // The stream: four random 16 KiB chunks in turn, paced, every byte also kept in
    // /tmp/sent to hash it afterwards; it ends when /tmp/stop appears.
    g.run_ok(
        "for i in 0 1 2 3; do dd if=/dev/urandom of=/tmp/c$i bs=16k count=1 2>/dev/null; done; \
         ( i=0; while [ ! -e /tmp/stop ]; do cat /tmp/c$((i % 4)); i=$((i + 1)); sleep 0.01; \
           done | tee /tmp/sent | socat -u - TCP:198.18.0.2:5003,retry=20; echo $? >/tmp/rc \
         ) </dev/null >/dev/null 2>&1 &",
        STEP,
    );
    let flowing = |from: u64| {
        eventually(STEP, || {
            port_field(&ctl, true, &sock, "rx_packets") >= from + 200
        })
    };
    let rx0 = port_field(&ctl, true, &sock, "rx_packets");
    assert!(
        flowing(rx0),
        "no stream from the guest\n{}",
        g.serial().tail(20)
    );

    let idle_fds = fd_targets(pid);
    let idle_maps = memfd_maps(pid);
    let before_plug = table_messages(&daemon).len();

    // Plug: a new shared memfd backend and a DIMM on it.
    let mut qmp = Qmp::connect(&qmp_path, Duration::from_secs(10)).unwrap();
    qmp.execute(
        "object-add",
        json!({"qom-type": "memory-backend-memfd", "id": "hpmem0", "size": DIMM, "share": true}),
    )
    .unwrap();
    qmp.execute(
        "device_add",
        json!({"driver": "pc-dimm", "id": "dimm0", "memdev": "hpmem0"}),
    )
    .unwrap();
    // Before the guest onlines anything: QEMU's memory listener sends the new region as
    // soon as the DIMM is mapped into the guest's address space.
    assert!(
        eventually(STEP, || {
            port_field(&ctl, false, &sock, "guest_memory_bytes") == base_bytes + DIMM
        }),
        "the DIMM is never mapped: {} bytes\n{}",
        port_field(&ctl, false, &sock, "guest_memory_bytes"),
        daemon.output().tail(20)
    );
    assert_eq!(memfd_maps(pid), idle_maps + 1, "one mapping for the DIMM");
    let plugged = table_messages(&daemon)[before_plug..].to_vec();
    eprintln!("plug: {plugged:?}");
    assert!(
        plugged
            .iter()
            .any(|l| l.contains("ADD_MEM_REG") || l.contains("SET_MEM_TABLE")),
        "the backend was not told of the DIMM: {plugged:?}"
    );
    let online = g.run_ok(
        "n=0; for f in /sys/devices/system/memory/memory*/state; do \
         [ \"$(cat $f)\" = offline ] && echo online_movable >$f && n=$((n + 1)); done; \
         echo onlined=$n; grep MemTotal /proc/meminfo",
        STEP,
    );
    eprintln!("guest: {}", online.replace('\n', " "));
    assert!(
        !online.contains("onlined=0"),
        "the guest got no new memory: {online}"
    );
    let rx1 = port_field(&ctl, true, &sock, "rx_packets");
    assert!(flowing(rx1), "the stream stopped after the plug");

    // Unplug: the guest's ACPI driver offlines the blocks and ejects the DIMM.
    let before_unplug = table_messages(&daemon).len();
    let t = Instant::now();
    qmp.execute("device_del", json!({"id": "dimm0"})).unwrap();
    qmp.wait_event("DEVICE_DELETED", Duration::from_secs(60), |d| {
        d["device"] == "dimm0"
    })
    .unwrap();
    eprintln!("unplug completed in {:.1} s", t.elapsed().as_secs_f64());
    qmp.execute("object-del", json!({"id": "hpmem0"})).unwrap();
    assert!(
        eventually(STEP, || {
            port_field(&ctl, false, &sock, "guest_memory_bytes") == base_bytes
        }),
        "the DIMM stays mapped after the unplug\n{}",
        daemon.output().tail(20)
    );
    let removed = table_messages(&daemon)[before_unplug..].to_vec();
    eprintln!("unplug: {removed:?}");
    assert!(
        removed
            .iter()
            .any(|l| l.contains("REM_MEM_REG") || l.contains("SET_MEM_TABLE")),
        "the backend was not told of the unplug: {removed:?}"
    );
    assert!(
        eventually(STEP, || memfd_maps(pid) == idle_maps
            && fd_targets(pid) == idle_fds),
        "after the unplug: {} memfd maps (idle {idle_maps}), fds {:?} vs idle {idle_fds:?}",
        memfd_maps(pid),
        fd_targets(pid)
    );
    let rx2 = port_field(&ctl, true, &sock, "rx_packets");
    assert!(flowing(rx2), "the stream stopped after the unplug");

    // The end of the stream: what the peer hashed is what the guest sent.
    let sent = g.run_ok(
        "touch /tmp/stop; i=0; while [ ! -e /tmp/rc ] && [ $i -lt 200 ]; do sleep 0.1; \
         i=$((i + 1)); done; echo rc=$(cat /tmp/rc); wc -c </tmp/sent; sha256sum </tmp/sent",
        STEP,
    );
    assert!(sent.contains("rc=0"), "the guest's sender failed: {sent}");
    let mut words = sent.split_whitespace().skip(1);
    let bytes: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let sent_sum = words.next().unwrap_or("").to_string();
    assert_eq!(sent_sum.len(), 64, "{sent}");
    assert!(bytes >= 100 * 16384, "a short stream: {bytes} bytes");
    let deadline = Instant::now() + STEP;
    let got = loop {
        let s = std::fs::read_to_string(&sum_file).unwrap_or_default();
        if s.len() >= 64 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the peer never finished the stream"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        got.split_whitespace().next(),
        Some(sent_sum.as_str()),
        "the stream arrived altered"
    );
    let (seen, misdelivered) = bystander.finish();
    assert_eq!(
        misdelivered, 0,
        "{misdelivered} of {seen} frames at the bystander were unicast for another port"
    );
    eprintln!(
        "memory hot-plug under a {bytes}-byte stream: plug {plugged:?}, unplug {removed:?}, \
         bystander saw {seen} frames (0 misdelivered), {:.1} s",
        started.elapsed().as_secs_f64()
    );
    drop(qmp);
    drop(g);
    drop(peer);
}
