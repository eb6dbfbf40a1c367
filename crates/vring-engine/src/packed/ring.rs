//! The device's glue between a vhost-user ring and [`PackedState`]: where a packed
//! queue's positions come from (SET_VRING_BASE), where they go (GET_VRING_BASE), and the
//! dirty logging of the device's writes into the descriptor ring.
//!
//! vhost-user spec, "Vring descriptor indices for packed virtqueues": the 32-bit `num`
//! of SET/GET_VRING_BASE is bits 0–14 the next avail slot, bit 15 its wrap counter, bits
//! 16–30 the next used slot, bit 31 its wrap counter. vhost-user-backend passes only the
//! low 16 bits to the ring and answers GET_VRING_BASE with the ring's 16-bit next avail,
//! so the relay ([`crate::relay`]) records each SET_VRING_BASE in [`RingBases`] on its
//! way through and rewrites the GET_VRING_BASE reply of a packed ring with what
//! [`RingBases::stopped`] holds.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use virtio_queue::{Queue, QueueT};

use super::desc::{DescRing, DESC_LEN};
use super::{PackedState, Pos};
use crate::chain::Mem;
use crate::dirtylog::Logger;

/// Per queue: the ring base values of the vhost-user control channel, shared by the
/// relay and the device.
#[derive(Debug)]
pub(crate) struct RingBases {
    /// The last SET_VRING_BASE `num`, all 32 bits.
    set: Box<[AtomicU32]>,
    /// The positions at the last GET_VRING_BASE of a packed ring (the reply's `num`).
    stopped: Box<[AtomicU32]>,
    /// The connection negotiated RING_PACKED: every queue is packed.
    packed: AtomicBool,
}

impl RingBases {
    pub(crate) fn new(queues: usize) -> RingBases {
        RingBases {
            set: (0..queues).map(|_| AtomicU32::new(0)).collect(),
            stopped: (0..queues).map(|_| AtomicU32::new(0)).collect(),
            packed: AtomicBool::new(false),
        }
    }

    /// SET_VRING_BASE for ring `index` (ignored out of range: vhost-user-backend refuses
    /// that message itself).
    pub(crate) fn note_set(&self, index: u32, num: u32) {
        if let Some(s) = usize::try_from(index).ok().and_then(|i| self.set.get(i)) {
            s.store(num, Ordering::Release);
        }
    }

    pub(crate) fn set_base(&self, q: usize) -> u32 {
        self.set.get(q).map_or(0, |s| s.load(Ordering::Acquire))
    }

    pub(crate) fn set_packed(&self, on: bool) {
        self.packed.store(on, Ordering::Release);
    }

    pub(crate) fn packed(&self) -> bool {
        self.packed.load(Ordering::Acquire)
    }

    pub(crate) fn note_stopped(&self, q: usize, num: u32) {
        if let Some(s) = self.stopped.get(q) {
            s.store(num, Ordering::Release);
        }
    }

    /// The GET_VRING_BASE answer for ring `index` of a packed connection; `None` for a
    /// split one (the back-end's own reply is right then).
    pub(crate) fn stopped(&self, index: u32) -> Option<u32> {
        if !self.packed() {
            return None;
        }
        let i = usize::try_from(index).ok()?;
        self.stopped.get(i).map(|s| s.load(Ordering::Acquire))
    }
}

/// The positions a packed ring resumes from: the avail half is what vhost-user-backend
/// kept of SET_VRING_BASE (`queue_avail`, the queue's next avail), the used half comes
/// from the full value the relay recorded (`set`) when its low half matches. A used half
/// of 0 (DPDK virtio-user sends only the avail half; DPDK's own vhost resumes with
/// used = avail), or no recorded value, resumes with used = avail: nothing in flight.
pub(crate) fn resume_base(queue_avail: u16, set: u32) -> (u16, u16) {
    let lo = (set & 0xffff) as u16;
    let hi = (set >> 16) as u16;
    if lo == queue_avail && hi != 0 {
        (queue_avail, hi)
    } else {
        (queue_avail, queue_avail)
    }
}

