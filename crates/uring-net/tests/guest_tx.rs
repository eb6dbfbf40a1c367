//! Guest → AF_PACKET port TX from "guest memory": every frame leaves as one writev of our
//! validated header and private head copy, then the rest straight from the guest's pages
//! (stats count one write per frame), from any shared mapping — memfd or a regular file:
//! guest memory is never registered or pinned.
//!
//! The guest side here is a test queue over a memory mapping (what the vring engine will
//! provide from a real virtqueue); the receiver is a real UDP socket in a container.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

mod common;

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use common::guest::{udp_frame, MemTxQueue};
use common::{container, prefix, Ns};
use parking_lot::Mutex;
use switch::bytes::Seg;
use switch::{PortConfig, PortKind, Switch, SwitchConfig};
use uring_net::sys::mmap::Mapping;
use uring_net::{Dataplane, DataplaneConfig, GuestFrame, PortSpec};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Memory {
    /// Frames as a VERSION_1 driver sends them (the 12-byte header in guest memory).
    Plain,
    /// The frames come from a driver with the legacy 10-byte header: the pieces in guest
    /// memory hold only the Ethernet frame, and our 12-byte header goes in front.
    LegacyHeader,
    /// A second "vCPU" rewrites every frame after it was popped (after
    /// the private head copy, before the worker sends it): the EtherType becomes a VLAN-20
    /// tag and the virtio-net header in guest memory asks for a checksum at an offset
    /// past the frame. The frames must leave as they were when the switch decided.
    RewrittenAfterPop,
}

