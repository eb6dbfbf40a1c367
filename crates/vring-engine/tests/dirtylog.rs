//! Live-migration dirty logging (vhost-user spec, "Migration"): with VHOST_F_LOG_ALL on,
//! every byte the device writes into guest memory — RX buffers (mergeable and not, the
//! single-descriptor fast path and the general walk), RX and TX used-ring entries, used
//! indexes, flags and avail_event — has its 4 KiB page marked in the frontend's log, and
//! nothing else; with LOG_ALL off nothing is marked. Driven through the device's real RX
//! and lent-TX-ring code, over the relay that serves SET_LOG_BASE.

mod common;

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::frames::*;
use common::*;
use parking_lot::Mutex;
use switch::{Offloads, PortId, RxFilter, VnetHdr};
use vhost::{VhostBackend, VhostUserDirtyLogRegion};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::Bytes;
use vring_engine::dirtylog::{LOG_ALL, VRING_F_LOG};
use vring_engine::features::bit;
use vring_engine::{NetDevice, PortEvents, TxRing, VhostUserPort};

const LOG_BYTES: usize = 4096;

/// Keeps lent TX rings for the test to pop and complete.
#[derive(Default)]
struct Plane {
    rings: Mutex<Vec<TxRing>>,
}

struct Ev(Arc<Plane>);

impl PortEvents for Ev {
    fn rx_filter_changed(&self, _: PortId, _: &RxFilter) {}
    fn offloads_changed(&self, _: PortId, _: Offloads) {}
    fn link_changed(&self, _: PortId, _: bool) {}
    fn tx_ring_started(&self, _: PortId, ring: TxRing) {
        self.0.rings.lock().push(ring);
    }
    fn tx_ring_stopped(&self, _: PortId, pair: u16) {
        self.0.rings.lock().retain(|r| r.pair() != pair);
    }
}

fn start(tag: &str, want: u64) -> (Arc<Plane>, VhostUserPort, TestGuest) {
    let plane = Arc::new(Plane::default());
    let dev = NetDevice::new(PortId(0), opts(tag, MAC_A), Arc::new(Ev(plane.clone()))).unwrap();
    let port = VhostUserPort::start(dev).unwrap();
    let g = TestGuest::start(
        TestGuest::connect(&port.device().options().socket, 3),
        3,
        want,
    );
    wait_for("TX ring lent out", || {
        (plane.rings.lock().len() == 1).then_some(())
    });
    (plane, port, g)
}

fn log_file() -> File {
    let fd = nix::sys::memfd::memfd_create(c"dirty-log", nix::sys::memfd::MemFdCreateFlag::empty())
        .unwrap();
    let f = File::from(fd);
    f.set_len(LOG_BYTES as u64).unwrap();
    f
}

/// The migration start sequence QEMU sends: SET_LOG_BASE, SET_FEATURES with LOG_ALL,
/// SET_VRING_ADDR with VHOST_VRING_F_LOG (log_guest_addr = the used ring) for `rings`.
fn start_logging(g: &mut TestGuest, log: &File, mmap_size: u64, rings: &[usize]) {
    g.fe.set_log_base(
        0,
        Some(VhostUserDirtyLogRegion {
            mmap_size,
            mmap_offset: 0,
            mmap_handle: log.as_raw_fd(),
        }),
    )
    .unwrap();
    g.fe.set_features(g.features | LOG_ALL).unwrap();
    for &q in rings {
        let mut c = g.queues[q].config(&g.mem);
        c.flags = VRING_F_LOG;
        c.log_addr = Some(g.queues[q].used.0);
        g.fe.set_vring_addr(q, &c).unwrap();
    }
}

fn dirty(log: &File) -> BTreeSet<u64> {
    let mut b = vec![0u8; LOG_BYTES];
    log.read_exact_at(&mut b, 0).unwrap();
    (0..LOG_BYTES as u64 * 8)
        .filter(|p| b[(p / 8) as usize] & (1 << (p % 8)) != 0)
        .collect()
}

fn clear(log: &File) {
    log.write_all_at(&[0u8; LOG_BYTES], 0).unwrap();
}

/// Pages of guest-physical `[gpa, gpa + len)`.
fn pages(gpa: u64, len: u64) -> BTreeSet<u64> {
    (gpa >> 12..=(gpa + len - 1) >> 12).collect()
}

