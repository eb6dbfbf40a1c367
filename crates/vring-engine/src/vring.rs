//! Our vring type for vhost-user-backend: its `VringMutex` plus what a network device needs
//! and the crate does not expose.
//!
//! - The error eventfd (VHOST_USER_SET_VRING_ERR). vhost-user has no message by which a
//!   back-end sets NEEDS_RESET in the device status (virtio 1.2 §2.1.2); the err eventfd
//!   is the back-end's way to report that a ring is unusable, and the frontend (QEMU) logs it
//!   and owns the status. `VringState` keeps that fd private, so we keep a duplicate.
//! - A `broken` flag: set when the driver violated the ring protocol in a way we cannot step
//!   over (avail index jumping by more than the queue size, §2.7.6; a head index outside the
//!   table). A broken ring is not processed until the frontend sets it up again
//!   (SET_VRING_ADDR / SET_VRING_BASE / reset); other rings and ports keep running.
//! - Registration: vhost-user-backend creates all vrings inside `VhostUserDaemon::new`
//!   without telling the backend. `NetDevice` needs them for RX delivery from other ports,
//!   so `new` hands a clone to a collector armed on the creating thread just around that
//!   call ([`collect_during`]).

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use vhost_user_backend::{VringMutex, VringStateGuard, VringStateMutGuard, VringT};
use virtio_queue::Error as VirtQueError;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

/// Guest memory handle shared by the rings and the device.
pub type GuestMem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// Called after a change that may start or stop the ring (ready, enable; `true`: the kick
/// fd was replaced, so whoever waits on the old one must switch).
pub(crate) type StateHook = Arc<dyn Fn(bool) + Send + Sync>;

struct Extra {
    err: Mutex<Option<File>>,
    broken: AtomicBool,
    /// Mirrors of the ring's `ready` and `enabled` state, readable without its lock.
    ready: AtomicBool,
    enabled: AtomicBool,
    /// Bumped whenever the frontend (re)sets the ring's layout or position
    /// (SET_VRING_ADDR/BASE/NUM): a used-ring write for a chain popped under an older
    /// generation would corrupt the new ring, so it is skipped ([`crate::txring`]).
    generation: AtomicU64,
    /// The used index at the last notification decision of a queue served through
    /// [`crate::split`] (`NONE`: none since the ring was set up). Only touched under the
    /// ring's lock; atomic only to live in the shared `Extra`.
    notified_at: AtomicU32,
    /// The last SET_VRING_ADDR repeated the running ring's addresses (see
    /// [`NetVring::same_layout`]): the used-index reload that follows it is skipped.
    keep_used: AtomicBool,
    /// SET_VRING_NUM or SET_VRING_BASE came since the ring last became ready: the
    /// frontend is setting the ring up afresh, so a SET_VRING_ADDR is never a logging
    /// switch until the next SET_VRING_KICK makes it ready.
    resetting: AtomicBool,
    hook: Mutex<Option<StateHook>>,
    /// The ring is a packed virtqueue (RING_PACKED negotiated, virtio 1.2 §2.8): the
    /// `Queue` only holds its addresses, size and base; the positions are in `packed`.
    is_packed: AtomicBool,
    /// A packed ring's device state and the generation it belongs to: created by the
    /// first burst of a generation, stale (and replaced) once the generation moved on.
    /// Only locked with the ring's own lock held (never contended).
    packed: Mutex<Option<(u64, crate::packed::PackedState)>>,
    /// Kick/call/err fds refused because they were not eventfds
    /// ([`crate::frontend_checks::is_eventfd`]).
    bad_fds: AtomicU64,
}

const NONE: u32 = u32::MAX;

/// A vring: vhost-user-backend's `VringMutex` (its mutex is the per-queue lock) plus the
/// error fd and the broken flag.
#[derive(Clone)]
pub struct NetVring {
    inner: VringMutex<GuestMem>,
    extra: Arc<Extra>,
}

