//! TX rings lent to an outside data plane (the device's only TX path): the device hands
//! a live ring out, frames are popped as host addresses with a private head copy,
//! completed out of order, and the ring is taken back — after every frame in flight was
//! completed — when the frontend stops it (GET_VRING_BASE).
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

mod common;

use std::sync::Arc;

use common::frames::*;
use common::*;
use parking_lot::Mutex;
use switch::{Offloads, PortId, RxFilter};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::Bytes;
use vring_engine::features::bit;
use vring_engine::{DropReason, NetDevice, PortEvents, TxRing, VhostUserPort};

/// The "data plane": keeps lent rings, and on stop completes what is in flight (as the
/// io_uring workers do before they drop a ring).
#[derive(Default)]
struct Plane {
    rings: Mutex<Vec<TxRing>>,
    inflight: Mutex<Vec<u64>>,
    started: Mutex<Vec<u16>>,
    stopped: Mutex<Vec<(u16, usize)>>,
    /// Keep stopped rings instead of dropping them: writes that never finish, a wait
    /// that times out.
    hold: std::sync::atomic::AtomicBool,
    held: Mutex<Vec<TxRing>>,
}

struct Ev(Arc<Plane>);

impl PortEvents for Ev {
    fn rx_filter_changed(&self, _: PortId, _: &RxFilter) {}
    fn offloads_changed(&self, _: PortId, _: Offloads) {}
    fn link_changed(&self, _: PortId, _: bool) {}
    fn tx_ring_started(&self, _: PortId, ring: TxRing) {
        self.0.started.lock().push(ring.pair());
        self.0.rings.lock().push(ring);
    }
    fn tx_ring_stopped(&self, _: PortId, pair: u16) {
        let mut rings = self.0.rings.lock();
        if let Some(i) = rings.iter().position(|r| r.pair() == pair) {
            let mut r = rings.remove(i);
            if self.0.hold.load(std::sync::atomic::Ordering::Relaxed) {
                self.0.held.lock().push(r);
                return;
            }
            let n = r.in_flight();
            for t in self.0.inflight.lock().drain(..) {
                r.complete(t);
            }
            drop(r); // flushes the completions
            self.0.stopped.lock().push((pair, n));
        }
    }
}

fn start(tag: &str) -> (Arc<Plane>, VhostUserPort) {
    let plane = Arc::new(Plane::default());
    let dev = NetDevice::new(PortId(0), opts(tag, MAC_A), Arc::new(Ev(plane.clone()))).unwrap();
    (plane, VhostUserPort::start(dev).unwrap())
}

/// A device lending its TX ring and a guest driving it with features `want`; returns once
/// the ring of queue pair 0 is lent out (keep the port alive for the test's length).
fn lent(tag: &str, want: u64) -> (Arc<Plane>, VhostUserPort, TestGuest) {
    lent_sized(tag, want, QSIZE)
}

/// [`lent`] with `size`-entry rings.
fn lent_sized(tag: &str, want: u64, size: u16) -> (Arc<Plane>, VhostUserPort, TestGuest) {
    let (plane, port) = start(tag);
    let g = TestGuest::start_sized(
        TestGuest::connect(&port.device().options().socket, 3),
        3,
        want,
        size,
    );
    wait_for("TX ring lent out", || {
        (plane.started.lock().as_slice() == [0]).then_some(())
    });
    (plane, port, g)
}

/// Pops everything available; returns (token, frame bytes read through the host
/// addresses, head copy, hdr_in_segs).
fn pop_all(plane: &Plane) -> Vec<(u64, Vec<u8>, Vec<u8>, bool)> {
    let mut out = Vec::new();
    let mut rings = plane.rings.lock();
    let r = &mut rings[0];
    r.pop(64, |p| {
        let mut bytes = Vec::new();
        for s in p.segs {
            // SAFETY: the ring guarantees popped pieces stay mapped until completed.
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts(s.addr as *const u8, s.len as usize)
            });
        }
        // The head as a data plane builds it: the validated 12-byte header, then the
        // frame's first bytes.
        let mut head = vec![0u8; 12];
        p.hdr.emit(&mut head, 12).unwrap();
        let mut frame = vec![0u8; 244];
        let n = p.copy_frame_head(&mut frame);
        head.extend_from_slice(&frame[..n]);
        out.push((p.token, bytes, head, p.hdr_in_segs));
        true
    });
    out
}