/// A buffer of `len` bytes at a fresh, page-aligned address with a free page after it, so
/// a page logged for a neighbour cannot hide a missed one.
fn spaced_buffer(g: &mut TestGuest, len: u32, off: u64) -> u64 {
    let a = g.alloc(u64::from(len) + off + 2 * 4096);
    ((a + 4095) & !4095) + off
}

fn deliver(dev: &NetDevice, frame: &[u8]) {
    dev.deliver(0, &VnetHdr::default(), &[switch::Chunk::from(frame)])
        .unwrap();
}

/// Sends `frames` on TX, pops and completes them through the lent ring; returns the
/// TX buffers' pages (read, never written).
fn tx_round(plane: &Plane, g: &mut TestGuest, frames: &[Vec<u8>]) -> BTreeSet<u64> {
    let hdr = [0u8; 12];
    let mut read = BTreeSet::new();
    for f in frames {
        let before = g.next_alloc();
        g.send_split(1, &hdr[..g.hdr_len()], f);
        read.extend(pages(before, g.next_alloc() - before));
    }
    let mut rings = plane.rings.lock();
    let r = &mut rings[0];
    let mut tokens = Vec::new();
    r.pop(64, |p| {
        tokens.push(p.token);
        true
    });
    assert_eq!(tokens.len(), frames.len());
    // Out of order, as zero-copy writes complete.
    for t in tokens.iter().rev() {
        r.complete(*t);
    }
    r.flush();
    drop(rings);
    g.queues[1].wait_used(&g.mem, frames.len());
    read
}

/// One run: RX frames into buffers laid out by `post`, TX frames, then the same with
/// LOG_ALL off.
fn check(want: u64, tag: &str, mergeable: bool) {
    let (plane, port, mut g) = start(tag, want);
    let dev = port.device().clone();
    let log = log_file();
    start_logging(&mut g, &log, LOG_BYTES as u64, &[0, 1]);
    assert!(dev.dirty_log_mapped());
    clear(&log);
    let hl = g.hdr_len() as u64;
    let mut want_pages = BTreeSet::new();

    // RX. Buffers straddle page boundaries (offset 3000 into a page).
    let f1 = udp_frame(MAC_B, MAC_A, 100);
    let f2 = udp_frame(MAC_B, MAC_A, 3000);
    if mergeable {
        // f1 into one 2000-byte buffer (fast path); f2 across three (general walk):
        // 2000 + 1000 + the rest, each logged for what it received.
        let lens = [2000u32, 2000, 1000, 2000];
        let bufs: Vec<u64> = lens
            .iter()
            .map(|&l| spaced_buffer(&mut g, l, 3000))
            .collect();
        for (a, l) in bufs.iter().zip(lens) {
            g.queues[0].add(&g.mem, &[(*a, l, true)]);
        }
        deliver(&dev, &f1);
        deliver(&dev, &f2);
        want_pages.extend(pages(bufs[0], hl + f1.len() as u64));
        let mut left = hl + f2.len() as u64;
        for (a, l) in bufs[1..].iter().zip(&lens[1..]) {
            let n = left.min(u64::from(*l));
            want_pages.extend(pages(*a, n));
            left -= n;
        }
        assert_eq!(left, 0);
    } else {
        // f1 into one descriptor (fast path); f2 into a header descriptor and a data
        // descriptor (general walk).
        let b1 = spaced_buffer(&mut g, 4000, 3000);
        g.queues[0].add(&g.mem, &[(b1, 4000, true)]);
        let h2 = spaced_buffer(&mut g, 12, 4090);
        let d2 = spaced_buffer(&mut g, 4000, 3000);
        g.queues[0].add(
            &g.mem,
            &[(h2, u32::try_from(hl).unwrap(), true), (d2, 4000, true)],
        );
        deliver(&dev, &f1);
        deliver(&dev, &f2);
        want_pages.extend(pages(b1, hl + f1.len() as u64));
        want_pages.extend(pages(h2, hl));
        want_pages.extend(pages(d2, f2.len() as u64));
    }
    dev.flush_rx(0);
    let used = g.queues[0].wait_used(&g.mem, 2);
    let rxq = &g.queues[0];
    // Flags, index and the entries written (more than two with mergeable buffers).
    let n_used = if mergeable { 4 } else { 2 };
    want_pages.extend(pages(rxq.used.0, 4 + 8 * n_used));
    assert!(used.len() >= 2);

    // TX: entries, index and avail_event of the TX used ring; the TX buffers are only read.
    let tx_read = tx_round(
        &plane,
        &mut g,
        &[udp_frame(MAC_A, MAC_B, 200), udp_frame(MAC_A, MAC_B, 5000)],
    );
    let txq = &g.queues[1];
    want_pages.extend(pages(txq.used.0, 4 + 8 * 2));
    if want & bit(VIRTIO_RING_F_EVENT_IDX) != 0 {
        want_pages.extend(pages(txq.used.0 + 4 + 8 * u64::from(txq.size), 2));
    }
    let got = dirty(&log);
    assert_eq!(got, want_pages, "logged vs written pages");
    assert!(
        got.is_disjoint(&tx_read),
        "TX buffers are read, not written"
    );
    assert_eq!(dev.dirty_log_errors(), 0);

    // LOG_ALL cleared (migrate_cancel): logging stops and the log is unmapped.
    g.fe.set_features(g.features).unwrap();
    assert!(!dev.dirty_log_mapped());
    clear(&log);
    let b = spaced_buffer(&mut g, 4000, 0);
    g.queues[0].add(&g.mem, &[(b, 4000, true)]);
    deliver(&dev, &f1);
    dev.flush_rx(0);
    g.queues[0].wait_used(&g.mem, 1);
    tx_round(&plane, &mut g, &[udp_frame(MAC_A, MAC_B, 300)]);
    assert!(dirty(&log).is_empty(), "nothing logged with LOG_ALL off");
    let got = g.read(b + hl, f1.len());
    assert_eq!(got, f1, "and frames still arrive");
}