impl Default for Extra {
    fn default() -> Extra {
        Extra {
            err: Mutex::new(None),
            broken: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            enabled: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            notified_at: AtomicU32::new(NONE),
            keep_used: AtomicBool::new(false),
            resetting: AtomicBool::new(false),
            hook: Mutex::new(None),
            is_packed: AtomicBool::new(false),
            packed: Mutex::new(None),
            bad_fds: AtomicU64::new(0),
        }
    }
}

thread_local! {
    static COLLECTOR: RefCell<Option<Vec<NetVring>>> = const { RefCell::new(None) };
}

/// Runs `f` (which creates a `VhostUserDaemon`) and returns the vrings it created, in queue
/// order, along with `f`'s result.
pub fn collect_during<R>(f: impl FnOnce() -> R) -> (R, Vec<NetVring>) {
    COLLECTOR.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let r = f();
    let v = COLLECTOR
        .with(|c| c.borrow_mut().take())
        .unwrap_or_default();
    (r, v)
}

impl NetVring {
    /// A vring fd from SET_VRING_KICK/CALL/ERR, or `None` when it is not an eventfd (a
    /// pipe at EOF or `/dev/zero` is always readable: a worker polling it would spin).
    /// Without a kick fd the ring never becomes ready, so it never carries frames.
    /// vhost-user-backend's `VringT` setters cannot fail, so the request itself is acked.
    fn eventfd_only(&self, file: Option<File>, which: &'static str) -> Option<File> {
        let f = file?;
        if crate::frontend_checks::is_eventfd(&f) {
            return Some(f);
        }
        if self.extra.bad_fds.fetch_add(1, Ordering::Relaxed) < 4 {
            tracing::warn!(
                which,
                "vring fd from the frontend is not an eventfd: refused"
            );
        }
        None
    }

    /// Kick/call/err fds this ring refused (not eventfds).
    pub fn bad_fds(&self) -> u64 {
        self.extra.bad_fds.load(Ordering::Relaxed)
    }

    /// Whether the ring was stopped for a protocol violation.
    pub fn is_broken(&self) -> bool {
        self.extra.broken.load(Ordering::Acquire)
    }

    /// Stops the ring and signals the frontend's error eventfd (if it gave one).
    pub fn mark_broken(&self) {
        if !self.extra.broken.swap(true, Ordering::AcqRel) {
            if let Some(f) = self.extra.err.lock().as_mut() {
                // An eventfd write of 1; failure means the frontend went away.
                let _ = f.write_all(&1u64.to_ne_bytes());
            }
        }
    }

    /// Set up, enabled and not broken: the ring can carry frames. Lock-free (a data plane
    /// asks this per frame to pick queue pairs).
    pub fn is_live(&self) -> bool {
        self.extra.ready.load(Ordering::Acquire)
            && self.extra.enabled.load(Ordering::Acquire)
            && !self.is_broken()
    }

    fn clear_broken(&self) {
        self.extra.broken.store(false, Ordering::Release);
    }

    /// The ring's current generation (see `Extra::generation`).
    pub(crate) fn generation(&self) -> u64 {
        self.extra.generation.load(Ordering::Acquire)
    }

    /// Records `used` as the used index of this notification decision and returns the
    /// previous one (`None` after set-up). Call with the ring's lock held.
    pub(crate) fn notified_at(&self, used: u16) -> Option<u16> {
        let old = self
            .extra
            .notified_at
            .swap(u32::from(used), Ordering::Relaxed);
        // NONE (u32::MAX) is the only value that is not a u16.
        u16::try_from(old).ok()
    }

