//! One worker: one io_uring (SINGLE_ISSUER|DEFER_TASKRUN), one thread, a share of every
//! port's queues.
//!
//! Everything the worker waits for is a completion of its own ring: rx frames (multishot
//! read/recv into a provided-buffer ring per queue), write completions, guest kicks (a
//! Read of the kick eventfd) and control commands (a Read of the worker's wake eventfd).
//! One `io_uring_enter` submits the writes of the previous batch and waits for the next
//! one, so under load the syscall count per frame falls far below one.
//!
//! Frames are forwarded from where they landed: a tap/AF_PACKET rx buffer is written to
//! its destinations directly (it goes back to the buffer ring when the last write
//! completes), a guest frame is written from guest memory (fixed buffers when registered).
//! A destination with too many writes in flight drops the frame (counted), so a slow port
//! never blocks the worker; sockets and taps are non-blocking, so a full one fails the
//! write with EAGAIN (counted) instead of parking it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use switch::{
    Decision, DropReason, Millis, Offloads, PortId, PortSet, Switch, SwitchView, VnetHdr,
};

use crate::error::{Error, Result};
use crate::fixed::FixedTable;
use crate::guest::{FrameBatch, GuestFrame, GuestRx, GuestTxQueue};
use crate::ratelimit::RateLimit;
use crate::stage::RxStage;
use crate::stats::WorkerStats;

mod host;
mod write;

use host::Queue;
use write::{copy_frame, guest_write_spec, skip_segs, Src, TxOp};

/// Size of every virtio_net_hdr on our ports (virtio 1.2 §5.1.6, VERSION_1 layout).
pub const VNET_HDR: usize = 12;
/// Fixed-buffer slots reserved in every worker ring (guest memory tables clone into them).
pub const FIXED_SLOTS: u32 = 1024;
/// Writes in flight per worker (the op slab never grows, so iovec addresses stay valid).
const MAX_OPS: usize = 4096;
/// Consecutive receive errors after which a queue stops re-arming.
const MAX_RX_ERRORS: u32 = 16;
/// Completions a batching wait asks for before its minimum wait expires.
const BATCH_WANT: usize = 256;
/// How long a guest TX queue whose frames found a full destination gets its descriptors
/// back only at batch ends (backpressure; see `service_guests`).
const HOLD_MS: u64 = 2;
/// Completions per millisecond from which waits use `batch_wait` (min_wait): ≥ 64 k/s
/// is a flood worth batching. Below it the load is light (e.g. one request/response in
/// flight) and waiting for more completions would only add `batch_wait` of latency to
/// every hop, so an enter returns at the first completion as usual. (A per-batch count
/// cannot decide this: without min_wait batches stay small even under a flood.)
const BUSY_PER_MS: usize = 64;
/// The automatic busy-poll window (`DataplaneConfig::auto_poll`): about one batch
/// interval at the rates where the worker counts as busy.
const AUTO_POLL: Duration = Duration::from_micros(50);
/// Guest frames popped per kick round.
const GUEST_BATCH: usize = 64;
/// Pop rounds per guest queue before the worker turns to its other work: a guest that
/// keeps its TX ring full must not starve the other queues (it is serviced again at once,
/// without sleeping, after one pass over the ring's completions).
const GUEST_BUDGET: usize = 4;

/// IORING_ENTER_GETEVENTS (include/uapi/linux/io_uring.h): also runs deferred task work.
const IORING_ENTER_GETEVENTS: u32 = 1;

const TAG_SHIFT: u32 = 56;
const TAG_RX: u64 = 1;
const TAG_TX: u64 = 2;
const TAG_WAKE: u64 = 3;
const TAG_KICK: u64 = 4;
const TAG_CANCEL: u64 = 5;

fn ud(tag: u64, idx: u64) -> u64 {
    (tag << TAG_SHIFT) | (idx & ((1 << TAG_SHIFT) - 1))
}

/// What kind of host queue an fd is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// A tap queue: multishot read.
    Tap,
    /// An AF_PACKET socket: multishot recv.
    Packet,
}

/// Control messages from [`crate::Dataplane`].
pub(crate) enum Cmd {
    AddQueue {
        port: PortId,
        kind: QueueKind,
        fd: OwnedFd,
        reply: Sender<Result<()>>,
    },
    AttachGuestTx {
        port: PortId,
        key: u64,
        queue: Box<dyn GuestTxQueue>,
        reply: Sender<Result<bool>>,
    },
    DetachGuestTx {
        port: PortId,
        key: u64,
        reply: Sender<()>,
    },
    SetGuestMemory {
        port: PortId,
        table: Option<Arc<FixedTable>>,
        reply: Sender<Result<()>>,
    },
    AttachGuestRx {
        port: PortId,
        sink: Arc<dyn GuestRx>,
        reply: Sender<()>,
    },
    RemovePort {
        port: PortId,
        reply: Sender<()>,
    },
    Shutdown,
}

