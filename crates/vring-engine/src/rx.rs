//! RX delivery (virtio 1.2 §5.1.6.3 "Setting Up Receive Buffers", §5.1.6.4 "Processing of
//! Incoming Packets").
//!
//! With MRG_RXBUF a frame may span several chains: the first starts with the header whose
//! `num_buffers` says how many (§5.1.6.4). Without it, one chain must hold header and frame
//! (a driver offering GUEST_TSO* without MRG_RXBUF posts "big packet" chains of 64 KiB).
//! If the ring runs dry mid-frame, the chains taken so far are put back (the avail index is
//! rewound; nothing was published) and the frame is dropped as [`RxDrop::NoBuffers`].

use switch::{Chunk, VnetHdr};
use vhost_user_backend::VringT;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestAddressSpace, VolatileSlice};

use crate::api::RxDrop;
use crate::chain::{Chain, ChainError, Direction, Mem, TableInfo};
use crate::counters::Drop;
use crate::device::Inner;
use crate::features::{bit, vnet_hdr_len};
use crate::split::Rings;
use crate::vring::{GuestMem, NetVring};

impl From<RxDrop> for Drop {
    fn from(d: RxDrop) -> Drop {
        match d {
            RxDrop::NotReady => Drop::NotReady,
            RxDrop::NoBuffers => Drop::NoBuffers,
            RxDrop::TooBig => Drop::TooBig,
            RxDrop::BadChain(e) => Drop::Chain(e),
            RxDrop::Broken => Drop::AvailJump,
        }
    }
}

/// The guard of a ring's state (vhost-user-backend's per-queue mutex).
type StateGuard<'a> = std::sync::MutexGuard<'a, vhost_user_backend::VringState<GuestMem>>;

/// An open RX queue: frames placed with [`RxBurst::deliver`] share one memory snapshot,
/// one lock of the ring, one read of the avail index per exhausted window and one used
/// index store at the end (see [`crate::split`] for why). Opened by
/// [`crate::NetDevice::rx_burst`].
pub struct RxBurst<'a> {
    live: Result<Open<'a>, RxDrop>,
    ctr: Option<&'a crate::counters::QueueCounters>,
    frames: u64,
    bytes: u64,
}

/// An open RX queue of either ring kind.
enum Open<'a> {
    Split(Live<'a>),
    Packed(PackedLive<'a>),
}

impl Open<'_> {
    fn vring(&self) -> &NetVring {
        match self {
            Open::Split(l) => l.vring,
            Open::Packed(l) => l.vring,
        }
    }
}

/// An open packed RX queue (virtio 1.2 §2.8): buffer lists popped from the descriptor
/// ring, completed with the bytes written, published as used descriptors when the burst
/// ends.
struct PackedLive<'a> {
    vring: &'a NetVring,
    /// Holds the ring's lock for the burst.
    _st: StateGuard<'a>,
    ps: parking_lot::MappedMutexGuard<'a, crate::packed::PackedState>,
    ring: crate::packed::desc::DescRing<'a>,
    mem: &'a Mem,
    /// Guest address of the descriptor ring (dirty logging of used descriptors).
    desc_gpa: u64,
    hdr_len: usize,
    mergeable: bool,
    indirect: bool,
    log: Option<crate::dirtylog::Logger<'a>>,
}

struct Live<'a> {
    vring: &'a NetVring,
    st: StateGuard<'a>,
    mem: &'a Mem,
    regions: crate::chain::Regions<'a>,
    rings: Rings<'a>,
    /// The descriptor table translated once (None: not inside one region; every chain
    /// then takes the general walk).
    desc: Option<VolatileSlice<'a, ()>>,
    table: TableInfo,
    hdr_len: usize,
    mergeable: bool,
    /// The driver's avail index as last read: slots up to it are announced.
    avail_end: u16,
    next_avail: u16,
    next_used: u16,
    start_used: u16,
    /// Dirty logging while LOG_ALL is negotiated (live migration); `None` otherwise.
    log: Option<crate::dirtylog::Logger<'a>>,
}