    /// Starts the notification window at `used` unless one is open: called before a
    /// burst adds used entries, so the first decision after set-up covers just those.
    pub(crate) fn open_notify_window(&self, used: u16) {
        let _ = self.extra.notified_at.compare_exchange(
            NONE,
            u32::from(used),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Whether SET_VRING_ADDR's `desc`/`avail`/`used` are those of the ring as it runs:
    /// QEMU re-sends a running ring's addresses only to switch VHOST_VRING_F_LOG (dirty
    /// logging, migration start and cancel). Such a message changes nothing on the ring:
    /// no new generation (a lent TX ring keeps going and its frames in flight still
    /// complete into it), and the used index is not re-read from guest memory
    /// (vhost-user-backend does that after SET_VRING_ADDR, outside the ring's lock, where
    /// a burst publishing meanwhile would be rewound). A ring that is not running (driver
    /// reset, reload: GET_VRING_BASE stopped it) takes the full path even with the same
    /// addresses, and so does one being set up afresh (SET_VRING_NUM/BASE since it became
    /// ready).
    fn same_layout(&self, desc: u64, avail: u64, used: u64) -> bool {
        if !self.extra.ready.load(Ordering::Acquire) || self.extra.resetting.load(Ordering::Acquire)
        {
            return false;
        }
        let st = self.inner.get_ref();
        let q = st.get_queue();
        use virtio_queue::QueueT;
        q.ready() && q.desc_table() == desc && q.avail_ring() == avail && q.used_ring() == used
    }

    /// Whether the ring is a packed virtqueue (fixed at SET_FEATURES).
    #[inline]
    pub fn is_packed(&self) -> bool {
        self.extra.is_packed.load(Ordering::Acquire)
    }

    /// Sets the ring kind (SET_FEATURES: RING_PACKED acked or not). A change drops any
    /// packed state; a repeat keeps it (a ring running on does not lose its positions).
    pub(crate) fn set_packed(&self, on: bool) {
        if self.extra.is_packed.swap(on, Ordering::AcqRel) != on {
            *self.extra.packed.lock() = None;
        }
    }

    /// The packed ring's device state for the current generation, made by `resume` (from
    /// the base the frontend set) when there is none yet. `None` when `resume` cannot
    /// make one (a base outside the ring: the caller breaks the ring). Call with the
    /// ring's lock held.
    pub(crate) fn packed_state(
        &self,
        resume: impl FnOnce() -> Option<crate::packed::PackedState>,
    ) -> Option<parking_lot::MappedMutexGuard<'_, crate::packed::PackedState>> {
        let generation = self.generation();
        let mut g = self.extra.packed.lock();
        if g.as_ref().is_none_or(|(gen, _)| *gen != generation) {
            *g = resume().map(|s| (generation, s));
        }
        parking_lot::MutexGuard::try_map(g, |o| o.as_mut().map(|(_, s)| s)).ok()
    }

    /// The packed ring's (next avail, next used) positions, if a burst of the current
    /// generation created its state.
    pub(crate) fn packed_positions(&self) -> Option<(crate::packed::Pos, crate::packed::Pos)> {
        let generation = self.generation();
        let g = self.extra.packed.lock();
        g.as_ref()
            .filter(|(gen, _)| *gen == generation)
            .map(|(_, s)| (s.next_avail(), s.next_used()))
    }

    /// A new generation; whoever holds the ring must let go of the old one.
    fn bump(&self) {
        *self.extra.packed.lock() = None;
        self.extra.notified_at.store(NONE, Ordering::Relaxed);
        self.extra.generation.fetch_add(1, Ordering::AcqRel);
        self.changed(true);
    }

    /// A new generation without the change callback: the device revoking a ring it lent
    /// ([`crate::device`]), with the ring's lock held.
    pub(crate) fn retire_generation(&self) {
        *self.extra.packed.lock() = None;
        self.extra.notified_at.store(NONE, Ordering::Relaxed);
        self.extra.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Installs the callback run after every kick/ready/enable change.
    pub(crate) fn set_hook(&self, hook: Option<StateHook>) {
        *self.extra.hook.lock() = hook;
    }

    fn changed(&self, kick: bool) {
        let h = self.extra.hook.lock().clone();
        if let Some(h) = h {
            h(kick);
        }
    }
}

impl<'a> VringStateGuard<'a, GuestMem> for NetVring {
    type G = <VringMutex<GuestMem> as VringStateGuard<'a, GuestMem>>::G;
}

impl<'a> VringStateMutGuard<'a, GuestMem> for NetVring {
    type G = <VringMutex<GuestMem> as VringStateMutGuard<'a, GuestMem>>::G;
}

impl VringT<GuestMem> for NetVring {
    fn new(mem: GuestMem, max_queue_size: u16) -> Result<Self, VirtQueError> {
        let v = NetVring {
            inner: VringMutex::new(mem, max_queue_size)?,
            extra: Arc::new(Extra::default()),
        };
        COLLECTOR.with(|c| {
            if let Some(list) = c.borrow_mut().as_mut() {
                list.push(v.clone());
            }
        });
        Ok(v)
    }
    fn get_ref(&self) -> <Self as VringStateGuard<'_, GuestMem>>::G {
        self.inner.get_ref()
    }
    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, GuestMem>>::G {
        self.inner.get_mut()
    }
    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), VirtQueError> {
        self.inner.add_used(desc_index, len)
    }
    fn signal_used_queue(&self) -> io::Result<()> {
        self.inner.signal_used_queue()
    }
    fn enable_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.enable_notification()
    }
    fn disable_notification(&self) -> Result<(), VirtQueError> {
        self.inner.disable_notification()
    }
    fn needs_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.needs_notification()
    }
    fn set_enabled(&self, enabled: bool) {
        self.inner.set_enabled(enabled);
        self.extra.enabled.store(enabled, Ordering::Release);
        self.changed(false);
    }
    fn set_queue_info(&self, desc: u64, avail: u64, used: u64) -> Result<(), VirtQueError> {
        if self.same_layout(desc, avail, used) {
            self.extra.keep_used.store(true, Ordering::Release);
            return Ok(());
        }
        self.extra.keep_used.store(false, Ordering::Release);
        self.clear_broken();
        let r = self.inner.set_queue_info(desc, avail, used);
        self.bump();
        r
    }
    fn queue_next_avail(&self) -> u16 {
        self.inner.queue_next_avail()
    }
    fn set_queue_next_avail(&self, base: u16) {
        self.extra.resetting.store(true, Ordering::Release);
        self.clear_broken();
        self.inner.set_queue_next_avail(base);
        self.bump();
    }
    fn set_queue_next_used(&self, idx: u16) {
        // A packed ring has no used index in guest memory: what vhost-user-backend read
        // after SET_VRING_ADDR (`queue_used_idx`) is not one.
        if self.extra.keep_used.swap(false, Ordering::AcqRel) || self.is_packed() {
            return;
        }
        self.extra.notified_at.store(NONE, Ordering::Relaxed);
        self.inner.set_queue_next_used(idx)
    }
    fn queue_used_idx(&self) -> Result<u16, VirtQueError> {
        if self.is_packed() {
            // Not read: the "used ring" address is the 4-byte device event area.
            return Ok(0);
        }
        self.inner.queue_used_idx()
    }
    fn set_queue_size(&self, num: u16) {
        self.extra.resetting.store(true, Ordering::Release);
        self.inner.set_queue_size(num);
        self.bump();
    }
    fn set_queue_event_idx(&self, enabled: bool) {
        self.inner.set_queue_event_idx(enabled)
    }
    fn set_queue_ready(&self, ready: bool) {
        if ready {
            self.extra.resetting.store(false, Ordering::Release);
        }
        self.inner.set_queue_ready(ready);
        self.extra.ready.store(ready, Ordering::Release);
        self.changed(false);
    }
    fn set_kick(&self, file: Option<File>) {
        let file = self.eventfd_only(file, "kick");
        self.inner.set_kick(file);
        self.changed(true);
    }
    fn read_kick(&self) -> io::Result<bool> {
        self.inner.read_kick()
    }
    fn set_call(&self, file: Option<File>) {
        let file = self.eventfd_only(file, "call");
        self.inner.set_call(file)
    }
    fn set_err(&self, file: Option<File>) {
        let file = self.eventfd_only(file, "err");
        let dup = file.as_ref().and_then(|f| f.try_clone().ok());
        *self.extra.err.lock() = dup;
        self.inner.set_err(file)
    }
}