/// Per-worker configuration.
#[derive(Debug, Clone)]
pub(crate) struct WorkerConfig {
    pub index: usize,
    pub poll: Duration,
    /// Poll `AUTO_POLL` after a batch while busy (when `poll` is zero).
    pub auto_poll: bool,
    pub batch_wait: Duration,
    pub rx_buffers: u16,
    pub rx_buf_size: u32,
    pub max_inflight: u32,
    pub epoch: Instant,
}

struct GuestQ {
    port: PortId,
    /// Which of the port's TX queues this is (the caller's key, e.g. the queue pair).
    key: u64,
    q: Box<dyn GuestTxQueue>,
    /// Told when the queue is gone (every frame completed) after a detach.
    on_closed: Option<Sender<()>>,
    /// Frames were completed in this batch: flush (signal the guest) at its end.
    completed: bool,
    kick_buf: Box<u64>,
    armed: bool,
    memory: Option<Arc<FixedTable>>,
    closing: bool,
    inflight: u32,
    kicked: bool,
    /// Popped with [`GuestTxQueue::poll`] during a poll window, so the guest may not kick
    /// for new frames: serviced on every pass, and armed before the worker sleeps.
    polled: bool,
    /// Until this time (ms) completed descriptors go back only at batch ends: one of the
    /// queue's frames recently found its destination full (see `service_guests`).
    hold_until: u64,
    /// Kick reads failing in a row (a closed or bogus kick fd); past MAX_RX_ERRORS the
    /// queue stops waiting for kicks instead of spinning.
    kick_errors: u32,
}

struct GuestInFlight {
    gq: u16,
    token: u64,
    refs: u16,
}

/// What becomes of a source frame with staged deliveries once the stage is flushed.
enum AfterFlush {
    /// Guest destinations only: complete its descriptor.
    Complete { gq: u16, token: u64 },
    /// Host writes hold it too: drop the slot's queuing reference.
    Release(u32),
}

pub(crate) struct Worker {
    /// Completions came at ≥ `BUSY_PER_MS` in the last measured millisecond: use the
    /// batching wait.
    busy: bool,
    /// Start and completion count of the current rate window.
    window: (Instant, usize),
    cfg: WorkerConfig,
    ring: IoUring,
    sw: Arc<Switch>,
    stats: Arc<WorkerStats>,
    cmds: Receiver<Cmd>,
    wake: OwnedFd,
    wake_buf: Box<u64>,
    wake_armed: bool,
    queues: Vec<Option<Queue>>,
    by_port: Vec<Option<u16>>,
    guests: Vec<Option<GuestQ>>,
    /// RX sides of guest ports, by port id (shared with the other workers).
    guest_rx: Vec<Option<Arc<dyn GuestRx>>>,
    /// Guest RX sides written during this batch (flushed once at its end).
    rx_touched: PortSet,
    ops: Vec<TxOp>,
    free_ops: Vec<u32>,
    gframes: Vec<Option<GuestInFlight>>,
    free_gframes: Vec<u32>,
    cqes: Vec<(u64, i32, u32)>,
    popped: FrameBatch,
    /// The last reusable decision of the current pop round.
    decisions: switch::DecisionCache,
    /// Guest→guest deliveries of the current pop batch, placed at its end.
    stage: RxStage,
    /// Source frames of the current pop round with staged deliveries: completed (or
    /// their slot released) once the stage is flushed, since the bursts read their pages.
    after_flush: Vec<AfterFlush>,
    /// A guest queue used up its budget with frames left: do not sleep in the kernel.
    guest_backlog: bool,
    /// This pass runs inside a poll window: guest queues are polled, not re-armed.
    polling: bool,
    /// Whether the worker shares its core: then popped frames do not extend a poll
    /// window (crate::share).
    share: crate::share::CpuShare,
    /// The whole of a guest frame, for the rare decision that needs more than the head.
    whole: Vec<u8>,
    shutdown: bool,
    log_tx: RateLimit,
    log_rx: RateLimit,
}

