//! Direct access to a split virtqueue's available and used rings (virtio 1.2 §2.7.6,
//! §2.7.8), for the data path's bursts.
//!
//! Why not virtio-queue's `Queue` here: its `add_used` translates the used ring's guest
//! address twice and stores the used index once *per chain*, and its avail iterator
//! re-reads the avail index per chain. Each of those is a region lookup, and the index
//! stores and loads touch cache lines the driver's core is polling — per frame. A burst
//! translates both rings once ([`Rings::new`]), reads the avail index only when the
//! entries it announced are used up, writes used elements as it goes and publishes the
//! used index once at the end (§2.7.13: elements first, then the index, release order).
//! The queue's own `next_avail`/`next_used` are kept in step, so GET_VRING_BASE and the
//! other (control, non-lent TX) paths see the same positions.
//!
//! Because `Queue::needs_notification` counts only its own `add_used` calls, the queues
//! served here decide notifications with [`need_event`] and the ring's last notified
//! used index ([`crate::vring::NetVring::notified_at`]).

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, VolatileSlice};

use vhost_user_backend::VringState;

use crate::chain::Mem;
use crate::counters::QueueCounters;
use crate::vring::{GuestMem, NetVring};

/// VRING_AVAIL_F_NO_INTERRUPT (§2.7.7.1).
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// VRING_USED_F_NO_NOTIFY (§2.7.10).
const USED_F_NO_NOTIFY: u16 = 1;

/// The avail and used rings of one queue, translated once for a burst.
pub(crate) struct Rings<'m> {
    /// flags, idx, ring[size], used_event.
    avail: Shared<'m>,
    /// flags, idx, ring[size] of (id: u32, len: u32), avail_event.
    used: Shared<'m>,
    size: u16,
}

/// A ring's bytes in guest memory, checked once (inside one region, aligned) and then
/// accessed with plain atomic loads and stores at bounds-checked offsets.
///
/// Why not `VolatileSlice::load`/`store`: each goes through vm-memory's `AtomicInteger`
/// trait, which is not inlined across crates — a call plus alignment and bounds checks
/// per ring access, ≈ 3–6 % of a 64-byte frame's cost in the profile. Also the packed
/// ring's accessor ([`crate::packed`]).
pub(crate) struct Shared<'m> {
    ptr: *mut u8,
    len: usize,
    _mem: std::marker::PhantomData<&'m Mem>,
}

