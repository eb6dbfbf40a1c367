//! Hostile descriptor chains (virtio 1.2 §2.7.5, §2.7.6): each is dropped and counted with
//! its reason, never read or written past guest memory, and the port — and every other
//! queue and port — keeps forwarding. Protocol violations the device cannot step over
//! (avail index jump, head index out of range) stop that ring and signal the frontend's
//! error eventfd (the vhost-user way to ask for NEEDS_RESET).
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

mod common;

use common::frames::*;
use common::harness::Harness;
use common::*;
use vm_memory::{Bytes, GuestAddress};
use vring_engine::chain::ChainError;
use vring_engine::DropReason;

const TX: usize = 1;

struct Setup {
    h: Harness,
    a: TestGuest,
    b: TestGuest,
}

fn setup(tag: &str) -> Setup {
    setup_sized(tag, QSIZE)
}

/// [`setup`] with `size`-entry rings on both guests.
fn setup_sized(tag: &str, size: u16) -> Setup {
    let h = Harness::new(vec![
        opts(&format!("{tag}a"), MAC_A),
        opts(&format!("{tag}b"), MAC_B),
    ]);
    let a = TestGuest::start_sized(
        TestGuest::connect(&h.dev(0).options().socket, 3),
        3,
        u64::MAX,
        size,
    );
    let mut b = TestGuest::start_sized(
        TestGuest::connect(&h.dev(1).options().socket, 3),
        3,
        u64::MAX,
        size,
    );
    b.post_rx(0, 16, 2048);
    Setup { h, a, b }
}

impl Setup {
    /// A valid frame A → B still gets through.
    fn still_forwards(&mut self) {
        let f = udp_frame(MAC_A, MAC_B, 77);
        self.a.send_split(TX, &[0; 12], &f);
        let (_, len) = self.b.queues[0].wait_used(&self.b.mem, 1)[0];
        assert_eq!(len as usize, self.b.hdr_len() + f.len());
    }

    /// B → A (another port, other queues) still works.
    fn other_port_forwards(&mut self) {
        self.a.post_rx(0, 2, 2048);
        let f = udp_frame(MAC_B, MAC_A, 33);
        self.b.send_split(TX, &[0; 12], &f);
        let (_, len) = self.a.queues[0].wait_used(&self.a.mem, 1)[0];
        assert_eq!(len as usize, self.a.hdr_len() + f.len());
    }

    /// Writes raw descriptors (index, (addr, len, flags, next)) into A's TX table, publishes
    /// `head`, kicks, and waits for the chain to come back used with length 0.
    fn tx_raw(&mut self, descs: &[(u16, RawDesc)], head: u16) {
        let q = &mut self.a.queues[TX];
        for &(i, d) in descs {
            DriverQueue::write_desc(&self.a.mem, q.desc, i, d);
        }
        q.publish(&self.a.mem, head);
        q.kick();
        let used = q.wait_used(&self.a.mem, 1);
        assert_eq!(used, vec![(head, 0)], "bad chain returned, nothing written");
    }

    fn tx_drops(&self, why: DropReason) -> u64 {
        self.h.dev(0).queue_stats(TX).unwrap().dropped(why)
    }

    fn assert_only_drop(&self, why: DropReason) {
        let s = self.h.dev(0).queue_stats(TX).unwrap();
        assert_eq!(s.dropped(why), 1, "{why:?} counted: {s:?}");
        assert_eq!(s.dropped_total(), 1, "nothing else dropped: {s:?}");
        assert_eq!(s.frames, 0);
    }
}

fn chain_err(e: ChainError) -> DropReason {
    DropReason::Chain(e)
}

/// 12-byte header + a 60-byte frame somewhere valid in A's memory.
fn valid_buf(s: &mut Setup) -> (u64, u32) {
    let f = udp_frame(MAC_A, MAC_B, 20);
    let mut all = vec![0u8; 12];
    all.extend_from_slice(&f);
    let a = s.a.alloc(all.len() as u64);
    s.a.mem.write_slice(&all, GuestAddress(a)).unwrap();
    (a, all.len() as u32)
}

#[test]
fn looping_chain() {
    let mut s = setup("loop");
    let (addr, len) = valid_buf(&mut s);
    let (i, j) = (s.a.queues[TX].take_free(), s.a.queues[TX].take_free());
    s.tx_raw(
        &[(i, (addr, len, F_NEXT, j)), (j, (addr, len, F_NEXT, i))],
        i,
    );
    s.assert_only_drop(chain_err(ChainError::Loop));
    s.still_forwards();
}