#[test]
fn ring_is_lent_popped_completed_out_of_order_published_in_order_and_taken_back() {
    let want = bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_RING_F_EVENT_IDX) | bit(VIRTIO_NET_F_CSUM);
    let (plane, port, mut g) = lent("txring", want);
    assert_eq!(g.hdr_len(), 12);
    let hdr = [0u8; 12];
    let f1 = udp_frame(MAC_A, MAC_B, 100);
    let f2 = udp_frame(MAC_A, MAC_B, 700);
    let h1 = g.send_split(1, &hdr, &f1);
    let h2 = g.send_inline(1, &hdr, &f2);
    // A hostile chain: a buffer outside guest memory. Dropped, counted, returned.
    let bad = g.queues[1].add(&g.mem, &[(0xdead_0000_0000, 64, false)]);
    g.queues[1].kick();
    let popped = wait_for("frames popped", || {
        let p = pop_all(&plane);
        (!p.is_empty()).then_some(p)
    });
    assert_eq!(popped.len(), 2, "the bad chain never reaches the plane");
    // In avail order; the tokens are the ring's own (not head indices).
    assert_ne!(popped[0].0, popped[1].0);
    for ((_, bytes, head, in_segs), f) in popped.iter().zip([&f1, &f2]) {
        assert!(
            *in_segs,
            "VERSION_1: the guest's 12-byte header leads the pieces"
        );
        assert_eq!(&bytes[..12], &hdr);
        assert_eq!(&bytes[12..], f.as_slice());
        assert_eq!(&head[12..], &f[..head.len() - 12]);
    }
    let s = port.device().queue_stats(1).unwrap();
    assert_eq!(s.frames, 2);
    assert_eq!(
        s.drops
            .iter()
            .find(|(d, _)| matches!(d, DropReason::Chain(_)))
            .map(|(_, n)| *n),
        Some(1)
    );
    // The bad chain is done at once, but used entries go out in pop order: it waits
    // behind the two frames, and h2 (completed first) waits behind h1.
    {
        let mut rings = plane.rings.lock();
        rings[0].flush();
        assert!(!rings[0].has_completions());
        assert_eq!(rings[0].unpublished(), 3);
    }
    assert_eq!(g.queues[1].used_idx(&g.mem), 0);
    {
        let mut rings = plane.rings.lock();
        assert_eq!(rings[0].in_flight(), 2);
        rings[0].complete(popped[1].0);
        rings[0].complete(popped[1].0); // twice: ignored
        rings[0].complete(9999); // unknown: ignored
        rings[0].flush();
        assert_eq!(rings[0].in_flight(), 1);
    }
    assert_eq!(g.queues[1].used_idx(&g.mem), 0, "h2 waits for h1");
    // One frame stays in flight while the frontend stops the ring: GET_VRING_BASE returns
    // only after the plane completed it, and the index it reports covers all three chains,
    // which reach the used ring in pop order.
    plane.inflight.lock().push(popped[0].0);
    let base = g.fe.get_vring_base(1).unwrap();
    assert_eq!(base, 3);
    assert_eq!(plane.stopped.lock().as_slice(), &[(0, 1)]);
    assert_eq!(
        g.queues[1].wait_used(&g.mem, 3),
        vec![(h1, 0), (h2, 0), (bad, 0)]
    );
    assert!(plane.rings.lock().is_empty());
    // Set up again (as QEMU does on resume): lent out anew.
    g.setup_queue(1);
    wait_for("TX ring lent again", || {
        (plane.started.lock().len() == 2).then_some(())
    });
}

#[test]
fn disconnect_takes_the_ring_back() {
    let (plane, port) = start("txring-dc");
    let g = TestGuest::start(TestGuest::connect(&port.device().options().socket, 3), 3, 0);
    wait_for("TX ring lent out", || {
        (plane.started.lock().len() == 1).then_some(())
    });
    drop(g);
    wait_for("TX ring taken back", || {
        (plane.stopped.lock().len() == 1).then_some(())
    });
    assert!(plane.rings.lock().is_empty());
}

