//! Packed virtqueues (virtio 1.2 §2.8, VIRTIO_F_RING_PACKED): one descriptor ring that
//! the driver fills with available descriptors and the device overwrites with used ones,
//! plus two 4-byte event suppression areas.
//!
//! No released Rust crate processes packed rings (virtio-queue has only the descriptor
//! type), so the device-side ring logic is here, in three parts:
//! - [`desc`]: the ring's memory (one acquire load per descriptor read, one release store
//!   per used descriptor) and a descriptor's buffers, direct or indirect;
//! - [`event`]: driver/device event suppression (ENABLE, DISABLE, DESC with EVENT_IDX);
//! - [`PackedState`] (this file): the device's private positions and wrap counters, the
//!   in-flight buffer IDs, popping chains and publishing used descriptors.
//!
//! Hostile input. Everything read from the ring is copied into private memory once and
//! checked there. Two kinds of fault:
//! - a chain whose *buffers* are bad (outside memory, wrong direction, bad indirect
//!   table, ...) still has a well-defined extent (its NEXT flags) and ID, so it is popped
//!   with a [`ChainError`] and the caller completes it with length 0 and counts the drop —
//!   the split ring's rule;
//! - a ring whose *structure* is bad ([`RingFault`]: a chain longer than the ring, a
//!   non-head descriptor not available in the chain's round, an ID out of range or
//!   already in flight, more descriptors in flight than the ring holds) cannot be stepped
//!   over: the caller marks the ring broken until the frontend sets it up again.
//!
//! Every walk is bounded by the queue size (a chain) or by the queue size times the
//! calls made (bursts), never by a value the driver wrote.

pub mod desc;
pub mod event;
pub(crate) mod ring;
#[cfg(test)]
mod tests;

use crate::chain::{Chain, ChainError, Direction, Mem};
use desc::{add_desc, DescRing};

/// Descriptor flags (§2.8 "Write Flag", "Next Flag", "Indirect Flag", "Driver and Device
/// Ring Wrap Counters").
pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;
pub const F_AVAIL: u16 = 1 << 7;
pub const F_USED: u16 = 1 << 15;

/// A position in the ring: a slot and the wrap counter of the round it is in (both
/// counters start at 1, §2.8 "Driver and Device Ring Wrap Counters").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub idx: u16,
    pub wrap: bool,
}

impl Pos {
    /// The first slot of the first round.
    pub const START: Pos = Pos { idx: 0, wrap: true };

    /// `n` slots further in a ring of `size` (> 0) slots; the wrap counter flips once per
    /// end of ring passed.
    // `t % size` < size <= 2^15.
    #[allow(clippy::cast_possible_truncation)]
    #[inline]
    pub fn advanced(self, n: u32, size: u16) -> Pos {
        let size = u32::from(size.max(1));
        let t = u32::from(self.idx) + n;
        let laps = t / size;
        Pos {
            idx: (t % size) as u16,
            wrap: self.wrap ^ (laps % 2 == 1),
        }
    }

    /// The position in a cycle of 2 × `size`: rounds with wrap counter 1 first. Lets
    /// positions be compared and subtracted across a wrap ([`event`]).
    #[inline]
    pub fn lin(self, size: u16) -> u32 {
        u32::from(self.idx) + if self.wrap { 0 } else { u32::from(size) }
    }

    /// The vhost-user ring base encoding: slot in bits 0..15, wrap counter in bit 15
    /// (vhost-user GET/SET_VRING_BASE for packed rings; also the `off_wrap` layout).
    #[inline]
    pub fn to_base(self) -> u16 {
        self.idx | if self.wrap { 0x8000 } else { 0 }
    }

    /// Decodes [`to_base`](Self::to_base); `None` when the slot is not inside a ring of
    /// `size` (a frontend's value: refused, not trusted).
    pub fn from_base(v: u16, size: u16) -> Option<Pos> {
        let idx = v & 0x7fff;
        (idx < size).then_some(Pos {
            idx,
            wrap: v & 0x8000 != 0,
        })
    }
}

/// A packed ring's structure violated: the ring cannot be stepped over and is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingFault {
    #[error("descriptor list longer than the queue size")]
    ChainTooLong,
    #[error("descriptor inside a list not available in the list's round (wrap bits)")]
    BadWrap,
    #[error("buffer ID outside the queue size")]
    BadId,
    #[error("buffer ID made available again while in flight")]
    IdInUse,
    #[error("more descriptors in flight than the ring holds")]
    Overcommit,
    #[error("completion of a buffer ID that is not in flight")]
    NotInFlight,
}

