//! `NetDevice`: one vhost-user virtio-net device (virtio 1.2 §5.1), the state behind it, and
//! its `VhostUserBackend` implementation. vhost-user-backend owns the protocol thread and the
//! worker threads that read kick eventfds; queue processing itself lives in `tx`,
//! `rx` and `ctrlq` and does not care which thread calls it.

use std::io;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use switch::{Mac, PortId, RxFilter, VnetHdr};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringT};
use virtio_bindings::virtio_net::{VIRTIO_NET_F_CTRL_VLAN, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_MQ};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{EventConsumer, EventNotifier};

use crate::api::{PortEvents, RxDrop};
use crate::config_space::{ConfigSpace, OFF_MAC, S_LINK_UP};
use crate::counters::{QueueCounters, QueueStats};
use crate::ctrl::CtrlState;
use crate::features::{bit, guest_offloads, GUEST_OFFLOAD_BITS};
use crate::options::PortOptions;
use crate::rx::RxBurst;
use crate::vring::{GuestMem, NetVring};

/// What a virtqueue index means under the negotiated features (§5.1.2 "Virtqueues":
/// receiveqN = 2(N-1), transmitqN = 2(N-1)+1, controlq = 2N with MQ, else 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Rx(u16),
    Tx(u16),
    Ctrl,
    Unused,
}

pub(crate) struct DevState {
    pub ctrl: CtrlState,
    /// The device's MAC: configured, or set by the driver (MAC_ADDR_SET / config write).
    pub mac: Option<Mac>,
    /// A driver finished SET_FEATURES on the current connection.
    pub negotiated: bool,
}

pub(crate) struct Inner {
    pub port: PortId,
    pub opts: PortOptions,
    pub offered: u64,
    pub events: Arc<dyn PortEvents>,
    pub mem: RwLock<GuestMem>,
    pub vrings: RwLock<Vec<NetVring>>,
    pub counters: Box<[QueueCounters]>,
    pub acked: AtomicU64,
    pub active_pairs: AtomicU16,
    pub st: Mutex<DevState>,
    /// Refused frontend requests ([`crate::frontend_checks`]).
    pub frontend: Arc<crate::counters::FrontendCounters>,
    /// Guest-triggered log lines: at most one per second per device (see
    /// [`Inner::log_check`]).
    pub log_limit: switch::ratelimit::RateLimit,
    /// The clock `log_limit` is read with.
    pub log_epoch: std::time::Instant,
    masks: Vec<u64>,
    /// `usable_pairs()` as of the last ring or negotiation change: read per frame by
    /// `active_queue_pairs` (it was a lock and a ring scan per frame in the profile),
    /// recomputed when the frontend changes a ring or the driver the pairs. A ring the
    /// driver breaks mid-run (`mark_broken`, on the datapath under the ring's lock) is not
    /// a recompute point: it stays in the count until the frontend sets it up again, and
    /// frames hashed to it are counted `Broken` drops meanwhile.
    pairs_cache: AtomicU16,
    /// Per queue index: a [`crate::TxRing`] for it is out with the data plane. The lock
    /// also serialises starting and stopping them.
    tx_out: Mutex<Vec<bool>>,
    /// Per queue index: [`crate::TxRing`]s for it not yet dropped by the data plane. Still
    /// non-zero after `tx_ring_stopped` returned means the data plane's wait timed out
    /// (writes that never finished): the ring is then revoked ([`Inner::revoke_tx`]).
    pub(crate) tx_held: Vec<std::sync::atomic::AtomicUsize>,
    /// Live-migration dirty logging (SET_LOG_BASE, ring log addresses), fed by the relay.
    pub(crate) log: Arc<crate::dirtylog::DirtyLog>,
    /// Packed rings' SET/GET_VRING_BASE values, shared with the relay
    /// ([`crate::packed::ring`]).
    pub(crate) bases: Arc<crate::packed::ring::RingBases>,
    /// The worker threads' exit eventfds lent to the current connection.
    pub(crate) exit: crate::exitfd::ExitEvents,
    /// Between `attach` and `detach`: a frontend connection is open.
    connected: std::sync::atomic::AtomicBool,
}