#[test]
fn next_index_beyond_queue_size() {
    let mut s = setup("idx");
    let (addr, len) = valid_buf(&mut s);
    let i = s.a.queues[TX].take_free();
    s.tx_raw(&[(i, (addr, len, F_NEXT, QSIZE + 7))], i);
    s.assert_only_drop(chain_err(ChainError::BadIndex));
    s.still_forwards();
}

#[test]
fn buffer_outside_guest_memory() {
    let mut s = setup("oom");
    let end = MEM_BASE + MEM_SIZE as u64;
    let i = s.a.queues[TX].take_free();
    // Straddles the end of guest memory.
    s.tx_raw(&[(i, (end - 16, 128, 0, 0))], i);
    s.assert_only_drop(chain_err(ChainError::OutOfMemory));
    // Entirely below it (guest physical 0 is not mapped here).
    let j = s.a.queues[TX].take_free();
    s.tx_raw(&[(j, (0x1000, 64, 0, 0))], j);
    assert_eq!(s.tx_drops(chain_err(ChainError::OutOfMemory)), 2);
    s.still_forwards();
}

#[test]
fn length_overflow() {
    // 1024-entry rings: a chain may then be long enough to pass 4 GiB in 8 MiB of memory.
    let mut s = setup_sized("ovf", 1024);
    let i = s.a.queues[TX].take_free();
    s.tx_raw(&[(i, (u64::MAX - 8, 64, 0, 0))], i);
    s.assert_only_drop(chain_err(ChainError::Overflow));
    // Total chain length above 4 GiB (§2.7.5.2) with every buffer inside guest memory:
    // an indirect table of 600 descriptors (within the queue size), each covering all
    // 8 MiB of guest memory: the 512th passes 4 GiB.
    let n: u16 = 600;
    let table = s.a.alloc(16 * u64::from(n));
    for k in 0..n {
        let flags = if k + 1 < n { F_NEXT } else { 0 };
        DriverQueue::write_desc(
            &s.a.mem,
            GuestAddress(table),
            k,
            (MEM_BASE, MEM_SIZE as u32, flags, k + 1),
        );
    }
    let i = s.a.queues[TX].take_free();
    s.tx_raw(&[(i, (table, 16 * u32::from(n), F_INDIRECT, 0))], i);
    assert_eq!(s.tx_drops(chain_err(ChainError::Overflow)), 2);
    s.still_forwards();
}

/// An indirect table may hold up to 65 535 descriptors whatever the queue size; a chain
/// longer than the queue size (§2.7.5.3.1) is dropped after queue size + 1 descriptors.
#[test]
fn chain_longer_than_the_queue_size() {
    let mut s = setup("long");
    let (addr, len) = valid_buf(&mut s);
    let n = QSIZE + 1;
    let table = s.a.alloc(16 * u64::from(n));
    // Header + frame, then one more byte of the frame per descriptor: a valid frame
    // except for its length in descriptors.
    DriverQueue::write_desc(&s.a.mem, GuestAddress(table), 0, (addr, len, F_NEXT, 1));
    for k in 1..n {
        let flags = if k + 1 < n { F_NEXT } else { 0 };
        DriverQueue::write_desc(
            &s.a.mem,
            GuestAddress(table),
            k,
            (addr + 12, 1, flags, k + 1),
        );
    }
    let i = s.a.queues[TX].take_free();
    s.tx_raw(&[(i, (table, 16 * u32::from(n), F_INDIRECT, 0))], i);
    s.assert_only_drop(chain_err(ChainError::TooLong));
    s.still_forwards();
    s.other_port_forwards();
    let st = s.h.dev(1).queue_stats(TX).unwrap();
    assert_eq!(
        st.dropped_total(),
        0,
        "the other port dropped nothing: {st:?}"
    );
}