impl RxBurst<'_> {
    /// Hints that about `frames` frames of about `bytes` bytes each follow: prefetches
    /// (for writing) the buffers they will land in (see
    /// [`crate::split::prefetch_chains`]). Optional; changes nothing but timing.
    ///
    /// At most the first 8 lines of each buffer: a burst of 64 whole 1500-byte frames
    /// was 1,536 PREFETCHWs — more than the core can track and more than L1 holds, so
    /// the prefetch loop itself stalled (17 % of the 1500-byte profile) and early lines
    /// were evicted before use. 8 lines measured best of 2, 8 and 32 (A/B, both machine
    /// modes); the copy streams the rest.
    pub fn expect(&mut self, frames: usize, bytes: usize) {
        if let Ok(Open::Split(l)) = self.live.as_mut() {
            let lines = (bytes + l.hdr_len).div_ceil(64).clamp(1, 8);
            l.prefetch(frames.min(64), lines);
        }
    }

    /// Places one frame (`parts` concatenated, after a header made from `hdr`). The
    /// guest is not signalled: [`crate::NetDevice::flush_rx`] does that once per batch.
    /// Every failure is counted on the queue.
    pub fn deliver(&mut self, hdr: &VnetHdr, parts: &[Chunk<'_>]) -> Result<(), RxDrop> {
        let r = match self.live.as_mut() {
            // A frame of this burst found a violation that stopped the ring (a head
            // outside the table): the rest of the burst is not placed either.
            Ok(l) if l.vring().is_broken() => Err(RxDrop::Broken),
            Ok(Open::Split(l)) => l.place(hdr, parts),
            Ok(Open::Packed(l)) => l.place(hdr, parts),
            Err(e) => Err(*e),
        };
        let packed = matches!(self.live, Ok(Open::Packed(_)));
        match r {
            Ok(n) => {
                self.frames += 1;
                self.bytes += n as u64;
                Ok(())
            }
            Err(e) => {
                if let Some(c) = self.ctr {
                    // A packed ring stops for its structure (RingFault), not an index.
                    c.count_drop(match e {
                        RxDrop::Broken if packed => Drop::BadRing,
                        e => e.into(),
                    });
                }
                if e == RxDrop::Broken {
                    if let Ok(l) = self.live.as_ref() {
                        l.vring().mark_broken();
                    }
                }
                Err(e)
            }
        }
    }
}

impl std::ops::Drop for RxBurst<'_> {
    fn drop(&mut self) {
        if let Ok(Open::Packed(l)) = self.live.as_mut() {
            crate::packed::ring::publish_logged(&mut l.ps, &l.ring, l.desc_gpa, l.log.as_mut());
            if let Some(log) = l.log.take() {
                log.finish();
            }
        }
        if let Ok(Open::Split(l)) = self.live.as_mut() {
            if l.next_used != l.start_used {
                // Logged before the index store that publishes the writes.
                if let Some(mut log) = l.log.take() {
                    log.used(2, 2);
                    log.finish();
                }
                l.rings.publish(l.next_used);
            }
            let q = l.st.get_queue_mut();
            q.set_next_used(l.next_used);
            q.set_next_avail(l.next_avail);
        }
        if let Some(c) = self.ctr {
            c.count_frames(self.frames, self.bytes);
        }
    }
}

impl<'a> Live<'a> {
    /// Chains the driver has announced and we have not taken; the avail index is re-read
    /// only when the last read ones are used up. `Broken` when it jumped past the ring
    /// size (§2.7.6: the driver never announces more than the ring holds).
    fn announced(&mut self) -> Result<u16, RxDrop> {
        if self.next_avail == self.avail_end {
            self.avail_end = self.rings.avail_idx();
        }
        let ready = self.avail_end.wrapping_sub(self.next_avail);
        if ready > self.table.queue_size {
            return Err(RxDrop::Broken);
        }
        Ok(ready)
    }

    fn prefetch(&mut self, n: usize, lines: usize) {
        // A jump is reported by the delivery that follows.
        let Ok(ready) = self.announced() else { return };
        let Some(table) = &self.desc else { return };
        let k = n.min(usize::from(ready));
        let mut heads = [0u16; 64];
        for (h, i) in heads.iter_mut().take(k).zip(0u16..) {
            *h = self.rings.avail_head(self.next_avail.wrapping_add(i));
        }
        crate::split::prefetch_chains(&self.regions, table, &heads[..k], lines, true);
    }

    /// The next announced head, or None when the driver has posted no more buffers.
    fn take_head(&mut self) -> Result<Option<u16>, RxDrop> {
        if self.announced()? == 0 {
            return Ok(None);
        }
        let head = self.rings.avail_head(self.next_avail);
        self.next_avail = self.next_avail.wrapping_add(1);
        Ok(Some(head))
    }

