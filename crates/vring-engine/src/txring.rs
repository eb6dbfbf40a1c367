//! A TX virtqueue handed to an outside data plane (the io_uring workers), so guest frames
//! leave from the guest's own pages with no copy in our process.
//!
//! This is the device's only TX path: the device never processes TX on
//! vhost-user-backend's threads. Why lend the ring rather than forward each frame and
//! return its chain before reading the next: a zero-copy writer keeps a chain *in flight*
//! until the kernel has read it (an io_uring write completes later), so chains are
//! completed out of order and possibly from another thread's batch.
//!
//! Completions are *published* in pop order all the same (a small reorder window, one
//! slot per ring entry, [`Window`]): a chain completed before an earlier one waits until
//! that one completed too. Split virtqueues would allow out-of-order used entries (a used
//! entry names its chain by head index, virtio 1.2 §2.7.8), but then the used index says
//! nothing about which chains are done, and that is all a frontend has after a back-end
//! crash: QEMU's vhost-user-net keeps no in-flight record (VHOST_USER_GET_INFLIGHT_FD is
//! vhost-user-blk's) and on reconnect rewinds the ring's last avail index to the used
//! index. In pop order, "used index = u" means exactly "the chains at avail positions
//! before u are done", so the rewind re-sends only chains not yet reported (at least
//! once), and never pops a chain the guest already got back (which the guest's driver
//! takes as a bad ring: "id N is not a head").
//!
//! Contract with the data plane ([`crate::PortEvents::tx_ring_started`]):
//! - it owns the ring's kick fd (a duplicate held here) and calls [`TxRing::pop`] after
//!   each kick until it returns nothing; pop re-enables driver notifications the way
//!   §2.7.10 requires (re-check after enabling), so no kick is lost;
//! - every popped frame's pieces stay mapped until [`TxRing::complete`]: the frame holds a
//!   reference to the guest memory table it was popped from, which keeps its mappings
//!   alive across a memory-table change;
//! - [`TxRing::flush`] at the end of a batch publishes the completions and signals the
//!   guest once (EVENT_IDX-aware, §2.7.7.2);
//! - when the frontend stops the ring (GET_VRING_BASE, reset, disconnect) the device calls
//!   `tx_ring_stopped` and waits for the data plane to finish and drop the ring, so the
//!   index reported to the frontend covers only chains already in the used ring. If that
//!   wait times out, the device revokes the ring: its generation moves on (later
//!   completions of this ring are discarded, a used entry would corrupt the new layout)
//!   and the next avail index steps back to the used index, so the report is the same.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use switch::bytes::{skip_segs, Seg, HEAD_COPY, MAX_SEGS};
use switch::VnetHdr;
use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestAddressSpace};

use crate::chain::{copy_out, Chain, ChainError, Direction, Mem, TableInfo};
use crate::counters::Drop;
use crate::device::Inner;
use crate::features::{bit, vnet_hdr_len};
use crate::split::Rings;
use crate::txwindow::Window;
use crate::vring::{GuestMem, NetVring};

/// Chains popped per pop call at most (the data plane's batch).
const POP_CHUNK: usize = 64;

/// A frame popped from a TX ring, lent to the pop callback.
pub struct TxPopped<'a> {
    /// Give it back to [`TxRing::complete`] when every write reading the frame finished.
    pub token: u64,
    /// The chain's readable pieces. With `hdr_in_segs` they start with the driver's own
    /// 12-byte virtio-net header (VERSION_1 or MRG_RXBUF layout); otherwise (legacy
    /// 10-byte header) they start at the Ethernet frame. At most
    /// [`MAX_SEGS`](switch::bytes::MAX_SEGS); the worker's own segment type, so it takes
    /// them as they are.
    pub segs: &'a [Seg],
    pub hdr_in_segs: bool,
    /// The validated header (`num_buffers` = 0), read from a private copy.
    pub hdr: VnetHdr,
    /// Length of the Ethernet frame.
    pub frame_len: usize,
    /// The chain's readable slices and the guest header's length in them, for
    /// [`copy_frame_head`](Self::copy_frame_head).
    readable: &'a [vm_memory::VolatileSlice<'a, ()>],
    hdr_len: usize,
}