/// A zero-length buffer in a TX chain carries nothing: refused, counted.
#[test]
fn zero_length_descriptor_on_tx() {
    let mut s = setup("zero");
    let (addr, len) = valid_buf(&mut s);
    let (i, j, k) = (
        s.a.queues[TX].take_free(),
        s.a.queues[TX].take_free(),
        s.a.queues[TX].take_free(),
    );
    s.tx_raw(
        &[
            (i, (addr, 12, F_NEXT, j)),
            (j, (addr + 12, 0, F_NEXT, k)),
            (k, (addr + 12, len - 12, 0, 0)),
        ],
        i,
    );
    s.assert_only_drop(chain_err(ChainError::ZeroLength));
    // One empty descriptor alone.
    let z = s.a.queues[TX].take_free();
    s.tx_raw(&[(z, (addr, 0, 0, 0))], z);
    assert_eq!(s.tx_drops(chain_err(ChainError::ZeroLength)), 2);
    s.still_forwards();
    s.other_port_forwards();
    let st = s.h.dev(1).queue_stats(TX).unwrap();
    assert_eq!(
        st.dropped_total(),
        0,
        "the other port dropped nothing: {st:?}"
    );
}

#[test]
fn write_only_buffer_on_tx() {
    let mut s = setup("wtx");
    let (addr, len) = valid_buf(&mut s);
    let i = s.a.queues[TX].take_free();
    s.tx_raw(&[(i, (addr, len, F_WRITE, 0))], i);
    s.assert_only_drop(chain_err(ChainError::WrongDirection));
    s.still_forwards();
}

#[test]
fn read_only_buffer_on_rx() {
    let h = Harness::new(vec![opts("rxa", MAC_A), opts("rxb", MAC_B)]);
    let mut a = TestGuest::start(
        TestGuest::connect(&h.dev(0).options().socket, 3),
        3,
        u64::MAX,
    );
    let mut b = TestGuest::start(
        TestGuest::connect(&h.dev(1).options().socket, 3),
        3,
        u64::MAX,
    );
    let buf = b.alloc(2048);
    b.mem.write_slice(&[0xabu8; 64], GuestAddress(buf)).unwrap();
    let head = b.queues[0].add(&b.mem, &[(buf, 2048, false)]);
    b.queues[0].kick();
    let f = udp_frame(MAC_A, MAC_B, 40);
    a.send_split(TX, &[0; 12], &f);
    let used = b.queues[0].wait_used(&b.mem, 1);
    assert_eq!(used, vec![(head, 0)]);
    assert_eq!(
        b.read(buf, 64),
        vec![0xab; 64],
        "a device-readable buffer is never written"
    );
    let st = h.dev(1).queue_stats(0).unwrap();
    assert_eq!(st.dropped(DropReason::Chain(ChainError::WrongDirection)), 1);
    b.post_rx(0, 1, 2048);
    a.send_split(TX, &[0; 12], &f);
    let (_, len) = b.queues[0].wait_used(&b.mem, 1)[0];
    assert_eq!(len as usize, b.hdr_len() + f.len());
}

#[test]
fn nested_indirect_table() {
    let mut s = setup("nest");
    let (addr, len) = valid_buf(&mut s);
    let inner = s.a.alloc(16);
    let outer = s.a.alloc(32);
    DriverQueue::write_desc(&s.a.mem, GuestAddress(inner), 0, (addr, len, 0, 0));
    DriverQueue::write_desc(&s.a.mem, GuestAddress(outer), 0, (addr, 12, F_NEXT, 1));
    DriverQueue::write_desc(&s.a.mem, GuestAddress(outer), 1, (inner, 16, F_INDIRECT, 0));
    let i = s.a.queues[TX].take_free();
    s.tx_raw(&[(i, (outer, 32, F_INDIRECT, 0))], i);
    s.assert_only_drop(chain_err(ChainError::NestedIndirect));
    s.still_forwards();
}

#[test]
fn avail_index_jump_stops_the_ring_and_signals_error() {
    let mut s = setup("jump");
    let q = &mut s.a.queues[TX];
    let bogus = q.avail_idx.wrapping_add(QSIZE + 1);
    q.set_avail_idx(&s.a.mem, bogus);
    q.kick();
    wait_for("AvailJump drop", || {
        (s.tx_drops(DropReason::AvailJump) == 1).then_some(())
    });
    wait_for("err eventfd", || s.a.queues[TX].errored().then_some(()));
    assert_eq!(s.a.queues[TX].used_idx(&s.a.mem), 0, "nothing consumed");
    // Other queues and ports keep running.
    s.other_port_forwards();
}

