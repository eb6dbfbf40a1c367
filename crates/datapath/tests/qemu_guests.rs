//! Two real Linux guests (QEMU, TCG) with the kernel's virtio_net driver, each on one of our
//! vhost-user ports, ping each other through the switch. Uses the cached test guest of
//! `cargo xtask guest-image` (target/guest).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::frames::*;
use common::harness::Harness;
use vring_engine::DropReason;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The test guest: RINGSWITCH_GUEST_KERNEL + RINGSWITCH_GUEST_INITRAMFS, or what
/// `cargo xtask guest-image` builds (cached; it prints `kernel=` and `initramfs=` lines).
/// The xtask gets its own target directory: the `cargo test` running us holds ours.
fn guest_image() -> (PathBuf, PathBuf) {
    static IMAGE: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if let (Ok(k), Ok(i)) = (
                std::env::var("RINGSWITCH_GUEST_KERNEL"),
                std::env::var("RINGSWITCH_GUEST_INITRAMFS"),
            ) {
                return (k.into(), i.into());
            }
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .args(["run", "-q", "-p", "xtask", "--target-dir"])
                .arg(root.join("target/e2e-xtask"))
                .args(["--", "guest-image"])
                .current_dir(&root)
                .env_remove("CARGO_TARGET_DIR")
                .output()
                .expect("running cargo xtask guest-image");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "cargo xtask guest-image failed:\n{stdout}"
            );
            let get = |key: &str| {
                stdout
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(|p| PathBuf::from(p.trim()))
                    .unwrap_or_else(|| panic!("no {key} line from cargo xtask guest-image"))
            };
            (get("kernel="), get("initramfs="))
        })
        .clone()
}