/// One vhost-user virtio-net port. Cheap to clone (a handle); every clone is the same
/// device. Give it to [`crate::VhostUserPort::start`] to serve its socket.
#[derive(Clone)]
pub struct NetDevice {
    pub(crate) inner: Arc<Inner>,
}

impl NetDevice {
    /// A device for switch port `port`. `opts` must have passed [`PortOptions::validate`].
    ///
    /// The device never processes guest TX itself: each live TX ring is lent to the data
    /// plane through `events` ([`PortEvents::tx_ring_started`]), which waits on its kick
    /// fd, pops it and completes its chains (see [`crate::TxRing`]).
    pub fn new(
        port: PortId,
        opts: PortOptions,
        events: Arc<dyn PortEvents>,
    ) -> Result<NetDevice, crate::OptionsError> {
        opts.validate()?;
        let nq = opts.num_queues();
        // One worker thread per queue pair, for its RX queue only (RX kicks are counted:
        // delivery happens when frames arrive); the control queue shares pair 0's thread.
        // TX queues are left out: their kicks belong to the data plane the rings are
        // lent to, so vhost-user-backend's threads never read them.
        let mut masks: Vec<u64> = (0..opts.queue_pairs as usize)
            .map(|p| 0b01u64 << (2 * p))
            .collect();
        masks[0] |= 1u64 << (nq - 1);
        let st = DevState {
            ctrl: initial_ctrl(&opts, opts.mac, 0),
            mac: opts.mac,
            negotiated: false,
        };
        Ok(NetDevice {
            inner: Arc::new(Inner {
                port,
                offered: opts.offered_features(),
                counters: (0..nq).map(|_| QueueCounters::default()).collect(),
                opts,
                events,
                mem: RwLock::new(GuestMem::new(vm_memory::GuestMemoryMmap::new())),
                vrings: RwLock::new(Vec::new()),
                acked: AtomicU64::new(0),
                active_pairs: AtomicU16::new(1),
                st: Mutex::new(st),
                frontend: Default::default(),
                log_limit: switch::ratelimit::RateLimit::new(1000),
                log_epoch: std::time::Instant::now(),
                masks,
                tx_out: Mutex::new(vec![false; nq]),
                tx_held: (0..nq).map(|_| Default::default()).collect(),
                pairs_cache: AtomicU16::new(1),
                log: Arc::new(crate::dirtylog::DirtyLog::new(nq)),
                bases: Arc::new(crate::packed::ring::RingBases::new(nq)),
                exit: Default::default(),
                connected: Default::default(),
            }),
        })
    }

    pub fn port(&self) -> PortId {
        self.inner.port
    }

    pub fn options(&self) -> &PortOptions {
        &self.inner.opts
    }

    /// Feature bits negotiated by the current driver (0 when none).
    pub fn acked_features(&self) -> u64 {
        self.inner.acked.load(Ordering::Acquire)
    }

    /// Queue pairs to spread RX over: what the driver set with VQ_PAIRS_SET when it uses
    /// our control queue (§5.1.6.5.5); otherwise (QEMU keeps the control queue and steers
    /// pairs with SET_VRING_ENABLE) the leading pairs whose RX ring is live. At least 1.
    /// Lock-free apart from a read lock on the ring list: fine per frame.
    pub fn active_queue_pairs(&self) -> u16 {
        self.inner.pairs_cache.load(Ordering::Acquire).max(1)
    }

    /// A snapshot of the guest memory table (regions stay mapped while it is held).
    pub fn guest_memory(&self) -> vm_memory::GuestMemoryLoadGuard<vm_memory::GuestMemoryMmap<()>> {
        use vm_memory::GuestAddressSpace;
        self.inner.mem.read().memory()
    }