impl TxPopped<'_> {
    /// Copies the Ethernet frame's first bytes (after the guest's header) into `out`, as
    /// many as fit; returns how many. Decisions are taken on such a private copy, never
    /// on guest memory the guest may still change. The caller copies straight into its
    /// own storage: a copy through a staging buffer here cost a second copy per frame,
    /// and its wide loads of freshly written narrow header stores could not be
    /// store-forwarded.
    pub fn copy_frame_head(&self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.frame_len);
        copy_out(self.readable, self.hdr_len, &mut out[..n])
    }
}

/// A live TX ring lent to a data plane. Dropping it (after every frame completed) is how
/// the data plane says it is done with the ring.
pub struct TxRing {
    inner: Arc<Inner>,
    q: usize,
    pair: u16,
    vring: NetVring,
    kick: OwnedFd,
    generation: u64,
    /// Chains popped and not yet in the used ring, in pop order.
    window: Window,
    /// The ring's next avail index after this ring's last pop: the window's chains are
    /// the ones just before it.
    avail_end: u16,
    in_flight: usize,
    /// Every memory table a frame in flight was popped from (usually one): holding them
    /// keeps their mappings alive until the frames complete.
    tables: Vec<Arc<Mem>>,
    /// Used entries were published since the last notification decision.
    unsignalled: bool,
    segs: Vec<Seg>,
}

impl std::fmt::Debug for TxRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxRing")
            .field("port", &self.inner.port)
            .field("pair", &self.pair)
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

impl TxRing {
    pub(crate) fn new(inner: Arc<Inner>, q: usize, vring: NetVring, kick: OwnedFd) -> TxRing {
        // Sized by the ring's own size (SET_VRING_NUM), not the port's maximum: a
        // 256-entry ring costs the same whatever `max_queue_size` allows. A new size
        // bumps the ring's generation, so the ring is taken back and lent anew.
        let size = usize::from(vring.get_ref().get_queue().size());
        // q is a TX queue index of the device (below 2 * queue_pairs, a u16).
        #[allow(clippy::cast_possible_truncation)]
        let pair = (q / 2) as u16;
        if let Some(h) = inner.tx_held.get(q) {
            h.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        TxRing {
            pair,
            generation: vring.generation(),
            inner,
            q,
            vring,
            kick,
            window: Window::new(size),
            avail_end: 0,
            in_flight: 0,
            tables: Vec::new(),
            unsignalled: false,
            // One more than a frame may have: a longer chain is seen, then refused.
            segs: Vec::with_capacity(MAX_SEGS + 1),
        }
    }

    /// The switch port of the device.
    pub fn port(&self) -> switch::PortId {
        self.inner.port
    }

    /// The queue pair this TX ring belongs to.
    pub fn pair(&self) -> u16 {
        self.pair
    }

    /// The kick eventfd to wait on (a duplicate owned by this ring).
    pub fn kick_fd(&self) -> RawFd {
        self.kick.as_raw_fd()
    }

    /// Heap bytes this ring's bookkeeping holds (reorder window, segment scratch):
    /// proportional to the ring's actual size.
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.window.heap_bytes()
            + self.segs.capacity() * size_of::<switch::bytes::Seg>()
            + self.tables.capacity() * size_of::<Arc<Mem>>()
    }

    /// Frames popped and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Chains the next [`publish`](Self::publish) or [`flush`](Self::flush) puts in the
    /// used ring: completed (or dropped at pop as invalid or refused by the taker) and
    /// with every chain popped before them completed too.
    pub fn has_completions(&self) -> bool {
        self.window.publishable()
    }

    /// Chains popped and not yet in the used ring (in flight, or completed and waiting
    /// for an earlier one).
    pub fn unpublished(&self) -> usize {
        self.window.len()
    }