/// The GET_VRING_BASE value for positions `avail` and `used`.
pub(crate) fn base_value(avail: Pos, used: Pos) -> u32 {
    u32::from(avail.to_base()) | (u32::from(used.to_base()) << 16)
}

/// A new [`PackedState`] for `q` at the base the frontend set; `None` when a slot is
/// outside the ring (the ring is broken).
///
/// A frontend that sets a ring's start (next avail and used both slot 0 of the first
/// round) while the ring shows a device that stopped elsewhere ([`scan_resume`]) is
/// QEMU after a back-end crash: it resumes a packed ring at its previous start, having
/// got no GET_VRING_BASE answer. The ring is resumed where it shows it stopped then;
/// lists in flight at the crash are popped again (TX frames sent at least once, as on
/// split rings). For a ring really at its start the scan says the same.
pub(crate) fn resume(q: &Queue, set: u32, ring: Option<&DescRing<'_>>) -> Option<PackedState> {
    let (avail, used) = resume_base(q.next_avail(), set);
    let start = Pos::START.to_base();
    if avail == start && used == start {
        if let Some(at) = ring.and_then(super::scan_resume) {
            if at != Pos::START {
                tracing::info!(
                    slot = at.idx,
                    wrap = at.wrap,
                    "packed ring set to its start but used up to another position: resumed there"
                );
                let b = at.to_base();
                return PackedState::resume(q.size(), false, b, b);
            }
        }
    }
    PackedState::resume(q.size(), false, avail, used)
}

/// The GET_VRING_BASE value of `q` whose state is `st` (`None`: never used since it was
/// set up: its base as set).
pub(crate) fn stopped_value(q: &Queue, st: Option<&PackedState>, set: u32) -> u32 {
    match st {
        Some(s) => base_value(s.next_avail(), s.next_used()),
        None => {
            let (a, u) = resume_base(q.next_avail(), set);
            u32::from(a) | (u32::from(u) << 16)
        }
    }
}

/// Translates the three areas of packed queue `q`.
pub(crate) fn desc_ring<'m>(mem: &'m Mem, q: &Queue) -> Option<DescRing<'m>> {
    DescRing::new(mem, q.desc_table(), q.avail_ring(), q.used_ring(), q.size())
}

/// [`PackedState::publish`] with dirty logging: every used descriptor written is logged
/// at its guest-physical address in the descriptor ring (`desc` + 16 × slot; the 8 bytes
/// of len/id/flags) — a packed ring has no used ring, so the ring's used log address
/// (VHOST_VRING_F_LOG) does not cover these writes. Returns the descriptors written.
pub(crate) fn publish_logged(
    st: &mut PackedState,
    ring: &DescRing<'_>,
    desc: u64,
    log: Option<&mut Logger<'_>>,
) -> usize {
    match log {
        None => st.publish(ring, |_| {}),
        Some(l) => st.publish(ring, |slot| {
            l.gpa(desc + (DESC_LEN as u64) * u64::from(slot) + 8, 8);
        }),
    }
}

