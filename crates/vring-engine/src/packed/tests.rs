//! The packed ring against a model driver that follows §2.8's driver algorithm, and
//! against hostile ring contents.

#![allow(clippy::cast_possible_truncation)]

use std::collections::{BTreeMap, VecDeque};

use proptest::prelude::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::desc::DescRing;
use super::event::{EVENT_DESC, EVENT_DISABLE, EVENT_ENABLE};
use super::*;
use crate::chain::{Chain, ChainError, Direction, Mem};

const RING: u64 = 0x1000;
const DRIVER: u64 = 0x3000;
const DEVICE: u64 = 0x3010;
/// Indirect tables: one 0x100-byte slot per buffer ID.
const TABLES: u64 = 0x4000;
/// Buffers: 0x100 bytes per (ID, element).
const BUFS: u64 = 0x2_0000;

fn mem() -> Mem {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
}

fn ring(m: &Mem, size: u16) -> DescRing<'_> {
    DescRing::new(m, RING, DRIVER, DEVICE, size).unwrap()
}

fn put(m: &Mem, base: u64, slot: u16, addr: u64, len: u32, id: u16, flags: u16) {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12..14].copy_from_slice(&id.to_le_bytes());
    b[14..16].copy_from_slice(&flags.to_le_bytes());
    m.write_slice(&b, GuestAddress(base + 16 * u64::from(slot)))
        .unwrap();
}

fn read_flags(m: &Mem, slot: u16) -> u16 {
    m.read_obj(GuestAddress(RING + 16 * u64::from(slot) + 14))
        .unwrap()
}

fn avail_bits(wrap: bool) -> u16 {
    if wrap {
        F_AVAIL
    } else {
        F_USED
    }
}

/// A driver as §2.8 describes it: IDs from a free list, the list's ID in its last
/// descriptor, the head's flags written last, used descriptors read at one position and
/// skipped by the list's size; with IN_ORDER, a used ID also retires the buffers made
/// available before it.
struct Driver {
    size: u16,
    avail: Pos,
    used: Pos,
    free_ids: Vec<u16>,
    free_descs: u16,
    /// Per ID in flight: ring descriptors of its list.
    sgs: BTreeMap<u16, u16>,
    /// IDs in the order made available (IN_ORDER retirement).
    order: VecDeque<u16>,
    in_order: bool,
}

impl Driver {
    fn new(size: u16, in_order: bool) -> Driver {
        Driver {
            size,
            avail: Pos::START,
            used: Pos::START,
            free_ids: (0..size).rev().collect(),
            free_descs: size,
            sgs: BTreeMap::new(),
            order: VecDeque::new(),
            in_order,
        }
    }

    /// Makes a buffer of `elems` (length, device-writable) available, directly or
    /// through an indirect table. `None` when there is no room.
    fn offer(&mut self, m: &Mem, elems: &[(u32, bool)], indirect: bool) -> Option<u16> {
        let descs = if indirect { 1 } else { elems.len() as u16 };
        // A list is at most the queue size long, through a table too (§2.8).
        let too_long = elems.len() > usize::from(self.size);
        if descs > self.free_descs || self.free_ids.is_empty() || elems.is_empty() || too_long {
            return None;
        }
        let id = self.free_ids.pop().unwrap();
        let addr = |k: usize| BUFS + 0x1000 * u64::from(id) + 0x100 * k as u64;
        let head = self.avail;
        let mut head_flags = 0;
        if indirect {
            let table = TABLES + 0x100 * u64::from(id);
            for (k, &(len, w)) in elems.iter().enumerate() {
                put(
                    m,
                    table,
                    k as u16,
                    addr(k),
                    len,
                    0,
                    if w { F_WRITE } else { 0 },
                );
            }
            head_flags = F_INDIRECT | avail_bits(head.wrap);
            let len = 16 * elems.len() as u32;
            put(m, RING, head.idx, table, len, id, 0);
            self.avail = self.avail.advanced(1, self.size);
        } else {
            for (k, &(len, w)) in elems.iter().enumerate() {
                let mut f = avail_bits(self.avail.wrap) | if w { F_WRITE } else { 0 };
                if k + 1 < elems.len() {
                    f |= F_NEXT;
                }
                let last = k + 1 == elems.len();
                let this_id = if last { id } else { 0xdead };
                if k == 0 {
                    head_flags = f;
                    put(m, RING, self.avail.idx, addr(k), len, this_id, 0);
                } else {
                    put(m, RING, self.avail.idx, addr(k), len, this_id, f);
                }
                self.avail = self.avail.advanced(1, self.size);
            }
        }
        m.write_obj(
            head_flags,
            GuestAddress(RING + 16 * u64::from(head.idx) + 14),
        )
        .unwrap();
        self.free_descs -= descs;
        self.sgs.insert(id, descs);
        self.order.push_back(id);
        Some(id)
    }

