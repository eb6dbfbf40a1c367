//! Guest → guest forwarding with live-migration dirty logging on and off (vhost-user
//! spec, "Migration": VHOST_F_LOG_ALL with a SET_LOG_BASE memfd log), through the
//! daemon's own code: the ports, the io_uring data plane and the glue wired as the daemon
//! wires them (tests/common/harness.rs), two in-process vhost-user frontends over memfd
//! guest memory (the vhost crate's `Frontend`, vring-engine's test driver). testpmd's
//! virtio-user cannot turn logging on, so this is where its cost is measured.
//!
//! Guest A sends frames to guest B (whose MAC the switch has learned: unicast, no flood)
//! with at most [`WINDOW`] frames in flight; B posts every RX buffer again as soon as it
//! reads it back used, and both notify the device only when it asks (EVENT_IDX, virtio
//! 1.2 §2.7.10), as a Linux driver does. B's ring thus always holds buffers for every
//! frame in flight: the figure is forwarding, not drops (setup aborts if more than 1 % of
//! frames are dropped for want of RX buffers). With the log on, both guests negotiate
//! LOG_ALL and ask for their used rings to be logged (VHOST_VRING_F_LOG), as QEMU does
//! when a migration starts: every RX buffer a frame is copied into and every used-ring
//! write also marks its page in the log. Run: `cargo xtask bench --only dirtylog`, or
//! `cargo bench -p ringswitch-datapath --bench dirty_log`.
#![allow(clippy::cast_possible_truncation)] // bench code: small literal sizes

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use common::frames::*;
use common::harness::Harness;
use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vhost::{VhostBackend, VhostUserDirtyLogRegion};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{Address, Bytes, GuestAddress};
use vring_engine::dirtylog::{LOG_ALL, VRING_F_LOG};
use vring_engine::features::bit;
use vring_engine::DropReason;

const RX: usize = 0;
const TX: usize = 1;
/// Frames sent and not yet received (half of the 256-entry rings): B's RX ring always
/// has at least `QSIZE - WINDOW` buffers posted, so no frame lacks one.
const WINDOW: u64 = 128;
/// Bytes of each RX buffer (a 1500-byte frame and its header fit in one).
const RX_BUF: u32 = 2048;
/// Bytes of log: one bit per 4 KiB page, enough for the guests' 1 MiB + 8 MiB.
const LOG_BYTES: u64 = 4096;
/// Frames forwarded at setup before anything is measured (the drop check runs on them).
const WARM_FRAMES: u64 = 20_000;
/// VRING_USED_F_NO_NOTIFY (§2.7.10, drivers without EVENT_IDX).
const USED_F_NO_NOTIFY: u16 = 1;

struct Pair {
    h: Harness,
    a: TestGuest,
    b: TestGuest,
    /// A's TX buffer for each descriptor index (header + frame, one descriptor).
    tx_buf: Vec<u64>,
    tx_len: u32,
    /// B's RX buffer for each descriptor index.
    rx_buf: Vec<u64>,
    /// A's TX descriptors not posted (the driver's own free list: one descriptor a chain).
    tx_free: Vec<u16>,
    /// Heads read back from a used ring (reused buffer).
    heads: Vec<u16>,
    event_idx: bool,
    _logs: Vec<File>,
    sent: u64,
    dropped: u64,
}

fn log_file() -> File {
    let fd = nix::sys::memfd::memfd_create(c"dirty-log", nix::sys::memfd::MemFdCreateFlag::empty())
        .unwrap();
    let f = File::from(fd);
    f.set_len(LOG_BYTES).unwrap();
    f
}

/// QEMU's migration start: SET_LOG_BASE, SET_FEATURES with LOG_ALL, SET_VRING_ADDR with
/// VHOST_VRING_F_LOG and the used ring as log_guest_addr, for the RX and TX rings.
fn start_logging(g: &mut TestGuest) -> File {
    let log = log_file();
    g.fe.set_log_base(
        0,
        Some(VhostUserDirtyLogRegion {
            mmap_size: LOG_BYTES,
            mmap_offset: 0,
            mmap_handle: log.as_raw_fd(),
        }),
    )
    .unwrap();
    g.fe.set_features(g.features | LOG_ALL).unwrap();
    for q in [RX, TX] {
        let mut c = g.queues[q].config(&g.mem);
        c.flags = VRING_F_LOG;
        c.log_addr = Some(g.queues[q].used.0);
        g.fe.set_vring_addr(q, &c).unwrap();
    }
    log
}