/// Logs a write of the device event suppression area at `device` (4 bytes).
pub(crate) fn log_device_area(log: Option<&mut Logger<'_>>, device: u64) {
    if let Some(l) = log {
        l.gpa(device, 4);
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test code: small literal values
mod tests {
    use super::*;
    use crate::chain::{Chain, Direction};
    use crate::dirtylog::{DirtyLog, LOG_ALL};
    use std::os::fd::AsFd;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    #[test]
    fn ring_base_halves() {
        // QEMU: avail 5 (wrap 1), used 3 (wrap 1).
        assert_eq!(resume_base(0x8005, 0x8003_8005), (0x8005, 0x8003));
        // DPDK virtio-user: avail half only.
        assert_eq!(resume_base(0x8000, 0x8000), (0x8000, 0x8000));
        // A stale record (the low half no longer matches): used = avail.
        assert_eq!(resume_base(0x0007, 0x8003_8005), (7, 7));
        let p = |idx, wrap| Pos { idx, wrap };
        assert_eq!(base_value(p(5, true), p(3, false)), 0x0003_8005);
        let b = RingBases::new(2);
        b.note_set(1, 0x8001_8002);
        b.note_set(9, 1);
        assert_eq!((b.set_base(1), b.set_base(9)), (0x8001_8002, 0));
        b.note_stopped(0, 42);
        assert_eq!(b.stopped(0), None, "split: the back-end's reply stands");
        b.set_packed(true);
        assert_eq!((b.stopped(0), b.stopped(5)), (Some(42), None));
    }

    /// While LOG_ALL is on, a published used descriptor marks the page of its slot in the
    /// descriptor ring, not the ring's used-ring log address.
    #[test]
    fn used_descriptors_are_logged_at_their_ring_slot() {
        const RING: u64 = 0x5000; // ring of 256 × 16 bytes: pages 5 to 5
        const BUF: u64 = 0x9000;
        let mem: Mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let f = std::fs::File::from(
            nix::sys::memfd::memfd_create(c"log", nix::sys::memfd::MemFdCreateFlag::empty())
                .unwrap(),
        );
        f.set_len(4096).unwrap();
        let log = DirtyLog::new(1);
        log.set_base(f.as_fd(), 4096, 0).unwrap();
        let size = 256u16;
        let ring = DescRing::new(&mem, RING, 0x3000, 0x3010, size).unwrap();
        let mut st = PackedState::new(size, false);
        // Make slot 0 .. 3 available (wrap 1) with IDs 0..3, one 64-byte buffer each.
        let write = |slot: u64, id: u16| {
            let mut b = [0u8; 16];
            b[0..8].copy_from_slice(&(BUF + 0x100 * slot).to_le_bytes());
            b[8..12].copy_from_slice(&64u32.to_le_bytes());
            b[12..14].copy_from_slice(&id.to_le_bytes());
            b[14..16]
                .copy_from_slice(&(super::super::F_AVAIL | super::super::F_WRITE).to_le_bytes());
            mem.write_slice(&b, GuestAddress(RING + 16 * slot)).unwrap();
        };
        for s in 0..4 {
            write(s, s as u16);
        }
        let mut chain = Chain::default();
        for _ in 0..4 {
            let p = st
                .pop(&ring, &mem, &mut chain, Direction::WriteOnly, false)
                .unwrap()
                .unwrap();
            st.complete(p.id, 10).unwrap();
        }
        let mut l = log.logger(LOG_ALL, &mem, 0).unwrap();
        assert_eq!(publish_logged(&mut st, &ring, RING, Some(&mut l)), 4);
        log_device_area(Some(&mut l), 0x3010);
        assert_eq!(l.finish(), 0);
        let mut b = [0u8; 1];
        use std::os::unix::fs::FileExt;
        f.read_exact_at(&mut b, 0).unwrap();
        // Page 5 (the ring's slots 0..3) and page 3 (the device event area).
        assert_eq!(b[0], 0b10_1000);
        let used: u16 = mem.read_obj(GuestAddress(RING + 14)).unwrap();
        assert_eq!(used & super::super::F_USED, super::super::F_USED);
        // Without a logger nothing is marked.
        for s in 0..2 {
            write(4 + s, s as u16);
        }
        for _ in 0..2 {
            let p = st
                .pop(&ring, &mem, &mut chain, Direction::WriteOnly, false)
                .unwrap()
                .unwrap();
            st.complete(p.id, 10).unwrap();
        }
        f.write_all_at(&[0], 0).unwrap();
        assert_eq!(publish_logged(&mut st, &ring, RING, None), 2);
        f.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(b[0], 0);
    }
}