/// One chain popped from the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Popped {
    /// The buffer ID (from the list's last descriptor) to complete it with.
    pub id: u16,
    /// Ring descriptors the list used (1 for an indirect one).
    pub descs: u16,
    /// Why its buffers are unusable: complete it with length 0 and count the drop.
    pub fault: Option<ChainError>,
}

/// A completion waiting for [`PackedState::publish`].
#[derive(Debug, Clone, Copy)]
struct Done {
    id: u16,
    len: u32,
    descs: u16,
    /// Cycle position ([`Pos::lin`]) of the list's first descriptor.
    start: u32,
    /// A TX list: the device wrote nothing, so IN_ORDER may skip its used descriptor.
    read_only: bool,
}

/// The device's side of one packed queue, in private memory.
#[derive(Debug)]
pub struct PackedState {
    size: u16,
    /// IN_ORDER negotiated: runs of completions in ring order are reported with one used
    /// descriptor (§2.8 "In-order use of descriptors").
    in_order: bool,
    /// Next descriptor to read.
    avail: Pos,
    /// Next used descriptor to write.
    used: Pos,
    /// Used position at the last notification decision.
    notified: Pos,
    /// Per buffer ID: ring descriptors of its list while in flight, 0 when free.
    inflight: Vec<u16>,
    /// Per buffer ID: cycle position of its list's first descriptor, and whether the
    /// list was popped from a device-readable-only (TX) queue.
    start: Vec<(u32, bool)>,
    /// Ring descriptors popped and not yet published as used: at most the ring size, so
    /// the used position never passes the avail one, whatever the driver rewrites.
    inflight_descs: u32,
    pending: Vec<Done>,
}

impl PackedState {
    /// A queue of `size` (1..=2^15) descriptors at the start of both rounds.
    pub fn new(size: u16, in_order: bool) -> PackedState {
        let size = size.clamp(1, 1 << 15);
        PackedState {
            size,
            in_order,
            avail: Pos::START,
            used: Pos::START,
            notified: Pos::START,
            inflight: vec![0; usize::from(size)],
            start: vec![(0, false); usize::from(size)],
            inflight_descs: 0,
            pending: Vec::with_capacity(usize::from(size)),
        }
    }

    /// Resumes at a frontend's positions (SET_VRING_BASE: next avail and next used, each
    /// a [`Pos::to_base`] value); nothing is in flight. `None` for a slot outside the ring.
    pub fn resume(size: u16, in_order: bool, avail: u16, used: u16) -> Option<Self> {
        let mut s = PackedState::new(size, in_order);
        s.avail = Pos::from_base(avail, s.size)?;
        s.used = Pos::from_base(used, s.size)?;
        s.notified = s.used;
        Some(s)
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// The next descriptor the device reads.
    pub fn next_avail(&self) -> Pos {
        self.avail
    }

    /// The next used descriptor the device writes.
    pub fn next_used(&self) -> Pos {
        self.used
    }

    /// Buffer IDs popped and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.inflight.iter().filter(|&&n| n != 0).count()
    }

    /// Whether the driver made the next descriptor available.
    pub fn has_avail(&self, ring: &DescRing<'_>) -> bool {
        ring.read(self.avail.idx).is_avail(self.avail.wrap)
    }

