//! Fuzz the packed-ring walker (`vring_engine::packed::PackedState`: pop, unpop,
//! complete, publish; virtio 1.2 §2.8 "Packed Virtqueues") over a descriptor ring, event
//! areas and indirect tables the input fills.
//!
//! Guest memory: region A `[0, 64 KiB)`, region B `[64 KiB, 128 KiB)` (adjacent: a buffer
//! may span both), region C `[192 KiB, 196 KiB)` (after a hole). The ring is at 0, the
//! driver event area at 0xF000, the device one at 0xF004. Input: 2 bytes queue size
//! (1..=256), 1 byte mode (bits 0-1 direction, bit 2 indirect allowed, bit 3 IN_ORDER,
//! bit 4 complete newest first), 1 byte of completion lengths, then bytes copied over the
//! ring and on into the memory after it (where indirect tables and buffers put there are
//! found).
//!
//! Also the crash-recovery scan (`scan_resume`) over the same memory, before and after
//! each round: it ends and names a slot inside the ring, or nothing.
//!
//! Invariants: every walk ends (the target returns); a list is 1..=size descriptors with
//! an ID below the size; a list without a fault has buffers inside guest memory whose
//! lengths add up, in its queue's direction; a `RingFault` leaves the positions as they
//! were; an unpopped list pops again the same; the device never holds more lists than
//! the ring has slots and never publishes more used descriptors than lists completed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vring_engine::chain::{Chain, Direction, Mem};
use vring_engine::packed::desc::DescRing;
use vring_engine::packed::{scan_resume, PackedState};

const KIB: usize = 1024;
const DRIVER: u64 = 0xF000;
const DEVICE: u64 = 0xF004;

fn memory() -> Mem {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 64 * KIB),
        (GuestAddress(64 * KIB as u64), 64 * KIB),
        (GuestAddress(192 * KIB as u64), 4 * KIB),
    ])
    .expect("guest memory")
}

fn host_ranges(mem: &Mem) -> Vec<(usize, usize)> {
    mem.iter()
        .map(|r| {
            let p = r
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .unwrap() as usize;
            (p, p + r.len() as usize)
        })
        .collect()
}

fn summary(c: &Chain<'_>) -> (u32, u32, Vec<(usize, usize)>) {
    let v = c
        .readable
        .iter()
        .chain(c.writable.iter())
        .map(|s| (s.ptr_guard().as_ptr() as usize, s.len()))
        .collect();
    (c.read_len, c.write_len, v)
}

fn check(ranges: &[(usize, usize)], c: &Chain<'_>, dir: Direction) {
    let sum =
        |v: &[vm_memory::VolatileSlice<'_, ()>]| v.iter().map(|s| s.len() as u64).sum::<u64>();
    assert_eq!(u64::from(c.read_len), sum(&c.readable));
    assert_eq!(u64::from(c.write_len), sum(&c.writable));
    match dir {
        Direction::ReadOnly => assert!(c.writable.is_empty()),
        Direction::WriteOnly => assert!(c.readable.is_empty()),
        Direction::ReadThenWrite => {}
    }
    for s in c.readable.iter().chain(c.writable.iter()) {
        let p = s.ptr_guard().as_ptr() as usize;
        let end = p + s.len();
        assert!(
            ranges.iter().any(|&(a, b)| a <= p && end <= b),
            "buffer {p:#x}+{} outside guest memory",
            s.len()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let size = (u16::from_le_bytes([data[0], data[1]]) % 256) + 1;
    let mode = data[2];
    let lens = data[3];
    let dir = match mode & 3 {
        0 => Direction::ReadOnly,
        1 => Direction::WriteOnly,
        _ => Direction::ReadThenWrite,
    };
    let indirect = mode & 4 != 0;
    let in_order = mode & 8 != 0;
    let newest_first = mode & 16 != 0;
    let mem = memory();
    let body = &data[4..];
    let body = &body[..body.len().min(128 * KIB)];
    vm_memory::Bytes::write_slice(&mem, body, GuestAddress(0)).expect("in memory");
    let ring = DescRing::new(&mem, 0, DRIVER, DEVICE, size).expect("ring inside memory");
    let ranges = host_ranges(&mem);
    let mut st = PackedState::new(size, in_order);
    let mut chain = Chain::default();
    let mut held: Vec<u16> = Vec::new();
    let mut completed = 0usize;
    // A few rounds: pop what is available (at most twice the ring: the rest waits),
    // complete, publish; the used descriptors written make those slots unavailable.
    'rounds: for round in 0..4u32 {
        if let Some(p) = scan_resume(&ring) {
            assert!(p.idx < size, "{p:?}");
        }
        for _ in 0..2 * u32::from(size) {
            let before = (st.next_avail(), st.next_used(), st.in_flight());
            let p = match st.pop(&ring, &mem, &mut chain, dir, indirect) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(_) => {
                    assert_eq!(
                        before,
                        (st.next_avail(), st.next_used(), st.in_flight()),
                        "a ring fault moves nothing"
                    );
                    break 'rounds;
                }
            };
            assert!(p.descs >= 1 && p.descs <= size, "{p:?}");
            assert!(p.id < size, "{p:?}");
            assert_eq!(chain.head, p.id);
            if p.fault.is_none() {
                check(&ranges, &chain, dir);
            }
            // Put the first list of each round back once: it pops again the same.
            if held.is_empty() && round % 2 == 0 {
                let s = summary(&chain);
                st.unpop(&p).expect("the last list popped can be put back");
                let q = st
                    .pop(&ring, &mem, &mut chain, dir, indirect)
                    .expect("popped before")
                    .expect("still available");
                assert_eq!((q.id, q.descs, q.fault), (p.id, p.descs, p.fault));
                assert_eq!(summary(&chain), s);
            }
            held.push(p.id);
            assert!(st.in_flight() <= usize::from(size));
        }
        assert_eq!(st.in_flight(), held.len());
        if newest_first {
            held.reverse();
        }
        // Complete all but (round-dependent) the last one or two.
        let keep = (round as usize) % 3;
        let n = held.len().saturating_sub(keep);
        for (k, id) in held.drain(..n).enumerate() {
            let len = if dir == Direction::ReadOnly {
                0
            } else {
                u32::from(lens) * (k as u32 + 1)
            };
            st.complete(id, len).expect("in flight");
            completed += 1;
            assert!(st.complete(id, len).is_err(), "completed twice");
        }
        let written = st.publish(&ring, |slot| assert!(slot < size));
        assert!(written <= completed);
        completed = 0;
        let _ = st.wants_call(&ring, mode & 32 != 0);
        let _ = st.set_kicks(&ring, round % 2 == 0, mode & 32 != 0);
        if newest_first {
            held.reverse();
        }
    }
});
