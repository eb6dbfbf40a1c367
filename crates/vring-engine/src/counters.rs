//! Per-queue counters: relaxed atomics written by whichever thread processes the queue and
//! read by the daemon's `ctl stats`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::chain::ChainError;

/// Why a frame or chain was dropped on a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// A descriptor chain failed validation ([`ChainError`]).
    Chain(ChainError),
    /// TX: chain shorter than the virtio-net header, or header with an unknown gso_type.
    BadHeader,
    /// TX: frame shorter than an Ethernet header or longer than 64 KiB + header.
    BadLength,
    /// TX: GSO or checksum offload the driver did not negotiate (HOST_*/CSUM), a GSO frame
    /// without `gso_size`, or a checksum position outside the frame (§5.1.6.2.1).
    BadOffload,
    /// RX: no (or not enough) buffers posted by the driver.
    NoBuffers,
    /// RX: the frame does not fit the posted buffer (no mergeable buffers).
    TooBig,
    /// RX: queue not ready or not enabled.
    NotReady,
    /// The avail index moved by more than the queue size (§2.7.6): the queue is stopped.
    AvailJump,
    /// TX: a valid chain split into more pieces of guest memory than the data plane
    /// writes in one go (Linux sends at most MAX_SKB_FRAGS + 2).
    TooManySegments,
    /// A packed ring's structure violated ([`crate::packed::RingFault`]: a list longer
    /// than the ring, wrong wrap bits inside a list, a buffer ID out of range or in
    /// flight, more descriptors held than the ring has): the queue is stopped.
    BadRing,
}

const N_CHAIN: usize = ChainError::ALL.len();
const N_DROPS: usize = N_CHAIN + 9;

impl Drop {
    fn index(self) -> usize {
        match self {
            Drop::Chain(e) => e.index(),
            Drop::BadHeader => N_CHAIN,
            Drop::BadLength => N_CHAIN + 1,
            Drop::NoBuffers => N_CHAIN + 2,
            Drop::TooBig => N_CHAIN + 3,
            Drop::NotReady => N_CHAIN + 4,
            Drop::AvailJump => N_CHAIN + 5,
            Drop::BadOffload => N_CHAIN + 6,
            Drop::TooManySegments => N_CHAIN + 7,
            Drop::BadRing => N_CHAIN + 8,
        }
    }

    /// Every reason, in counter order.
    pub fn all() -> impl Iterator<Item = Drop> {
        ChainError::ALL.into_iter().map(Drop::Chain).chain([
            Drop::BadHeader,
            Drop::BadLength,
            Drop::NoBuffers,
            Drop::TooBig,
            Drop::NotReady,
            Drop::AvailJump,
            Drop::BadOffload,
            Drop::TooManySegments,
            Drop::BadRing,
        ])
    }
}

/// Counters of one virtqueue.
#[derive(Debug, Default)]
pub struct QueueCounters {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    /// Guest notifications (call eventfd writes).
    pub calls: AtomicU64,
    /// Kicks handled.
    pub kicks: AtomicU64,
    drops: [AtomicU64; N_DROPS],
}

/// A plain copy of [`QueueCounters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub frames: u64,
    pub bytes: u64,
    pub calls: u64,
    pub kicks: u64,
    /// Non-zero drop counters by reason.
    pub drops: Vec<(Drop, u64)>,
}

impl QueueStats {
    /// Drops for one reason.
    pub fn dropped(&self, why: Drop) -> u64 {
        self.drops
            .iter()
            .find(|(d, _)| *d == why)
            .map_or(0, |(_, n)| *n)
    }

    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }
}

impl QueueCounters {
    pub fn count_frame(&self, bytes: usize) {
        self.count_frames(1, bytes as u64);
    }

    /// A batch's frames at once (one atomic add each, not one per frame).
    pub fn count_frames(&self, frames: u64, bytes: u64) {
        if frames > 0 {
            self.frames.fetch_add(frames, Relaxed);
            self.bytes.fetch_add(bytes, Relaxed);
        }
    }

    pub fn count_call(&self) {
        self.calls.fetch_add(1, Relaxed);
    }

    pub fn count_drop(&self, why: Drop) {
        self.drops[why.index()].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> QueueStats {
        QueueStats {
            frames: self.frames.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            calls: self.calls.load(Relaxed),
            kicks: self.kicks.load(Relaxed),
            drops: Drop::all()
                .map(|d| (d, self.drops[d.index()].load(Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }
}

/// Per-port counters of refused frontend requests (the vhost-user control channel, not a
/// queue): see [`crate::frontend_checks`].
#[derive(Debug, Default)]
pub struct FrontendCounters {
    /// Memory tables (SET_MEM_TABLE / ADD_MEM_REG) refused: a region past its file's end,
    /// or more regions than `max_mem_regions`.
    pub bad_memory_table: AtomicU64,
    /// Kick/call/err fds refused: not an eventfd.
    pub bad_vring_fd: AtomicU64,
    /// Dirty logs (SET_LOG_BASE) refused: past their file's end, unaligned or oversized.
    pub bad_dirty_log: AtomicU64,
    /// SIGBUS in this port's guest memory or log (a file shrunk after it was mapped): the
    /// connection was failed (sigbus.rs).
    pub memory_fault: AtomicU64,
    /// When the last refusal was logged (ms since the process's first refusal log).
    last_warn: AtomicU64,
}

/// A plain copy of [`FrontendCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontendStats {
    pub bad_memory_table: u64,
    pub bad_vring_fd: u64,
    pub bad_dirty_log: u64,
    pub memory_fault: u64,
}

impl FrontendCounters {
    pub fn snapshot(&self) -> FrontendStats {
        FrontendStats {
            bad_memory_table: self.bad_memory_table.load(Relaxed),
            bad_vring_fd: self.bad_vring_fd.load(Relaxed),
            bad_dirty_log: self.bad_dirty_log.load(Relaxed),
            memory_fault: self.memory_fault.load(Relaxed),
        }
    }

    /// Whether a refusal may be logged now: at most one line per second per port (a
    /// frontend can reconnect and retry in a loop).
    pub fn may_log(&self) -> bool {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let epoch = EPOCH.get_or_init(std::time::Instant::now);
        // +1000: the first refusal is always logged.
        let now = u64::try_from(epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1000);
        let last = self.last_warn.load(Relaxed);
        now.saturating_sub(last) >= 1000
            && self
                .last_warn
                .compare_exchange(last, now, Relaxed, Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_unique() {
        let idx: Vec<usize> = Drop::all().map(|d| d.index()).collect();
        assert_eq!(idx, (0..N_DROPS).collect::<Vec<_>>());
        let c = QueueCounters::default();
        c.count_drop(Drop::NoBuffers);
        c.count_drop(Drop::Chain(ChainError::Loop));
        c.count_drop(Drop::Chain(ChainError::Loop));
        let s = c.snapshot();
        assert_eq!(s.dropped(Drop::Chain(ChainError::Loop)), 2);
        assert_eq!(s.dropped(Drop::NoBuffers), 1);
        assert_eq!(s.dropped_total(), 3);
    }
}