impl Worker {
    /// Builds the worker's ring. Must run on the worker's own thread: SINGLE_ISSUER makes
    /// the creating thread the only one allowed to submit (and register).
    pub(crate) fn new(
        cfg: WorkerConfig,
        sw: Arc<Switch>,
        stats: Arc<WorkerStats>,
        cmds: Receiver<Cmd>,
        wake: OwnedFd,
    ) -> Result<Worker> {
        let ring: IoUring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            // IORING_SQ_TASKRUN tells a poll pass whether entering would find anything.
            .setup_taskrun_flag()
            .setup_cqsize(8192)
            .build(1024)
            .map_err(Error::Ring)?;
        ring.submitter()
            .register_buffers_sparse(FIXED_SLOTS)
            .map_err(Error::Fixed)?;
        Ok(Worker {
            busy: false,
            window: (Instant::now(), 0),
            cfg,
            ring,
            sw,
            stats,
            cmds,
            wake,
            wake_buf: Box::new(0),
            wake_armed: false,
            queues: Vec::new(),
            by_port: vec![None; switch::MAX_PORTS],
            guests: Vec::new(),
            guest_rx: vec![None; switch::MAX_PORTS],
            rx_touched: PortSet::EMPTY,
            ops: (0..MAX_OPS).map(|_| TxOp::empty()).collect(),
            free_ops: (0..MAX_OPS as u32).rev().collect(),
            gframes: (0..MAX_OPS).map(|_| None).collect(),
            free_gframes: (0..MAX_OPS as u32).rev().collect(),
            cqes: Vec::with_capacity(8192),
            popped: FrameBatch::with_capacity(GUEST_BATCH),
            decisions: switch::DecisionCache::default(),
            stage: RxStage::default(),
            after_flush: Vec::with_capacity(GUEST_BATCH),
            guest_backlog: false,
            polling: false,
            share: crate::share::CpuShare::new(),
            whole: Vec::new(),
            shutdown: false,
            log_tx: RateLimit::new(Duration::from_secs(5)),
            log_rx: RateLimit::new(Duration::from_secs(5)),
        })
    }

    /// The worker loop; returns on shutdown.
    pub(crate) fn run(mut self) {
        self.arm_wake();
        let mut polling_until: Option<Instant> = None;
        while !self.shutdown {
            let mut want = if polling_until.is_some() || self.guest_backlog {
                0
            } else {
                1
            };
            // About to sleep: polled queues must kick again first (or have frames now).
            if want == 1 && self.arm_polled() {
                want = 0;
            }
            self.polling = polling_until.is_some();
            if let Err(e) = self.enter(want) {
                tracing::error!(worker = self.cfg.index, "io_uring_enter failed: {e}");
                break;
            }
            let n = self.process_completions();
            // One clock read per pass serves the load window and the poll window: an
            // empty poll pass costs no system call, so the clock is most of what it does.
            let now = Instant::now();
            self.update_load(n, now);
            self.after_batch();
            let window = if !self.cfg.poll.is_zero() {
                Some(self.cfg.poll)
            } else if self.cfg.auto_poll && self.busy {
                Some(AUTO_POLL)
            } else {
                None
            };
            match window {
                Some(w) => {
                    if n > 0 {
                        polling_until = Some(now + w);
                    } else if polling_until.is_some_and(|t| now >= t) {
                        polling_until = None;
                    }
                }
                None => polling_until = None,
            }
        }
        self.teardown();
    }

    /// Re-enables notifications of the queues polled in the last window. True when one
    /// of them has frames already (it is marked kicked: no kick will come for them).
    fn arm_polled(&mut self) -> bool {
        let mut ready = false;
        for g in self.guests.iter_mut().flatten() {
            if g.polled {
                g.polled = false;
                if !g.closing && g.q.arm() {
                    g.kicked = true;
                    ready = true;
                }
            }
        }
        if ready {
            self.guest_backlog = true;
        }
        ready
    }

    /// Tracks the completion rate over ~1 ms windows to switch the batching wait on/off.
    fn update_load(&mut self, n: usize, now: Instant) {
        self.window.1 += n;
        let elapsed = now.saturating_duration_since(self.window.0);
        if elapsed >= Duration::from_millis(1) {
            let per_ms = self.window.1 as u128 * 1000 / elapsed.as_micros().max(1);
            self.busy = per_ms >= BUSY_PER_MS as u128;
            self.window = (now, 0);
            // Here, not per pass: once per load window is often enough.
            self.share.tick(now);
        }
    }