    /// Reaps used descriptors: (ID, length) of each buffer retired, skipped ones with
    /// length 0.
    fn reap(&mut self, m: &Mem) -> Vec<(u16, u32)> {
        let mut out = Vec::new();
        loop {
            let f = read_flags(m, self.used.idx);
            let used = f & F_USED != 0;
            let avail = f & F_AVAIL != 0;
            if used != self.used.wrap || avail != self.used.wrap {
                return out;
            }
            let off = RING + 16 * u64::from(self.used.idx);
            let id: u16 = m.read_obj(GuestAddress(off + 12)).unwrap();
            let len: u32 = m.read_obj(GuestAddress(off + 8)).unwrap();
            let wrote = f & F_WRITE != 0;
            let len = if wrote { len } else { 0 };
            let retired: Vec<u16> = if self.in_order {
                let k = self
                    .order
                    .iter()
                    .position(|&x| x == id)
                    .expect("used ID is in flight");
                self.order.drain(..=k).collect()
            } else {
                let k = self.order.iter().position(|&x| x == id).expect("in flight");
                self.order.remove(k);
                vec![id]
            };
            for r in retired {
                let n = self.sgs.remove(&r).expect("retired ID is in flight");
                self.used = self.used.advanced(u32::from(n), self.size);
                self.free_descs += n;
                self.free_ids.push(r);
                out.push((r, if r == id { len } else { 0 }));
            }
        }
    }
}

#[test]
fn one_buffer_round_trip() {
    let m = mem();
    let r = ring(&m, 8);
    let mut drv = Driver::new(8, false);
    let mut dev = PackedState::new(8, false);
    let mut c = Chain::default();
    assert_eq!(dev.pop(&r, &m, &mut c, Direction::ReadOnly, true), Ok(None));
    let id = drv.offer(&m, &[(12, false), (60, false)], false).unwrap();
    let p = dev
        .pop(&r, &m, &mut c, Direction::ReadOnly, true)
        .unwrap()
        .unwrap();
    assert_eq!((p.id, p.descs, p.fault), (id, 2, None));
    assert_eq!((c.head, c.read_len, c.readable.len()), (id, 72, 2));
    assert_eq!(dev.next_avail(), Pos { idx: 2, wrap: true });
    dev.complete(id, 0).unwrap();
    assert!(drv.reap(&m).is_empty(), "nothing visible before publish");
    let mut logged = Vec::new();
    assert_eq!(dev.publish(&r, |s| logged.push(s)), 1);
    // The list's second slot is marked used first, its head (the used descriptor) last.
    assert_eq!(logged, [1, 0]);
    assert_eq!(drv.reap(&m), [(id, 0)]);
    assert_eq!(dev.next_used(), Pos { idx: 2, wrap: true });
}

#[test]
fn rx_buffer_reports_its_length_with_write() {
    let m = mem();
    let r = ring(&m, 4);
    let mut drv = Driver::new(4, false);
    let mut dev = PackedState::new(4, false);
    let mut c = Chain::default();
    let id = drv.offer(&m, &[(1500, true)], false).unwrap();
    let p = dev
        .pop(&r, &m, &mut c, Direction::WriteOnly, false)
        .unwrap();
    assert_eq!(p.map(|p| p.fault), Some(None));
    assert_eq!(c.write_len, 1500);
    dev.complete(id, 64).unwrap();
    dev.publish(&r, |_| {});
    assert_ne!(read_flags(&m, 0) & F_WRITE, 0);
    assert_eq!(drv.reap(&m), [(id, 64)]);
}