/// Sends `n` frames from `mem` through a guest port to container 1 and returns (guest
/// frames written to the host port, payloads the container's UDP socket received).
fn run_guest_tx(mem: &Mapping, mode: Memory, n: usize) -> (u64, Vec<String>) {
    let pfx = prefix("g");
    let sw = Ns::new(format!("{pfx}sw"));
    let c1 = container(&sw, &pfx, 1);
    c1.ns.ip(&[
        "neigh",
        "add",
        "198.18.0.99",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "eth0",
    ]);
    let swc = Arc::new(Switch::new(SwitchConfig::default()));
    let dp = Dataplane::new(
        swc,
        DataplaneConfig {
            workers: 1,
            ..Default::default()
        },
    )
    .unwrap();
    sw.run_in(|| dp.add_port(PortSpec::afpacket(&c1.host_if)).unwrap());
    let guest = dp
        .add_guest_port(PortConfig::new("guest0", PortKind::VhostUser))
        .unwrap();
    let rcv = c1.ns.spawn(&[
        "timeout",
        "10",
        "socat",
        "-u",
        "UDP4-RECV:5000,bind=198.18.0.1",
        "STDOUT",
    ]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let dst = c1.ns.mac("eth0");
    let pending = Arc::new(Mutex::new(VecDeque::new()));
    let done = Arc::new(Mutex::new(Vec::new()));
    let kick = uring_net::sys::eventfd().unwrap();
    let q = MemTxQueue {
        kick: kick.try_clone().unwrap(),
        pending: Arc::clone(&pending),
        done: Arc::clone(&done),
    };
    dp.attach_guest_tx(guest, 0, Some(0), Box::new(q)).unwrap();
    for i in 0..n {
        let f = udp_frame(
            dst,
            [0x02, 0, 0, 0, 0, 0x99],
            [198, 18, 0, 99],
            [198, 18, 0, 1],
            format!("frame-{i:04}\n").as_bytes(),
        );
        let off = i * 4096;
        // SAFETY: the test is the only writer; the data plane reads only after the kick.
        unsafe { mem.as_mut_slice()[off..off + f.len()].copy_from_slice(&f) };
        let base = mem.addr() + off as u64;
        // Odd frames are split (vnet header in its own descriptor).
        let segs: Vec<Seg> = if i % 2 == 1 {
            vec![
                Seg {
                    addr: base,
                    len: 12,
                },
                Seg {
                    addr: base + 12,
                    len: (f.len() - 12) as u32,
                },
            ]
        } else {
            vec![Seg {
                addr: base,
                len: f.len() as u32,
            }]
        };
        let frame = if mode == Memory::LegacyHeader {
            let body = [Seg {
                addr: base + 12,
                len: (f.len() - 12) as u32,
            }];
            GuestFrame::without_hdr_in_segs(i as u64, &body, &f).unwrap()
        } else {
            GuestFrame::new(i as u64, &segs, &f).unwrap()
        };
        if mode == Memory::RewrittenAfterPop {
            // The private head copy is taken (GuestFrame::new); now the guest rewrites
            // its frame in place: header flags NEEDS_CSUM with csum_start 0xfff0, and
            // bytes 12..16 of the Ethernet frame a VLAN-20 tag.
            let hostile: [(usize, u8); 8] = [
                (0, 1),
                (6, 0xf0),
                (7, 0xff),
                (12 + 12, 0x81),
                (12 + 13, 0x00),
                (12 + 14, 0x00),
                (12 + 15, 20),
                (12 + 16, 0x08),
            ];
            for (at, v) in hostile {
                // SAFETY: the test is the only writer of `mem`; the data plane reads it
                // only after the kick below (this is the hostile write a vCPU could make
                // at any time).
                unsafe { mem.as_mut_slice()[off + at] = v };
            }
        }
        pending.lock().push_back(frame);
        uring_net::sys::eventfd_signal(&kick).unwrap();
    }
    for _ in 0..100 {
        if done.lock().len() == n {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SIGTERM to `timeout`, which passes it on to socat (SIGKILL would orphan socat).
    // SAFETY: signalling our own child process.
    unsafe { libc::kill(rcv.id() as i32, libc::SIGTERM) };
    let out = rcv.wait_with_output().unwrap();
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let s = dp.stats();
    let g = s.port(guest).unwrap().clone();
    eprintln!("guest port: {g:?}");
    let mut d = done.lock().clone();
    d.sort_unstable();
    assert_eq!(
        d,
        (0..n as u64).collect::<Vec<_>>(),
        "every frame completed once"
    );
    // Taking the queue back returns once the worker dropped it.
    dp.detach_guest_tx(guest, 0, std::time::Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        Arc::strong_count(&pending),
        1,
        "the worker dropped the queue"
    );
    dp.shutdown().unwrap();
    (g.tx_fallback, got)
}

fn expected(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("frame-{i:04}")).collect()
}

#[test]
fn memfd_guest_frames_leave_as_one_writev_each() {
    let mem = Mapping::memfd("guest-mem", 1 << 20).unwrap();
    let (writes, got) = run_guest_tx(&mem, Memory::Plain, 32);
    assert_eq!(writes, 32);
    assert_eq!(got, expected(32));
}

/// The VLAN hop and the header bypass: the guest rewrites its frames after the switch
/// decided. Every frame still leaves untagged with the header that was validated, so
/// the container's UDP socket receives all of them (a tagged frame, or a write the
/// kernel refuses for its header, would not arrive).
#[test]
fn frames_rewritten_after_pop_leave_as_decided() {
    let mem = Mapping::memfd("guest-mem-hostile", 1 << 20).unwrap();
    let (writes, got) = run_guest_tx(&mem, Memory::RewrittenAfterPop, 16);
    assert_eq!(got, expected(16), "the frames as decided, not as rewritten");
    assert_eq!(writes, 16, "every frame written once");
}

/// Guest memory that io_uring could never have registered (a shared mapping of a regular
/// file) is written from in exactly the same way: nothing depends on the kind of memory.
#[test]
fn file_backed_guest_memory_is_written_the_same_way() {
    let path = std::env::temp_dir().join(format!("uring-net-guest-{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(1 << 20).unwrap();
    std::fs::remove_file(&path).unwrap();
    let mem = Mapping::shared_fd(OwnedFd::from(f), 1 << 20).unwrap();
    let (writes, got) = run_guest_tx(&mem, Memory::Plain, 32);
    assert_eq!(writes, 32);
    assert_eq!(got, expected(32));
}

#[test]
fn legacy_header_frames_get_our_header_in_front() {
    let mem = Mapping::memfd("guest-mem-legacy", 1 << 20).unwrap();
    let (writes, got) = run_guest_tx(&mem, Memory::LegacyHeader, 16);
    assert_eq!(writes, 16);
    assert_eq!(got, expected(16));
}

/// `Dataplane::inject`: a frame the switch originates (the querier's, handed over by the
/// housekeeping thread) is flooded by a worker like a received frame: written to the
/// AF_PACKET port and staged into the guest port, both through the workers' own paths.
#[test]
fn injected_frames_reach_container_and_guest() {
    let pfx = prefix("d");
    let sw = Ns::new(format!("{pfx}sw"));
    let c1 = container(&sw, &pfx, 1);
    c1.ns.ip(&[
        "neigh",
        "add",
        "198.18.0.99",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "eth0",
    ]);
    let dp = Dataplane::new(
        Arc::new(Switch::new(SwitchConfig::default())),
        DataplaneConfig {
            workers: 2,
            ..Default::default()
        },
    )
    .unwrap();
    let p = sw.run_in(|| dp.add_port(PortSpec::afpacket(&c1.host_if)).unwrap());
    let g = dp
        .add_guest_port(PortConfig::new("guest0", PortKind::VhostUser))
        .unwrap();
    let rx = Arc::new(common::guest::CollectRx::new(64, (0, 0)));
    dp.attach_guest_rx(g, rx.clone()).unwrap();
    let rcv = common::Reaped(c1.ns.spawn(&[
        "timeout",
        "5",
        "socat",
        "-u",
        "UDP4-RECV:5000,bind=198.18.0.1",
        "STDOUT",
    ]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let dst = c1.ns.mac("eth0");
    for i in 0..8 {
        let f = udp_frame(
            dst,
            [0x02, 0, 0, 0, 0, 0x99],
            [198, 18, 0, 99],
            [198, 18, 0, 1],
            format!("frame-{i:04}\n").as_bytes(),
        );
        // The Ethernet frame (udp_frame puts a 12-byte vnet header first).
        dp.inject(f[12..].to_vec(), 1).unwrap();
    }
    // Not a frame: nothing is sent, nothing breaks.
    dp.inject(vec![1, 2, 3], 1).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut rcv = rcv;
    // SAFETY: signalling our own child (`timeout` passes SIGTERM on to socat).
    unsafe { libc::kill(rcv.0.id() as i32, libc::SIGTERM) };
    let mut got = String::new();
    if let Some(mut out) = rcv.0.stdout.take() {
        use std::io::Read;
        let _ = out.read_to_string(&mut got);
    }
    let lines: Vec<String> = got.lines().map(str::to_string).collect();
    assert_eq!(lines, expected(8));
    let s = dp.stats();
    let ps = s.port(p).unwrap();
    assert!(ps.tx_packets >= 8);
    // The container's own chatter (IPv6 neighbour discovery) is flooded to the guest
    // too: keep the injected frames.
    let frames: Vec<Vec<u8>> = rx
        .frames
        .lock()
        .iter()
        .filter(|f| f.windows(6).any(|w| w == b"frame-"))
        .cloned()
        .collect();
    assert_eq!(frames.len(), 8, "flooded into the guest too");
    for (i, fr) in frames.iter().enumerate() {
        assert!(fr.ends_with(format!("frame-{i:04}\n").as_bytes()));
    }
    assert!(s.port(g).unwrap().tx_packets >= 8);
    dp.shutdown().unwrap();
}