impl<'m> Shared<'m> {
    /// `None` unless the host address is aligned to `align` (a power of two).
    pub(crate) fn new(s: VolatileSlice<'m, ()>, align: usize) -> Option<Shared<'m>> {
        let ptr = s.ptr_guard_mut().as_ptr();
        (ptr as usize % align == 0).then_some(Shared {
            ptr,
            len: s.len(),
            _mem: std::marker::PhantomData,
        })
    }

    #[inline(always)]
    pub(crate) fn load16(&self, off: usize, order: Ordering) -> u16 {
        if off % 2 != 0 || off + 2 > self.len {
            return 0;
        }
        // SAFETY: `ptr..ptr+len` is guest memory mapped for the snapshot's lifetime 'm;
        // the offset is inside it and 2-aligned on a 2-aligned base. The guest writes it
        // concurrently, hence an atomic access (what vm-memory's `load` does too).
        u16::from_le(unsafe { AtomicU16::from_ptr(self.ptr.add(off).cast()) }.load(order))
    }

    #[inline(always)]
    pub(crate) fn store16(&self, off: usize, v: u16, order: Ordering) {
        if off % 2 != 0 || off + 2 > self.len {
            return;
        }
        // SAFETY: as in `load16`.
        unsafe { AtomicU16::from_ptr(self.ptr.add(off).cast()) }.store(v.to_le(), order);
    }

    #[inline(always)]
    fn store32(&self, off: usize, v: u32) {
        if off % 4 != 0 || off + 4 > self.len {
            return;
        }
        // SAFETY: as in `load16`, with a 4-aligned offset on a 4-aligned base.
        unsafe { AtomicU32::from_ptr(self.ptr.add(off).cast()) }
            .store(v.to_le(), Ordering::Relaxed);
    }

    /// An 8-byte load (0 outside the slice or unaligned, as [`load16`](Self::load16)).
    #[inline(always)]
    pub(crate) fn load64(&self, off: usize, order: Ordering) -> u64 {
        if off % 8 != 0 || off + 8 > self.len || self.ptr as usize % 8 != 0 {
            return 0;
        }
        // SAFETY: as in `load16`, with an 8-aligned address (checked).
        u64::from_le(unsafe { AtomicU64::from_ptr(self.ptr.add(off).cast()) }.load(order))
    }

    /// An 8-byte store (nothing outside the slice or unaligned).
    #[inline(always)]
    pub(crate) fn store64(&self, off: usize, v: u64, order: Ordering) {
        if off % 8 != 0 || off + 8 > self.len || self.ptr as usize % 8 != 0 {
            return;
        }
        // SAFETY: as in `load64`.
        unsafe { AtomicU64::from_ptr(self.ptr.add(off).cast()) }.store(v.to_le(), order);
    }
}

impl<'m> Rings<'m> {
    /// Translates the rings of `q` in `mem`. `None` when a ring is not inside one memory
    /// region (legal in theory; no driver allocates a ring across a hole in its RAM) or is
    /// misaligned (§2.7: avail 2, used 4 bytes): the caller treats the ring as broken.
    pub(crate) fn new(mem: &'m Mem, q: &Queue) -> Option<Rings<'m>> {
        let size = q.size();
        let s = usize::from(size);
        let (avail_addr, used_addr) = (q.avail_ring(), q.used_ring());
        if size == 0 || avail_addr % 2 != 0 || used_addr % 4 != 0 {
            return None;
        }
        let avail = Shared::new(mem.get_slice(GuestAddress(avail_addr), 6 + 2 * s).ok()?, 2)?;
        let used = Shared::new(mem.get_slice(GuestAddress(used_addr), 6 + 8 * s).ok()?, 4)?;
        Some(Rings { avail, used, size })
    }

    /// The driver's avail index (acquire: the entries it covers are visible after it).
    #[inline]
    pub(crate) fn avail_idx(&self) -> u16 {
        self.avail.load16(2, Ordering::Acquire)
    }

    /// The head in avail slot `idx % size`.
    #[inline]
    pub(crate) fn avail_head(&self, idx: u16) -> u16 {
        let off = 4 + 2 * usize::from(idx % self.size);
        self.avail.load16(off, Ordering::Relaxed)
    }

    /// Writes used element `idx % size`; invisible to the driver until [`publish`].
    #[inline]
    pub(crate) fn put_used(&self, idx: u16, head: u16, len: u32) {
        let off = used_elem_offset(idx, self.size);
        self.used.store32(off, u32::from(head));
        self.used.store32(off + 4, len);
    }

    /// Publishes the used index (release: the elements before it are visible first).
    #[inline]
    pub(crate) fn publish(&self, used_idx: u16) {
        self.used.store16(2, used_idx, Ordering::Release);
    }

    /// Asks a driver without EVENT_IDX not to kick (§2.7.10); writes only on a change, so
    /// the line the driver reads is not dirtied per burst. Returns whether it wrote (the
    /// used ring's flags, offset 0: a write to log while migrating).
    pub(crate) fn suppress_kicks(&self) -> bool {
        let f = self.used.load16(0, Ordering::Relaxed);
        if f & USED_F_NO_NOTIFY == 0 {
            self.used
                .store16(0, f | USED_F_NO_NOTIFY, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether the driver wants a notification now that the used index moved from `old`
    /// to `new`: EVENT_IDX's `used_event` (§2.7.7.2), else the NO_INTERRUPT flag (§2.7.7.1).
    pub(crate) fn wants_call(&self, event_idx: bool, old: Option<u16>, new: u16) -> bool {
        // The used index store must be visible before the driver's event is read, or a
        // driver that just re-armed could be missed (the pairing fence is in the driver).
        std::sync::atomic::fence(Ordering::SeqCst);
        if event_idx {
            let off = 4 + 2 * usize::from(self.size);
            let ev = self.avail.load16(off, Ordering::Relaxed);
            old.is_none_or(|o| need_event(ev, new, o))
        } else {
            let flags = self.avail.load16(0, Ordering::Relaxed);
            flags & AVAIL_F_NO_INTERRUPT == 0 && old != Some(new)
        }
    }
}

/// Offset of used element `idx % size` in the used ring (§2.7.8: flags, idx, then
/// 8-byte elements).
#[inline]
pub(crate) fn used_elem_offset(idx: u16, size: u16) -> usize {
    4 + 8 * usize::from(idx % size.max(1))
}

/// Offset of `avail_event` in the used ring (after `size` elements, §2.7.10).
#[inline]
pub(crate) fn avail_event_offset(size: u16) -> usize {
    4 + 8 * usize::from(size)
}

/// Issues prefetches for the chains starting at `heads`: first their descriptors, then
/// the first `lines` cache lines of each chain's first buffer (at most its length), for
/// writing when `write` (RX buffers).
///
/// Why: those lines were last written by the driver on another core, so each first touch
/// is a cross-core miss. Touched one chain at a time they are paid one after another;
/// prefetched for a whole batch up front they overlap (what DPDK's vhost does per burst).
/// Only hints: nothing is validated or trusted here — the chain walk that follows checks
/// every descriptor — and a prefetch of any address never faults.
pub(crate) fn prefetch_chains(
    regions: &crate::chain::Regions<'_>,
    table: &VolatileSlice<'_, ()>,
    heads: &[u16],
    lines: usize,
    write: bool,
) {
    let size = table.len() / 16;
    let base = table.ptr_guard().as_ptr();
    for &h in heads {
        if usize::from(h) < size {
            prefetch(base.wrapping_add(16 * usize::from(h)));
        }
    }
    for &h in heads {
        if usize::from(h) >= size {
            continue;
        }
        let Some(d) = crate::chain::load_desc(table, 16 * usize::from(h)) else {
            continue;
        };
        let len = d.len as usize;
        if let Some(p) = regions.host(d.addr) {
            for l in 0..lines.min(len.div_ceil(64)) {
                if write {
                    prefetch_w(p.wrapping_add(64 * l));
                } else {
                    prefetch(p.wrapping_add(64 * l));
                }
            }
        }
    }
}

/// Prefetch for writing (PREFETCHW): the line arrives owned, so the store that follows
/// does not wait for the other core to give it up. RX buffers are such lines: the driver
/// on the other core wrote the descriptors and last read the buffers.
#[inline(always)]
fn prefetch_w(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHW is a hint: it never faults, has no architectural effect whatever
    // the address, touches no registers or flags, and executes as a NOP on CPUs without
    // it (its opcode space, 0F 0D, is a NOP there).
    unsafe {
        core::arch::asm!("prefetchw [{0}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[inline(always)]
fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is a hint: it never faults and has no architectural effect,
    // whatever the address (the SSE it needs is part of the x86_64 baseline).
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Signals the guest through `vring`'s call eventfd if it wants a notification for what
/// was published since the last decision ([`Rings::wants_call`]); counts the call on
/// `ctr`. Call with the ring's lock held (`st`).
pub(crate) fn call_if_wanted(
    vring: &NetVring,
    st: &VringState<GuestMem>,
    rings: &Rings<'_>,
    ctr: Option<&QueueCounters>,
) -> bool {
    let q = st.get_queue();
    let used = q.next_used();
    let old = vring.notified_at(used);
    if rings.wants_call(q.event_idx_enabled(), old, used) && st.signal_used_queue().is_ok() {
        if let Some(c) = ctr {
            c.count_call();
        }
        return true;
    }
    false
}

/// virtio 1.2 §2.7.7.2 (Linux `vring_need_event`): the driver asked to be notified once
/// the used index passes `event`; notify when `event` lies in `[old, new)`.
#[inline]
pub(crate) fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[allow(clippy::cast_possible_truncation)]
#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryMmap};

    fn mem() -> Mem {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn queue(avail: u64, used: u64, size: u16) -> Queue {
        let mut q = Queue::new(256).unwrap();
        q.set_size(size);
        q.set_avail_ring_address(Some(avail as u32), Some(0));
        q.set_used_ring_address(Some(used as u32), Some(0));
        q
    }

    #[test]
    fn need_event_matches_the_spec_window() {
        // event 5: crossing from 5 to 6 notifies, 6 -> 7 does not.
        assert!(need_event(5, 6, 5));
        assert!(!need_event(5, 7, 6));
        // a burst that passes the event notifies once.
        assert!(need_event(5, 10, 2));
        // wrap-around.
        assert!(need_event(u16::MAX, 1, u16::MAX - 2));
    }

    #[test]
    fn used_elements_are_published_once() {
        let m = mem();
        let q = queue(0x1000, 0x2000, 8);
        let r = Rings::new(&m, &q).unwrap();
        r.put_used(9, 3, 77); // slot 1
        assert_eq!(m.read_obj::<u16>(GuestAddress(0x2002)).unwrap(), 0);
        r.publish(10);
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x2004 + 8)).unwrap(), 3);
        assert_eq!(m.read_obj::<u32>(GuestAddress(0x2008 + 8)).unwrap(), 77);
        assert_eq!(m.read_obj::<u16>(GuestAddress(0x2002)).unwrap(), 10);
    }

    #[test]
    fn avail_entries_and_flags() {
        let m = mem();
        let q = queue(0x1000, 0x2000, 8);
        m.write_obj(5u16, GuestAddress(0x1002)).unwrap();
        m.write_obj(7u16, GuestAddress(0x1004 + 2 * 3)).unwrap();
        let r = Rings::new(&m, &q).unwrap();
        assert_eq!(r.avail_idx(), 5);
        assert_eq!(r.avail_head(11), 7);
        // no EVENT_IDX: calls unless NO_INTERRUPT, and only when something was added.
        assert!(r.wants_call(false, Some(1), 2));
        assert!(!r.wants_call(false, Some(2), 2));
        m.write_obj(1u16, GuestAddress(0x1000)).unwrap();
        assert!(!r.wants_call(false, Some(1), 2));
        // EVENT_IDX: used_event after the ring.
        m.write_obj(3u16, GuestAddress(0x1004 + 2 * 8)).unwrap();
        assert!(r.wants_call(true, Some(3), 4));
        assert!(!r.wants_call(true, Some(4), 5));
        assert!(r.wants_call(true, None, 5));
        r.suppress_kicks();
        assert_eq!(m.read_obj::<u16>(GuestAddress(0x2000)).unwrap(), 1);
    }

    #[test]
    fn hostile_ring_addresses_are_refused() {
        // (Misaligned rings never get this far: virtio-queue refuses those addresses.)
        let m = mem();
        // used ring running past the end of memory.
        assert!(Rings::new(&m, &queue(0x1000, 0xfff0, 8)).is_none());
        // avail ring outside memory.
        assert!(Rings::new(&m, &queue(0x20000, 0x2000, 8)).is_none());
    }
}