#[test]
fn out_of_order_completion_and_wrap() {
    let m = mem();
    let r = ring(&m, 4);
    let mut drv = Driver::new(4, false);
    let mut dev = PackedState::new(4, false);
    let mut c = Chain::default();
    for round in 0..5 {
        let a = drv.offer(&m, &[(10, false), (20, false)], false).unwrap();
        let b = drv.offer(&m, &[(30, false)], false).unwrap();
        let pa = dev.pop(&r, &m, &mut c, Direction::ReadOnly, false).unwrap();
        let pb = dev.pop(&r, &m, &mut c, Direction::ReadOnly, false).unwrap();
        assert_eq!(pa.map(|p| p.id), Some(a), "round {round}");
        assert_eq!(pb.map(|p| p.id), Some(b), "round {round}");
        // b first: its used descriptor goes where a's list began.
        dev.complete(b, 0).unwrap();
        dev.complete(a, 0).unwrap();
        assert_eq!(dev.publish(&r, |_| {}), 2);
        assert_eq!(drv.reap(&m), [(b, 0), (a, 0)], "round {round}");
        assert_eq!(dev.next_used(), dev.next_avail());
        assert_eq!(dev.in_flight(), 0);
    }
    // 5 rounds of 3 descriptors on a 4-slot ring: 15 = 3 × 4 + 3, wrap counter flipped 3 times.
    assert_eq!(
        dev.next_used(),
        Pos {
            idx: 3,
            wrap: false
        }
    );
}

#[test]
fn in_order_batch_is_one_used_descriptor() {
    let m = mem();
    let r = ring(&m, 8);
    let mut drv = Driver::new(8, true);
    let mut dev = PackedState::new(8, true);
    let mut c = Chain::default();
    let ids: Vec<u16> = (0..3)
        .map(|_| drv.offer(&m, &[(14, false), (50, false)], false).unwrap())
        .collect();
    for &id in &ids {
        let p = dev.pop(&r, &m, &mut c, Direction::ReadOnly, false).unwrap();
        assert_eq!(p.map(|p| p.id), Some(id));
        dev.complete(id, 0).unwrap();
    }
    let mut logged = Vec::new();
    assert_eq!(dev.publish(&r, |s| logged.push(s)), 1);
    // One used descriptor (slot 0, stored last); the batch's other slots marked used.
    assert_eq!(logged, [1, 2, 3, 4, 5, 0]);
    assert_eq!(
        drv.reap(&m),
        ids.iter().map(|&i| (i, 0)).collect::<Vec<_>>()
    );
    assert_eq!(dev.next_used(), Pos { idx: 6, wrap: true });
    // RX buffers are never folded, even those dropped with nothing written: each
    // reports its own length.
    let a = drv.offer(&m, &[(100, true)], false).unwrap();
    let b = drv.offer(&m, &[(100, true)], false).unwrap();
    for (id, len) in [(a, 0), (b, 42)] {
        dev.pop(&r, &m, &mut c, Direction::WriteOnly, false)
            .unwrap();
        dev.complete(id, len).unwrap();
    }
    assert_eq!(dev.publish(&r, |_| {}), 2);
    assert_eq!(drv.reap(&m), [(a, 0), (b, 42)]);
}

#[test]
fn first_used_flags_are_written_last() {
    // A driver that saw slot 0 used before slot 1 was written would read a stale slot 1;
    // the batch's later descriptors must be complete whenever the first one is. The
    // store order is not observable single-threaded, so this checks the outcome: after
    // publish every used descriptor carries its final flags.
    let m = mem();
    let r = ring(&m, 8);
    let mut drv = Driver::new(8, false);
    let mut dev = PackedState::new(8, false);
    let mut c = Chain::default();
    let ids: Vec<u16> = (0..4)
        .map(|_| drv.offer(&m, &[(20, false)], false).unwrap())
        .collect();
    for _ in 0..4 {
        dev.pop(&r, &m, &mut c, Direction::ReadOnly, false).unwrap();
    }
    for &id in ids.iter().rev() {
        dev.complete(id, 0).unwrap();
    }
    let mut logged = Vec::new();
    dev.publish(&r, |s| logged.push(s));
    assert_eq!(
        logged,
        [1, 2, 3, 0],
        "the first slot is stored (and logged) last"
    );
    for s in 0..4 {
        assert_eq!(read_flags(&m, s), F_AVAIL | F_USED);
    }
}