    /// Bytes of guest RAM mapped from the current frontend's memory table (0 without a
    /// frontend: a departed one's table is dropped on disconnect).
    pub fn guest_memory_bytes(&self) -> u64 {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        self.guest_memory()
            .iter()
            .map(|r| r.len())
            .fold(0, u64::saturating_add)
    }

    /// Whether a frontend is connected to the socket now (it may not have negotiated yet).
    pub fn connected(&self) -> bool {
        self.inner.connected.load(Ordering::Acquire)
    }

    /// The current receive filter.
    pub fn rx_filter(&self) -> RxFilter {
        self.inner.st.lock().ctrl.filter.clone()
    }

    /// The size the driver set for each virtqueue (SET_VRING_NUM), in queue order (RX of
    /// pair N is 2N, TX 2N+1, control last); 0 for a queue that is not set up. Empty
    /// without a frontend.
    pub fn queue_sizes(&self) -> Vec<u16> {
        use virtio_queue::QueueT;
        self.inner
            .vrings
            .read()
            .iter()
            .map(|v| {
                let st = v.get_ref();
                let q = st.get_queue();
                if q.ready() {
                    q.size()
                } else {
                    0
                }
            })
            .collect()
    }

    /// Counters of virtqueue `index` (RX of pair N is 2N, TX 2N+1, control last).
    pub fn queue_stats(&self, index: usize) -> Option<QueueStats> {
        self.inner.counters.get(index).map(|c| c.snapshot())
    }