/// Hostile input on a lent ring: a valid chain of more pieces than the data plane writes
/// in one go is dropped and counted (never handed over, returned to the guest); an avail
/// index that jumps past the ring size stops the ring and signals the error eventfd, and
/// nothing more is popped from it.
#[test]
fn hostile_chains_on_a_lent_ring_are_counted_drops() {
    let (plane, port) = start("txring-hostile");
    let mut g = TestGuest::start(TestGuest::connect(&port.device().options().socket, 3), 3, 0);
    wait_for("TX ring lent out", || {
        (plane.started.lock().len() == 1).then_some(())
    });
    let hdr = vec![0u8; g.hdr_len()];
    let frame = udp_frame(MAC_A, MAC_B, 200);
    // 40 one-byte-ish pieces: header, then the frame split finely.
    let h = g.alloc(hdr.len() as u64);
    let f = g.alloc(frame.len() as u64);
    g.mem.write_slice(&hdr, vm_memory::GuestAddress(h)).unwrap();
    g.mem
        .write_slice(&frame, vm_memory::GuestAddress(f))
        .unwrap();
    let mut bufs = vec![(h, hdr.len() as u32, false)];
    let piece = frame.len() / 39;
    let mut at = 0;
    while at < frame.len() {
        let n = piece.min(frame.len() - at);
        bufs.push((f + at as u64, n as u32, false));
        at += n;
    }
    assert!(bufs.len() > switch::bytes::MAX_SEGS);
    let many = g.queues[1].add(&g.mem, &bufs);
    g.queues[1].kick();
    wait_for("too-many-pieces drop", || {
        let s = port.device().queue_stats(1).unwrap();
        s.drops
            .iter()
            .any(|(d, n)| *d == DropReason::TooManySegments && *n == 1)
            .then_some(())
            .or_else(|| {
                assert!(pop_all(&plane).is_empty(), "never handed to the plane");
                None
            })
    });
    plane.rings.lock()[0].flush();
    assert_eq!(g.queues[1].wait_used(&g.mem, 1), vec![(many, 0)]);
    // The avail index jumps by more than the queue size (§2.7.6).
    let q = &mut g.queues[1];
    let bogus = q.avail_idx.wrapping_add(QSIZE + 1);
    q.set_avail_idx(&g.mem, bogus);
    q.kick();
    wait_for("AvailJump drop", || {
        assert!(pop_all(&plane).is_empty());
        let s = port.device().queue_stats(1).unwrap();
        s.drops
            .iter()
            .any(|(d, n)| *d == DropReason::AvailJump && *n == 1)
            .then_some(())
    });
    wait_for("err eventfd", || g.queues[1].errored().then_some(()));
}

#[test]
fn legacy_10_byte_header_is_normalised_in_the_head_copy() {
    // Neither VERSION_1 nor MRG_RXBUF: the legacy 10-byte header (§5.1.6.1).
    let (plane, _port, mut g) = lent("txlegacy", bit(VIRTIO_NET_F_CSUM));
    assert_eq!(g.hdr_len(), 10);
    // NEEDS_CSUM over the UDP checksum field: csum_start 34, csum_offset 6.
    let mut hdr = [0u8; 10];
    hdr[0] = 1;
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
    hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
    let f = udp_frame(MAC_A, MAC_B, 300);
    let h = g.send_split(1, &hdr, &f);
    let popped = wait_for("frame popped", || {
        let p = pop_all(&plane);
        (!p.is_empty()).then_some(p)
    });
    let (tok, bytes, head, in_segs) = &popped[0];
    assert!(!in_segs, "the pieces start at the Ethernet frame");
    assert_eq!(bytes.as_slice(), f.as_slice());
    let parsed = switch::VnetHdr::parse(&head[..12], 12).unwrap();
    assert_eq!(
        (parsed.flags, parsed.csum_start, parsed.csum_offset),
        (1, 34, 6)
    );
    assert_eq!(&head[12..], &f[..head.len() - 12]);
    assert_eq!(
        head.len(),
        256,
        "12-byte header + the frame's first 244 bytes"
    );
    let mut rings = plane.rings.lock();
    rings[0].complete(*tok);
    rings[0].flush();
    drop(rings);
    assert_eq!(g.queues[1].wait_used(&g.mem, 1), vec![(h, 0)]);
}

