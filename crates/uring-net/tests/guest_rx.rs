//! Frames into a guest's RX side: guest → guest with exactly one copy (from the sending
//! guest's memory straight into the receiver), a full RX queue dropping with a counter, and
//! a container's frames reaching a guest.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::guest::{udp_frame, CollectRx, MemTxQueue};
use common::{container, prefix, Ns};
use parking_lot::Mutex;
use switch::bytes::Seg;
use switch::{DropReason, Mac, PortConfig, PortId, PortKind, Switch, SwitchConfig};
use uring_net::sys::mmap::Mapping;
use uring_net::{Dataplane, DataplaneConfig, GuestFrame, PortSpec};

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];

fn dataplane() -> Dataplane {
    dataplane_with(DataplaneConfig {
        workers: 2,
        ..Default::default()
    })
}

fn dataplane_with(cfg: DataplaneConfig) -> Dataplane {
    let sw = Arc::new(Switch::new(SwitchConfig::default()));
    Dataplane::new(sw, cfg).unwrap()
}

/// Two guest ports: A (MAC_A) sends, B (MAC_B) receives.
fn two_guests(dp: &Dataplane) -> (PortId, PortId) {
    let a = dp
        .add_guest_port(PortConfig::new("ga", PortKind::VhostUser).with_mac(Mac(MAC_A)))
        .unwrap();
    let b = dp
        .add_guest_port(PortConfig::new("gb", PortKind::VhostUser).with_mac(Mac(MAC_B)))
        .unwrap();
    (a, b)
}

/// Writes a vnet header and a UDP frame from A to B carrying `payload` into "guest
/// memory" at `off`; returns the bytes written and their address.
fn frame_at(mem: &Mapping, off: usize, payload: &str) -> (Vec<u8>, u64) {
    let f = udp_frame(
        MAC_B,
        MAC_A,
        [198, 18, 1, 1],
        [198, 18, 1, 2],
        payload.as_bytes(),
    );
    // SAFETY: only the test writes guest memory, before the frame is queued.
    unsafe { mem.as_mut_slice()[off..off + f.len()].copy_from_slice(&f) };
    (f, mem.addr() + off as u64)
}