/// Boots a guest on `sock`; its console lines arrive on the returned channel.
fn boot(
    sock: &Path,
    mac: switch::Mac,
    queues: u16,
    append: &str,
) -> (Kill, mpsc::Receiver<String>) {
    let (kernel, initrd) = guest_image();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "1"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .args(["-numa", "node,memdev=mem"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        // no_timer_check: under TCG on a loaded host the IO-APIC timer check can fail and panic.
        .args([
            "-append",
            &format!("console=ttyS0 quiet panic=-1 no_timer_check {append}"),
        ])
        .args([
            "-chardev",
            &format!("socket,id=c0,path={},reconnect=1", sock.display()),
        ])
        .args([
            "-netdev",
            &format!("vhost-user,id=n0,chardev=c0,queues={queues}"),
        ])
        .args([
            "-device",
            &format!(
                "virtio-net-pci,netdev=n0,mac={mac},vectors=0,mq={}",
                queues > 1
            ),
        ])
        .args([
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-serial",
            "stdio",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 must be installed (Debian package qemu-system-x86)");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(l) = line else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (Kill(child), rx)
}

/// The first console line containing `want`, within `secs` seconds.
fn expect(rx: &mpsc::Receiver<String>, want: &str, secs: u64, log: &mut Vec<String>) -> String {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                log.push(l.clone());
                if l.contains(want) {
                    return l;
                }
            }
            Err(_) => panic!(
                "no {want:?} on the guest console; it said:\n{}",
                log.join("\n")
            ),
        }
    }
}

/// Boots two guests with `queues` queue pairs each and has A ping B.
/// Two TCG guests at a time is what a 2-core machine can take.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

macro_rules! static_serial_guard {
    () => {
        let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    };
}

fn ping_between_guests(tag: &str, queues: u16) {
    static_serial_guard!();
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mut oa = opts(&format!("{tag}a"), MAC_A);
    let mut ob = opts(&format!("{tag}b"), MAC_B);
    oa.queue_pairs = queues;
    ob.queue_pairs = queues;
    let h = Harness::new(vec![oa, ob]);
    let q = format!("rs.queues={queues}");
    let (_gb, rx_b) = boot(
        &h.dev(1).options().socket,
        MAC_B,
        queues,
        &format!("rs.ip=198.18.0.2/24 {q} rs.stay=1"),
    );
    let (_ga, rx_a) = boot(
        &h.dev(0).options().socket,
        MAC_A,
        queues,
        &format!("rs.ip=198.18.0.1/24 {q} rs.wait=60 rs.run=ping:198.18.0.2"),
    );
    let mut log_b = Vec::new();
    let iface = expect(&rx_b, "RS-IFACE", 120, &mut log_b);
    assert!(iface.contains(&format!("queues={queues}")), "{iface}");
    expect(&rx_b, "RS-DONE", 120, &mut log_b);
    // `ethtool -L combined N` in the guest reached us as SET_VRING_ENABLE from QEMU.
    assert_eq!(h.dev(1).active_queue_pairs(), queues);
    let mut log_a = Vec::new();
    let r = expect(&rx_a, "RS-RESULT name=ping", 180, &mut log_a);
    let stats = |d: usize| -> Vec<_> {
        (0..h.dev(d).options().num_queues())
            .map(|q| h.dev(d).queue_stats(q).unwrap())
            .collect()
    };
    assert!(
        r.contains("ok=1"),
        "{r}\n{}\nA: {:?}\nB: {:?}\nlinks up: {} {}",
        log_a.join("\n"),
        stats(0),
        stats(1),
        h.link_up(h.dev(0).port()),
        h.link_up(h.dev(1).port())
    );
    // The frames crossed our queues: TX on A, RX on B and the reverse. A real driver's
    // chains are all valid; the only acceptable drops are frames that arrived while the
    // other guest was still booting (RX ring not yet set up, or no buffers posted yet).
    for dev in 0..2 {
        let tx: u64 = (0..queues as usize)
            .map(|p| h.dev(dev).queue_stats(2 * p + 1).unwrap().frames)
            .sum();
        assert!(tx >= 5, "port {dev} sent {tx} frames");
        let s = h.dev(dev).queue_stats(0).unwrap();
        assert!(s.frames >= 5, "port {dev} RX: {s:?}");
        for q in 0..h.dev(dev).options().num_queues() {
            let s = h.dev(dev).queue_stats(q).unwrap();
            let boot_drops = s.dropped(DropReason::NotReady) + s.dropped(DropReason::NoBuffers);
            assert_eq!(s.dropped_total(), boot_drops, "port {dev} queue {q}: {s:?}");
        }
    }
}

#[test]
fn two_linux_guests_ping_through_the_switch() {
    ping_between_guests("g1", 1);
}

/// QEMU keeps the control queue to itself: MQ is negotiated with it, `ethtool -L` makes
/// QEMU enable the second pair with SET_VRING_ENABLE, and traffic still flows.
#[test]
fn multiqueue_linux_guests_ping_through_the_switch() {
    ping_between_guests("g2", 2);
}

/// Our side goes away and comes back while both guests run: QEMU (`reconnect=1`) dials
/// again, sets the rings up from where the guest is, and traffic resumes.
#[test]
fn backend_restart_under_running_guests() {
    static_serial_guard!();
    let mut h = Harness::new(vec![opts("rca", MAC_A), opts("rcb", MAC_B)]);
    let (_gb, rx_b) = boot(
        &h.dev(1).options().socket,
        MAC_B,
        1,
        "rs.ip=198.18.0.2/24 rs.stay=1",
    );
    let (_ga, rx_a) = boot(
        &h.dev(0).options().socket,
        MAC_A,
        1,
        "rs.ip=198.18.0.1/24 rs.wait=60 rs.run=ping:198.18.0.2,sleep:6,ping:198.18.0.2",
    );
    let mut log_b = Vec::new();
    expect(&rx_b, "RS-DONE", 120, &mut log_b);
    let mut log_a = Vec::new();
    let r = expect(&rx_a, "RS-RESULT name=ping", 180, &mut log_a);
    assert!(r.contains("ok=1"), "{r}");
    // Restart port B's vhost-user side: same device, new socket listener.
    let port_b = h.ports.remove(1);
    let dev_b = port_b.device().clone();
    port_b.stop();
    h.ports
        .push(vring_engine::VhostUserPort::start(dev_b).unwrap());
    let r = expect(&rx_a, "RS-RESULT name=ping", 120, &mut log_a);
    assert!(
        r.contains("ok=1"),
        "after reconnect: {r}\n{}",
        log_a.join("\n")
    );
    let b = h.ports[1].device();
    assert!(b.acked_features() != 0, "QEMU negotiated again");
}

/// The guest unloads and reloads its virtio_net driver (QEMU stops the rings with
/// GET_VRING_BASE, then the new driver instance negotiates and sets up fresh rings), and
/// traffic resumes.
#[test]
fn guest_driver_reload() {
    static_serial_guard!();
    let h = Harness::new(vec![opts("rla", MAC_A), opts("rlb", MAC_B)]);
    let (_gb, rx_b) = boot(
        &h.dev(1).options().socket,
        MAC_B,
        1,
        "rs.ip=198.18.0.2/24 rs.stay=1",
    );
    let script = "rmmod virtio_net || exit 2\n\
        insmod /lib/modules/virtio_net.ko || exit 3\n\
        for i in $(seq 1 50); do [ -e /sys/class/net/eth0 ] && break; sleep 0.1; done\n\
        ip addr add 198.18.0.1/24 dev eth0 && ip link set eth0 up || exit 4\n\
        for i in $(seq 1 30); do ping -c 1 -W 1 198.18.0.2 >/dev/null && exit 0; done\n\
        exit 1\n";
    let b64 = base64_encode(script.as_bytes());
    let (_ga, rx_a) = boot(
        &h.dev(0).options().socket,
        MAC_A,
        1,
        &format!("rs.ip=198.18.0.1/24 rs.wait=60 rs.run=ping:198.18.0.2 rs.cmd={b64}"),
    );
    let mut log_b = Vec::new();
    expect(&rx_b, "RS-DONE", 120, &mut log_b);
    let mut log_a = Vec::new();
    let r = expect(&rx_a, "RS-RESULT name=ping", 180, &mut log_a);
    assert!(r.contains("ok=1"), "{r}");
    let r = expect(&rx_a, "RS-RESULT name=cmd", 120, &mut log_a);
    assert!(
        r.contains("ok=1"),
        "after driver reload: {r}\n{}",
        log_a.join("\n")
    );
}

/// Standard base64 (RFC 4648 §4) for the kernel command line.
fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
