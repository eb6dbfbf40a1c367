//! Provided-buffer rings (IORING_REGISTER_PBUF_RING) for multishot receive.
//!
//! A multishot read/recv picks a buffer from the ring for every frame, so one armed request
//! serves any number of frames without a syscall each. Buffers are sized for the largest
//! frame a tap/AF_PACKET port can hand us (64 KiB GSO frame + the 12-byte vnet header), and
//! a buffer goes back to the ring only when every write that reads from it has completed
//! (frames are forwarded straight from the rx buffer, no copy). When the ring runs dry the
//! kernel ends the multishot with ENOBUFS; the worker re-arms once buffers are back.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;

use crate::sys::mmap::Mapping;

/// Largest frame we accept: 64 KiB of GSO payload + headers + the 12-byte vnet header,
/// rounded up so buffers stay 4 KiB aligned.
pub const RX_BUF_SIZE: u32 = 68 * 1024;

/// A provided-buffer ring and the memory of its buffers.
pub struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    entries: u16,
    buf_size: u32,
    bgid: u16,
    /// Next entry index to fill (published to the kernel by `publish`).
    tail: u16,
    /// Buffers currently in the kernel's hands (pushed and not yet consumed by a CQE).
    in_kernel: u16,
}

impl BufRing {
    /// Allocates `entries` (a power of two, ≤ 32768) buffers of `buf_size` bytes.
    pub fn new(entries: u16, buf_size: u32, bgid: u16) -> io::Result<BufRing> {
        if entries == 0 || !entries.is_power_of_two() || entries > 32768 || buf_size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring entries must be a power of two in 1..=32768",
            ));
        }
        let ring = Mapping::anonymous(entries as usize * std::mem::size_of::<BufRingEntry>())?;
        let bufs = Mapping::anonymous(entries as usize * buf_size as usize)?;
        Ok(BufRing {
            ring,
            bufs,
            entries,
            buf_size,
            bgid,
            tail: 0,
            in_kernel: 0,
        })
    }

    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    pub fn entries(&self) -> u16 {
        self.entries
    }

    pub fn buf_size(&self) -> u32 {
        self.buf_size
    }

    /// Buffers the kernel can still fill.
    pub fn in_kernel(&self) -> u16 {
        self.in_kernel
    }

    /// Registers the ring with `submitter` and hands it every buffer.
    pub fn register(&mut self, submitter: &io_uring::Submitter<'_>) -> io::Result<()> {
        // SAFETY: the ring memory is a page-aligned mapping of `entries` entries owned by
        // `self`; the owner (worker) unregisters it before dropping `self`.
        unsafe {
            submitter.register_buf_ring_with_flags(self.ring.addr(), self.entries, self.bgid, 0)?
        };
        for bid in 0..self.entries {
            self.push(bid);
        }
        self.publish();
        Ok(())
    }

    /// Queues buffer `bid` for the kernel (visible after `publish`). Ids outside the ring
    /// are ignored: they can only come from a corrupted CQE.
    pub fn push(&mut self, bid: u16) {
        if bid >= self.entries {
            return;
        }
        let idx = (self.tail & (self.entries - 1)) as usize;
        let base = self.ring.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `idx < entries`, so the entry lies inside the ring mapping; the kernel only
        // reads entries between its head and the published tail, and this one is beyond it.
        unsafe {
            let e = &mut *base.add(idx);
            e.set_addr(self.bufs.addr() + bid as u64 * self.buf_size as u64);
            e.set_len(self.buf_size);
            e.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        self.in_kernel = self.in_kernel.saturating_add(1);
    }

    /// Makes every pushed buffer visible to the kernel (one release store).
    pub fn publish(&self) {
        let base = self.ring.as_ptr().cast::<BufRingEntry>();
        // SAFETY: the tail lives inside entry 0 of our mapping; the kernel reads it with an
        // acquire load, so a release store orders the entry writes before it.
        unsafe {
            let tail = BufRingEntry::tail(base) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The kernel consumed one buffer (a CQE carried its id).
    pub fn consumed(&mut self) {
        self.in_kernel = self.in_kernel.saturating_sub(1);
    }

    /// Start of buffer `bid`, for in-place edits of a buffer the kernel has handed back.
    pub fn buf_ptr(&self, bid: u16) -> Option<*mut u8> {
        // SAFETY: `bid < entries`, so the offset stays inside the buffer mapping.
        (bid < self.entries).then(|| unsafe {
            self.bufs
                .as_ptr()
                .add(bid as usize * self.buf_size as usize)
        })
    }

    /// The first `len` bytes of buffer `bid`, or `None` for an id or length out of range.
    pub fn frame(&self, bid: u16, len: usize) -> Option<&[u8]> {
        if bid >= self.entries || len > self.buf_size as usize {
            return None;
        }
        // SAFETY: the range is inside the buffer mapping; the kernel wrote it before posting
        // the CQE and does not touch the buffer again until we push it back.
        Some(unsafe {
            std::slice::from_raw_parts(
                self.bufs
                    .as_ptr()
                    .add(bid as usize * self.buf_size as usize),
                len,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::{cqueue, opcode, types, IoUring};

    #[test]
    fn rejects_bad_sizes() {
        assert!(BufRing::new(0, 4096, 0).is_err());
        assert!(BufRing::new(3, 4096, 0).is_err());
        assert!(BufRing::new(4, 0, 0).is_err());
    }

    /// A multishot read on a pipe fills ring buffers, ends with ENOBUFS when the ring is dry,
    /// and works again after the buffers are returned and the read re-armed.
    #[test]
    fn multishot_read_enobufs_and_rearm() {
        let mut ring: IoUring = IoUring::new(16).unwrap();
        let mut br = BufRing::new(2, 4096, 7).unwrap();
        br.register(&ring.submitter()).unwrap();
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into our array.
        let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) };
        assert_eq!(r, 0);
        let (r, w) = (fds[0], fds[1]);
        let arm = |ring: &mut IoUring| {
            let e = opcode::ReadMulti::new(types::Fd(r), 0, 7)
                .build()
                .user_data(1);
            // SAFETY: the buffer group outlives the request (both live to the end of the test).
            unsafe { ring.submission().push(&e).unwrap() };
        };
        arm(&mut ring);
        let mut got = Vec::new();
        let mut ended = false;
        for i in 0..3u8 {
            // SAFETY: writing from a stack buffer to our own pipe.
            unsafe { libc::write(w, [i; 10].as_ptr().cast(), 10) };
            ring.submit_and_wait(1).unwrap();
            for cqe in ring.completion() {
                if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
                    br.consumed();
                    got.push(br.frame(bid, cqe.result() as usize).unwrap()[0]);
                }
                if !cqueue::more(cqe.flags()) {
                    ended = true;
                    assert!(cqe.result() == -libc::ENOBUFS || cqe.result() > 0);
                }
            }
        }
        assert_eq!(&got[..2], &[0, 1]);
        assert!(ended, "multishot must end when the ring is dry");
        assert_eq!(br.in_kernel(), 0);
        br.push(0);
        br.push(1);
        br.publish();
        arm(&mut ring);
        ring.submit_and_wait(1).unwrap();
        let c: Vec<_> = ring.completion().collect();
        assert!(c
            .iter()
            .any(|c| c.result() == 10 && cqueue::buffer_select(c.flags()).is_some()));
        // SAFETY: closing our own pipe fds.
        unsafe {
            libc::close(r);
            libc::close(w);
        }
    }
}
