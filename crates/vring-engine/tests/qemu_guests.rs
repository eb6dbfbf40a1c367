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

fn guest_image() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guest");
    let initrd = root.join("initramfs.cpio");
    let kernel = std::fs::read_dir(root.join("kernel"))
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .and_then(|e| std::fs::read_dir(e.path().join("boot")).ok())
        .and_then(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz"))
            })
        });
    match kernel {
        Some(k) if initrd.exists() => (k, initrd),
        _ => panic!("no test guest under target/guest: run `cargo xtask guest-image` first"),
    }
}

/// Boots a guest on `sock`; its console lines arrive on the returned channel.
fn boot(sock: &Path, mac: switch::Mac, append: &str) -> (Kill, mpsc::Receiver<String>) {
    let (kernel, initrd) = guest_image();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "1"])
        .args(["-object", "memory-backend-memfd,id=mem,size=256M,share=on"])
        .args(["-numa", "node,memdev=mem"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", &format!("console=ttyS0 quiet {append}")])
        .args(["-chardev", &format!("socket,id=c0,path={}", sock.display())])
        .args(["-netdev", "vhost-user,id=n0,chardev=c0"])
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={mac},vectors=0"),
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

#[test]
fn two_linux_guests_ping_through_the_switch() {
    let h = Harness::new(vec![opts("ga", MAC_A), opts("gb", MAC_B)]);
    let (_gb, rx_b) = boot(
        &h.dev(1).options().socket,
        MAC_B,
        "rs.ip=198.18.0.2/24 rs.stay=1",
    );
    let (_ga, rx_a) = boot(
        &h.dev(0).options().socket,
        MAC_A,
        "rs.ip=198.18.0.1/24 rs.wait=60 rs.run=ping:198.18.0.2",
    );
    let mut log_b = Vec::new();
    expect(&rx_b, "RS-DONE", 120, &mut log_b);
    let mut log_a = Vec::new();
    let r = expect(&rx_a, "RS-RESULT name=ping", 180, &mut log_a);
    assert!(r.contains("ok=1"), "{r}\n{}", log_a.join("\n"));
    // The frames crossed our queues: TX on A, RX on B and the reverse. A real driver's
    // chains are all valid; the only acceptable drops are frames that arrived while the
    // other guest was still booting (RX ring not yet set up, or no buffers posted yet).
    for (dev, q) in [(0, 1), (1, 0), (1, 1), (0, 0)] {
        let s = h.dev(dev).queue_stats(q).unwrap();
        assert!(s.frames >= 5, "port {dev} queue {q}: {s:?}");
        let boot_drops = s.dropped(DropReason::NotReady) + s.dropped(DropReason::NoBuffers);
        assert_eq!(s.dropped_total(), boot_drops, "port {dev} queue {q}: {s:?}");
    }
}