#[test]
fn head_index_beyond_queue_size_stops_the_ring() {
    let mut s = setup("head");
    let q = &mut s.a.queues[TX];
    q.publish(&s.a.mem, QSIZE + 3);
    q.kick();
    wait_for("BadIndex drop", || {
        (s.tx_drops(DropReason::Chain(ChainError::BadIndex)) == 1).then_some(())
    });
    wait_for("err eventfd", || s.a.queues[TX].errored().then_some(()));
    s.other_port_forwards();
}

#[test]
fn short_header_and_runt_frame() {
    let mut s = setup("runt");
    let a = s.a.alloc(64);
    let i = s.a.queues[TX].take_free();
    s.tx_raw(&[(i, (a, 8, 0, 0))], i);
    s.assert_only_drop(DropReason::BadHeader);
    let j = s.a.queues[TX].take_free();
    s.tx_raw(&[(j, (a, 12 + 10, 0, 0))], j);
    assert_eq!(s.tx_drops(DropReason::BadLength), 1);
    s.still_forwards();
}

#[test]
fn offload_not_negotiated_or_out_of_bounds() {
    let mut s = setup("offl");
    // A checksum request whose field lies past the end of the frame.
    let f = udp_frame(MAC_A, MAC_B, 20);
    let mut hdr = [0u8; 12];
    hdr[0] = switch::vnet::F_NEEDS_CSUM;
    hdr[6..8].copy_from_slice(&(f.len() as u16).to_le_bytes());
    hdr[8..10].copy_from_slice(&6u16.to_le_bytes());
    s.a.send_split(TX, &hdr, &f);
    s.a.queues[TX].wait_used(&s.a.mem, 1);
    s.assert_only_drop(DropReason::BadOffload);
    // GSO without a segment size.
    let mut gso = [0u8; 12];
    gso[1] = switch::vnet::GSO_TCPV4;
    s.a.send_split(TX, &gso, &f);
    s.a.queues[TX].wait_used(&s.a.mem, 1);
    assert_eq!(s.tx_drops(DropReason::BadOffload), 2);
    s.still_forwards();
}

#[test]
fn control_queue_chains_without_ack_or_oversized() {
    let h = Harness::new(vec![opts("cq", MAC_A)]);
    let mut g = TestGuest::start(
        TestGuest::connect(&h.dev(0).options().socket, 3),
        3,
        u64::MAX,
    );
    let c = 2;
    // A command with no device-writable ack byte.
    let a = g.alloc(16);
    g.mem.write_slice(&[0u8, 0, 1], GuestAddress(a)).unwrap();
    let head = g.queues[c].add(&g.mem, &[(a, 3, false)]);
    g.queues[c].kick();
    assert_eq!(g.queues[c].wait_used(&g.mem, 1), vec![(head, 0)]);
    // A "command" of 64 KiB.
    let big = g.alloc(65536);
    let ack = g.alloc(1);
    let head = g.queues[c].add(&g.mem, &[(big, 65536, false), (ack, 1, true)]);
    g.queues[c].kick();
    assert_eq!(g.queues[c].wait_used(&g.mem, 1), vec![(head, 0)]);
    // Ack before command (readable after writable, §2.7.4.2).
    let head = g.queues[c].add(&g.mem, &[(ack, 1, true), (a, 3, false)]);
    g.queues[c].kick();
    assert_eq!(g.queues[c].wait_used(&g.mem, 1), vec![(head, 0)]);
    let st = h.dev(0).queue_stats(c).unwrap();
    assert_eq!(st.dropped(DropReason::BadLength), 2, "{st:?}");
    assert_eq!(
        st.dropped(DropReason::Chain(ChainError::BadOrder)),
        1,
        "{st:?}"
    );
    assert!(!h.dev(0).rx_filter().promisc, "nothing was applied");
    // The queue still answers a valid command.
    assert_eq!(g.ctrl(c, 0, 0, &[1]), vring_engine::ctrl::OK);
}