#[test]
fn unpop_returns_the_newest_lists() {
    let m = mem();
    let r = ring(&m, 4);
    let mut drv = Driver::new(4, false);
    let mut dev = PackedState::new(4, false);
    let mut c = Chain::default();
    // Move to slot 3 so that the second list crosses the ring's end.
    for _ in 0..3 {
        let id = drv.offer(&m, &[(100, true)], false).unwrap();
        dev.pop(&r, &m, &mut c, Direction::WriteOnly, false)
            .unwrap();
        dev.complete(id, 10).unwrap();
    }
    dev.publish(&r, |_| {});
    drv.reap(&m);
    let a = drv.offer(&m, &[(100, true)], false).unwrap();
    let b = drv.offer(&m, &[(100, true), (100, true)], false).unwrap();
    let pa = dev
        .pop(&r, &m, &mut c, Direction::WriteOnly, false)
        .unwrap()
        .unwrap();
    let pb = dev
        .pop(&r, &m, &mut c, Direction::WriteOnly, false)
        .unwrap()
        .unwrap();
    assert_eq!((pa.id, pb.id), (a, b));
    let end = dev.next_avail();
    assert_eq!(
        end,
        Pos {
            idx: 2,
            wrap: false
        }
    );
    // Oldest first is refused: only the newest can go back.
    assert_eq!(dev.unpop(&pa), Err(RingFault::NotInFlight));
    dev.unpop(&pb).unwrap();
    assert_eq!(
        dev.next_avail(),
        Pos {
            idx: 0,
            wrap: false
        }
    );
    dev.unpop(&pa).unwrap();
    assert_eq!(dev.next_avail(), Pos { idx: 3, wrap: true });
    assert_eq!(dev.in_flight(), 0);
    assert_eq!(dev.unpop(&pa), Err(RingFault::NotInFlight), "not twice");
    // The same lists pop again, then complete normally.
    let again = dev
        .pop(&r, &m, &mut c, Direction::WriteOnly, false)
        .unwrap();
    assert_eq!(again, Some(pa));
    assert_eq!(
        dev.pop(&r, &m, &mut c, Direction::WriteOnly, false)
            .unwrap(),
        Some(pb)
    );
    assert_eq!(dev.next_avail(), end);
    dev.complete(a, 5).unwrap();
    dev.complete(b, 150).unwrap();
    dev.publish(&r, |_| {});
    assert_eq!(drv.reap(&m), [(a, 5), (b, 150)]);
}

#[test]
fn indirect_lists() {
    let m = mem();
    let r = ring(&m, 4);
    let mut drv = Driver::new(4, false);
    let mut dev = PackedState::new(4, false);
    let mut c = Chain::default();
    let id = drv
        .offer(&m, &[(10, false), (20, false), (30, false)], true)
        .unwrap();
    let p = dev.pop(&r, &m, &mut c, Direction::ReadOnly, true).unwrap();
    assert_eq!(
        p,
        Some(Popped {
            id,
            descs: 1,
            fault: None
        })
    );
    assert_eq!(c.read_len, 60);
    // Not negotiated: a counted drop of this list only.
    let id2 = drv.offer(&m, &[(10, false)], true).unwrap();
    let p = dev.pop(&r, &m, &mut c, Direction::ReadOnly, false).unwrap();
    assert_eq!(
        p.map(|p| (p.id, p.fault)),
        Some((id2, Some(ChainError::BadIndirect)))
    );
    assert!(c.readable.is_empty(), "a faulty list carries no buffers");
}

fn pop_fault(
    m: &Mem,
    r: &DescRing<'_>,
    dev: &mut PackedState,
    indirect: bool,
) -> Option<ChainError> {
    let mut c = Chain::default();
    dev.pop(r, m, &mut c, Direction::ReadOnly, indirect)
        .unwrap()
        .unwrap()
        .fault
}