    /// Pops up to `max` valid frames, handing each to `take`; a frame `take` refuses
    /// (returns false) is dropped and completed at once. Invalid chains are counted,
    /// dropped and completed here and never reach `take`. Returns the frames handed over.
    ///
    /// A pop that finds the ring empty re-enables driver notifications (§2.7.10: and
    /// re-checks), so the next frame the driver adds kicks the queue.
    pub fn pop(&mut self, max: usize, take: impl FnMut(TxPopped<'_>) -> bool) -> usize {
        self.pop_inner(max, take, true)
    }

    /// [`pop`](Self::pop) for a caller that busy-polls the ring: an empty ring leaves
    /// driver notifications off, so a driver that keeps adding frames does not kick (an
    /// eventfd write, a system call on its side) for every burst. The caller must poll
    /// again soon, and call [`arm`](Self::arm) before it stops polling.
    ///
    /// Why: measured with a DPDK virtio-user sender, re-enabling notifications on every
    /// drained pop made the sender kick per burst; its kicks and our eventfd reads then
    /// contended on the eventfd lock (a quarter of the worker's time) and throughput
    /// collapsed to a tenth in some runs (docs/notebook.md, session 6). Linux vhost-net's
    /// busy poll keeps notifications disabled while it polls for the same reason.
    pub fn poll(&mut self, max: usize, take: impl FnMut(TxPopped<'_>) -> bool) -> usize {
        self.pop_inner(max, take, false)
    }

    /// Re-enables driver notifications after [`poll`](Self::poll) (§2.7.10). Returns true
    /// when the driver added frames meanwhile: pop them, no kick will come for them.
    pub fn arm(&mut self) -> bool {
        let mem = self.inner.mem.read().memory();
        let mut st = self.vring.get_mut();
        if !self.still_lent(&st) {
            return false;
        }
        if self.vring.is_packed() {
            let queue = st.get_queue();
            let Some(ring) = crate::packed::ring::desc_ring(&mem, queue) else {
                self.vring.mark_broken();
                return false;
            };
            let set = self.inner.bases.set_base(self.q);
            let Some(ps) = self
                .vring
                .packed_state(|| crate::packed::ring::resume(queue, set, Some(&ring)))
            else {
                self.vring.mark_broken();
                return false;
            };
            if ps.set_kicks(&ring, true, queue.event_idx_enabled()) {
                let mut log = self.inner.log.logger(self.inner.acked(), &mem, self.q);
                crate::packed::ring::log_device_area(log.as_mut(), queue.used_ring());
            }
            return ps.has_avail(&ring);
        }
        let r = matches!(st.get_queue_mut().enable_notification(&*mem), Ok(true));
        if let Some(mut log) = self.inner.log.logger(self.inner.acked(), &mem, self.q) {
            log_notification_write(&mut log, st.get_queue(), true);
        }
        r
    }

    /// Whether the ring is still the one lent out and can carry frames: set up, enabled,
    /// not broken, same generation. `st` is the queue's state, locked by the caller.
    fn still_lent(&self, st: &vhost_user_backend::VringState<GuestMem>) -> bool {
        st.get_queue().ready()
            && st.is_enabled()
            && !self.vring.is_broken()
            && self.vring.generation() == self.generation
    }

    fn pop_inner(
        &mut self,
        max: usize,
        take: impl FnMut(TxPopped<'_>) -> bool,
        rearm: bool,
    ) -> usize {
        let inner = Arc::clone(&self.inner);
        let Some(ctr) = inner.counters.get(self.q) else {
            return 0;
        };
        // Frames and bytes are counted once per pop, not per frame.
        let mut count = (0u64, 0u64);
        let n = if self.vring.is_packed() {
            self.pop_packed(&inner, ctr, max, take, &mut count, rearm)
        } else {
            self.pop_counted(&inner, ctr, max, take, &mut count, rearm)
        };
        ctr.count_frames(count.0, count.1);
        n
    }

    fn pop_counted(
        &mut self,
        inner: &Inner,
        ctr: &crate::counters::QueueCounters,
        max: usize,
        mut take: impl FnMut(TxPopped<'_>) -> bool,
        count: &mut (u64, u64),
        rearm: bool,
    ) -> usize {
        let acked = inner.acked();
        let indirect = acked & bit(virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC) != 0;
        let mem: Arc<Mem> = inner.mem.read().memory().into_inner();
        let vring = self.vring.clone();
        let mut st = vring.get_mut();
        if !self.still_lent(&st) {
            return 0;
        }
        let table = TableInfo {
            desc_table: GuestAddress(st.get_queue().desc_table()),
            queue_size: st.get_queue().size(),
            indirect_allowed: indirect,
        };
        let mut chain = Chain::default();
        let mut handed = 0;
        let desc = table.translate(&mem);
        let rings = crate::split::Rings::new(&mem, st.get_queue());
        let regions = crate::chain::Regions::new(&mem);

        // Dirty logging (live migration) of the notification writes below.
        let mut log = inner.log.logger(acked, &mem, self.q);
        let mut full = false;
        'outer: loop {
            let _ = st.get_queue_mut().disable_notification(&*mem);
            if let Some(l) = log.as_mut() {
                log_notification_write(l, st.get_queue(), false);
            }
            while handed < max {
                // In-order publication holds at most one window of chains: a driver that
                // offers more than its ring size (heads offered again before they came
                // back) waits until earlier chains complete. A well-behaved driver never
                // gets here, its heads are all out then.
                let room = self.window.room();
                if room == 0 {
                    full = true;
                    break;
                }
                let want = (max - handed).min(POP_CHUNK).min(room);
                let mut heads = [0u16; POP_CHUNK];
                let Some(n) = inner.take_heads(
                    self.q,
                    &vring,
                    st.get_queue_mut(),
                    &mem,
                    rings.as_ref(),
                    &mut heads[..want],
                ) else {
                    return handed;
                };
                if n == 0 {
                    break;
                }
                // The taker copies up to HEAD_COPY bytes of each frame (copy_frame_head).
                if let Some(d) = &desc {
                    crate::split::prefetch_chains(&regions, d, &heads[..n], HEAD_COPY / 64, false);
                }
                self.avail_end = st.get_queue().next_avail();
                for (k, &head) in (0u16..).zip(&heads[..n]) {
                    if head >= table.queue_size || !self.window.fits(head) {
                        ctr.count_drop(Drop::Chain(ChainError::BadIndex));
                        vring.mark_broken();
                        // The ring stops here: its next avail index is this chain's, so
                        // the index it reports covers exactly the chains it took.
                        let untaken = u16::try_from(n).unwrap_or(0).wrapping_sub(k);
                        self.avail_end = self.avail_end.wrapping_sub(untaken);
                        st.get_queue_mut().set_next_avail(self.avail_end);
                        return handed;
                    }
                    let single = desc
                        .as_ref()
                        .is_some_and(|d| chain.try_single(&regions, d, head, Direction::ReadOnly));
                    let walked = if single {
                        Ok(())
                    } else {
                        chain.walk(&mem, table, head, Direction::ReadOnly)
                    };
                    if self.offer(
                        inner, ctr, &chain, head, walked, acked, &mem, &mut take, count,
                    ) {
                        handed += 1;
                    }
                }
            }
            if handed == max || !rearm {
                // The caller comes back for more; notifications stay off meanwhile.
                break 'outer;
            }
            let again = st.get_queue_mut().enable_notification(&*mem);
            if let Some(l) = log.as_mut() {
                log_notification_write(l, st.get_queue(), true);
            }
            match again {
                // A full window pops nothing more now: the driver's next kick (or the
                // caller's next round) comes back once chains completed.
                Ok(true) if !full => continue,
                _ => break,
            }
        }
        handed
    }

    /// Hands one popped chain (`walked`: its buffers' verdict) to `take`, or drops it: the
    /// header is checked on a private copy of it alone, the frame's first bytes are
    /// copied by the taker ([`TxPopped::copy_frame_head`]). Returns whether `take` kept
    /// it. Every chain ends up in the window, so it is published in pop order.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn offer(
        &mut self,
        inner: &Inner,
        ctr: &crate::counters::QueueCounters,
        chain: &Chain<'_>,
        head: u16,
        walked: Result<(), ChainError>,
        acked: u64,
        mem: &Arc<Mem>,
        take: &mut impl FnMut(TxPopped<'_>) -> bool,
        count: &mut (u64, u64),
    ) -> bool {
        let hdr_len = vnet_hdr_len(acked);
        let mut hdr_buf = [0u8; switch::vnet::HDR_LEN];
        let checked = walked.map_err(Drop::Chain).and_then(|()| {
            let copied = copy_out(&chain.readable, 0, &mut hdr_buf[..hdr_len]);
            inner.check_tx_hdr(&hdr_buf[..copied], chain.read_len, hdr_len, acked)
        });
        let (hdr, frame_len) = match checked {
            Ok(v) => v,
            Err(d) => {
                ctr.count_drop(d);
                self.window.push_done(head);
                return false;
            }
        };
        // The pieces, as host addresses; the legacy 10-byte header is skipped.
        self.segs.clear();
        let hdr_in_segs = hdr_len == switch::vnet::HDR_LEN;
        let skip = if hdr_in_segs { 0 } else { hdr_len };
        // A walked chain's slices are pieces of descriptors, each < 4 GiB.
        #[allow(clippy::cast_possible_truncation)]
        let pieces = chain.readable.iter().map(|s| Seg {
            addr: s.ptr_guard().as_ptr() as u64,
            len: s.len() as u32,
        });
        self.segs.extend(skip_segs(pieces, skip).take(MAX_SEGS + 1));
        if self.segs.len() > MAX_SEGS {
            ctr.count_drop(Drop::TooManySegments);
            self.window.push_done(head);
            return false;
        }
        count.0 += 1;
        count.1 += frame_len as u64;
        let token = self.window.push(head);
        self.in_flight += 1;
        if !self.tables.last().is_some_and(|t| Arc::ptr_eq(t, mem)) {
            self.tables.push(Arc::clone(mem));
        }
        let ok = take(TxPopped {
            token,
            segs: &self.segs,
            hdr_in_segs,
            hdr,
            frame_len,
            readable: &chain.readable,
            hdr_len,
        });
        if !ok {
            self.complete(token);
        }
        ok
    }

    /// [`pop_counted`](Self::pop_counted) for a packed ring (virtio 1.2 §2.8): lists
    /// popped with [`PackedState::pop`](crate::packed::PackedState::pop) (bounded by the
    /// queue size), kicks switched with the device event area. A list with bad buffers
    /// is a counted drop completed with length 0; a ring whose structure is bad
    /// ([`RingFault`](crate::packed::RingFault)) is counted and broken.
    fn pop_packed(
        &mut self,
        inner: &Inner,
        ctr: &crate::counters::QueueCounters,
        max: usize,
        mut take: impl FnMut(TxPopped<'_>) -> bool,
        count: &mut (u64, u64),
        rearm: bool,
    ) -> usize {
        let acked = inner.acked();
        let indirect = acked & bit(virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC) != 0;
        let mem: Arc<Mem> = inner.mem.read().memory().into_inner();
        let vring = self.vring.clone();
        let st = vring.get_mut();
        if !self.still_lent(&st) {
            return 0;
        }
        let queue = st.get_queue();
        let event_idx = queue.event_idx_enabled();
        let device_area = queue.used_ring();
        let Some(ring) = crate::packed::ring::desc_ring(&mem, queue) else {
            vring.mark_broken();
            return 0;
        };
        let set = inner.bases.set_base(self.q);
        let Some(mut ps) =
            vring.packed_state(|| crate::packed::ring::resume(queue, set, Some(&ring)))
        else {
            ctr.count_drop(Drop::BadRing);
            vring.mark_broken();
            return 0;
        };
        let mut log = inner.log.logger(acked, &mem, self.q);
        let mut chain = Chain::default();
        let mut handed = 0;
        let mut full = false;
        loop {
            if ps.set_kicks(&ring, false, event_idx) {
                crate::packed::ring::log_device_area(log.as_mut(), device_area);
            }
            while handed < max {
                // As on a split ring: at most one window of lists in flight.
                if self.window.room() == 0 {
                    full = true;
                    break;
                }
                let popped = match ps.pop(&ring, &mem, &mut chain, Direction::ReadOnly, indirect) {
                    Ok(Some(p)) => p,
                    Ok(None) => break,
                    Err(fault) => {
                        ctr.count_drop(Drop::BadRing);
                        if let Some(suppressed) = inner.log_check() {
                            tracing::warn!(port = %inner.port, queue = self.q, suppressed, "packed TX ring: {fault}: queue stopped");
                        }
                        vring.mark_broken();
                        return handed;
                    }
                };
                let walked = popped.fault.map_or(Ok(()), Err);
                if self.offer(
                    inner, ctr, &chain, popped.id, walked, acked, &mem, &mut take, count,
                ) {
                    handed += 1;
                }
            }
            if handed == max || !rearm {
                break;
            }
            if ps.set_kicks(&ring, true, event_idx) {
                crate::packed::ring::log_device_area(log.as_mut(), device_area);
            }
            // Re-check after enabling: a list made available before the driver saw kicks
            // enabled would otherwise wait for the next kick.
            if full || !ps.has_avail(&ring) {
                break;
            }
        }
        handed
    }

    /// Every write of frame `token` finished: its chain goes to the used ring (length 0:
    /// the device wrote nothing, §2.7.8) at the next [`flush`](Self::flush), once every
    /// chain popped before it completed too. Unknown or already completed tokens are
    /// ignored.
    pub fn complete(&mut self, token: u64) {
        if self.window.complete(token) {
            self.in_flight -= 1;
            if self.in_flight == 0 {
                self.tables.clear();
            }
        }
    }

    /// Publishes completed chains to the used ring and signals the guest if it asked for
    /// it. Skipped (the entries discarded) when the frontend re-set the ring meanwhile.
    pub fn flush(&mut self) {
        self.publish_inner(true);
    }

    /// Publishes completed chains without the notification decision (which
    /// [`flush`](Self::flush) makes later): a driver that polls its used ring gets its
    /// descriptors back sooner, with no extra eventfd write.
    pub fn publish(&mut self) {
        self.publish_inner(false);
    }

    fn publish_inner(&mut self, notify: bool) {
        let ready = self.window.publishable();
        if !(ready || (notify && self.unsignalled)) {
            return;
        }
        if self.vring.is_packed() {
            self.publish_packed(ready, notify);
            return;
        }
        let mem = self.inner.mem.read().memory();
        let mut st = self.vring.get_mut();
        if self.vring.generation() != self.generation {
            self.window.discard_done();
            self.unsignalled = false;
            return;
        }
        let q = st.get_queue_mut();
        let Some(rings) = Rings::new(&mem, q) else {
            self.window.discard_done();
            self.vring.mark_broken();
            return;
        };
        // One used-index store for the whole batch (crate::split explains why).
        let mut used = q.next_used();
        self.vring.open_notify_window(used);
        if ready {
            let mut log = self.inner.log.logger(self.inner.acked(), &mem, self.q);
            let size = q.size();
            while let Some(head) = self.window.pop_done() {
                rings.put_used(used, head, 0);
                if let Some(l) = log.as_mut() {
                    l.used(crate::split::used_elem_offset(used, size), 8);
                }
                used = used.wrapping_add(1);
            }
            // Logged before the index store that publishes the entries.
            if let Some(mut l) = log {
                l.used(2, 2);
                l.finish();
            }
            rings.publish(used);
            q.set_next_used(used);
            self.unsignalled = true;
        }
        if !notify {
            return;
        }
        self.unsignalled = false;
        crate::split::call_if_wanted(&self.vring, &st, &rings, self.inner.counters.get(self.q));
    }
}

impl TxRing {
    /// [`publish_inner`](Self::publish_inner) for a packed ring: the window's done lists
    /// complete in pop order and are written as used descriptors in one pass (the
    /// batch's first one last, so the driver sees it whole).
    fn publish_packed(&mut self, ready: bool, notify: bool) {
        let mem = self.inner.mem.read().memory();
        let vring = self.vring.clone();
        let st = vring.get_mut();
        if vring.generation() != self.generation {
            self.window.discard_done();
            self.unsignalled = false;
            return;
        }
        let queue = st.get_queue();
        let Some(ring) = crate::packed::ring::desc_ring(&mem, queue) else {
            self.window.discard_done();
            self.vring.mark_broken();
            return;
        };
        let set = self.inner.bases.set_base(self.q);
        let Some(mut ps) =
            vring.packed_state(|| crate::packed::ring::resume(queue, set, Some(&ring)))
        else {
            self.window.discard_done();
            vring.mark_broken();
            return;
        };
        if ready {
            let mut log = self.inner.log.logger(self.inner.acked(), &mem, self.q);
            while let Some(id) = self.window.pop_done() {
                if ps.complete(id, 0).is_err() {
                    // Not in flight under this state: only a state made afresh (the
                    // frontend re-set the ring, which the generation check above rules
                    // out) could say so. Count it rather than write a used descriptor.
                    if let Some(c) = self.inner.counters.get(self.q) {
                        c.count_drop(Drop::BadRing);
                    }
                }
            }
            crate::packed::ring::publish_logged(&mut ps, &ring, queue.desc_table(), log.as_mut());
            if let Some(l) = log {
                l.finish();
            }
            self.unsignalled = true;
        }
        if !notify {
            return;
        }
        self.unsignalled = false;
        if ps.wants_call(&ring, queue.event_idx_enabled()) && st.signal_used_queue().is_ok() {
            if let Some(c) = self.inner.counters.get(self.q) {
                c.count_call();
            }
        }
    }
}

/// Logs the used-ring word virtio-queue's `enable_notification`/`disable_notification`
/// just wrote (§2.7.10): `avail_event` when enabling with EVENT_IDX, the used flags
/// without EVENT_IDX; disabling with EVENT_IDX writes nothing.
fn log_notification_write(
    log: &mut crate::dirtylog::Logger<'_>,
    q: &virtio_queue::Queue,
    enable: bool,
) {
    if q.event_idx_enabled() {
        if enable {
            log.used(crate::split::avail_event_offset(q.size()), 2);
        }
    } else {
        log.used(0, 2);
    }
}

impl TxRing {
    /// Steps the ring's next avail index back over the chains that never reached the used
    /// ring, so the index GET_VRING_BASE reports is the used ring's: the next back-end
    /// (or this one after the frontend resumes the ring) pops them again rather than
    /// losing them. Only for the generation the chains were popped under, and only while
    /// nothing popped the ring since (a ring lent anew after a stop that timed out).
    fn rewind_unpublished(&mut self) {
        let n = self.window.len();
        if n == 0 {
            return;
        }
        if self.vring.is_packed() {
            // The same for a packed ring: the unpublished lists are the last ones popped,
            // put back newest first, so its next avail position is its used one.
            let st = self.vring.get_mut();
            if self.vring.generation() == self.generation {
                let set = self.inner.bases.set_base(self.q);
                let queue = st.get_queue();
                if let Some(mut ps) = self
                    .vring
                    .packed_state(|| crate::packed::ring::resume(queue, set, None))
                {
                    while let Some(id) = self.window.pop_newest() {
                        if ps.unpop_id(id).is_err() {
                            break;
                        }
                    }
                }
            }
            drop(st);
            self.window.clear();
            return;
        }
        let mut st = self.vring.get_mut();
        let q = st.get_queue_mut();
        if self.vring.generation() == self.generation && q.next_avail() == self.avail_end {
            // The window holds at most the ring's size (<= 32768) chains.
            let n16 = u16::try_from(n).unwrap_or(u16::MAX);
            q.set_next_avail(self.avail_end.wrapping_sub(n16));
        }
        drop(st);
        self.window.clear();
    }
}

impl std::ops::Drop for TxRing {
    fn drop(&mut self) {
        self.flush();
        self.rewind_unpublished();
        if let Some(h) = self.inner.tx_held.get(self.q) {
            h.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
}