#[test]
fn bad_rx_chains_inside_a_burst_cost_only_their_own_frames() {
    let h = Harness::new(vec![opts("bba", MAC_B)]);
    let mut b = TestGuest::start(
        TestGuest::connect(&h.dev(0).options().socket, 3),
        3,
        u64::MAX,
    );
    // good, read-only (wrong direction), outside guest memory, good.
    let good1 = b.post_rx(0, 1, 2048)[0];
    let ro = b.alloc(2048);
    b.mem.write_slice(&[0xabu8; 64], GuestAddress(ro)).unwrap();
    let bad_dir = b.queues[0].add(&b.mem, &[(ro, 2048, false)]);
    let bad_mem = b.queues[0].add(&b.mem, &[(u64::MAX - 100, 2048, true)]);
    let good2 = b.post_rx(0, 1, 2048)[0];
    let frames: Vec<Vec<u8>> = (0..4).map(|i| udp_frame(MAC_A, MAC_B, 50 + i)).collect();
    let hdr = switch::VnetHdr::default();
    let r = h.dev(0).rx_burst(0, |burst| {
        burst.expect(4, 80);
        frames
            .iter()
            .map(|f| burst.deliver(&hdr, &[switch::Chunk::from(&f[..])]))
            .collect::<Vec<_>>()
    });
    assert_eq!(r[0], Ok(()));
    assert_eq!(
        r[1],
        Err(vring_engine::RxDrop::BadChain(ChainError::WrongDirection))
    );
    assert!(matches!(r[2], Err(vring_engine::RxDrop::BadChain(_))));
    assert_eq!(r[3], Ok(()));
    let hl = b.hdr_len();
    let used = b.queues[0].wait_used(&b.mem, 4);
    assert_eq!(
        used,
        vec![
            (good1.0, (hl + frames[0].len()) as u32),
            (bad_dir, 0),
            (bad_mem, 0),
            (good2.0, (hl + frames[3].len()) as u32),
        ],
        "bad chains are consumed empty, in ring order"
    );
    assert_eq!(b.read(ro, 64), vec![0xab; 64], "never written");
    assert_eq!(b.read(good2.1 + hl as u64, frames[3].len()), frames[3]);
    let st = h.dev(0).queue_stats(0).unwrap();
    assert_eq!(st.frames, 2);
    assert_eq!(st.dropped(DropReason::Chain(ChainError::WrongDirection)), 1);
}

/// A head index outside the table stops the ring (§2.7.6, as on TX): the frames after it
/// in the same burst are not placed into the stopped ring (found by fuzz/rx_place).
#[test]
fn bad_rx_head_inside_a_burst_stops_the_rest_of_the_burst() {
    let h = Harness::new(vec![opts("bbh", MAC_B)]);
    let mut b = TestGuest::start(
        TestGuest::connect(&h.dev(0).options().socket, 3),
        3,
        u64::MAX,
    );
    let q = &mut b.queues[0];
    q.publish(&b.mem, q.size + 3);
    let good = b.post_rx(0, 1, 2048)[0];
    let frames: Vec<Vec<u8>> = (0..2).map(|i| udp_frame(MAC_A, MAC_B, 60 + i)).collect();
    let hdr = switch::VnetHdr::default();
    let r = h.dev(0).rx_burst(0, |burst| {
        frames
            .iter()
            .map(|f| burst.deliver(&hdr, &[switch::Chunk::from(&f[..])]))
            .collect::<Vec<_>>()
    });
    assert_eq!(
        r,
        vec![
            Err(vring_engine::RxDrop::BadChain(ChainError::BadIndex)),
            Err(vring_engine::RxDrop::Broken)
        ]
    );
    assert!(b.queues[0].errored(), "err eventfd signalled");
    assert_eq!(
        b.queues[0].used_idx(&b.mem),
        0,
        "nothing placed after the bad head"
    );
    assert_eq!(
        b.read(good.1, 64),
        vec![0; 64],
        "the later buffer is untouched"
    );
}