    fn used(&mut self, head: u16, len: u32) {
        self.rings.put_used(self.next_used, head, len);
        if let Some(l) = self.log.as_mut() {
            l.used(
                crate::split::used_elem_offset(self.next_used, self.table.queue_size),
                8,
            );
        }
        self.next_used = self.next_used.wrapping_add(1);
    }

    /// The common case without the general walk: the next chain is a single
    /// device-writable descriptor — no NEXT, no INDIRECT — inside one memory region and
    /// big enough for the whole frame (what DPDK and Linux drivers post with MRG_RXBUF).
    /// Exactly the checks the walk would make for such a chain (§2.7.5: index, direction,
    /// overflow, inside guest memory). Anything else returns `None` with nothing consumed,
    /// and the general path decides — and reports — it.
    fn place_simple(&mut self, hdr: &VnetHdr, parts: &[Chunk<'_>], total: usize) -> Option<()> {
        let total32 = u32::try_from(total).ok()?;
        // An empty ring or an avail-index jump: the general path reports it.
        if !matches!(self.announced(), Ok(n) if n > 0) {
            return None;
        }
        let table = self.desc.as_ref()?;
        let head = self.rings.avail_head(self.next_avail);
        if head >= self.table.queue_size {
            return None;
        }
        let buf =
            crate::chain::single_descriptor(&self.regions, table, head, Direction::WriteOnly)?;
        if buf.len() < total {
            return None;
        }
        self.next_avail = self.next_avail.wrapping_add(1);
        // The header is stored straight from registers (see `VnetHdr::le_words`).
        let (lo, hi) = hdr.le_words();
        let p = buf.ptr_guard_mut().as_ptr();
        // SAFETY: `buf` is guest memory mapped for this burst's snapshot ('a) and at least
        // `total` ≥ `hdr_len` (10 or 12) bytes long (checked above); the stores are plain
        // unaligned integer writes into it, which the driver may not read before the used
        // entry below is published (§2.7.4), exactly like the copies that follow.
        unsafe {
            std::ptr::write_unaligned(p.cast::<u64>(), lo.to_le());
            if self.hdr_len == switch::vnet::HDR_LEN {
                std::ptr::write_unaligned(p.add(8).cast::<u32>(), hi.to_le());
            } else {
                std::ptr::write_unaligned(p.add(8).cast::<u16>(), ((hi & 0xffff) as u16).to_le());
            }
        }
        let mut off = self.hdr_len;
        for p in parts {
            if let Ok(dst) = buf.subslice(off, p.len()) {
                // SAFETY: `dst` is `p.len()` bytes of the writable buffer just checked
                // (subslice bounds), which no Rust reference covers; `p` is readable for
                // its length (Chunk's contract).
                unsafe { p.copy_to_raw(dst.ptr_guard_mut().as_ptr()) };
            }
            off += p.len();
        }
        if let Some(l) = self.log.as_mut() {
            l.host(p, total);
        }
        self.used(head, total32);
        Some(())
    }

    /// Returns the frame length placed.
    fn place(&mut self, hdr: &VnetHdr, parts: &[Chunk<'_>]) -> Result<usize, RxDrop> {
        let payload: usize = switch::bytes::total_len(parts);
        let total = self.hdr_len + payload;
        if total > u32::MAX as usize {
            return Err(RxDrop::TooBig);
        }
        {
            // §5.1.6.4: one buffer, so num_buffers = 1 with or without MRG_RXBUF.
            let mut h = *hdr;
            h.num_buffers = 1;
            if self.place_simple(&h, parts, total).is_some() {
                return Ok(payload);
            }
        }
        let start = self.next_avail;
        let mem: &'a Mem = self.mem;
        let mut chains: smallvec::SmallVec<[Chain<'a>; 2]> = smallvec::SmallVec::new();
        let mut cap = 0usize;
        while cap < total {
            let Some(head) = self.take_head()? else {
                self.next_avail = start;
                return Err(RxDrop::NoBuffers);
            };
            if head >= self.table.queue_size {
                self.vring.mark_broken();
                return Err(RxDrop::BadChain(ChainError::BadIndex));
            }
            let mut c = Chain::default();
            if let Err(e) = c.walk(mem, self.table, head, Direction::WriteOnly) {
                // The bad chain is consumed (else it would come back forever); the good
                // ones taken for this frame are returned empty too: the frame is lost.
                for ch in &chains {
                    self.used(ch.head, 0);
                }
                self.used(head, 0);
                return Err(RxDrop::BadChain(e));
            }
            if c.write_len == 0 {
                // A chain with no room can never take a frame: consumed (else it would be
                // walked again for every frame) and counted; the frame is lost with it.
                for ch in &chains {
                    self.used(ch.head, 0);
                }
                self.used(head, 0);
                return Err(RxDrop::BadChain(ChainError::ZeroLength));
            }
            cap += c.write_len as usize;
            chains.push(c);
            if !self.mergeable {
                break;
            }
        }
        if cap < total {
            self.next_avail = start;
            return Err(RxDrop::TooBig);
        }
        let mut h = *hdr;
        // §5.1.6.4: without MRG_RXBUF the (12-byte, VERSION_1) header says 1 buffer.
        h.num_buffers = if self.mergeable {
            let Ok(n) = u16::try_from(chains.len()) else {
                self.next_avail = start;
                return Err(RxDrop::TooBig);
            };
            n
        } else {
            1
        };
        let mut hb = [0u8; switch::vnet::HDR_LEN];
        let _ = h.emit(&mut hb, self.hdr_len);
        let mut w = Writer::new(&chains);
        w.write(Chunk::private(&hb[..self.hdr_len]));
        for p in parts {
            w.write(*p);
        }
        // Bytes go in order, so chain i holds min(its room, what was left for it).
        let mut left = total;
        for c in &chains {
            let n32 = u32::try_from(left).unwrap_or(u32::MAX).min(c.write_len);
            let n = n32 as usize;
            left -= n;
            if let Some(l) = self.log.as_mut() {
                log_written(l, &c.writable, n);
            }
            self.used(c.head, n32);
        }
        Ok(payload)
    }
}

impl<'a> PackedLive<'a> {
    /// Puts the lists taken for a frame back, newest first: the driver sees nothing.
    fn put_back(&mut self, ids: &[u16]) {
        for &id in ids.iter().rev() {
            if self.ps.unpop_id(id).is_err() {
                break;
            }
        }
    }

    /// Completes the lists taken for a frame with nothing written: a bad list is
    /// consumed (else it would come back for every frame), and the frame is lost with it.
    fn consume_empty(&mut self, ids: &[u16]) {
        for &id in ids {
            let _ = self.ps.complete(id, 0);
        }
    }

    /// [`Live::place`] on a packed ring: the same placement, mergeable or not, with the
    /// lists popped by [`crate::packed::PackedState::pop`]. Returns the frame length.
    fn place(&mut self, hdr: &VnetHdr, parts: &[Chunk<'_>]) -> Result<usize, RxDrop> {
        let payload: usize = switch::bytes::total_len(parts);
        let total = self.hdr_len + payload;
        if total > u32::MAX as usize {
            return Err(RxDrop::TooBig);
        }
        let mem: &'a Mem = self.mem;
        let mut chains: smallvec::SmallVec<[Chain<'a>; 2]> = smallvec::SmallVec::new();
        let mut ids: smallvec::SmallVec<[u16; 2]> = smallvec::SmallVec::new();
        let mut cap = 0usize;
        while cap < total {
            let mut c = Chain::default();
            let p = match self
                .ps
                .pop(&self.ring, mem, &mut c, Direction::WriteOnly, self.indirect)
            {
                Ok(Some(p)) => p,
                Ok(None) => {
                    self.put_back(&ids);
                    return Err(RxDrop::NoBuffers);
                }
                // The ring's structure is bad: it is broken (counted `BadRing`).
                Err(_) => return Err(RxDrop::Broken),
            };
            ids.push(p.id);
            if let Some(e) = p.fault {
                self.consume_empty(&ids);
                return Err(RxDrop::BadChain(e));
            }
            if c.write_len == 0 {
                self.consume_empty(&ids);
                return Err(RxDrop::BadChain(ChainError::ZeroLength));
            }
            cap += c.write_len as usize;
            chains.push(c);
            if !self.mergeable {
                break;
            }
        }
        if cap < total {
            self.put_back(&ids);
            return Err(RxDrop::TooBig);
        }
        let mut h = *hdr;
        // §5.1.6.4: num_buffers is the lists used (1 without MRG_RXBUF).
        h.num_buffers = if self.mergeable {
            let Ok(n) = u16::try_from(chains.len()) else {
                self.put_back(&ids);
                return Err(RxDrop::TooBig);
            };
            n
        } else {
            1
        };
        let mut hb = [0u8; switch::vnet::HDR_LEN];
        let _ = h.emit(&mut hb, self.hdr_len);
        let mut w = Writer::new(&chains);
        w.write(Chunk::private(&hb[..self.hdr_len]));
        for p in parts {
            w.write(*p);
        }
        // Bytes go in order, so list i holds min(its room, what was left for it).
        let mut left = total;
        for (c, &id) in chains.iter().zip(&ids) {
            let n32 = u32::try_from(left).unwrap_or(u32::MAX).min(c.write_len);
            left -= n32 as usize;
            if let Some(l) = self.log.as_mut() {
                log_written(l, &c.writable, n32 as usize);
            }
            let _ = self.ps.complete(id, n32);
        }
        Ok(payload)
    }
}

impl Inner {
    /// Opens RX queue pair `queue_pair` for a burst and runs `f` with it; what `f`
    /// placed is published when it returns. When the queue cannot take frames, every
    /// `deliver` in `f` fails (and is counted) with the reason.
    pub(crate) fn rx_burst<R>(&self, queue_pair: u16, f: impl FnOnce(&mut RxBurst<'_>) -> R) -> R {
        let q = 2 * queue_pair as usize;
        let ctr = self.counters.get(q);
        // Pairs beyond VQ_PAIRS_SET are off limits when the driver talks to our control
        // queue (§5.1.6.5.5); otherwise the frontend steers pairs with SET_VRING_ENABLE,
        // which the ring's own enabled state reflects.
        let vring = if ctr.is_none()
            || (queue_pair >= self.active_pairs.load(std::sync::atomic::Ordering::Acquire)
                && self.ctrl_ring_live())
        {
            None
        } else {
            self.vring(q)
        };
        let Some(vring) = vring else {
            return f(&mut RxBurst {
                live: Err(RxDrop::NotReady),
                ctr,
                frames: 0,
                bytes: 0,
            });
        };
        let acked = self.acked();
        let mem_guard = self.mem.read().memory();
        let mem: &Mem = &mem_guard;
        let st = vring.get_mut();
        let live = self.open_rx(&vring, st, mem, acked, q);
        let mut b = RxBurst {
            live,
            ctr,
            frames: 0,
            bytes: 0,
        };
        f(&mut b)
    }

    fn open_rx<'a>(
        &self,
        vring: &'a NetVring,
        st: StateGuard<'a>,
        mem: &'a Mem,
        acked: u64,
        q: usize,
    ) -> Result<Open<'a>, RxDrop> {
        if !st.get_queue().ready() || !st.is_enabled() {
            return Err(RxDrop::NotReady);
        }
        if vring.is_broken() {
            return Err(RxDrop::Broken);
        }
        if vring.is_packed() {
            return self
                .open_packed_rx(vring, st, mem, acked, q)
                .map(Open::Packed);
        }
        let queue = st.get_queue();
        let Some(rings) = Rings::new(mem, queue) else {
            vring.mark_broken();
            return Err(RxDrop::Broken);
        };
        let table = TableInfo {
            desc_table: GuestAddress(queue.desc_table()),
            queue_size: queue.size(),
            indirect_allowed: acked
                & bit(virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC)
                != 0,
        };
        let (next_avail, next_used) = (queue.next_avail(), queue.next_used());
        vring.open_notify_window(next_used);
        let desc = table.translate(mem);
        Ok(Open::Split(Live {
            vring,
            rings,
            desc,
            table,
            hdr_len: vnet_hdr_len(acked),
            mergeable: acked & bit(VIRTIO_NET_F_MRG_RXBUF) != 0,
            avail_end: next_avail,
            next_avail,
            next_used,
            start_used: next_used,
            mem,
            regions: crate::chain::Regions::new(mem),
            st,
            log: self.log.logger(acked, mem, q),
        }))
    }

    fn open_packed_rx<'a>(
        &self,
        vring: &'a NetVring,
        st: StateGuard<'a>,
        mem: &'a Mem,
        acked: u64,
        q: usize,
    ) -> Result<PackedLive<'a>, RxDrop> {
        let queue = st.get_queue();
        let desc_gpa = queue.desc_table();
        let Some(ring) = crate::packed::ring::desc_ring(mem, queue) else {
            vring.mark_broken();
            return Err(RxDrop::Broken);
        };
        let set = self.bases.set_base(q);
        let Some(ps) = vring.packed_state(|| crate::packed::ring::resume(queue, set, Some(&ring)))
        else {
            vring.mark_broken();
            return Err(RxDrop::Broken);
        };
        Ok(PackedLive {
            vring,
            _st: st,
            ps,
            ring,
            mem,
            desc_gpa,
            hdr_len: vnet_hdr_len(acked),
            mergeable: acked & bit(VIRTIO_NET_F_MRG_RXBUF) != 0,
            indirect: acked & bit(virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC) != 0,
            log: self.log.logger(acked, mem, q),
        })
    }

    pub(crate) fn flush_rx(&self, queue_pair: u16) -> bool {
        let q = 2 * queue_pair as usize;
        let Some(v) = self.vring(q) else { return false };
        let mem = self.mem.read().memory();
        let st = &mut *v.get_mut();
        if !st.get_queue().ready() {
            return false;
        }
        if v.is_packed() {
            return self.flush_packed_rx(&v, st, &mem, q);
        }
        let Some(rings) = Rings::new(&mem, st.get_queue()) else {
            return false;
        };
        // We never wait for RX kicks: delivery reads the avail ring when it has a frame.
        // So ask the driver not to kick after refilling (VRING_USED_F_NO_NOTIFY, virtio 1.2
        // §2.7.10; a no-op with EVENT_IDX, where we never advance avail_event on RX). Drivers
        // without EVENT_IDX (DPDK virtio-user) otherwise kick on every refill.
        if rings.suppress_kicks() {
            if let Some(mut log) = self.log.logger(self.acked(), &mem, q) {
                log.used(0, 2);
            }
        }
        crate::split::call_if_wanted(&v, st, &rings, self.counters.get(q))
    }
}

impl Inner {
    /// [`flush_rx`](Self::flush_rx) on a packed ring: kicks off (device event area
    /// DISABLE, written only on a change), then the call decision (driver event area).
    fn flush_packed_rx(
        &self,
        v: &NetVring,
        st: &vhost_user_backend::VringState<GuestMem>,
        mem: &Mem,
        q: usize,
    ) -> bool {
        let queue = st.get_queue();
        let Some(ring) = crate::packed::ring::desc_ring(mem, queue) else {
            return false;
        };
        let set = self.bases.set_base(q);
        let Some(mut ps) = v.packed_state(|| crate::packed::ring::resume(queue, set, Some(&ring)))
        else {
            return false;
        };
        let event_idx = queue.event_idx_enabled();
        if ps.set_kicks(&ring, false, event_idx) {
            let mut log = self.log.logger(self.acked(), mem, q);
            crate::packed::ring::log_device_area(log.as_mut(), queue.used_ring());
        }
        if ps.wants_call(&ring, event_idx) && st.signal_used_queue().is_ok() {
            if let Some(c) = self.counters.get(q) {
                c.count_call();
            }
            return true;
        }
        false
    }
}

/// Logs the first `n` bytes of a chain's writable buffers (what the writer put there).
fn log_written(log: &mut crate::dirtylog::Logger<'_>, bufs: &[VolatileSlice<'_, ()>], n: usize) {
    let mut left = n;
    for b in bufs {
        if left == 0 {
            break;
        }
        let k = left.min(b.len());
        log.host(b.ptr_guard().as_ptr(), k);
        left -= k;
    }
}

/// Sequential writer over the writable buffers of several chains.
struct Writer<'c, 'm> {
    chains: &'c [Chain<'m>],
    chain: usize,
    slice: usize,
    off: usize,
}

impl<'c, 'm> Writer<'c, 'm> {
    fn new(chains: &'c [Chain<'m>]) -> Self {
        Writer {
            chains,
            chain: 0,
            slice: 0,
            off: 0,
        }
    }

    fn cur(&self) -> Option<&VolatileSlice<'m, ()>> {
        self.chains.get(self.chain)?.writable.get(self.slice)
    }

    fn write(&mut self, mut src: Chunk<'_>) {
        while !src.is_empty() {
            let Some(s) = self.cur() else {
                if self.chain >= self.chains.len() {
                    return;
                }
                self.chain += 1;
                self.slice = 0;
                self.off = 0;
                continue;
            };
            let room = s.len() - self.off;
            if room == 0 {
                self.slice += 1;
                self.off = 0;
                continue;
            }
            let n = room.min(src.len());
            if let Ok(dst) = s.subslice(self.off, n) {
                // SAFETY: `dst` is `n` bytes of a writable RX buffer (subslice bounds)
                // that no Rust reference covers; `src` holds at least `n` readable bytes.
                unsafe { src.take(n).copy_to_raw(dst.ptr_guard_mut().as_ptr()) };
            }
            self.off += n;
            src = src.skip(n);
        }
    }
}