#[test]
fn hostile_indirect_tables_are_counted_drops() {
    let m = mem();
    let r = ring(&m, 8);
    let a = avail_bits(true);
    let cases: [(u64, u32, u16, ChainError); 5] = [
        (TABLES, 0, F_INDIRECT, ChainError::BadIndirectTable),
        (TABLES, 24, F_INDIRECT, ChainError::BadIndirectTable),
        // 9 entries on an 8-entry queue.
        (TABLES, 16 * 9, F_INDIRECT, ChainError::TooLong),
        (0xf_fff0, 32, F_INDIRECT, ChainError::OutOfMemory),
        (u64::MAX - 8, 32, F_INDIRECT, ChainError::Overflow),
    ];
    let mut dev = PackedState::new(8, false);
    for (k, &(addr, len, f, want)) in cases.iter().enumerate() {
        let slot = k as u16;
        put(&m, RING, slot, addr, len, slot, f | a);
        assert_eq!(pop_fault(&m, &r, &mut dev, true), Some(want), "case {k}");
        dev.complete(slot, 0).unwrap();
    }
    // INDIRECT with NEXT (inside a list): the list still ends where its NEXT flags say.
    put(&m, RING, 5, TABLES, 16, 0xdead, F_INDIRECT | F_NEXT | a);
    put(&m, RING, 6, BUFS, 10, 6, a);
    assert_eq!(
        pop_fault(&m, &r, &mut dev, true),
        Some(ChainError::BadIndirect)
    );
    assert_eq!(dev.next_avail(), Pos { idx: 7, wrap: true });
    // A table entry with a device-writable buffer on TX.
    put(&m, TABLES + 0x100, 0, BUFS, 10, 0, F_WRITE);
    put(&m, RING, 7, TABLES + 0x100, 16, 7, F_INDIRECT | a);
    assert_eq!(
        pop_fault(&m, &r, &mut dev, true),
        Some(ChainError::WrongDirection)
    );
}

#[test]
fn hostile_ring_structure_is_a_fault() {
    let m = mem();
    let r = ring(&m, 4);
    let a = avail_bits(true);
    let mut c = Chain::default();
    let mut pop = |dev: &mut PackedState| dev.pop(&r, &m, &mut c, Direction::ReadOnly, false);

    // Wrong wrap bits on the head: simply not available.
    let mut dev = PackedState::new(4, false);
    put(&m, RING, 0, BUFS, 10, 0, avail_bits(false));
    assert_eq!(pop(&mut dev), Ok(None));
    put(&m, RING, 0, BUFS, 10, 0, F_AVAIL | F_USED);
    assert_eq!(pop(&mut dev), Ok(None));

    // Wrong wrap bits inside a list.
    put(&m, RING, 0, BUFS, 10, 0, a | F_NEXT);
    put(&m, RING, 1, BUFS, 10, 1, avail_bits(false));
    assert_eq!(pop(&mut dev), Err(RingFault::BadWrap));
    assert_eq!(dev.next_avail(), Pos::START, "a fault moves nothing");

    // A list longer than the ring (every descriptor has NEXT).
    for s in 0..4 {
        put(&m, RING, s, BUFS, 10, 0, a | F_NEXT);
    }
    assert_eq!(pop(&mut dev), Err(RingFault::ChainTooLong));

    // ID out of range.
    put(&m, RING, 0, BUFS, 10, 4, a);
    assert_eq!(pop(&mut dev), Err(RingFault::BadId));
    put(&m, RING, 0, BUFS, 10, u16::MAX, a);
    assert_eq!(pop(&mut dev), Err(RingFault::BadId));

    // ID reused while in flight.
    put(&m, RING, 0, BUFS, 10, 2, a);
    put(&m, RING, 1, BUFS, 10, 2, a);
    assert_eq!(pop(&mut dev).map(|p| p.map(|p| p.id)), Ok(Some(2)));
    assert_eq!(pop(&mut dev), Err(RingFault::IdInUse));
    // ... and fine once completed.
    dev.complete(2, 0).unwrap();
    assert_eq!(pop(&mut dev).map(|p| p.map(|p| p.id)), Ok(Some(2)));

    // More descriptors in flight than the ring holds: a driver that rewrites slots the
    // device has not used yet, in the next round's colours.
    let mut dev = PackedState::new(4, false);
    for s in 0..4 {
        put(&m, RING, s, BUFS, 10, s, a);
    }
    for _ in 0..4 {
        assert!(matches!(pop(&mut dev), Ok(Some(_))));
    }
    dev.complete(3, 0).unwrap(); // one ID free again, but no slot used yet
    put(&m, RING, 0, BUFS, 10, 3, avail_bits(false) | F_NEXT);
    put(&m, RING, 1, BUFS, 10, 3, avail_bits(false));
    assert_eq!(pop(&mut dev), Err(RingFault::Overcommit));

    // Completing an ID that is not in flight (a device bug, still no panic).
    assert_eq!(dev.complete(3, 0), Err(RingFault::NotInFlight));
    assert_eq!(dev.complete(9, 0), Err(RingFault::NotInFlight));
}

