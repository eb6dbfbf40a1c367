//! The ring and the poll policy: entering the kernel (`enter`: one `io_uring_enter` per
//! batch, the min_wait batching wait while busy, no system call at all for an empty poll
//! pass), queuing SQEs (`push`), measuring the load that switches the batching wait and
//! the automatic busy-poll window on and off (`update_load`), and re-arming the guest
//! queues polled during a window before the worker sleeps (`arm_polled`).
//!
//! Kept apart because this is the policy side of the loop in `mod.rs`, tuned on its own
//! (syscalls per packet against latency), and `enter`/`push` are where every SQE of the
//! other files reaches the kernel, with the `// SAFETY:` that covers them all.

use std::time::{Duration, Instant};

use io_uring::{squeue, types};

use super::Worker;

/// Completions a batching wait asks for before its minimum wait expires.
const BATCH_WANT: usize = 256;

/// Completions per millisecond from which waits use `batch_wait` (min_wait): ≥ 64 k/s
/// is a flood worth batching. Below it the load is light (e.g. one request/response in
/// flight) and waiting for more completions would only add `batch_wait` of latency to
/// every hop, so an enter returns at the first completion as usual. (A per-batch count
/// cannot decide this: without min_wait batches stay small even under a flood.)
const BUSY_PER_MS: usize = 64;

/// The automatic busy-poll window (`DataplaneConfig::auto_poll`): about one batch
/// interval at the rates where the worker counts as busy.
pub(super) const AUTO_POLL: Duration = Duration::from_micros(50);

/// IORING_ENTER_GETEVENTS (include/uapi/linux/io_uring.h): also runs deferred task work.
const IORING_ENTER_GETEVENTS: u32 = 1;
impl Worker {
    /// Re-enables notifications of the queues polled in the last window. True when one
    /// of them has frames already (it is marked kicked: no kick will come for them).
    pub(super) fn arm_polled(&mut self) -> bool {
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
    pub(super) fn update_load(&mut self, n: usize, now: Instant) {
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
    pub(super) fn enter(&mut self, want: u32) -> std::io::Result<()> {
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
            // The submission queue holds at most its (u32) number of entries.
            let pending = u32::try_from(self.ring.submission().len()).unwrap_or(u32::MAX);
            self.stats.worker.enters.add(1);
            if want > 0 && self.busy && !self.cfg.batch_wait.is_zero() {
                // Linux ≥ 6.12 min_wait: sleep until the first completion as usual, but if
                // completions keep coming within `batch_wait` of entering, collect up to
                // BATCH_WANT of them in this one call.
                let us = u32::try_from(self.cfg.batch_wait.as_micros()).unwrap_or(u32::MAX);
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
            // owned by this worker (op slab, buffer rings, kick/wake buffers) or at guest
            // pages of frames not yet completed, all of which outlive their completions.
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
    pub(super) fn push(&mut self, e: squeue::Entry) -> bool {
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
}
