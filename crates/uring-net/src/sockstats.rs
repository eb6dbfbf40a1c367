//! Kernel-side counters of a host port, read from outside the workers.
//!
//! Why: an AF_PACKET socket drops frames at its own full receive queue before any worker
//! sees them; the kernel counts those in PACKET_STATISTICS. A VXLAN port's UDP sockets
//! drop datagrams the same way, counted in the socket's `sk_drops` (SO_MEMINFO). The
//! stats reader (the control thread) collects them through duplicates of the worker
//! queues' fds ([`SocketStats::queue_drops`]) without a round trip through the workers.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// What kind of sockets a port's fds are, for where the kernel keeps their drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Tap queues: no receive queue of ours to overflow.
    Tap,
    /// AF_PACKET: PACKET_STATISTICS, cleared by each read.
    Packet,
    /// UDP (VXLAN): `sk_drops`, which only grows.
    Udp,
}

/// A host port's duplicated fds, for its kernel-side counters.
pub struct SocketStats {
    fds: Vec<OwnedFd>,
    kind: Kind,
    /// Frames the kernel dropped at the port's full AF_PACKET socket queues, summed over
    /// every PACKET_STATISTICS read so far (each read clears the kernel's).
    queue_drops: AtomicU64,
}

/// SK_MEMINFO_DROPS in SO_MEMINFO's array (linux/sock_diag.h).
const SK_MEMINFO_DROPS: usize = 8;
/// SK_MEMINFO_VARS, the array's length (linux/sock_diag.h).
const SK_MEMINFO_VARS: usize = 9;

impl SocketStats {
    /// `packet`: the fds are AF_PACKET sockets (not tap queues).
    pub fn new(fds: Vec<OwnedFd>, packet: bool) -> SocketStats {
        SocketStats {
            fds,
            kind: if packet { Kind::Packet } else { Kind::Tap },
            queue_drops: AtomicU64::new(0),
        }
    }

    /// A VXLAN port's receive sockets (UDP).
    pub fn udp(fds: Vec<OwnedFd>) -> SocketStats {
        SocketStats {
            fds,
            kind: Kind::Udp,
            queue_drops: AtomicU64::new(0),
        }
    }

    /// Frames the kernel dropped at this port's full receive queues since the port was
    /// added (0 for a tap). AF_PACKET: reads and clears each socket's PACKET_STATISTICS
    /// and adds what it found to the running total, so concurrent readers never count a
    /// drop twice. UDP: the sum of the sockets' own running counts.
    pub fn queue_drops(&self) -> u64 {
        match self.kind {
            Kind::Tap => {}
            Kind::Packet => {
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
            Kind::Udp => {
                return self
                    .fds
                    .iter()
                    .filter_map(|fd| sk_drops(fd.as_raw_fd()))
                    .map(u64::from)
                    .sum();
            }
        }
        self.queue_drops.load(Ordering::Relaxed)
    }
}

/// The socket's `sk_drops` (SO_MEMINFO, socket(7)): datagrams dropped at its full
/// receive queue, among others.
// The array's byte size fits a socklen_t.
#[allow(clippy::cast_possible_truncation)]
fn sk_drops(fd: libc::c_int) -> Option<u32> {
    let mut v = [0u32; SK_MEMINFO_VARS];
    let mut len = std::mem::size_of_val(&v) as libc::socklen_t;
    // SAFETY: `v` and `len` live for the call; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            v.as_mut_ptr().cast(),
            &mut len,
        )
    };
    (r == 0 && len as usize > SK_MEMINFO_DROPS * 4).then(|| v[SK_MEMINFO_DROPS])
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

    /// A UDP socket with a small queue that nobody reads: what overflowed it is counted,
    /// and stays counted across reads.
    #[test]
    fn a_full_udp_queue_counts_its_drops() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let fd = rx.as_raw_fd();
        crate::sys::setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4096).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        for _ in 0..200 {
            tx.send_to(&[0u8; 1000], to).unwrap();
        }
        let p = SocketStats::udp(vec![OwnedFd::from(rx)]);
        let d = p.queue_drops();
        assert!(d > 100, "{d} of 200 datagrams dropped at a 4 KiB queue");
        assert_eq!(p.queue_drops(), d);
    }
}