#[test]
fn hostile_ring_addresses_are_refused() {
    let m = mem();
    assert!(DescRing::new(&m, RING + 8, DRIVER, DEVICE, 8).is_none());
    assert!(DescRing::new(&m, RING, DRIVER + 2, DEVICE, 8).is_none());
    assert!(DescRing::new(&m, 0xf_ff00, DRIVER, DEVICE, 256).is_none());
    assert!(DescRing::new(&m, RING, DRIVER, 0x20_0000, 8).is_none());
    assert!(DescRing::new(&m, RING, DRIVER, DEVICE, 0).is_none());
    assert!(DescRing::new(&m, RING, DRIVER, DEVICE, (1 << 15) + 1).is_none());
}

#[test]
fn ring_base_carries_the_wrap_counter_in_bit_15() {
    let p = Pos {
        idx: 5,
        wrap: false,
    };
    assert_eq!(p.to_base(), 5);
    assert_eq!(Pos { idx: 5, wrap: true }.to_base(), 0x8005);
    assert_eq!(Pos::from_base(0x8005, 8), Some(Pos { idx: 5, wrap: true }));
    assert_eq!(Pos::from_base(5, 8), Some(p));
    assert_eq!(Pos::from_base(0x8008, 8), None);
    let s = PackedState::resume(8, false, 0x0003, 0x8002).unwrap();
    assert_eq!(
        s.next_avail(),
        Pos {
            idx: 3,
            wrap: false
        }
    );
    assert_eq!(s.next_used(), Pos { idx: 2, wrap: true });
    assert!(PackedState::resume(8, false, 9, 0).is_none());
}

#[test]
fn notifications_follow_the_driver_event_area() {
    let m = mem();
    let r = ring(&m, 8);
    let mut drv = Driver::new(8, false);
    let mut dev = PackedState::new(8, false);
    let mut c = Chain::default();
    let mut step = |dev: &mut PackedState, drv: &mut Driver| {
        let id = drv.offer(&m, &[(10, false)], false).unwrap();
        dev.pop(&r, &m, &mut c, Direction::ReadOnly, false).unwrap();
        dev.complete(id, 0).unwrap();
        dev.publish(&r, |_| {});
        drv.reap(&m);
    };
    let set = |flags: u16, off_wrap: u16| {
        m.write_obj(off_wrap, GuestAddress(DRIVER)).unwrap();
        m.write_obj(flags, GuestAddress(DRIVER + 2)).unwrap();
    };
    // Nothing published: no call.
    assert!(!dev.wants_call(&r, false));
    set(EVENT_ENABLE, 0);
    step(&mut dev, &mut drv);
    assert!(dev.wants_call(&r, false));
    assert!(!dev.wants_call(&r, false), "nothing new since the decision");
    set(EVENT_DISABLE, 0);
    step(&mut dev, &mut drv);
    assert!(!dev.wants_call(&r, false));
    // DESC: used position now 2; event at slot 3 of round 1.
    set(EVENT_DESC, 0x8003);
    step(&mut dev, &mut drv); // 2 -> 3
    assert!(!dev.wants_call(&r, true));
    step(&mut dev, &mut drv); // 3 -> 4 passes the event
    assert!(dev.wants_call(&r, true));
    // DESC without EVENT_IDX, and the reserved value 3: taken as ENABLE.
    step(&mut dev, &mut drv);
    assert!(dev.wants_call(&r, false));
    set(3, 0);
    step(&mut dev, &mut drv);
    assert!(dev.wants_call(&r, true));
    // An event in the next round (wrap 0) at slot 1: used goes 6, 7, 0', 1', 2'.
    set(EVENT_DESC, 0x0001);
    for _ in 0..3 {
        step(&mut dev, &mut drv);
        assert!(!dev.wants_call(&r, true));
    }
    step(&mut dev, &mut drv);
    assert!(dev.wants_call(&r, true));
    // An offset past the ring never matches (and never loops).
    set(EVENT_DESC, 0x7fff);
    for _ in 0..20 {
        step(&mut dev, &mut drv);
        assert!(!dev.wants_call(&r, true));
    }
}

#[test]
fn device_event_area_is_written_on_change_only() {
    let m = mem();
    let r = ring(&m, 8);
    let dev = PackedState::new(8, false);
    let flags = || m.read_obj::<u16>(GuestAddress(DEVICE + 2)).unwrap();
    let off_wrap = || m.read_obj::<u16>(GuestAddress(DEVICE)).unwrap();
    assert!(dev.set_kicks(&r, false, false));
    assert_eq!(flags(), EVENT_DISABLE);
    assert!(!dev.set_kicks(&r, false, false));
    assert!(dev.set_kicks(&r, true, false));
    assert_eq!(flags(), EVENT_ENABLE);
    assert!(dev.set_kicks(&r, true, true));
    assert_eq!((flags(), off_wrap()), (EVENT_DESC, 0x8000));
    assert!(!dev.set_kicks(&r, true, true));
}

