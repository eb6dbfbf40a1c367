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
//! completes), a guest frame is written with one writev: our validated header and head
//! copy, then the rest straight from the guest's pages.
//! A destination with too many writes in flight drops the frame (counted), so a slow port
//! never blocks the worker; sockets and taps are non-blocking, so a full one fails the
//! write with EAGAIN (counted) instead of parking it.
//!
//! The worker is one struct, [`Worker`], with one `impl Worker` block per concern, one
//! concern per file:
//! - `mod.rs` (here): the struct and its configuration, the control messages ([`Cmd`]),
//!   the loop (`run`, `process_completions`, `after_batch`, `finalize`) and the SQE
//!   user-data encoding (`ud`) that routes every completion to its concern;
//! - `poll`: the ring and the poll policy: `enter` (the min_wait batching wait), `push`,
//!   the load measurement and the busy-poll window;
//! - `host`: tap and AF_PACKET queues: multishot receive into buffer rings, forwarding
//!   from the rx buffer, adding and removing ports;
//! - `guest`: vhost-user guest TX queues: kicks, pops, decisions on the private head copy,
//!   staged guest→guest delivery and descriptor completion;
//! - `write`: writes to host ports: the op slab, write specs and iovecs, completions;
//! - `cmd`: the control path: the wake eventfd, command handling and teardown.
//!
//! The split follows what each piece of state is for, so a file's invariants (how long a
//! buffer lives, what may be read from guest memory) sit next to all the code that relies
//! on them; the loop here only dispatches.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use io_uring::IoUring;
use switch::{Millis, PortId, PortSet, Switch};

use crate::error::{Error, Result};
use crate::guest::{FrameBatch, GuestRx, GuestTxQueue};
use crate::stage::RxStage;
use crate::stats::WorkerStats;
use switch::ratelimit::RateLimit;

mod cmd;
mod guest;
mod host;
mod poll;
mod vxlan;
mod write;

use guest::{AfterFlush, GuestInFlight, GuestQ, GUEST_BATCH};
use host::Queue;
use poll::AUTO_POLL;
use write::TxOp;

/// Writes in flight per worker (the op slab never grows, so iovec addresses stay valid).
const MAX_OPS: usize = 4096;
/// [`MAX_OPS`] as an op index type.
// 4096 fits a u32.
#[allow(clippy::cast_possible_truncation)]
const MAX_OPS_U32: u32 = MAX_OPS as u32;
/// Consecutive receive errors after which a queue stops re-arming.
const MAX_RX_ERRORS: u32 = 16;

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
    /// A VXLAN port's UDP socket: multishot recvmsg (the source address names the VTEP);
    /// writes to it are encapsulated and sent with sendmsg (`vxlan`).
    Vxlan,
}

/// Control messages from [`crate::Dataplane`].
pub(crate) enum Cmd {
    AddQueue {
        port: PortId,
        kind: QueueKind,
        fd: OwnedFd,
        /// The shared state of a VXLAN port (`kind` Vxlan).
        vxlan: Option<Arc<crate::vxlan::VxlanPort>>,
        reply: Sender<Result<()>>,
    },
    AttachGuestTx {
        port: PortId,
        key: u64,
        queue: Box<dyn GuestTxQueue>,
        reply: Sender<Result<()>>,
    },
    DetachGuestTx {
        port: PortId,
        key: u64,
        reply: Sender<()>,
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
    /// A frame the switch itself originates (an IGMP/MLD query of the querier), flooded
    /// in `vid` like a received frame.
    Inject {
        frame: Vec<u8>,
        vid: switch::Vid,
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
    /// VXLAN send scratch: the frame copied out, its datagrams, and their GSO batches.
    vx_in: Vec<u8>,
    /// Frames of the VXLAN receive being handled (reused).
    vx_rx: Vec<crate::vxlan::decap::RxFrame>,
    vx_out: Vec<u8>,
    vx_batches: Vec<crate::vxlan::encap::Batch>,
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
            free_ops: (0..MAX_OPS_U32).rev().collect(),
            gframes: (0..MAX_OPS).map(|_| None).collect(),
            free_gframes: (0..MAX_OPS_U32).rev().collect(),
            cqes: Vec::with_capacity(8192),
            popped: FrameBatch::with_capacity(GUEST_BATCH),
            decisions: switch::DecisionCache::default(),
            stage: RxStage::default(),
            after_flush: Vec::with_capacity(GUEST_BATCH),
            guest_backlog: false,
            polling: false,
            share: crate::share::CpuShare::new(),
            whole: Vec::new(),
            vx_in: Vec::new(),
            vx_rx: Vec::new(),
            vx_out: Vec::new(),
            vx_batches: Vec::new(),
            shutdown: false,
            log_tx: RateLimit::new(5_000),
            log_rx: RateLimit::new(5_000),
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

    /// Milliseconds since the data plane's epoch (the switch's clock).
    pub(super) fn now(&self) -> Millis {
        Millis(u64::try_from(self.cfg.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
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
        let now = self.now();
        for &(data, res, flags) in &cqes {
            let idx = data & ((1 << TAG_SHIFT) - 1);
            match data >> TAG_SHIFT {
                // Queue indices are u16 and op indices below MAX_OPS (set in `ud`).
                TAG_RX => {
                    if let Ok(qi) = u16::try_from(idx) {
                        self.on_rx(&view, now, qi, res, flags);
                    }
                }
                TAG_TX => {
                    if let Ok(oi) = u32::try_from(idx) {
                        self.on_tx_done(oi, res);
                    }
                }
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
        // Host frames staged for guests are placed before guest TX is serviced, so a pop
        // round's flush (and its backpressure signal) covers its own frames only.
        if !self.stage.is_empty() || !self.after_flush.is_empty() {
            self.flush_stage(&view);
        }
        // Guest TX after host completions: their writes may have freed op slots.
        // Popped frames count as work too: they keep a poll window open without kicks.
        n + self.service_guests(&view, now)
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
        for (qi, qi16) in (0..self.queues.len()).zip(0u16..) {
            if let Some(Some(q)) = self.queues.get_mut(qi) {
                if q.dirty {
                    q.rx.publish();
                    q.dirty = false;
                }
            }
            self.arm_rx(qi16);
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
