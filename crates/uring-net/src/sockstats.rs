//! Kernel-side counters of a host port, read from outside the workers.
//!
//! Why: an AF_PACKET socket drops frames at its own full receive queue before any worker
//! sees them; the kernel counts those in PACKET_STATISTICS. The stats reader (the
//! control thread) collects them through duplicates of the worker queues' fds
//! ([`SocketStats::queue_drops`]) without a round trip through the workers.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// A host port's duplicated fds, for its kernel-side counters.
pub struct SocketStats {
    fds: Vec<OwnedFd>,
    /// The fds are AF_PACKET sockets (they keep PACKET_STATISTICS).
    packet: bool,
    /// Frames the kernel dropped at the port's full socket queues (AF_PACKET only),
    /// summed over every PACKET_STATISTICS read so far (each read clears the kernel's).
    queue_drops: AtomicU64,
}

impl SocketStats {
    /// `packet`: the fds are AF_PACKET sockets (not tap queues).
    pub fn new(fds: Vec<OwnedFd>, packet: bool) -> SocketStats {
        SocketStats {
            fds,
            packet,
            queue_drops: AtomicU64::new(0),
        }
    }

    /// Frames the kernel dropped at this port's full receive queues since the port was
    /// added (0 for a tap). Reads and clears each socket's PACKET_STATISTICS and adds
    /// what it found to the running total, so concurrent readers never count a drop
    /// twice.
    pub fn queue_drops(&self) -> u64 {
        if self.packet {
            let new: u64 = self
                .fds
                .iter()
                .filter_map(|fd| crate::sys::afpacket::queue_drops(fd).ok())
                .map(u64::from)
                .sum();
            if new > 0 {
                self.queue_drops.fetch_add(new, Ordering::Relaxed);
            }
        }
        self.queue_drops.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    #[test]
    fn a_tap_has_no_queue_drops() {
        let mut fds = [0; 2];
        // SAFETY: socketpair fills our array.
        let r =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) };
        assert_eq!(r, 0);
        // SAFETY: fresh fds, owned once each.
        let (a, _b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let p = SocketStats::new(vec![a], false);
        assert_eq!(p.queue_drops(), 0, "not a packet socket: nothing to read");
    }
}