/// Posts descriptor `d` (its buffer `at`, `len` bytes) on `q` without a kick. The
/// driver's descriptors are managed here, not by [`DriverQueue::add`]: its free list
/// costs a scan per descriptor, driver work a real guest does not do.
fn post(q: &mut DriverQueue, mem: &Mem, d: u16, at: u64, len: u32, write: bool) {
    let flags = if write { F_WRITE } else { 0 };
    DriverQueue::write_desc(mem, q.desc, d, (at, len, flags, 0));
    q.publish(mem, d);
}

/// Appends the heads of the used entries since the last call to `out` (every chain here
/// is one descriptor, so a head is the whole chain).
fn used_heads(q: &mut DriverQueue, mem: &Mem, out: &mut Vec<u16>) {
    let end = q.used_idx(mem);
    while q.last_used != end {
        let slot = u64::from(q.last_used % q.size);
        let id: u32 = mem.read_obj(q.used.unchecked_add(4 + 8 * slot)).unwrap();
        let id = u32::from_le(id);
        assert!(id < u32::from(q.size), "used id {id} outside the ring");
        out.push(id as u16);
        q.last_used = q.last_used.wrapping_add(1);
    }
}

/// Kicks after the avail index moved from `old` to the queue's current one, only if the
/// device asked for it: with EVENT_IDX when `avail_event` lies in `[old, new)`
/// (vring_need_event, virtio 1.2 §2.7.10), else unless VRING_USED_F_NO_NOTIFY is set.
fn notify(q: &DriverQueue, mem: &Mem, old: u16, event_idx: bool) {
    let new = q.avail_idx;
    if new == old {
        return;
    }
    // The avail index store must be visible before the device's word is read (a device
    // that just went to sleep re-checks the index after writing that word).
    fence(Ordering::SeqCst);
    let wanted = if event_idx {
        let ev = q.avail_event(mem);
        new.wrapping_sub(ev).wrapping_sub(1) < new.wrapping_sub(old)
    } else {
        q.used_flags(mem) & USED_F_NO_NOTIFY == 0
    };
    if wanted {
        q.kick();
    }
}

impl Pair {
    fn new(tag: &str, logging: bool, frame_len: usize) -> Pair {
        let h = Harness::new(vec![
            opts(&format!("{tag}a"), MAC_A),
            opts(&format!("{tag}b"), MAC_B),
        ]);
        // Everything a Linux guest takes (this driver's rings are split).
        let want = !(vring_engine::features::RING_PACKED | LOG_ALL);
        let connect = |i: usize| TestGuest::connect(&h.dev(i).options().socket, 3);
        let mut a = TestGuest::start(connect(0), 3, want);
        let mut b = TestGuest::start(connect(1), 3, want);
        let mut logs = vec![];
        if logging {
            logs.push(start_logging(&mut a));
            logs.push(start_logging(&mut b));
            assert!(h.dev(0).dirty_log_mapped() && h.dev(1).dirty_log_mapped());
        }
        // B → A once, so that the switch learns B's MAC and A → B is unicast.
        a.post_rx(RX, 1, RX_BUF);
        b.send_inline(TX, &vec![0; b.hdr_len()], &udp_frame(MAC_B, MAC_A, 64));
        a.queues[RX].wait_used(&a.mem, 1);
        b.queues[TX].wait_used(&b.mem, 1);
        let event_idx = a.features & b.features & bit(VIRTIO_RING_F_EVENT_IDX) != 0;
        // UDP payload so that the Ethernet frame is `frame_len` bytes.
        let f = udp_frame(MAC_A, MAC_B, frame_len.saturating_sub(42));
        let mut all = vec![0u8; a.hdr_len()];
        all.extend_from_slice(&f);
        let tx_buf: Vec<u64> = (0..QSIZE)
            .map(|_| {
                let at = a.alloc(all.len() as u64);
                a.mem.write_slice(&all, GuestAddress(at)).unwrap();
                at
            })
            .collect();
        let rx_buf: Vec<u64> = (0..QSIZE).map(|_| b.alloc(u64::from(RX_BUF))).collect();
        let q = &mut b.queues[RX];
        for d in 0..QSIZE {
            post(q, &b.mem, d, rx_buf[usize::from(d)], RX_BUF, true);
        }
        q.kick();
        let mut p = Pair {
            h,
            tx_len: all.len() as u32,
            tx_buf,
            rx_buf,
            tx_free: (0..QSIZE).collect(),
            heads: Vec::with_capacity(usize::from(QSIZE)),
            event_idx,
            a,
            b,
            _logs: logs,
            sent: 0,
            dropped: 0,
        };
        p.run(WARM_FRAMES);
        p.check_drops(&format!("{tag} setup"));
        p
    }