#[test]
fn non_mergeable_rx_and_tx_log_exactly_the_pages_written() {
    check(
        bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX),
        "dl-big",
        false,
    );
}

#[test]
fn mergeable_rx_and_tx_log_exactly_the_pages_written() {
    check(
        bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_RING_F_EVENT_IDX),
        "dl-mrg",
        true,
    );
}

#[test]
fn without_event_idx_the_used_flags_are_logged() {
    check(
        bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF),
        "dl-noevt",
        true,
    );
}

/// A log smaller than guest memory (the frontend's size): pages beyond it are counted,
/// and nothing is written past the mapped size.
#[test]
fn a_log_too_small_is_never_written_past_its_end() {
    let (_plane, port, mut g) = start("dl-small", bit(VIRTIO_F_VERSION_1));
    let dev = port.device().clone();
    let log = log_file();
    // 8 bytes cover 64 pages = 256 KiB; guest memory starts at 1 MiB.
    start_logging(&mut g, &log, 8, &[0]);
    clear(&log);
    let b = spaced_buffer(&mut g, 2000, 0);
    g.queues[0].add(&g.mem, &[(b, 2000, true)]);
    deliver(&dev, &udp_frame(MAC_B, MAC_A, 100));
    g.queues[0].wait_used(&g.mem, 1);
    assert!(dirty(&log).is_empty());
    assert!(dev.dirty_log_errors() >= 2, "buffer and used ring counted");
    // And the guest's memory was written as usual.
    let _: u8 = g.mem.read_obj(vm_memory::GuestAddress(b)).unwrap();
}

/// Migration starts while TX frames are in flight (zero-copy writes still in the
/// kernel): QEMU's SET_VRING_ADDR with the running ring's addresses only switches
/// logging on, so the ring stays lent and the frames complete into it — logged.
#[test]
fn tx_frames_in_flight_when_logging_starts_still_complete() {
    let want = bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_RING_F_EVENT_IDX);
    let (plane, port, mut g) = start("dl-inflight", want);
    let dev = port.device().clone();
    let hdr = [0u8; 12];
    g.send_split(1, &hdr, &udp_frame(MAC_A, MAC_B, 100));
    g.send_split(1, &hdr, &udp_frame(MAC_A, MAC_B, 200));
    let mut tokens = Vec::new();
    plane.rings.lock()[0].pop(64, |p| {
        tokens.push(p.token);
        true
    });
    assert_eq!(tokens.len(), 2);
    let log = log_file();
    start_logging(&mut g, &log, LOG_BYTES as u64, &[0, 1]);
    clear(&log);
    {
        let mut rings = plane.rings.lock();
        assert_eq!(rings.len(), 1, "still lent");
        let r = &mut rings[0];
        assert_eq!(r.in_flight(), 2);
        for t in &tokens {
            r.complete(*t);
        }
        r.flush();
    }
    assert_eq!(g.queues[1].wait_used(&g.mem, 2).len(), 2);
    let used = g.queues[1].used.0;
    assert!(pages(used, 4 + 16).is_subset(&dirty(&log)));
    assert_eq!(dev.dirty_log_errors(), 0);
}