    /// One io_uring_enter: submit what is queued, run deferred task work, and wait for
    /// `want` completions. Counted, since that is the figure we optimise.
    fn enter(&mut self, want: u32) -> std::io::Result<()> {
        if want == 0 {
            // A poll pass with nothing to submit: with DEFER_TASKRUN every completion is
            // deferred task work, and the kernel sets IORING_SQ_TASKRUN (TASKRUN_FLAG) when
            // it queues some. Without that flag (or a CQ overflow to flush) entering would
            // run nothing, so the pass skips the system call.
            let sq = self.ring.submission();
            if sq.is_empty() && !sq.taskrun() && !sq.cq_overflow() {
                return Ok(());
            }
        }
        loop {
            let pending = self.ring.submission().len() as u32;
            self.stats.worker.enters.add(1);
            if want > 0 && self.busy && !self.cfg.batch_wait.is_zero() {
                // Linux ≥ 6.12 min_wait: sleep until the first completion as usual, but if
                // completions keep coming within `batch_wait` of entering, collect up to
                // BATCH_WANT of them in this one call.
                let us = self.cfg.batch_wait.as_micros().min(u32::MAX as u128) as u32;
                // The overall timeout is what makes the kernel keep sleeping after the
                // minimum wait when nothing has arrived; without one it returns at once.
                let idle = types::Timespec::new().sec(3600);
                let args = types::SubmitArgs::new().min_wait_usec(us).timespec(&idle);
                match self.ring.submitter().submit_with_args(BATCH_WANT, &args) {
                    Ok(_) => return Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                    Err(e) if e.raw_os_error() == Some(libc::ETIME) => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
            // SAFETY: no argument struct is passed; every SQE in the queue points at memory
            // owned by this worker (op slab, buffer rings, kick/wake buffers) or at
            // registered guest memory, all of which outlive their completions.
            let r = unsafe {
                self.ring.submitter().enter::<libc::sigset_t>(
                    pending,
                    want,
                    IORING_ENTER_GETEVENTS,
                    None,
                )
            };
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // CQ overflow backlog: reap what is there and come back.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Pushes an SQE, flushing the submission queue first when it is full. False when the
    /// ring refuses submissions altogether (the caller undoes its bookkeeping).
    #[must_use]
    fn push(&mut self, e: squeue::Entry) -> bool {
        loop {
            // SAFETY: see `enter`: every SQE built by this worker references memory that
            // lives until its completion has been reaped.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return true;
            }
            self.stats.worker.enters.add(1);
            match self.ring.submit() {
                Ok(_) => {}
                Err(err) if err.raw_os_error() == Some(libc::EBUSY) => {
                    // The CQ is backed up: the SQ drains once completions are reaped, so
                    // this SQE is not queued now.
                    return false;
                }
                Err(err) => {
                    tracing::error!(worker = self.cfg.index, "submit failed: {err}");
                    return false;
                }
            }
        }
    }

    fn process_completions(&mut self) -> usize {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        {
            let mut cq = self.ring.completion();
            cq.sync();
            for c in &mut cq {
                cqes.push((c.user_data(), c.result(), c.flags()));
            }
        }
        let polled = self.polling && self.guests.iter().flatten().any(|g| g.polled);
        if cqes.is_empty() && !self.guest_backlog && !polled {
            self.cqes = cqes;
            return 0;
        }
        self.stats.worker.batches.add(1);
        let sw = Arc::clone(&self.sw);
        let view = sw.view();
        let now = Millis(self.cfg.epoch.elapsed().as_millis() as u64);
        for &(data, res, flags) in &cqes {
            let idx = data & ((1 << TAG_SHIFT) - 1);
            match data >> TAG_SHIFT {
                TAG_RX => self.on_rx(&view, now, idx as u16, res, flags),
                TAG_TX => self.on_tx_done(idx as u32, res),
                TAG_WAKE => {
                    self.wake_armed = false;
                    self.on_commands();
                }
                TAG_KICK => {
                    if let Some(Some(g)) = self.guests.get_mut(idx as usize) {
                        g.armed = false;
                        g.kicked = res >= 0;
                        if res >= 0 {
                            g.kick_errors = 0;
                        } else if res != -libc::ECANCELED {
                            g.kick_errors += 1;
                            if g.kick_errors == MAX_RX_ERRORS {
                                tracing::error!(port = %g.port, "kick eventfd keeps failing (errno {}): queue stopped", -res);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        let n = cqes.len();
        self.cqes = cqes;
        // Guest TX after host completions: their writes may have freed op slots.
        // Popped frames count as work too: they keep a poll window open without kicks.
        n + self.service_guests(&view, now)
    }

    fn guest_frame_ref_done(&mut self, slot: u32) {
        let Some(e) = self.gframes.get_mut(slot as usize) else {
            return;
        };
        let finished = match e {
            Some(g) => {
                g.refs = g.refs.saturating_sub(1);
                g.refs == 0
            }
            None => false,
        };
        if finished {
            if let Some(g) = e.take() {
                self.free_gframes.push(slot);
                self.complete_guest(g.gq, g.token);
            }
        }
    }

    fn complete_guest(&mut self, gq: u16, token: u64) {
        if let Some(Some(g)) = self.guests.get_mut(gq as usize) {
            g.inflight = g.inflight.saturating_sub(1);
            g.completed = true;
            g.q.complete(token);
        }
    }

    /// Pops and forwards frames from every kicked (or, in a poll window, polled) guest TX
    /// queue, at most `GUEST_BUDGET` rounds each; a queue with frames left stays kicked.
    /// Returns the frames popped.
    fn service_guests(&mut self, view: &SwitchView<'_>, now: Millis) -> usize {
        self.guest_backlog = false;
        let mut total = 0;
        let polling = self.polling;
        for gi in 0..self.guests.len() {
            let Some(Some(g)) = self.guests.get_mut(gi) else {
                continue;
            };
            if !(g.kicked || g.polled) || g.closing {
                continue;
            }
            g.kicked = false;
            // Inside a poll window the queue stays without notifications (see
            // `TxRing::poll`); outside, a pop that drains it re-arms them itself.
            g.polled = polling;
            let mut popped = std::mem::take(&mut self.popped);
            let mut rounds = 0;
            loop {
                popped.clear();
                let Some(Some(g)) = self.guests.get_mut(gi) else {
                    break;
                };
                if rounds == GUEST_BUDGET {
                    g.kicked = true;
                    self.guest_backlog = true;
                    break;
                }
                rounds += 1;
                if polling {
                    g.q.poll(GUEST_BATCH, &mut popped);
                } else {
                    g.q.pop(GUEST_BATCH, &mut popped);
                }
                if popped.is_empty() {
                    break;
                }
                let round = popped.len();
                // A round's frames are mostly one conversation (SwitchView::decide_cached);
                // nothing is reused across rounds.
                self.decisions.clear();
                // By reference: a GuestFrame is ~800 bytes, moving each one costs a memcpy.
                for f in popped.frames() {
                    self.forward_guest_frame(view, now, gi as u16, f);
                }
                // Before the next pop: the staged frames' descriptors complete after it.
                let all_placed = self.flush_stage(view);
                // Give completed descriptors back now, not at the end of the whole batch,
                // so a sender whose ring we just drained can refill it while we work on —
                // but only while its frames find room: for HOLD_MS after a destination was
                // full, returning descriptors later is the backpressure that slows the
                // sender instead of feeding more drops (measured: with three busy-polling
                // processes on two cores, publishing regardless cut the sink's rate from
                // ≈ 1.1 to ≈ 0.6 Mpps; with a keeping-up sink it lifts throughput by up
                // to 1.9×). The guest is signalled (if it wants) once, at the batch end.
                if let Some(Some(g)) = self.guests.get_mut(gi) {
                    if !all_placed {
                        g.hold_until = now.0 + HOLD_MS;
                    } else if now.0 >= g.hold_until {
                        // Frames that found room keep a poll window open, unless the worker
                        // shares its core with the processes it serves (crate::share).
                        if !self.share.contended() {
                            total += round;
                        }
                        if g.completed {
                            g.q.publish();
                        }
                    }
                }
            }
            self.popped = popped;
        }
        total
    }

    /// Decides one popped guest frame and hands it to every destination.
    ///
    /// What the decision rests on — the virtio-net header, the addresses, the VLAN tag,
    /// the EtherType and the L3/L4 headers — is the private head copy made at pop time,
    /// and every destination gets exactly those bytes from that copy: only the bytes
    /// past it are read from guest memory again. A second vCPU rewriting the frame after
    /// the decision can therefore change only payload bytes the switch never looked at;
    /// it cannot retag the frame (a VLAN hop) or smuggle an offload past the check.
    fn forward_guest_frame(&mut self, view: &SwitchView<'_>, now: Millis, gi: u16, f: &GuestFrame) {
        let Some(Some(g)) = self.guests.get_mut(gi as usize) else {
            return;
        };
        let port = g.port;
        g.inflight += 1;
        let c = &self.stats.ports[port.index()];
        let head = f.head();
        let hdr = match VnetHdr::parse(head, VNET_HDR) {
            Ok(h) if f.len() as usize >= VNET_HDR + 14 => h,
            _ => {
                c.drop_bad_frame.add(1);
                self.complete_guest(gi, f.token);
                return;
            }
        };
        let frame_len = f.len() as usize - VNET_HDR;
        c.rx_packets.add(1);
        c.rx_bytes.add(frame_len as u64);
        self.stats.worker.packets.add(1);
        let fhead = &head[VNET_HDR..];
        let tpid = view.port(port).map_or(switch::vlan::TPID_8021Q, |p| p.tpid);
        // Snooping control packets (an MLDv2 report can exceed the head copy) are decided
        // on a private copy of the whole frame, and sent from it: rare and small.
        let mut whole = std::mem::take(&mut self.whole);
        whole.clear();
        let decided = if switch::needs_whole_frame(fhead, frame_len, tpid) {
            copy_frame(f, &mut whole);
            view.decide(port, &hdr, &whole, frame_len, now)
        } else {
            view.decide_cached(&mut self.decisions, port, &hdr, fhead, frame_len, now)
        };
        // The frame's private bytes: the whole frame, or its head copy.
        let private: &[u8] = if whole.is_empty() { fhead } else { &whole };
        match decided {
            Decision::Forward(fwd) => self.deliver_guest_frame(view, gi, f, &hdr, private, &fwd),
            Decision::Drop(_) => self.complete_guest(gi, f.token),
        }
        self.whole = whole;
    }

    /// [`forward_guest_frame`](Self::forward_guest_frame)'s delivery: `private` is the
    /// frame's first bytes as decided on (the rest follows in guest memory).
    fn deliver_guest_frame(
        &mut self,
        view: &SwitchView<'_>,
        gi: u16,
        f: &GuestFrame,
        hdr: &VnetHdr,
        private: &[u8],
        fwd: &switch::Forward,
    ) {
        let Some(Some(g)) = self.guests.get(gi as usize) else {
            return;
        };
        let port = g.port;
        let flow = crate::flow::flow_hash(fwd, private);
        // Guest memory past the private bytes (and past the guest's own header copy).
        let guest_skip = f.seg_hdr() + private.len();
        // The in-flight slot (a reference count across completions) is taken only for a
        // host destination; deliveries into guests are staged and complete with the flush
        // (`after_flush`), so the common guest→guest frame skips the slot altogether.
        let mut slot: Option<u32> = None;
        let mut staged = false;
        for dest in fwd.ports.iter() {
            let eg = view.egress(dest, fwd, private);
            if self.guest_rx[dest.index()].is_some() {
                let h = eg.adjust_hdr(hdr);
                let body = private.get(usize::from(eg.body_offset)..).unwrap_or(&[]);
                // SAFETY: `GuestTxQueue` guarantees a popped frame's segments stay mapped
                // and readable until it is completed; a frame with a staged delivery is
                // completed only after the stage is flushed (`after_flush`).
                unsafe {
                    self.stage.push(
                        dest,
                        port,
                        h,
                        flow,
                        [eg.head(), body],
                        skip_segs(f.segs(), guest_skip),
                    );
                }
                staged = true;
                continue;
            }
            let s = match slot {
                Some(s) => s,
                None => {
                    let Some(s) = self.free_gframes.pop() else {
                        self.stats.ports[dest.index()].drop_dest_full.add(1);
                        self.sw.count_drop(port, DropReason::DestinationFull);
                        continue;
                    };
                    self.gframes[s as usize] = Some(GuestInFlight {
                        gq: gi,
                        token: f.token,
                        refs: 1, // held while queuing (and staged), released below
                    });
                    slot = Some(s);
                    s
                }
            };
            let spec = |op: &mut TxOp| guest_write_spec(op, f, hdr, private, &eg);
            if self.write_to(port, dest, Src::Guest { slot: s }, spec) {
                if let Some(Some(e)) = self.gframes.get_mut(s as usize) {
                    e.refs += 1;
                }
            }
        }
        match (staged, slot) {
            (true, None) => self.after_flush.push(AfterFlush::Complete {
                gq: gi,
                token: f.token,
            }),
            (true, Some(s)) => self.after_flush.push(AfterFlush::Release(s)),
            (false, Some(s)) => self.guest_frame_ref_done(s),
            (false, None) => self.complete_guest(gi, f.token),
        }
    }

    /// Places the staged guest→guest frames (one burst per destination), counts them and
    /// then completes or releases the source frames.
    /// Returns whether every staged frame found room.
    fn flush_stage(&mut self, view: &SwitchView<'_>) -> bool {
        let mut all_placed = true;
        if !self.stage.is_empty() {
            let mut stage = std::mem::take(&mut self.stage);
            stage.flush(
                |dest| {
                    let rx = self.guest_rx[dest.index()].as_deref()?;
                    Some((rx, view.port(dest).map_or(Offloads::NONE, |c| c.offloads)))
                },
                |e, bytes, ok| {
                    let c = &self.stats.ports[e.dest.index()];
                    if ok {
                        c.tx_packets.add(1);
                        c.tx_bytes.add(bytes);
                        self.rx_touched.insert(e.dest);
                    } else {
                        all_placed = false;
                        c.drop_dest_full.add(1);
                        self.sw.count_drop(e.ingress, DropReason::DestinationFull);
                    }
                },
            );
            self.stage = stage;
        }
        let mut after = std::mem::take(&mut self.after_flush);
        for a in after.drain(..) {
            match a {
                AfterFlush::Complete { gq, token } => self.complete_guest(gq, token),
                AfterFlush::Release(slot) => self.guest_frame_ref_done(slot),
            }
        }
        self.after_flush = after;
        all_placed
    }

    /// The one copy of a frame into a guest: from the source buffers into the
    /// destination's RX buffers, under that queue's lock (inside the sink).
    fn deliver_to_guest(
        &mut self,
        view: &SwitchView<'_>,
        ingress: PortId,
        dest: PortId,
        hdr: &VnetHdr,
        parts: &[&[u8]],
        flow: u32,
    ) {
        let Some(sink) = self.guest_rx[dest.index()].as_ref() else {
            return;
        };
        let offloads = view.port(dest).map_or(Offloads::NONE, |c| c.offloads);
        let c = &self.stats.ports[dest.index()];
        match sink.deliver(hdr, parts, &offloads, flow) {
            Ok(()) => {
                c.tx_packets.add(1);
                c.tx_bytes.add(parts.iter().map(|p| p.len() as u64).sum());
                self.rx_touched.insert(dest);
            }
            Err(_) => {
                c.drop_dest_full.add(1);
                self.sw.count_drop(ingress, DropReason::DestinationFull);
            }
        }
    }

    fn arm_wake(&mut self) {
        if self.wake_armed || self.shutdown {
            return;
        }
        let e = opcode::Read::new(
            types::Fd(self.wake.as_raw_fd()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(ud(TAG_WAKE, 0));
        self.wake_armed = self.push(e);
    }

    fn arm_kick(&mut self, gi: usize) {
        let Some(Some(g)) = self.guests.get_mut(gi) else {
            return;
        };
        if g.armed || g.closing || g.kick_errors >= MAX_RX_ERRORS {
            return;
        }
        let e = opcode::Read::new(
            types::Fd(g.q.kick_fd()),
            (&mut *g.kick_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(ud(TAG_KICK, gi as u64));
        let ok = self.push(e);
        if let Some(Some(g)) = self.guests.get_mut(gi) {
            g.armed = ok;
        }
    }

    /// End of a batch: give buffers back, re-arm receives and kicks, retire closed queues.
    fn after_batch(&mut self) {
        for g in self.guests.iter_mut().flatten() {
            if g.completed {
                g.completed = false;
                g.q.flush();
            }
        }
        if !self.rx_touched.is_empty() {
            for p in self.rx_touched.iter() {
                if let Some(sink) = &self.guest_rx[p.index()] {
                    sink.flush();
                }
            }
            self.rx_touched = PortSet::EMPTY;
        }
        for qi in 0..self.queues.len() {
            if let Some(Some(q)) = self.queues.get_mut(qi) {
                if q.dirty {
                    q.rx.publish();
                    q.dirty = false;
                }
            }
            self.arm_rx(qi as u16);
        }
        for gi in 0..self.guests.len() {
            self.arm_kick(gi);
        }
        self.arm_wake();
        self.finalize();
    }

    fn finalize(&mut self) {
        for qi in 0..self.queues.len() {
            let done = matches!(&self.queues[qi], Some(q) if q.closing && !q.armed
                && q.inflight == 0 && q.refs.iter().all(|r| *r == 0));
            if done {
                if let Some(q) = self.queues[qi].take() {
                    let _ = self.ring.submitter().unregister_buf_ring(q.rx.bgid());
                }
            }
        }
        for gi in 0..self.guests.len() {
            let done =
                matches!(&self.guests[gi], Some(g) if g.closing && !g.armed && g.inflight == 0);
            if done {
                if let Some(mut g) = self.guests[gi].take() {
                    if g.completed {
                        g.q.flush();
                    }
                    // Drop the queue (and with it the kick fd and memory it holds) before
                    // saying it is gone.
                    let tell = g.on_closed.take();
                    drop(g);
                    if let Some(t) = tell {
                        let _ = t.send(());
                    }
                }
            }
        }
    }

    fn on_commands(&mut self) {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Cmd::AddQueue {
                    port,
                    kind,
                    fd,
                    reply,
                } => {
                    let r = self.add_queue(port, kind, fd);
                    let _ = reply.send(r);
                }
                Cmd::AttachGuestTx {
                    port,
                    key,
                    queue,
                    reply,
                } => {
                    let _ = reply.send(Ok(self.attach_guest(port, key, queue)));
                }
                Cmd::DetachGuestTx { port, key, reply } => self.detach_guest(port, key, reply),
                Cmd::SetGuestMemory { port, table, reply } => {
                    let _ = reply.send(self.set_guest_memory(port, table));
                }
                Cmd::AttachGuestRx { port, sink, reply } => {
                    if let Some(e) = self.guest_rx.get_mut(port.index()) {
                        *e = Some(sink);
                    }
                    let _ = reply.send(());
                }
                Cmd::RemovePort { port, reply } => {
                    self.remove_port(port);
                    let _ = reply.send(());
                }
                Cmd::Shutdown => self.shutdown = true,
            }
        }
    }

    /// Attaches a guest TX queue; returns whether its memory is used as fixed buffers.
    fn attach_guest(&mut self, port: PortId, key: u64, q: Box<dyn GuestTxQueue>) -> bool {
        let memory = q
            .memory()
            .filter(|t| match t.install_into(&self.ring.submitter()) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(%port, "cloning registered guest memory failed, using writev: {e}");
                    false
                }
            });
        let fixed = memory.is_some();
        let gi = match self.guests.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.guests.push(None);
                self.guests.len() - 1
            }
        };
        self.guests[gi] = Some(GuestQ {
            port,
            key,
            q,
            on_closed: None,
            completed: false,
            kick_buf: Box::new(0),
            armed: false,
            memory,
            closing: false,
            inflight: 0,
            // Frames may already be queued: look once without waiting for a kick.
            kicked: true,
            polled: false,
            kick_errors: 0,
            hold_until: 0,
        });
        self.arm_kick(gi);
        fixed
    }

    fn set_guest_memory(&mut self, port: PortId, table: Option<Arc<FixedTable>>) -> Result<()> {
        let mine = self
            .guests
            .iter()
            .flatten()
            .any(|g| g.port == port && !g.closing);
        if !mine {
            return Ok(());
        }
        if let Some(t) = &table {
            t.install_into(&self.ring.submitter())
                .map_err(Error::Fixed)?;
        }
        for g in self.guests.iter_mut().flatten() {
            if g.port == port && !g.closing {
                g.memory = table.clone();
            }
        }
        Ok(())
    }

    /// Stops one guest TX queue: no more pops; `reply` is told once every frame popped
    /// from it has completed and the queue object is dropped (at once if it is not here).
    fn detach_guest(&mut self, port: PortId, key: u64, reply: Sender<()>) {
        let found = self
            .guests
            .iter()
            .position(|g| matches!(g, Some(g) if g.port == port && g.key == key && !g.closing));
        let Some(gi) = found else {
            let _ = reply.send(());
            return;
        };
        if let Some(Some(g)) = self.guests.get_mut(gi) {
            g.on_closed = Some(reply);
        }
        self.close_guest(gi);
        self.finalize();
    }

    fn close_guest(&mut self, gi: usize) {
        let Some(Some(g)) = self.guests.get_mut(gi) else {
            return;
        };
        g.closing = true;
        if g.armed {
            let e = opcode::AsyncCancel::new(ud(TAG_KICK, gi as u64))
                .build()
                .user_data(ud(TAG_CANCEL, 0));
            let _ = self.push(e);
        }
    }

    /// Cancels everything and waits until the kernel holds no reference to our memory.
    fn teardown(&mut self) {
        let ports: Vec<PortId> = self
            .queues
            .iter()
            .flatten()
            .map(|q| q.port)
            .chain(self.guests.iter().flatten().map(|g| g.port))
            .collect();
        for p in ports {
            self.remove_port(p);
        }
        if self.wake_armed {
            let e = opcode::AsyncCancel::new(ud(TAG_WAKE, 0))
                .build()
                .user_data(ud(TAG_CANCEL, 0));
            let _ = self.push(e);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let busy = self.wake_armed
                || self.queues.iter().flatten().next().is_some()
                || self.guests.iter().flatten().next().is_some();
            if !busy {
                break;
            }
            let ts = types::Timespec::new().nsec(50_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.stats.worker.enters.add(1);
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.clear();
            for c in self.ring.completion() {
                cqes.push((c.user_data(), c.result(), c.flags()));
            }
            for &(data, res, flags) in &cqes {
                let idx = data & ((1 << TAG_SHIFT) - 1);
                match data >> TAG_SHIFT {
                    TAG_RX => {
                        if let Some(Some(q)) = self.queues.get_mut(idx as usize) {
                            if !cqueue::more(flags) {
                                q.armed = false;
                            }
                            if let Some(bid) = cqueue::buffer_select(flags) {
                                q.rx.consumed();
                                self.recycle(idx as u16, bid);
                            }
                        }
                    }
                    TAG_TX => self.on_tx_done(idx as u32, res),
                    TAG_WAKE => self.wake_armed = false,
                    TAG_KICK => {
                        if let Some(Some(g)) = self.guests.get_mut(idx as usize) {
                            g.armed = false;
                        }
                    }
                    _ => {}
                }
            }
            self.cqes = cqes;
            self.finalize();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        let d = ud(TAG_TX, 4095);
        assert_eq!(d >> TAG_SHIFT, TAG_TX);
        assert_eq!(d & ((1 << TAG_SHIFT) - 1), 4095);
    }
}