/// No double fetch: a second "vCPU" keeps rewriting A's TX buffers — the EtherType into
/// an 802.1Q tag for VLAN 20 and the virtio-net header into a TCPv4 GSO request — while
/// the frames are in flight. A is an access port of VLAN 10, B a trunk. Whatever B
/// receives must carry exactly what was decided: the VLAN 10 tag the switch pushed, then
/// the frame's own untagged IPv4 EtherType, and no offload request (a VLAN hop or an
/// offload smuggled past the check would show here).
#[test]
fn frames_rewritten_while_in_flight_leave_as_decided() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let h = Harness::new(vec![opts("mut-a", MAC_A), opts("mut-b", MAC_B)]);
    h.sw.update_port(h.dev(0).port(), |c| c.vlan = switch::VlanMode::Access(10))
        .unwrap();
    h.sw.update_port(h.dev(1).port(), |c| c.vlan = switch::VlanMode::default())
        .unwrap();
    let mut a = TestGuest::start(
        TestGuest::connect(&h.dev(0).options().socket, 3),
        3,
        u64::MAX,
    );
    // Without CTRL_VLAN, B's filter takes every VLAN (§5.1.6.5.3).
    let no_vlan_filter = !(1u64 << virtio_bindings::virtio_net::VIRTIO_NET_F_CTRL_VLAN);
    let mut b = TestGuest::start(
        TestGuest::connect(&h.dev(1).options().socket, 3),
        3,
        no_vlan_filter,
    );
    let f = udp_frame(MAC_A, MAC_B, 200);
    // Eight buffers (header, frame) reused round after round, rewritten all the while.
    let bufs: Vec<(u64, u64)> = (0..8)
        .map(|_| {
            let hb = s_alloc(&mut a, 12, &[0; 12]);
            let fb = s_alloc(&mut a, f.len() as u64, &f);
            (hb, fb)
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mutator = {
        let (mem, stop, bufs) = (a.mem.clone(), stop.clone(), bufs.clone());
        std::thread::spawn(move || {
            let mut gso = [0u8; 12];
            gso[0] = 1; // NEEDS_CSUM
            gso[1] = 1; // GSO_TCPV4
            gso[4..6].copy_from_slice(&100u16.to_le_bytes()); // gso_size
            let mut flip = false;
            while !stop.load(Ordering::Relaxed) {
                for &(hb, fb) in &bufs {
                    let (tag, hdr): (&[u8], &[u8]) = if flip {
                        (&[0x81, 0x00, 0x00, 0x14], &gso)
                    } else {
                        (&[0x08, 0x00, 0x45, 0x00], &[0; 12])
                    };
                    let _ = mem.write_slice(tag, GuestAddress(fb + 12));
                    let _ = mem.write_slice(hdr, GuestAddress(hb));
                }
                flip = !flip;
            }
        })
    };
    let (mut received, mut rounds) = (0usize, 0);
    let mut rx = b.post_rx(0, 16, 2048);
    while rounds < 60 {
        rounds += 1;
        for &(hb, fb) in &bufs {
            a.queues[TX].add(&a.mem, &[(hb, 12, false), (fb, f.len() as u32, false)]);
        }
        a.queues[TX].kick();
        let done = a.queues[TX].wait_used(&a.mem, bufs.len());
        assert!(done.iter().all(|&(_, len)| len == 0));
        // Whatever reached B by now (the stage is flushed before A's chains complete).
        for (head, len) in b.queues[0].take_used(&b.mem) {
            let Some(&(_, addr)) = rx.iter().find(|(hd, _)| *hd == head) else {
                panic!("unknown RX head {head}");
            };
            let d = b.read(addr, len as usize);
            let hl = b.hdr_len();
            let hdr = switch::VnetHdr::parse(&d[..hl], hl).unwrap();
            assert_eq!(
                (hdr.flags, hdr.gso_type),
                (0, 0),
                "no offload request: {hdr:?}"
            );
            let frame = &d[hl..];
            assert_eq!(
                &frame[12..16],
                &[0x81, 0x00, 0x00, 0x0a],
                "pushed VLAN 10 tag"
            );
            assert_eq!(
                &frame[16..20],
                &[0x08, 0x00, 0x45, 0x00],
                "untagged inside: no hop"
            );
            assert_eq!(frame.len(), f.len() + 4);
            received += 1;
            rx.retain(|(hd, _)| *hd != head);
        }
        if rx.len() < 8 {
            rx.extend(b.post_rx(0, 8, 2048));
        }
    }
    stop.store(true, Ordering::Relaxed);
    mutator.join().unwrap();
    let st0 = h.sw.stats(h.dev(0).port());
    assert!(
        received > 0,
        "some frames decided untagged and delivered: {st0:?}"
    );
    // The mutator raced the pops: some frames were decided tagged (and refused).
    assert!(
        st0.drop_count(switch::DropReason::TaggedOnAccess) > 0,
        "{st0:?}"
    );
}

/// Writes `data` into a fresh buffer of `len` bytes in `g`'s memory.
fn s_alloc(g: &mut TestGuest, len: u64, data: &[u8]) -> u64 {
    let a = g.alloc(len);
    g.mem.write_slice(data, GuestAddress(a)).unwrap();
    a
}