    /// Places one frame into RX queue pair `queue_pair`: exactly one copy from `parts` into
    /// the guest's buffers, the virtio-net header first (`num_buffers` filled in when
    /// MRG_RXBUF is negotiated, §5.1.6.4). Used-ring entries are published at once; the guest
    /// is *not* signalled — call [`flush_rx`](Self::flush_rx) at the end of a batch. Takes
    /// only this RX queue's lock; safe from any thread.
    pub fn deliver(
        &self,
        queue_pair: u16,
        hdr: &VnetHdr,
        parts: &[switch::Chunk<'_>],
    ) -> Result<(), RxDrop> {
        self.inner.rx_burst(queue_pair, |b| b.deliver(hdr, parts))
    }

    /// Opens RX queue pair `queue_pair` for a burst of [`RxBurst::deliver`] calls inside
    /// `f`: one lock of the ring and one used-index update for all of them (what a data
    /// plane with a batch of frames for one queue should use). Same rules as
    /// [`deliver`](Self::deliver) per frame; the guest is signalled by
    /// [`flush_rx`](Self::flush_rx).
    pub fn rx_burst<R>(&self, queue_pair: u16, f: impl FnOnce(&mut RxBurst<'_>) -> R) -> R {
        self.inner.rx_burst(queue_pair, f)
    }

    /// Signals RX queue pair `queue_pair`'s call eventfd if the driver wants it (EVENT_IDX
    /// `used_event` or the NO_INTERRUPT flag, §2.7.7). Returns whether it signalled.
    pub fn flush_rx(&self, queue_pair: u16) -> bool {
        self.inner.flush_rx(queue_pair)
    }

    /// Sets VIRTIO_NET_S_ANNOUNCE in the config status (§5.1.6.5.4) when GUEST_ANNOUNCE is
    /// negotiated: the driver then sends gratuitous packets and acks with ANNOUNCE_ACK.
    /// Returns whether the bit was set.
    pub fn request_announce(&self) -> bool {
        use virtio_bindings::virtio_net::VIRTIO_NET_F_GUEST_ANNOUNCE;
        if self.acked_features() & bit(VIRTIO_NET_F_GUEST_ANNOUNCE) == 0 {
            return false;
        }
        self.inner.st.lock().ctrl.status |= crate::config_space::S_ANNOUNCE;
        true
    }

    /// Whether a live-migration dirty log is mapped (SET_LOG_BASE received, LOG_ALL not
    /// cleared since).
    pub fn dirty_log_mapped(&self) -> bool {
        self.inner.log.mapped()
    }

    /// Pages ringswitch wrote while logging but could not log: outside the frontend's
    /// log, or with no log at all (a frontend that set LOG_ALL without SET_LOG_BASE).
    pub fn dirty_log_errors(&self) -> u64 {
        self.inner.log.errors()
    }

    /// Installs the vrings of a new connection and its memory handle.
    pub(crate) fn attach(&self, vrings: Vec<NetVring>, mem: GuestMem) {
        *self.inner.mem.write() = mem;
        for (q, v) in vrings.iter().enumerate() {
            let weak = Arc::downgrade(&self.inner);
            v.set_hook(Some(Arc::new(move |restart| {
                if let Some(inner) = weak.upgrade() {
                    inner.refresh_pairs();
                    inner.sync_tx(q, restart);
                }
            })));
        }
        *self.inner.vrings.write() = vrings;
        self.inner.refresh_pairs();
        self.inner.connected.store(true, Ordering::Release);
    }

    /// Forgets the connection: the driver is gone, its state is reset (a new driver starts
    /// from scratch, §3.1.1), and the switch sees the link go down. Called once the
    /// connection's `VhostUserDaemon` is dropped (its worker threads joined): every
    /// fd and mapping of the departed frontend is released here or before.
    pub(crate) fn detach(&self) {
        self.inner.connected.store(false, Ordering::Release);
        self.inner.exit.reclaim();
        let vrings = self.inner.vrings.read().clone();
        for v in &vrings {
            v.set_hook(None);
        }
        self.inner.stop_all_tx();
        self.inner.vrings.write().clear();
        self.inner.refresh_pairs();
        self.inner.reset_state();
        self.inner.release_memory();
        self.inner.events.link_changed(self.inner.port, false);
    }
}

fn initial_ctrl(opts: &PortOptions, mac: Option<Mac>, acked: u64) -> CtrlState {
    let mut filter = match mac {
        Some(m) => RxFilter::for_mac(m),
        None => RxFilter::promiscuous(),
    };
    if acked & bit(VIRTIO_NET_F_CTRL_VLAN) != 0 {
        filter.enable_vlan_filter();
    }
    let _ = opts;
    CtrlState {
        filter,
        guest_offloads: acked & GUEST_OFFLOAD_BITS,
        active_pairs: 1,
        status: S_LINK_UP,
    }
}

impl Inner {
    /// Whether a guest-triggered line may be logged now: `Some(lines suppressed since the
    /// last one)`, at most once per second per device (a guest can trigger them at line
    /// rate).
    pub(crate) fn log_check(&self) -> Option<u64> {
        let now =
            switch::Millis(u64::try_from(self.log_epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
        self.log_limit.check(now)
    }

    pub(crate) fn acked(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    pub(crate) fn vring(&self, q: usize) -> Option<NetVring> {
        self.vrings.read().get(q).cloned()
    }

    // `q / 2 < pairs`, a u16 (`queue_pairs`): the pair index fits.
    #[allow(clippy::cast_possible_truncation)]
    pub(crate) fn role(&self, q: usize) -> Role {
        let acked = self.acked();
        let pairs = self.opts.queue_pairs as usize;
        let ctrl = acked & bit(VIRTIO_NET_F_CTRL_VQ) != 0;
        let (ctrl_idx, data_queues) = if acked & bit(VIRTIO_NET_F_MQ) != 0 {
            (2 * pairs, 2 * pairs)
        } else {
            (2, 2)
        };
        if ctrl && q == ctrl_idx {
            Role::Ctrl
        } else if q < data_queues {
            let pair = (q / 2) as u16;
            if q % 2 == 0 {
                Role::Rx(pair)
            } else {
                Role::Tx(pair)
            }
        } else {
            Role::Unused
        }
    }

    /// Hands TX ring `q` to the data plane when it became live, or takes it back when it
    /// stopped (or, with `restart`, its kick fd or layout changed). Runs on the vhost-user
    /// protocol thread; taking a ring back waits until the data plane completed every
    /// frame it popped, so GET_VRING_BASE then reports a final index.
    pub(crate) fn sync_tx(self: &Arc<Self>, q: usize, restart: bool) {
        let mut out = self.tx_out.lock();
        let Some(is_out) = out.get_mut(q) else {
            return;
        };
        // `out` has one entry per queue (at most 2 * u16::MAX + 1): the pair fits.
        #[allow(clippy::cast_possible_truncation)]
        let pair = (q / 2) as u16;
        let vring = self.vring(q);
        let want = matches!(self.role(q), Role::Tx(_))
            && vring.as_ref().is_some_and(|v| v.is_live())
            && vring
                .as_ref()
                .is_some_and(|v| v.get_ref().get_kick().is_some());
        if *is_out && (!want || restart) {
            self.events.tx_ring_stopped(self.port, pair);
            *is_out = false;
            self.revoke_tx_if_held(q);
        }
        if want && !*is_out {
            let Some(vring) = vring else { return };
            let kick = vring.get_ref().get_kick().as_ref().map(|k| k.try_clone());
            match kick {
                Some(Ok(k)) => {
                    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
                    // SAFETY: `into_raw_fd` gives up the fresh duplicate just made; nothing
                    // else owns it, so the OwnedFd takes sole ownership.
                    let kick = unsafe { OwnedFd::from_raw_fd(k.into_raw_fd()) };
                    let ring = crate::txring::TxRing::new(Arc::clone(self), q, vring, kick);
                    self.events.tx_ring_started(self.port, ring);
                    *is_out = true;
                }
                Some(Err(e)) => {
                    tracing::error!(port = %self.port, queue = q, "cannot duplicate the kick fd: {e}");
                }
                None => {}
            }
        }
    }

    /// A SET_FEATURES that changes only VHOST_F_LOG_ALL on a negotiated connection: QEMU
    /// switching dirty logging on (migration start) or off (migration cancelled or
    /// done), not a driver re-negotiation, so the driver-visible state stays. With
    /// several queue pairs QEMU sends it once per pair: a repeat with LOG_ALL set is the
    /// same switch. Returns whether it was one (and applied it).
    fn log_switch(&self, features: u64) -> bool {
        use crate::dirtylog::LOG_ALL;
        let old = self.acked();
        let st = self.st.lock();
        let only_log = (old ^ features) & !LOG_ALL == 0 && (old | features) & LOG_ALL != 0;
        if !st.negotiated || !only_log {
            return false;
        }
        self.acked.store(features, Ordering::Release);
        drop(st);
        let on = features & LOG_ALL != 0;
        if !on {
            self.log.stop();
        }
        if (old ^ features) & LOG_ALL != 0 {
            tracing::info!(port = %self.port, "dirty-page logging {}", if on { "on" } else { "off" });
        }
        true
    }

    /// After `tx_ring_stopped` returned: if the data plane still holds a ring of queue
    /// `q` (its wait for writes in flight timed out), that ring is revoked so the index
    /// GET_VRING_BASE reports is still the used ring's. Under the ring's lock, its
    /// generation moves on (the stale [`crate::TxRing`] pops nothing more and its late
    /// completions are discarded, never written into a ring the frontend took back) and
    /// the next avail index steps back to the next used one: TX chains are published in
    /// pop order, so the chains between them are exactly those never reported, which
    /// the next back-end pops again (sent at least once, never lost from the guest's
    /// ring).
    fn revoke_tx_if_held(&self, q: usize) {
        if self
            .tx_held
            .get(q)
            .is_none_or(|h| h.load(Ordering::Acquire) == 0)
        {
            return;
        }
        let Some(vring) = self.vring(q) else { return };
        use virtio_queue::QueueT;
        let mut st = vring.get_mut();
        let queue = st.get_queue_mut();
        let (avail, used) = if vring.is_packed() {
            // The same for a packed ring: it resumes (and reports) at its used position
            // with nothing in flight.
            let set = self.bases.set_base(q);
            let (a, u) = match vring.packed_positions() {
                Some((a, u)) => (a.to_base(), u.to_base()),
                None => crate::packed::ring::resume_base(queue.next_avail(), set),
            };
            queue.set_next_avail(u);
            let index = u32::try_from(q).unwrap_or(u32::MAX);
            self.bases
                .note_set(index, u32::from(u) | (u32::from(u) << 16));
            (a, u)
        } else {
            let (avail, used) = (queue.next_avail(), queue.next_used());
            queue.set_next_avail(used);
            (avail, used)
        };
        vring.retire_generation();
        drop(st);
        tracing::warn!(
            port = %self.port,
            queue = q,
            unreported = avail.wrapping_sub(used),
            "TX ring taken back with writes still in flight: revoked, its chains are offered again"
        );
    }

    /// Takes every TX ring back from the data plane (disconnect).
    pub(crate) fn stop_all_tx(&self) {
        let mut out = self.tx_out.lock();
        for (q, is_out) in (0u16..).zip(out.iter_mut()) {
            if *is_out {
                self.events.tx_ring_stopped(self.port, q / 2);
                *is_out = false;
                self.revoke_tx_if_held(usize::from(q));
            }
        }
    }

    fn sync_all_tx(self: &Arc<Self>) {
        for q in 0..self.counters.len() {
            self.sync_tx(q, false);
        }
    }

    /// Drops our handle on the departed frontend's memory table: a guest that is gone
    /// must not keep its RAM (and the memfds behind it) mapped here until the next
    /// frontend connects. vhost-user-backend's own handle went with its daemon; frames
    /// still in flight hold the table they were popped from (txring.rs) and unmap it when
    /// they complete.
    fn release_memory(&self) {
        let empty: GuestMem = vm_memory::GuestMemoryAtomic::new(vm_memory::GuestMemoryMmap::new());
        let old = std::mem::replace(&mut *self.mem.write(), empty);
        drop(old);
    }

    /// Back to the state before any driver: used by reset, re-negotiation and disconnect.
    fn reset_state(&self) {
        self.log.reset();
        self.bases.set_packed(false);
        let mut st = self.st.lock();
        st.mac = self.opts.mac;
        st.ctrl = initial_ctrl(&self.opts, st.mac, 0);
        st.negotiated = false;
        self.acked.store(0, Ordering::Release);
        self.active_pairs.store(1, Ordering::Release);
        let filter = st.ctrl.filter.clone();
        drop(st);
        self.refresh_pairs();
        self.events.rx_filter_changed(self.port, &filter);
        self.events.offloads_changed(self.port, guest_offloads(0));
    }

    /// What the switch must hear after a control command, captured under the state lock
    /// and published after it is released (callbacks may call back into the device).
    pub(crate) fn notice(&self, effect: crate::ctrl::Effect, st: &DevState) -> Notice {
        use crate::ctrl::Effect;
        match effect {
            Effect::Filter | Effect::Mac(_) => Notice::Filter(st.ctrl.filter.clone()),
            Effect::Offloads => Notice::Offloads(guest_offloads(st.ctrl.guest_offloads)),
            Effect::Pairs => {
                self.active_pairs
                    .store(st.ctrl.active_pairs, Ordering::Release);
                self.refresh_pairs();
                // Sinks read `active_queue_pairs` per burst: nothing to tell.
                Notice::None
            }
            Effect::Announce => Notice::None,
        }
    }

    pub(crate) fn publish(&self, n: Notice) {
        match n {
            Notice::Filter(f) => self.events.rx_filter_changed(self.port, &f),
            Notice::Offloads(o) => self.events.offloads_changed(self.port, o),
            Notice::None => {}
        }
    }

    /// Whether the driver runs its control queue through us (a frontend like QEMU keeps
    /// it to itself and steers queue pairs with SET_VRING_ENABLE instead).
    pub(crate) fn ctrl_ring_live(&self) -> bool {
        let pairs = self.opts.queue_pairs as usize;
        let idx = if self.acked() & bit(VIRTIO_NET_F_MQ) != 0 {
            2 * pairs
        } else {
            2
        };
        self.role(idx) == Role::Ctrl && self.vring(idx).is_some_and(|v| v.is_live())
    }

    pub(crate) fn refresh_pairs(&self) {
        self.pairs_cache
            .store(self.usable_pairs(), Ordering::Release);
    }

    pub(crate) fn usable_pairs(&self) -> u16 {
        if self.ctrl_ring_live() {
            return self.active_pairs.load(Ordering::Acquire).max(1);
        }
        let rings = self.vrings.read();
        let max = if self.acked() & bit(VIRTIO_NET_F_MQ) != 0 {
            self.opts.queue_pairs as usize
        } else {
            1
        };
        let live = (0..max)
            .take_while(|p| rings.get(2 * p).is_some_and(|v| v.is_live()))
            .count();
        // live <= queue_pairs, a u16: saturating is unreachable.
        u16::try_from(live).unwrap_or(u16::MAX).max(1)
    }
}

/// A switch notification captured under the device lock.
pub(crate) enum Notice {
    Filter(RxFilter),
    Offloads(switch::Offloads),
    None,
}

impl VhostUserBackend for NetDevice {
    type Bitmap = ();
    type Vring = NetVring;

    fn num_queues(&self) -> usize {
        self.inner.opts.num_queues()
    }

    fn max_queue_size(&self) -> usize {
        self.inner.opts.max_queue_size as usize
    }

    /// The virtio features plus the vhost ones: PROTOCOL_FEATURES, and LOG_ALL (live
    /// migration, see [`crate::dirtylog`]).
    fn features(&self) -> u64 {
        self.inner.offered
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
            | crate::dirtylog::LOG_ALL
    }

    /// SET_FEATURES (vhost-user-backend already refused bits we did not offer, RING_PACKED
    /// among them unless the port offers it). A (re-)negotiation starts the
    /// driver-visible state afresh (§3.1.1).
    fn acked_features(&self, features: u64) {
        let inner = &self.inner;
        if inner.log_switch(features) {
            return;
        }
        // The ring kind of every queue (§2.8 / §2.7), before any ring is set up.
        let packed = features & crate::features::RING_PACKED != 0;
        inner.bases.set_packed(packed);
        for v in inner.vrings.read().iter() {
            v.set_packed(packed);
        }
        let mut st = inner.st.lock();
        st.ctrl = initial_ctrl(&inner.opts, st.mac, features);
        st.negotiated = true;
        inner.acked.store(features, Ordering::Release);
        inner.active_pairs.store(1, Ordering::Release);
        let filter = st.ctrl.filter.clone();
        let off = guest_offloads(st.ctrl.guest_offloads);
        drop(st);
        tracing::debug!(port = %inner.port, features = format_args!("{features:#x}"), "features negotiated");
        inner.events.rx_filter_changed(inner.port, &filter);
        inner.events.offloads_changed(inner.port, off);
        inner.events.link_changed(inner.port, true);
        // Queue roles depend on MQ / CTRL_VQ: hand out or take back TX rings accordingly.
        inner.refresh_pairs();
        inner.sync_all_tx();
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
            | VhostUserProtocolFeatures::RESET_DEVICE
            | VhostUserProtocolFeatures::LOG_SHMFD
    }

    fn reset_device(&self) {
        self.inner.reset_state();
        self.inner.events.link_changed(self.inner.port, false);
    }

    fn set_event_idx(&self, _enabled: bool) {
        // Each vring already knows (vhost-user-backend sets it per queue); the processing
        // loops use virtio-queue's EVENT_IDX-aware notification calls.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let st = self.inner.st.lock();
        ConfigSpace {
            mac: st.mac.unwrap_or(Mac::ZERO),
            status: st.ctrl.status,
            max_pairs: self.inner.opts.queue_pairs,
            mtu: self.inner.opts.mtu.unwrap_or(0),
        }
        .read(offset, size)
    }

    /// Only `mac` is writable (legacy drivers without CTRL_MAC_ADDR, §5.1.4.2).
    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        let off = offset as usize;
        let end = off.saturating_add(buf.len());
        if end > OFF_MAC + 6 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only the mac field of virtio_net_config is writable",
            ));
        }
        let notice = {
            let mut st = self.inner.st.lock();
            let mut m = st.mac.unwrap_or(Mac::ZERO).0;
            m[off..end].copy_from_slice(buf);
            st.mac = Some(Mac(m));
            st.ctrl.filter.mac = Some(Mac(m));
            self.inner.notice(crate::ctrl::Effect::Mac(Mac(m)), &st)
        };
        self.inner.publish(notice);
        Ok(())
    }

    fn update_memory(&self, mem: GuestMem) -> io::Result<()> {
        // A region past its file's end would SIGBUS the daemon: refuse the table first.
        self.inner.refuse_bad_table(&mem)?;
        // Same atomic handle the vrings use; replacing ours keeps deliver() on the new table.
        // Nothing else to tell: lent TX rings read the table per pop, and frames in flight
        // hold the table they were popped from (txring.rs).
        *self.inner.mem.write() = mem;
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        self.inner.masks.clone()
    }

    /// Lent through [`crate::exitfd`], which closes the consumer vhost-user-backend
    /// keeps open after the connection.
    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        self.inner.exit.lend()
    }