#[test]
fn publish_returns_descriptors_without_a_call_and_flush_signals_once() {
    let (plane, _port, mut g) = lent("txpublish", bit(VIRTIO_NET_F_MRG_RXBUF));
    let f = udp_frame(MAC_A, MAC_B, 100);
    let h1 = g.send_split(1, &[0u8; 12], &f);
    let h2 = g.send_split(1, &[0u8; 12], &f);
    let popped = wait_for("frames popped", || {
        let p = pop_all(&plane);
        (p.len() == 2).then_some(p)
    });
    let _ = g.queues[1].called(); // clear
    let mut rings = plane.rings.lock();
    rings[0].complete(popped[0].0);
    rings[0].publish();
    assert_eq!(g.queues[1].used_idx(&g.mem), 1, "visible at once");
    assert!(!g.queues[1].called(), "publish never signals");
    rings[0].complete(popped[1].0);
    rings[0].publish();
    rings[0].flush();
    assert_eq!(g.queues[1].used_idx(&g.mem), 2);
    assert!(g.queues[1].called(), "flush signals what was published");
    rings[0].flush();
    assert!(!g.queues[1].called(), "nothing new: no second call");
    drop(rings);
    assert_eq!(g.queues[1].wait_used(&g.mem, 2), vec![(h1, 0), (h2, 0)]);
}

/// Takes (and completes) every frame `poll` (or `pop` when `rearm`) hands over.
fn take_n(plane: &Plane, rearm: bool) -> usize {
    let mut rings = plane.rings.lock();
    let r = &mut rings[0];
    let mut tokens = Vec::new();
    let n = if rearm {
        r.pop(64, |p| {
            tokens.push(p.token);
            true
        })
    } else {
        r.poll(64, |p| {
            tokens.push(p.token);
            true
        })
    };
    for t in tokens {
        r.complete(t);
    }
    r.flush();
    n
}

/// §2.7.10 with EVENT_IDX: `poll` leaves avail_event where it was (no kick per burst
/// while the worker polls), `arm` moves it to the next frame and reports frames that
/// arrived meanwhile, `pop` re-arms by itself when it drains the ring.
#[test]
fn poll_keeps_kicks_off_and_arm_turns_them_back_on_with_event_idx() {
    let want = bit(VIRTIO_NET_F_MRG_RXBUF) | bit(VIRTIO_RING_F_EVENT_IDX);
    let (plane, _port, mut g) = lent("txpoll", want);
    let f = udp_frame(MAC_A, MAC_B, 100);
    let q = 1;
    let before = g.queues[q].avail_event(&g.mem);
    g.send_split(q, &[0u8; 12], &f);
    g.send_split(q, &[0u8; 12], &f);
    assert_eq!(take_n(&plane, false), 2);
    assert_eq!(
        g.queues[q].avail_event(&g.mem),
        before,
        "a drained poll asks for no kick"
    );
    g.send_split(q, &[0u8; 12], &f);
    assert!(
        plane.rings.lock()[0].arm(),
        "a frame added while polling is reported by arm (no kick will come for it)"
    );
    assert_eq!(g.queues[q].avail_event(&g.mem), 2);
    assert_eq!(take_n(&plane, false), 1);
    assert!(!plane.rings.lock()[0].arm(), "nothing new");
    assert_eq!(g.queues[q].avail_event(&g.mem), 3, "kick at the next frame");
    g.send_split(q, &[0u8; 12], &f);
    assert_eq!(take_n(&plane, true), 1);
    assert_eq!(
        g.queues[q].avail_event(&g.mem),
        4,
        "a drained pop re-arms by itself"
    );
    assert_eq!(g.queues[q].wait_used(&g.mem, 4).len(), 4);
}

/// The same without EVENT_IDX: the used ring's NO_NOTIFY flag stays set while polling.
#[test]
fn poll_keeps_no_notify_set_without_event_idx() {
    let (plane, _port, mut g) = lent("txpollflag", bit(VIRTIO_NET_F_MRG_RXBUF));
    let f = udp_frame(MAC_A, MAC_B, 100);
    let q = 1;
    g.send_split(q, &[0u8; 12], &f);
    assert_eq!(take_n(&plane, false), 1);
    assert_eq!(
        g.queues[q].used_flags(&g.mem) & 1,
        1,
        "NO_NOTIFY while polling"
    );
    assert!(!plane.rings.lock()[0].arm());
    assert_eq!(g.queues[q].used_flags(&g.mem) & 1, 0, "kicks wanted again");
    g.send_split(q, &[0u8; 12], &f);
    assert_eq!(take_n(&plane, true), 1);
    assert_eq!(
        g.queues[q].used_flags(&g.mem) & 1,
        0,
        "pop re-arms when drained"
    );
    assert_eq!(g.queues[q].wait_used(&g.mem, 2).len(), 2);
}

