//! Direct (synchronous) transmission to a host port from a thread that is not a worker.
//!
//! Why it exists: a frame that no worker received — the daemon's own IGMP/MLD queries,
//! sent from its housekeeping thread — still has to reach taps and AF_PACKET ports. It is
//! written here with one `writev` from the caller's buffers (the descriptor-free path:
//! nothing waits for a completion), counted as `direct_writes`. Guest TX does not come
//! this way: the workers own guest TX rings ([`crate::GuestTxQueue`]) and write from
//! registered guest memory. (Before they did, this was the guest → host path, at one
//! syscall per frame and destination.)
//!
//! The fds are duplicates of the worker queues' fds: a tap write or packet send is one
//! atomic frame, so sharing an fd with the worker's ring is safe. The same duplicates let
//! the stats reader collect an AF_PACKET port's kernel-side queue drops
//! ([`DirectPort::queue_drops`]) without a round trip through the workers.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use switch::VnetHdr;

/// Most parts one direct write takes (vnet header excluded).
pub const MAX_PARTS: usize = 96;

/// Why a direct write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DirectError {
    #[error("no such host port")]
    NoPort,
    #[error("destination full (EAGAIN)")]
    Full,
    #[error("frame has too many parts")]
    TooManyParts,
    #[error("write failed: errno {0}")]
    Io(i32),
}

/// Counters of direct writes to one port (shared by all calling threads).
#[derive(Debug, Default)]
pub struct DirectCounters {
    pub writes: AtomicU64,
    pub bytes: AtomicU64,
    pub full: AtomicU64,
    pub errors: AtomicU64,
    /// Frames the kernel dropped at the port's full socket queues (AF_PACKET only),
    /// summed over every PACKET_STATISTICS read so far (each read clears the kernel's).
    pub queue_drops: AtomicU64,
}

/// A host port's fds for direct writes.
pub struct DirectPort {
    fds: Vec<OwnedFd>,
    /// The fds are AF_PACKET sockets (they keep PACKET_STATISTICS).
    packet: bool,
    next: AtomicUsize,
    pub counters: DirectCounters,
}

impl DirectPort {
    /// `packet`: the fds are AF_PACKET sockets (not tap queues).
    pub fn new(fds: Vec<OwnedFd>, packet: bool) -> DirectPort {
        DirectPort {
            fds,
            packet,
            next: AtomicUsize::new(0),
            counters: DirectCounters::default(),
        }
    }

    /// Frames the kernel dropped at this port's full receive queues since the port was
    /// added (0 for a tap). Reads and clears each socket's PACKET_STATISTICS and adds
    /// what it found to [`DirectCounters::queue_drops`], so concurrent readers never count
    /// a drop twice.
    pub fn queue_drops(&self) -> u64 {
        if self.packet {
            let new: u64 = self
                .fds
                .iter()
                .filter_map(|fd| crate::sys::afpacket::queue_drops(fd).ok())
                .map(u64::from)
                .sum();
            if new > 0 {
                self.counters.queue_drops.fetch_add(new, Ordering::Relaxed);
            }
        }
        self.counters.queue_drops.load(Ordering::Relaxed)
    }

    /// Writes one frame: the 12-byte vnet header, then `parts` in order.
    pub fn write(&self, hdr: &VnetHdr, parts: &[&[u8]]) -> Result<(), DirectError> {
        if parts.len() > MAX_PARTS {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return Err(DirectError::TooManyParts);
        }
        let Some(fd) = self
            .fds
            .get(self.next.fetch_add(1, Ordering::Relaxed) % self.fds.len().max(1))
        else {
            return Err(DirectError::NoPort);
        };
        let mut h = [0u8; 12];
        let _ = hdr.emit(&mut h, 12);
        let mut iov = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_PARTS + 1];
        iov[0] = libc::iovec {
            iov_base: h.as_mut_ptr().cast(),
            iov_len: 12,
        };
        let mut total = 0usize;
        for (slot, p) in iov[1..].iter_mut().zip(parts) {
            *slot = libc::iovec {
                iov_base: p.as_ptr() as *mut libc::c_void,
                iov_len: p.len(),
            };
            total += p.len();
        }
        // SAFETY: every iovec points at memory borrowed for this call (the header on our
        // stack, the parts from the caller); the kernel only reads them.
        let r = unsafe { libc::writev(fd.as_raw_fd(), iov.as_ptr(), parts.len() as i32 + 1) };
        if r < 0 {
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            if e == libc::EAGAIN {
                self.counters.full.fetch_add(1, Ordering::Relaxed);
                return Err(DirectError::Full);
            }
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
            return Err(DirectError::Io(e));
        }
        self.counters.writes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(total as u64, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::FromRawFd;

    #[test]
    fn writes_header_then_parts_as_one_message() {
        let mut fds = [0; 2];
        // SAFETY: socketpair fills our array.
        let r =
            unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr()) };
        assert_eq!(r, 0);
        // SAFETY: fresh fds, owned once each.
        let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let p = DirectPort::new(vec![a], false);
        let hdr = VnetHdr {
            flags: 1,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        p.write(&hdr, &[b"abc", b"", b"defg"]).unwrap();
        let mut buf = [0u8; 64];
        // SAFETY: reading into our own buffer.
        let n = unsafe { libc::read(b.as_raw_fd(), buf.as_mut_ptr().cast(), 64) };
        assert_eq!(n, 19);
        assert_eq!(VnetHdr::parse(&buf, 12).unwrap(), hdr);
        assert_eq!(&buf[12..19], b"abcdefg");
        assert_eq!(p.counters.writes.load(Ordering::Relaxed), 1);
        let many = vec![&b"x"[..]; MAX_PARTS + 1];
        assert_eq!(p.write(&hdr, &many), Err(DirectError::TooManyParts));
        assert_eq!(p.queue_drops(), 0, "not a packet socket: nothing to read");
    }
}