    /// Aborts when more than 1 % of the frames so far were dropped for want of RX
    /// buffers: the figures would then measure drops, not forwarding.
    fn check_drops(&self, when: &str) {
        assert!(
            self.dropped * 100 < self.sent,
            "dirty_log bench ({when}): {} of {} frames dropped as NoBuffers (>= 1 %): B's RX \
             buffers do not reach the device in time, so this would measure drops, not \
             forwarding; B RX {:?}",
            self.dropped,
            self.sent,
            self.h.dev(1).queue_stats(RX)
        );
    }

    /// B's RX drops for want of buffers so far.
    fn no_buffers(&self) -> u64 {
        self.h
            .dev(1)
            .queue_stats(RX)
            .map_or(0, |s| s.dropped(DropReason::NoBuffers))
    }

    /// Sends `n` frames A → B and returns when each was received by B or counted as
    /// dropped there (`dropped` keeps the count).
    fn run(&mut self, n: u64) -> Duration {
        let t = Instant::now();
        let (mut sent, mut got) = (0u64, 0u64);
        let drops0 = self.no_buffers();
        let mut lost = 0;
        let until = t + Duration::from_secs(30);
        while got + lost < n {
            // Reclaim A's TX descriptors.
            let q = &mut self.a.queues[TX];
            used_heads(q, &self.a.mem, &mut self.tx_free);
            let old = q.avail_idx;
            while sent < n && sent - got - lost < WINDOW {
                let Some(d) = self.tx_free.pop() else { break };
                post(
                    q,
                    &self.a.mem,
                    d,
                    self.tx_buf[usize::from(d)],
                    self.tx_len,
                    false,
                );
                sent += 1;
            }
            notify(q, &self.a.mem, old, self.event_idx);
            // B: count the frames and post their buffers again.
            let q = &mut self.b.queues[RX];
            self.heads.clear();
            used_heads(q, &self.b.mem, &mut self.heads);
            let k = self.heads.len();
            let old = q.avail_idx;
            for &d in &self.heads {
                post(q, &self.b.mem, d, self.rx_buf[usize::from(d)], RX_BUF, true);
            }
            notify(q, &self.b.mem, old, self.event_idx);
            got += k as u64;
            if k == 0 {
                // Nothing arrived: some frames may have been dropped instead.
                lost = self.no_buffers() - drops0;
                assert!(
                    Instant::now() < until,
                    "stalled: {got} of {n} frames received, {sent} sent, {lost} dropped; \
                     A TX {:?}, B RX {:?}",
                    self.h.dev(0).queue_stats(TX),
                    self.h.dev(1).queue_stats(RX)
                );
                std::hint::spin_loop();
            }
        }
        self.sent += n;
        self.dropped += lost;
        t.elapsed()
    }
}

fn bench(c: &mut Criterion) {
    // Warnings only: the ports' connect/link lines would interleave with criterion's.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .try_init();
    for len in [64usize, 1500] {
        let mut g = c.benchmark_group(format!("dirty_log_{len}B"));
        g.throughput(Throughput::Elements(1));
        // Fewer, longer samples: each then holds thousands of frames, so filling and
        // draining the window at its ends is noise, not part of the rate.
        g.sample_size(20);
        for (name, logging) in [("log_off", false), ("log_on", true)] {
            let mut p = Pair::new(&format!("dl{len}{name}"), logging, len);
            g.bench_function(name, |bch| bch.iter_custom(|iters| p.run(iters)));
            p.check_drops(&format!("dirty_log_{len}B/{name}"));
            eprintln!(
                "dirty_log_{len}B/{name}: {} of {} frames dropped for want of RX buffers",
                p.dropped, p.sent
            );
            drop(p);
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