/// One step of the model run.
#[derive(Debug, Clone)]
enum Op {
    /// Offer a buffer of 1..=3 elements of these lengths (direct or indirect).
    Offer(Vec<u16>, bool),
    /// Pop up to n lists.
    Pop(u8),
    /// Complete the in-flight buffer chosen by this index (in-order: the oldest).
    Complete(u8),
    Publish,
    Reap,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (proptest::collection::vec(1u16..256, 1..4), any::<bool>())
            .prop_map(|(l, i)| Op::Offer(l, i)),
        (1u8..8).prop_map(Op::Pop),
        any::<u8>().prop_map(Op::Complete),
        Just(Op::Publish),
        Just(Op::Reap),
    ]
}

/// `rx`: device-writable buffers, completed with a non-zero length each.
fn run_model(size: u16, in_order: bool, rx: bool, ops: &[Op]) {
    let m = mem();
    let r = ring(&m, size);
    let mut drv = Driver::new(size, in_order);
    let mut dev = PackedState::new(size, in_order);
    let mut c = Chain::default();
    let dir = if rx {
        Direction::WriteOnly
    } else {
        Direction::ReadOnly
    };
    // Offered, not yet popped: (id, total length) in ring order.
    let mut offered: VecDeque<(u16, u32)> = VecDeque::new();
    // Popped, not completed, in pop order.
    let mut device: Vec<u16> = Vec::new();
    // Completed (id -> len), not yet reaped.
    let mut done: BTreeMap<u16, u32> = BTreeMap::new();
    let reap = |drv: &mut Driver, done: &mut BTreeMap<u16, u32>| {
        for (id, len) in drv.reap(&m) {
            let want = done
                .remove(&id)
                .expect("reaped an ID the device did not complete");
            assert_eq!(len, want, "id {id}");
        }
    };
    let all = ops
        .iter()
        .cloned()
        .chain(
            [Op::Pop(255), Op::Complete(0)]
                .into_iter()
                .cycle()
                .take(4 * usize::from(size)),
        )
        .chain([Op::Publish, Op::Reap]);
    for op in all {
        match op {
            Op::Offer(lens, indirect) => {
                let elems: Vec<(u32, bool)> = lens.iter().map(|&l| (u32::from(l), rx)).collect();
                if let Some(id) = drv.offer(&m, &elems, indirect) {
                    offered.push_back((id, elems.iter().map(|e| e.0).sum()));
                }
            }
            Op::Pop(n) => {
                for _ in 0..n {
                    let Some(p) = dev.pop(&r, &m, &mut c, dir, true).unwrap() else {
                        assert!(offered.is_empty(), "an offered buffer was not seen");
                        break;
                    };
                    let (id, len) = offered.pop_front().expect("popped a buffer never offered");
                    let got = if rx { c.write_len } else { c.read_len };
                    assert_eq!((p.id, p.fault, got), (id, None, len));
                    device.push(id);
                }
            }
            Op::Complete(k) => {
                if device.is_empty() {
                    continue;
                }
                let len = if rx { u32::from(k) + 1 } else { 0 };
                let k = if in_order {
                    0
                } else {
                    usize::from(k) % device.len()
                };
                let id = device.remove(k);
                dev.complete(id, len).unwrap();
                done.insert(id, len);
            }
            Op::Publish => {
                dev.publish(&r, |_| {});
            }
            Op::Reap => reap(&mut drv, &mut done),
        }
    }
    assert!(offered.is_empty() && device.is_empty() && done.is_empty());
    assert_eq!(dev.in_flight(), 0);
    assert_eq!(dev.next_used(), dev.next_avail());
    assert_eq!(drv.used, drv.avail);
}