/// What a lent ring holds is sized by the ring's own size, not by the port's
/// `max_queue_size` (32768 by default): a 256-entry ring costs what it did when 256 was
/// the maximum.
#[test]
fn a_lent_rings_memory_follows_its_size_not_the_maximum() {
    let mut sizes = Vec::new();
    for size in [256u16, 1024, 32768] {
        let (plane, port, _g) = lent_sized(&format!("mem{size}"), u64::MAX, size);
        assert_eq!(port.device().options().max_queue_size, 32768);
        let bytes = plane.rings.lock()[0].heap_bytes();
        eprintln!("TX ring of {size} entries: {bytes} bytes of bookkeeping");
        sizes.push((size, bytes));
    }
    // One u16 per entry (the reorder window's slot) plus fixed scratch.
    for &(size, bytes) in &sizes {
        let per_entry = 2 * usize::from(size);
        assert!(
            bytes >= per_entry && bytes <= per_entry + 1024,
            "{size}: {bytes}"
        );
    }
}

/// Completes every token in `order` (indices into `tokens`), publishing after each, and
/// checks the used index is the longest completed prefix of the pop order each time.
fn complete_in(plane: &Plane, g: &TestGuest, q: usize, tokens: &[u64], order: &[usize]) {
    let base = g.queues[q].used_idx(&g.mem);
    let mut done = vec![false; tokens.len()];
    for &i in order {
        let mut rings = plane.rings.lock();
        rings[0].complete(tokens[i]);
        rings[0].publish();
        drop(rings);
        done[i] = true;
        let prefix = done.iter().take_while(|d| **d).count();
        assert_eq!(
            g.queues[q].used_idx(&g.mem).wrapping_sub(base),
            prefix as u16,
            "used index = chains done before the first pending one"
        );
    }
}

/// Completions in reverse and in (seeded) random orders: the used ring receives the
/// chains strictly in pop (avail) order, each with length 0 (TX: the device writes
/// nothing, virtio 1.2 §2.7.8), over many rounds so the reorder window wraps.
#[test]
fn completions_in_any_order_reach_the_used_ring_in_pop_order() {
    let (plane, _port, mut g) = lent_sized("txorder", bit(VIRTIO_NET_F_MRG_RXBUF), 64);
    let f = udp_frame(MAC_A, MAC_B, 60);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..12 {
        let n = 1 + (round * 5) % 24;
        let heads: Vec<u16> = (0..n).map(|_| g.send_split(1, &[0u8; 12], &f)).collect();
        let popped = wait_for("frames popped", || {
            let p = pop_all(&plane);
            (!p.is_empty()).then_some(p)
        });
        assert_eq!(popped.len(), n);
        let tokens: Vec<u64> = popped.iter().map(|p| p.0).collect();
        let mut order: Vec<usize> = (0..n).collect();
        if round % 2 == 0 {
            order.reverse();
        } else {
            for i in (1..n).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                order.swap(i, (seed % (i as u64 + 1)) as usize);
            }
        }
        complete_in(&plane, &g, 1, &tokens, &order);
        let used = g.queues[1].wait_used(&g.mem, n);
        let want: Vec<(u16, u32)> = heads.iter().map(|&h| (h, 0)).collect();
        assert_eq!(used, want, "round {round}: order {order:?}");
    }
}