fn wait_for(mut f: impl FnMut() -> bool) {
    for _ in 0..250 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn guest_to_guest_is_one_copy_and_full_rx_drops() {
    let dp = dataplane();
    let (a, b) = two_guests(&dp);
    let mem = Mapping::memfd("guest-a", 1 << 20).unwrap();
    let src = (mem.addr(), mem.addr() + mem.len() as u64);
    let sink = Arc::new(CollectRx::new(10, src));
    dp.attach_guest_rx(b, sink.clone()).unwrap();
    let pending = Arc::new(Mutex::new(std::collections::VecDeque::new()));
    let done = Arc::new(Mutex::new(Vec::new()));
    let kick = uring_net::sys::eventfd().unwrap();
    let q = MemTxQueue {
        kick: kick.try_clone().unwrap(),
        pending: pending.clone(),
        done: done.clone(),
    };
    dp.attach_guest_tx(a, 0, None, Box::new(q)).unwrap();
    let mut sent = Vec::new();
    for i in 0..16usize {
        let (f, base) = frame_at(&mem, i * 4096, &format!("g2g-{i:03}"));
        let segs = [
            Seg {
                addr: base,
                len: 12,
            },
            Seg {
                addr: base + 12,
                len: (f.len() - 12) as u32,
            },
        ];
        pending
            .lock()
            .push_back(GuestFrame::new(i as u64, &segs, &f).unwrap());
        sent.push(f[12..].to_vec());
    }
    uring_net::sys::eventfd_signal(&kick).unwrap();
    wait_for(|| done.lock().len() == 16);
    assert_eq!(done.lock().len(), 16, "every TX frame completed");
    let got = sink.frames.lock().clone();
    assert_eq!(
        got,
        sent[..10].to_vec(),
        "first 10 delivered byte-exact, in order"
    );
    assert!(
        sink.from_source.lock().iter().all(|x| *x),
        "parts after the private head came straight from the sender's memory"
    );
    assert!(sink.flushes.load(Ordering::Relaxed) >= 1);
    let s = dp.stats();
    let (sa, sb) = (s.port(a).unwrap(), s.port(b).unwrap());
    assert_eq!(sb.tx_packets, 10);
    assert_eq!(
        sb.drop_dest_full, 6,
        "full RX queue: counted drops, no blocking"
    );
    assert_eq!(sa.switch.drop_count(DropReason::DestinationFull), 6);
    assert_eq!(sa.rx_packets, 16);
    dp.shutdown().unwrap();
}

/// The double fetch, guest → guest: after the pop (the private head copy), the sender
/// rewrites its frame in place — a VLAN-20 tag over the EtherType, another IP destination,
/// and a payload byte past the head copy. The receiver gets every byte the switch decided
/// on as it was decided (untagged, same addresses); only bytes past the head copy, which
/// no decision rests on, are read from the sender's memory again, once.
#[test]
fn guest_to_guest_rewrite_after_pop_is_not_delivered() {
    let dp = dataplane();
    let (a, b) = two_guests(&dp);
    let mem = Mapping::memfd("guest-a-hostile", 1 << 20).unwrap();
    let src = (mem.addr(), mem.addr() + mem.len() as u64);
    let sink = Arc::new(CollectRx::new(64, src));
    dp.attach_guest_rx(b, sink.clone()).unwrap();
    let pending = Arc::new(Mutex::new(std::collections::VecDeque::new()));
    let done = Arc::new(Mutex::new(Vec::new()));
    let kick = uring_net::sys::eventfd().unwrap();
    let q = MemTxQueue {
        kick: kick.try_clone().unwrap(),
        pending: pending.clone(),
        done: done.clone(),
    };
    dp.attach_guest_tx(a, 0, None, Box::new(q)).unwrap();
    let mut sent = Vec::new();
    let long = "x".repeat(600);
    for i in 0..8usize {
        let payload = if i % 2 == 0 {
            format!("short-{i}")
        } else {
            format!("long-{i}-{long}")
        };
        let (f, base) = frame_at(&mem, i * 4096, &payload);
        let segs = [Seg {
            addr: base,
            len: f.len() as u32,
        }];
        pending
            .lock()
            .push_back(GuestFrame::new(i as u64, &segs, &f).unwrap());
        // After the private copy: the hostile rewrite (offsets into the segment, which
        // starts with the 12-byte virtio-net header).
        let off = i * 4096;
        let mut rewrite = vec![(12 + 12, 0x81), (12 + 13, 0), (12 + 14, 0), (12 + 15, 20)];
        rewrite.push((12 + 33, 0x63)); // last byte of the IPv4 destination
        if f.len() > 400 {
            rewrite.push((400, b'!'));
        }
        for (at, v) in rewrite {
            // SAFETY: the test is the only writer; this is the write a second vCPU makes.
            unsafe { mem.as_mut_slice()[off + at] = v };
        }
        sent.push(f[12..].to_vec());
    }
    uring_net::sys::eventfd_signal(&kick).unwrap();
    wait_for(|| done.lock().len() == 8);
    let got = sink.frames.lock().clone();
    assert_eq!(got.len(), 8, "every frame delivered");
    let head_copy = switch::bytes::HEAD_COPY - 12;
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(g.len(), s.len(), "frame {i}: untagged, same length");
        let n = head_copy.min(s.len());
        assert_eq!(g[..n], s[..n], "frame {i}: the decided bytes as decided");
        assert_eq!(&g[12..14], &[0x08, 0x00], "frame {i}: no VLAN tag");
    }
    // The long frames' rest was read from the sender's memory (so the byte past the head
    // copy is the rewritten one): one copy, straight from the source.
    assert_eq!(got[1][400 - 12], b'!');
    let parts = sink.parts.lock().clone();
    assert_eq!(parts.iter().filter(|&&p| p == 2).count(), 4, "{parts:?}");
    assert!(sink.from_source.lock().iter().all(|x| *x));
    dp.shutdown().unwrap();
}