    /// GET_VRING_BASE: the ring is already marked not ready; taking its lock waits for a
    /// TX batch or an RX delivery in flight on another thread, so the base we return is final.
    ///
    /// For a packed ring the positions are recorded here for the relay, which puts them
    /// into the reply (vhost-user-backend's own reply has only the 16-bit avail half).
    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        let q = queue_index as usize;
        if let Some(v) = self.inner.vring(q) {
            let st = v.get_mut();
            if v.is_packed() {
                let set = self.inner.bases.set_base(q);
                let value = match v.packed_positions() {
                    Some((a, u)) => crate::packed::ring::base_value(a, u),
                    None => crate::packed::ring::stopped_value(st.get_queue(), None, set),
                };
                self.inner.bases.note_stopped(q, value);
            }
            drop(st);
        }
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[NetVring],
        thread_id: usize,
    ) -> io::Result<()> {
        if device_event as usize >= vrings.len() {
            return Ok(());
        }
        let Some(mask) = self.inner.masks.get(thread_id) else {
            return Ok(());
        };
        // The n-th set bit of this thread's mask is the queue behind event n.
        let Some(q) = (0..64)
            .filter(|b| mask & (1u64 << b) != 0)
            .nth(device_event as usize)
        else {
            return Ok(());
        };
        if let Some(c) = self.inner.counters.get(q) {
            c.kicks.fetch_add(1, Ordering::Relaxed);
        }
        match self.inner.role(q) {
            Role::Ctrl => self.inner.process_ctrl(q),
            // RX kicks mean new buffers; delivery happens when frames arrive. TX kicks
            // never come here: TX queues are not in any thread's mask (see `new`).
            Role::Tx(_) | Role::Rx(_) | Role::Unused => {}
        }
        Ok(())
    }
}