/// Fills the ring (and the tables it may point to) with arbitrary bytes, then lets the
/// device pop, complete and publish: every outcome is a list, a counted drop or a fault,
/// and the work is bounded.
fn run_hostile(size: u16, bytes: &[u8], indirect: bool) {
    let m = mem();
    m.write_slice(bytes, GuestAddress(RING)).unwrap();
    m.write_slice(bytes, GuestAddress(TABLES)).unwrap();
    let r = ring(&m, size);
    let mut dev = PackedState::new(size, false);
    let mut c = Chain::default();
    for _ in 0..2 * usize::from(size) {
        match dev.pop(&r, &m, &mut c, Direction::ReadOnly, indirect) {
            Ok(Some(p)) => {
                assert!(p.id < size && p.descs >= 1 && p.descs <= size);
                assert!(c.readable.len() <= usize::from(size) * 4);
                dev.complete(p.id, 0).unwrap();
                dev.publish(&r, |_| {});
            }
            Ok(None) | Err(_) => break,
        }
    }
    assert!(dev.in_flight() <= usize::from(size));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn model_driver_out_of_order(size in 1u16..10, ops in proptest::collection::vec(op(), 0..120)) {
        run_model(size, false, false, &ops);
    }

    #[test]
    fn model_driver_rx_lengths(size in 1u16..10, in_order in any::<bool>(), ops in proptest::collection::vec(op(), 0..120)) {
        run_model(size, in_order, true, &ops);
    }

    #[test]
    fn model_driver_in_order(size in 1u16..10, ops in proptest::collection::vec(op(), 0..120)) {
        run_model(size, true, false, &ops);
    }

    #[test]
    fn hostile_ring_contents(size in 1u16..16, bytes in proptest::collection::vec(any::<u8>(), 256), ind in any::<bool>()) {
        run_hostile(size, &bytes, ind);
    }
}

/// Where the device stopped, read back from the ring alone (what a back-end restarted
/// after a crash has): fresh ring, buffers posted, lists used (their other slots marked
/// used too), a list in flight; and a ring showing two starts is not guessed at.
#[test]
fn scan_finds_where_the_device_stopped() {
    let m = mem();
    let size = 4;
    let r = ring(&m, size);
    let at = |idx, wrap| Some(Pos { idx, wrap });
    assert_eq!(scan_resume(&r), Some(Pos::START), "a zeroed ring");
    put(&m, RING, 0, BUFS, 64, 0, avail_bits(true) | F_WRITE);
    put(&m, RING, 1, BUFS + 0x100, 64, 1, avail_bits(true) | F_WRITE);
    assert_eq!(scan_resume(&r), Some(Pos::START), "available from slot 0");
    let mut st = PackedState::new(size, false);
    let mut c = Chain::default();
    let mut pop_done = |st: &mut PackedState, n: usize| {
        for _ in 0..n {
            let p = st
                .pop(&r, &m, &mut c, Direction::WriteOnly, false)
                .unwrap()
                .unwrap();
            st.complete(p.id, 10).unwrap();
        }
        st.publish(&r, |_| {});
    };
    pop_done(&mut st, 2);
    assert_eq!(scan_resume(&r), at(2, true));
    // A two-descriptor list: its second slot is marked used as well.
    put(
        &m,
        RING,
        2,
        BUFS,
        64,
        2,
        avail_bits(true) | F_WRITE | F_NEXT,
    );
    put(&m, RING, 3, BUFS + 0x100, 64, 2, avail_bits(true) | F_WRITE);
    pop_done(&mut st, 1);
    assert_eq!(read_flags(&m, 3) & (F_AVAIL | F_USED), F_AVAIL | F_USED);
    assert_eq!(scan_resume(&r), at(0, false));
    // The driver makes slot 0 available in the second round; popped, not yet used (a
    // crash now): the device resumes at it.
    put(&m, RING, 0, BUFS, 64, 0, avail_bits(false) | F_WRITE);
    assert_eq!(scan_resume(&r), at(0, false));
    st.pop(&r, &m, &mut c, Direction::WriteOnly, false)
        .unwrap()
        .unwrap();
    assert_eq!(scan_resume(&r), at(0, false));
    // Nothing available, all used: after the newest used descriptor.
    st.complete(0, 10).unwrap();
    st.publish(&r, |_| {});
    assert_eq!(scan_resume(&r), at(1, false));
    // Two runs of available descriptors (slot 2 in the second round after slot 1 used
    // in the first): no single point, no guess.
    put(&m, RING, 1, BUFS, 64, 1, avail_bits(false) | F_WRITE);
    put(&m, RING, 3, BUFS, 64, 3, avail_bits(false) | F_WRITE);
    assert_eq!(scan_resume(&r), None);
}