    /// Pops the next available list into `chain` (its buffers; `chain.head` = the ID).
    /// `Ok(None)`: nothing available. A [`RingFault`] leaves the positions unchanged.
    pub fn pop<'m>(
        &mut self,
        ring: &DescRing<'_>,
        mem: &'m Mem,
        chain: &mut Chain<'m>,
        dir: Direction,
        indirect_allowed: bool,
    ) -> Result<Option<Popped>, RingFault> {
        let head = self.avail;
        let mut d = ring.read(head.idx);
        if !d.is_avail(head.wrap) {
            return Ok(None);
        }
        chain.clear(0);
        let mut fault = None;
        let mut pos = head;
        let mut n: u16 = 1;
        loop {
            if fault.is_none() {
                fault = add_desc(chain, mem, &d, n == 1, indirect_allowed, dir, self.size).err();
            }
            if d.flags & F_NEXT == 0 {
                break;
            }
            if n >= self.size {
                return Err(RingFault::ChainTooLong);
            }
            pos = pos.advanced(1, self.size);
            d = ring.read(pos.idx);
            if !d.is_avail(pos.wrap) {
                return Err(RingFault::BadWrap);
            }
            n += 1;
        }
        let id = d.id;
        let slot = self
            .inflight
            .get_mut(usize::from(id))
            .ok_or(RingFault::BadId)?;
        if *slot != 0 {
            return Err(RingFault::IdInUse);
        }
        if self.inflight_descs + u32::from(n) > u32::from(self.size) {
            return Err(RingFault::Overcommit);
        }
        *slot = n;
        self.start[usize::from(id)] = (head.lin(self.size), dir == Direction::ReadOnly);
        self.inflight_descs += u32::from(n);
        self.avail = head.advanced(u32::from(n), self.size);
        chain.head = id;
        if fault.is_some() {
            chain.clear(id);
        }
        Ok(Some(Popped {
            id,
            descs: n,
            fault,
        }))
    }

    /// Puts the most recent pop back (an RX frame that ran out of buffers mid-way returns
    /// the lists it took, newest first): the avail position steps back over its
    /// descriptors and the ID is free again; the driver sees nothing. `NotInFlight` unless
    /// `p` is the last list popped and still in flight.
    pub fn unpop(&mut self, p: &Popped) -> Result<(), RingFault> {
        let i = usize::from(p.id);
        let m = 2 * u32::from(self.size);
        let (start, _) = *self.start.get(i).ok_or(RingFault::NotInFlight)?;
        let is_last = (start + u32::from(p.descs)) % m == self.avail.lin(self.size);
        if self.inflight[i] != p.descs || p.descs == 0 || !is_last {
            return Err(RingFault::NotInFlight);
        }
        self.inflight[i] = 0;
        self.inflight_descs -= u32::from(p.descs);
        // `start` < 2 × size <= 2^16: the slot is below size.
        #[allow(clippy::cast_possible_truncation)]
        let back = Pos {
            idx: (start % u32::from(self.size)) as u16,
            wrap: start < u32::from(self.size),
        };
        self.avail = back;
        Ok(())
    }

    /// [`unpop`](Self::unpop) by ID: puts back the list of buffer `id`, which must be the
    /// last one popped and still in flight.
    pub fn unpop_id(&mut self, id: u16) -> Result<(), RingFault> {
        let descs = *self
            .inflight
            .get(usize::from(id))
            .ok_or(RingFault::NotInFlight)?;
        self.unpop(&Popped {
            id,
            descs,
            fault: None,
        })
    }

    /// Marks buffer `id` done with `len` bytes written (0 for a device-readable buffer);
    /// the driver sees it at the next [`publish`](Self::publish), in completion order
    /// (any order relative to the pops, §2.8 "device might complete their processing
    /// out of order").
    pub fn complete(&mut self, id: u16, len: u32) -> Result<(), RingFault> {
        let descs = match self.inflight.get_mut(usize::from(id)) {
            Some(n) if *n != 0 => std::mem::take(n),
            _ => return Err(RingFault::NotInFlight),
        };
        self.pending.push(Done {
            id,
            len,
            descs,
            start: self.start[usize::from(id)].0,
            read_only: self.start[usize::from(id)].1,
        });
        Ok(())
    }

    /// Writes the used descriptors of every completion since the last call, in that
    /// order, and returns how many it wrote. The first one's flags are stored last, so
    /// the driver (which polls only the next used slot) sees the whole batch at once
    /// (§2.8 "Multi-buffer requests"; each store is a release). With IN_ORDER a run of
    /// completions that follow each other in the ring is one used descriptor with the
    /// run's last ID. Only TX lists are skipped that way (the run may end with any
    /// list): a driver takes a skipped buffer as used in full (§2.8 "In-order use of
    /// descriptors"), which for an RX buffer would deliver bytes never written.
    /// `log(slot)` is called for every slot written (dirty logging while migrating).
    ///
    /// The other slots a used list occupied are marked used too (same ID and length, the
    /// wrap counter of their own position), before the batch's first used descriptor is
    /// stored: the driver never reads them (it skips a used list's descriptor count), and
    /// they are still the device's until that store, so nothing the driver made available
    /// again is overwritten. Why: after a back-end crash the ring itself then tells where
    /// the device stopped ([`scan_resume`]).
    pub fn publish(&mut self, ring: &DescRing<'_>, mut log: impl FnMut(u16)) -> usize {
        let mut first: Option<(Pos, Done)> = None;
        let mut pos = self.used;
        let mut written = 0;
        let mut freed = 0u32;
        let m = 2 * u32::from(self.size);
        let mut i = 0;
        while i < self.pending.len() {
            let mut last = self.pending[i];
            let mut descs = u32::from(last.descs);
            if self.in_order {
                while let Some(next) = self.pending.get(i + 1) {
                    let follows = next.start == (last.start + u32::from(last.descs)) % m;
                    if !last.read_only || !follows {
                        break;
                    }
                    i += 1;
                    last = *next;
                    descs += u32::from(next.descs);
                }
            }
            for k in 1..descs {
                let t = pos.advanced(k, self.size);
                ring.write_used(t.idx, last.id, last.len, t.wrap);
                log(t.idx);
            }
            if first.is_none() {
                first = Some((pos, last));
            } else {
                ring.write_used(pos.idx, last.id, last.len, pos.wrap);
                log(pos.idx);
            }
            written += 1;
            freed += descs;
            pos = pos.advanced(descs, self.size);
            i += 1;
        }
        if let Some((at, d)) = first {
            ring.write_used(at.idx, d.id, d.len, at.wrap);
            log(at.idx);
        }
        self.used = pos;
        self.inflight_descs = self.inflight_descs.saturating_sub(freed);
        self.pending.clear();
        written
    }

    /// Whether to signal the driver for what was published since the last decision
    /// ([`DescRing::wants_call`]); the decision point moves either way.
    pub fn wants_call(&mut self, ring: &DescRing<'_>, event_idx: bool) -> bool {
        let old = std::mem::replace(&mut self.notified, self.used);
        ring.wants_call(event_idx, old, self.used)
    }

    /// Turns the driver's kicks off or on ([`DescRing::set_kicks`], at the next avail
    /// position). Returns whether the device area was written.
    pub fn set_kicks(&self, ring: &DescRing<'_>, on: bool, event_idx: bool) -> bool {
        ring.set_kicks(on.then_some(self.avail), event_idx)
    }
}