#[test]
fn container_reaches_guest_rx() {
    let pfx = prefix("r");
    let sw = Ns::new(format!("{pfx}sw"));
    let c1 = container(&sw, &pfx, 1);
    c1.ns.ip(&[
        "neigh",
        "add",
        "198.18.0.50",
        "lladdr",
        "02:00:00:00:00:bb",
        "dev",
        "eth0",
    ]);
    let dp = dataplane();
    sw.run_in(|| dp.add_port(PortSpec::afpacket(&c1.host_if)).unwrap());
    let g = dp
        .add_guest_port(PortConfig::new("gb", PortKind::VhostUser).with_mac(Mac(MAC_B)))
        .unwrap();
    let sink = Arc::new(CollectRx::new(1000, (0, u64::MAX)));
    dp.attach_guest_rx(g, sink.clone()).unwrap();
    let has = |sink: &CollectRx| {
        sink.frames
            .lock()
            .iter()
            .any(|f| f.windows(11).any(|w| w == b"hello-guest"))
    };
    for _ in 0..5 {
        let o = c1.ns.exec(&[
            "sh",
            "-c",
            "echo hello-guest | socat -u - UDP4-SENDTO:198.18.0.50:5000",
        ]);
        assert!(o.status.success(), "{o:?}");
        wait_for(|| has(&sink));
        if has(&sink) {
            break;
        }
    }
    assert!(has(&sink), "the guest received the container's datagram");
    let f = sink
        .frames
        .lock()
        .iter()
        .find(|f| f.windows(11).any(|w| w == b"hello-guest"))
        .cloned()
        .unwrap();
    assert_eq!(&f[..6], &MAC_B, "addressed to the guest");
    assert!(dp.stats().port(g).unwrap().tx_packets >= 1);
    dp.shutdown().unwrap();
}

