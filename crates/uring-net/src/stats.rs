//! Counters. Each worker owns its counters and is their only writer, so an increment is a
//! relaxed load + store (no locked instruction, no shared cache line between workers);
//! [`crate::Dataplane::stats`] sums them across workers when asked.

use std::sync::atomic::{AtomicU64, Ordering};

use switch::MAX_PORTS;

/// A single-writer counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `v`. Only the owning worker calls this.
    #[inline]
    pub fn add(&self, v: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(v),
            Ordering::Relaxed,
        );
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-port counters of one worker.
#[derive(Debug, Default)]
pub struct PortCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    /// Writes of this port's guest frames to host ports: one writev each, of our
    /// validated header and head copy, then the guest's pages (the name is historical:
    /// there is no other way they are written).
    pub tx_fallback: Counter,
    /// Frames too short for a vnet header, or possibly truncated by the rx buffer.
    pub drop_bad_frame: Counter,
    /// Frames dropped because this destination had too many writes in flight.
    pub drop_dest_full: Counter,
    /// Frames whose destination has no queue on this worker.
    pub drop_no_queue: Counter,
    /// Writes the kernel failed (EAGAIN on a full socket, link down, ...).
    pub drop_tx_error: Counter,
    /// Multishot receives that ended because all rx buffers were in use.
    pub rx_enobufs: Counter,
    /// Receives that failed (device gone, socket error).
    pub rx_errors: Counter,
}

/// Per-worker counters.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// io_uring_enter calls (submit+wait, and busy-poll peeks).
    pub enters: Counter,
    /// Frames received and forwarded or dropped by this worker.
    pub packets: Counter,
    /// Completion batches processed.
    pub batches: Counter,
}

/// All counters of one worker (allocated once; ports index by id).
#[derive(Debug)]
pub struct WorkerStats {
    pub worker: WorkerCounters,
    pub ports: Box<[PortCounters]>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            worker: WorkerCounters::default(),
            ports: (0..MAX_PORTS).map(|_| PortCounters::default()).collect(),
        }
    }
}

/// A snapshot of one port's counters summed over workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortStats {
    pub port: switch::PortId,
    pub name: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_fallback: u64,
    /// The switch's own counters for this port as ingress (drops by reason, learning).
    pub switch: switch::PortStats,
    pub drop_bad_frame: u64,
    pub drop_dest_full: u64,
    pub drop_no_queue: u64,
    pub drop_tx_error: u64,
    pub rx_enobufs: u64,
    pub rx_errors: u64,
    /// Frames the kernel dropped before we saw them because the port's socket queue was
    /// full (AF_PACKET's PACKET_STATISTICS; the workers did not keep up). Taps: 0.
    pub drop_rx_queue: u64,
}

impl PortStats {
    pub(crate) fn new(port: switch::PortId, name: String) -> PortStats {
        PortStats {
            port,
            name,
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            tx_fallback: 0,
            switch: switch::PortStats::default(),
            drop_bad_frame: 0,
            drop_dest_full: 0,
            drop_no_queue: 0,
            drop_tx_error: 0,
            rx_enobufs: 0,
            rx_errors: 0,
            drop_rx_queue: 0,
        }
    }

    pub(crate) fn accumulate(&mut self, c: &PortCounters) {
        self.rx_packets += c.rx_packets.get();
        self.rx_bytes += c.rx_bytes.get();
        self.tx_packets += c.tx_packets.get();
        self.tx_bytes += c.tx_bytes.get();
        self.tx_fallback += c.tx_fallback.get();
        self.drop_bad_frame += c.drop_bad_frame.get();
        self.drop_dest_full += c.drop_dest_full.get();
        self.drop_no_queue += c.drop_no_queue.get();
        self.drop_tx_error += c.drop_tx_error.get();
        self.rx_enobufs += c.rx_enobufs.get();
        self.rx_errors += c.rx_errors.get();
    }
}

/// A snapshot of one worker's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerStatsSnapshot {
    pub worker: usize,
    pub enters: u64,
    pub packets: u64,
    pub batches: u64,
}

impl WorkerStatsSnapshot {
    /// io_uring_enter calls per frame handled (the batching figure of merit).
    pub fn syscalls_per_packet(&self) -> f64 {
        if self.packets == 0 {
            0.0
        } else {
            self.enters as f64 / self.packets as f64
        }
    }
}

/// Everything `Dataplane::stats` reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub ports: Vec<PortStats>,
    pub workers: Vec<WorkerStatsSnapshot>,
}

impl Stats {
    pub fn port(&self, id: switch::PortId) -> Option<&PortStats> {
        self.ports.iter().find(|p| p.port == id)
    }

    /// Total syscalls per handled frame over all workers.
    pub fn syscalls_per_packet(&self) -> f64 {
        let (s, p) = self
            .workers
            .iter()
            .fold((0, 0), |(s, p), w| (s + w.enters, p + w.packets));
        if p == 0 {
            0.0
        } else {
            s as f64 / p as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulate_sums_workers_and_reasons() {
        let a = PortCounters::default();
        let b = PortCounters::default();
        a.rx_packets.add(2);
        b.rx_packets.add(3);
        b.drop_dest_full.add(4);
        let mut s = PortStats::new(switch::PortId(0), "p".into());
        s.accumulate(&a);
        s.accumulate(&b);
        assert_eq!(s.rx_packets, 5);
        assert_eq!(s.drop_dest_full, 4);
        let w = WorkerStatsSnapshot {
            enters: 1,
            packets: 40,
            ..Default::default()
        };
        assert_eq!(w.syscalls_per_packet(), 0.025);
    }
}