/// Where a device that published every list in ring order (as this one does: TX in pop
/// order through the reorder window, RX and control in pop order) stopped, read from the
/// ring alone: the start of the run of descriptors available in their own round (the
/// lists not yet used, in flight or not yet popped), or — with none available — the
/// position after the newest used one. `None` when the ring does not show exactly one
/// such point (a driver that wrote something else, or used lists whose other slots were
/// not marked, [`PackedState::publish`]): the caller keeps the frontend's positions.
///
/// Why: vhost-user keeps a packed ring's positions only in the frontend, which learns
/// them from GET_VRING_BASE; after a back-end crash there was none, and QEMU resumes the
/// ring at the positions of its previous start (a split ring has its used index in guest
/// memory to rewind to; a packed ring has not). One read of each slot's flags: bounded by
/// the ring size.
pub fn scan_resume(ring: &DescRing<'_>) -> Option<Pos> {
    let size = ring.size;
    let m = 2 * u32::from(size);
    // Per slot: (available, cycle position of the round its flags name).
    let state = |i: u16| {
        let f = ring.read(i).flags;
        let avail = f & F_AVAIL != 0;
        let used = f & F_USED != 0;
        let at = Pos {
            idx: i,
            wrap: avail,
        }
        .lin(size);
        (avail != used, at)
    };
    let prev = |i: u16| if i == 0 { size - 1 } else { i - 1 };
    let mut start = None;
    let mut any_avail = false;
    for i in 0..size {
        let (a, at) = state(i);
        if !a {
            continue;
        }
        any_avail = true;
        let (pa, pat) = state(prev(i));
        if !(pa && (pat + 1) % m == at) {
            if start.is_some() {
                return None;
            }
            start = Some(at);
        }
    }
    let at = if any_avail {
        start?
    } else {
        // All used: after the newest, where the next slot names an older round.
        let mut end = None;
        for i in 0..size {
            let (_, at) = state(i);
            let (_, nat) = state(if i + 1 == size { 0 } else { i + 1 });
            if nat != (at + 1) % m {
                if end.is_some() {
                    return None;
                }
                end = Some((at + 1) % m);
            }
        }
        end?
    };
    // `at` < 2 × size <= 2^16.
    #[allow(clippy::cast_possible_truncation)]
    let idx = (at % u32::from(size)) as u16;
    Some(Pos {
        idx,
        wrap: at < u32::from(size),
    })
}