/// A ring given back with chains that never reached the used ring (one still in flight,
/// one completed behind it): the index GET_VRING_BASE reports is the used ring's, so a
/// resumed ring pops those chains again instead of losing them or using one twice.
#[test]
fn a_ring_dropped_with_unpublished_chains_reports_the_used_index() {
    let (plane, _port, mut g) = lent("txrewind", bit(VIRTIO_NET_F_MRG_RXBUF));
    let f = udp_frame(MAC_A, MAC_B, 80);
    let heads: Vec<u16> = (0..3).map(|_| g.send_split(1, &[0u8; 12], &f)).collect();
    let popped = wait_for("frames popped", || {
        let p = pop_all(&plane);
        (p.len() == 3).then_some(p)
    });
    {
        let mut rings = plane.rings.lock();
        rings[0].complete(popped[0].0);
        rings[0].complete(popped[2].0);
        rings[0].flush();
    }
    assert_eq!(g.queues[1].wait_used(&g.mem, 1), vec![(heads[0], 0)]);
    // The plane drops the ring with popped[1] in flight (inflight list left empty).
    let base = g.fe.get_vring_base(1).unwrap();
    assert_eq!(base, 1, "the base is the used index, not the pop position");
    assert_eq!(g.queues[1].used_idx(&g.mem), 1);
    // Resumed at that base (as QEMU does), the ring pops the two chains again, in their
    // avail order.
    let tokens = resume_and_pop(&plane, &mut g, base);
    assert_eq!(tokens.len(), 2);
    complete_in(&plane, &g, 1, &tokens, &[1, 0]);
    assert_eq!(
        g.queues[1].wait_used(&g.mem, 2),
        vec![(heads[1], 0), (heads[2], 0)]
    );
}

/// A data plane that does not give the ring back when it is stopped (its writes never
/// finish; the daemon's wait times out): the device revokes the ring, so GET_VRING_BASE
/// still reports the used index, the stale ring's late completions never reach the used
/// ring, and a resumed ring pops the unreported chains again.
#[test]
fn a_ring_not_given_back_is_revoked_and_reports_the_used_index() {
    let (plane, _port, mut g) = lent("txrevoke", bit(VIRTIO_NET_F_MRG_RXBUF));
    let f = udp_frame(MAC_A, MAC_B, 80);
    let heads: Vec<u16> = (0..3).map(|_| g.send_split(1, &[0u8; 12], &f)).collect();
    let popped = wait_for("frames popped", || {
        let p = pop_all(&plane);
        (p.len() == 3).then_some(p)
    });
    {
        let mut rings = plane.rings.lock();
        rings[0].complete(popped[0].0);
        rings[0].flush();
    }
    assert_eq!(g.queues[1].wait_used(&g.mem, 1), vec![(heads[0], 0)]);
    plane.hold.store(true, std::sync::atomic::Ordering::Relaxed);
    let base = g.fe.get_vring_base(1).unwrap();
    assert_eq!(base, 1, "the base is the used index, not the pop position");
    // The stuck writes finish late: nothing of the revoked ring reaches the used ring,
    // and it pops nothing more.
    let mut stale = plane.held.lock().pop().expect("the plane kept the ring");
    stale.complete(popped[1].0);
    stale.complete(popped[2].0);
    stale.flush();
    assert_eq!(stale.pop(64, |_| true), 0, "a revoked ring pops nothing");
    drop(stale);
    assert_eq!(g.queues[1].used_idx(&g.mem), 1);
    plane
        .hold
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let tokens = resume_and_pop(&plane, &mut g, base);
    assert_eq!(tokens.len(), 2);
    complete_in(&plane, &g, 1, &tokens, &[0, 1]);
    assert_eq!(
        g.queues[1].wait_used(&g.mem, 2),
        vec![(heads[1], 0), (heads[2], 0)]
    );
}

/// Sets TX ring 1 up again at `base` (as QEMU does on resume), waits until it is lent a
/// second time, kicks it and returns the tokens of the chains popped again.
fn resume_and_pop(plane: &Plane, g: &mut TestGuest, base: u32) -> Vec<u64> {
    {
        let q = &g.queues[1];
        g.fe.set_vring_num(1, q.size).unwrap();
        g.fe.set_vring_base(1, base as u16).unwrap();
        g.fe.set_vring_addr(1, &q.config(&g.mem)).unwrap();
        g.fe.set_vring_err(1, &q.err).unwrap();
        g.fe.set_vring_call(1, &q.call).unwrap();
        g.fe.set_vring_kick(1, &q.kick).unwrap();
        g.fe.set_vring_enable(1, true).unwrap();
    }
    wait_for("TX ring lent again", || {
        (plane.started.lock().len() == 2).then_some(())
    });
    g.queues[1].kick();
    let again = wait_for("chains popped again", || {
        let p = pop_all(plane);
        (!p.is_empty()).then_some(p)
    });
    again.iter().map(|p| p.0).collect()
}