/// A guest queue whose kick fd is bad (closed under us, never valid) does not make its
/// worker spin on failing kick reads.
#[test]
fn bad_kick_fd_does_not_spin() {
    struct BadKick;
    impl uring_net::GuestTxQueue for BadKick {
        fn kick_fd(&self) -> i32 {
            -1
        }
        fn pop(&mut self, _max: usize, _out: &mut uring_net::FrameBatch) {}
        fn complete(&mut self, _token: u64) {}
    }
    let sw = Arc::new(Switch::new(SwitchConfig::default()));
    let dp = Dataplane::new(
        sw,
        DataplaneConfig {
            workers: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let g = dp
        .add_guest_port(PortConfig::new("bad", PortKind::VhostUser))
        .unwrap();
    dp.attach_guest_tx(g, 0, None, Box::new(BadKick)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let e1 = dp.stats().workers[0].enters;
    std::thread::sleep(Duration::from_millis(300));
    let e2 = dp.stats().workers[0].enters;
    assert!(e2 - e1 < 50, "worker spins: {} enters while idle", e2 - e1);
    dp.remove_port(g).unwrap();
    dp.shutdown().unwrap();
}

/// A guest TX queue with a driver's notification rule (virtio 1.2 §2.7.10): the driver
/// kicks when it adds a frame to a queue whose device asked for kicks, once.
struct NotifyQueue {
    kick: std::os::fd::OwnedFd,
    st: Arc<Mutex<NotifyState>>,
}

#[derive(Default)]
struct NotifyState {
    pending: std::collections::VecDeque<GuestFrame>,
    done: Vec<u64>,
    wants_kick: bool,
    kicks: usize,
    arms: usize,
}

impl NotifyQueue {
    fn take(&mut self, max: usize, out: &mut uring_net::FrameBatch, rearm: bool) {
        let mut st = self.st.lock();
        while out.len() < max {
            match st.pending.pop_front() {
                Some(f) => out.push_frame(f),
                None => break,
            }
        }
        if rearm && st.pending.is_empty() {
            st.wants_kick = true;
        }
    }
}

impl uring_net::GuestTxQueue for NotifyQueue {
    fn kick_fd(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.kick)
    }
    fn pop(&mut self, max: usize, out: &mut uring_net::FrameBatch) {
        self.take(max, out, true);
    }
    fn poll(&mut self, max: usize, out: &mut uring_net::FrameBatch) {
        self.take(max, out, false);
    }
    fn arm(&mut self) -> bool {
        let mut st = self.st.lock();
        st.arms += 1;
        st.wants_kick = true;
        !st.pending.is_empty()
    }
    fn complete(&mut self, token: u64) {
        self.st.lock().done.push(token);
    }
}

/// While a worker polls (a poll window), a guest queue is popped without asking the
/// driver for kicks: a sender adding frames one at a time does not kick for each (the
/// eventfd write is a system call on its side). When the window closes the queue is armed
/// again, so the next frame kicks and is delivered.
#[test]
fn polled_guest_queue_needs_no_kick_per_frame() {
    let dp = dataplane_with(DataplaneConfig {
        workers: 1,
        // Long enough that a loaded test machine does not close the window between two
        // sends.
        poll_us: 20_000,
        ..Default::default()
    });
    let (a, b) = two_guests(&dp);
    let mem = Mapping::memfd("guest-poll", 1 << 20).unwrap();
    let sink = Arc::new(CollectRx::new(
        1000,
        (mem.addr(), mem.addr() + mem.len() as u64),
    ));
    dp.attach_guest_rx(b, sink.clone()).unwrap();
    let kick = uring_net::sys::eventfd().unwrap();
    let st = Arc::new(Mutex::new(NotifyState {
        wants_kick: true,
        ..Default::default()
    }));
    let q = NotifyQueue {
        kick: kick.try_clone().unwrap(),
        st: st.clone(),
    };
    dp.attach_guest_tx(a, 0, None, Box::new(q)).unwrap();
    let send = |i: usize| {
        let (f, addr) = frame_at(&mem, i * 2048, &format!("poll-{i:03}"));
        let segs = [Seg {
            addr,
            len: f.len() as u32,
        }];
        let frame = GuestFrame::new(i as u64, &segs, &f).unwrap();
        let mut s = st.lock();
        s.pending.push_back(frame);
        if s.wants_kick {
            s.wants_kick = false;
            s.kicks += 1;
            uring_net::sys::eventfd_signal(&kick).unwrap();
        }
    };
    const N: usize = 100;
    for i in 0..N {
        send(i);
        // The worker drains the queue between two sends.
        std::thread::sleep(Duration::from_micros(200));
    }
    wait_for(|| st.lock().done.len() == N);
    assert_eq!(st.lock().done.len(), N, "every frame completed");
    let kicks = st.lock().kicks;
    assert!(
        kicks < N / 2,
        "{kicks} kicks for {N} frames: a polled queue must not ask for one per frame"
    );
    // The window closes (20 ms without frames): the queue is armed again ...
    wait_for(|| st.lock().arms > 0 && st.lock().wants_kick);
    assert!(
        st.lock().wants_kick,
        "armed once the worker stopped polling"
    );
    // ... so the next frame kicks and is delivered.
    send(N);
    wait_for(|| st.lock().done.len() == N + 1);
    assert_eq!(st.lock().done.len(), N + 1);
    assert_eq!(st.lock().kicks, kicks + 1);
    assert_eq!(
        sink.frames.lock().len(),
        N + 1,
        "every frame reached the other guest"
    );
    assert_eq!(dp.stats().port(b).unwrap().tx_packets, (N + 1) as u64);
    dp.shutdown().unwrap();
}
