//! Guest TX on the io_uring workers ([`GuestTx`]): the seam between vring-engine's
//! [`TxRing`] (a TX virtqueue lent out by a vhost-user device) and uring-net's
//! [`GuestTxQueue`] (what a worker services). The ring validates and pops chains; this
//! turns each into the worker's frame — host-address segments plus a private head copy
//! made once, straight into the batch — and hands completions back. A popped frame's
//! pages stay mapped until it completes because the ring holds the memory table it was
//! popped from; nothing is registered or pinned.

use std::os::fd::RawFd;

use uring_net::{FrameBatch, GuestTxQueue};
use vring_engine::TxRing;

/// A device's TX ring as a worker's guest queue.
pub struct GuestTx {
    ring: TxRing,
}

impl GuestTx {
    pub fn new(ring: TxRing) -> GuestTx {
        GuestTx { ring }
    }
}

impl GuestTx {
    /// A pop that handed the worker nothing may still have dropped chains (invalid, or
    /// refused by the batch): they go back to the guest now. The worker publishes and
    /// flushes only queues whose frames it completed, so without this a guest that sent
    /// only bad chains would not get those buffers back until its next valid frame.
    fn return_dropped(&mut self, before: usize, out: &FrameBatch) {
        if out.len() == before && self.ring.has_completions() {
            self.ring.flush();
        }
    }
}

impl GuestTxQueue for GuestTx {
    fn kick_fd(&self) -> RawFd {
        self.ring.kick_fd()
    }

    fn pop(&mut self, max: usize, out: &mut FrameBatch) {
        let before = out.len();
        self.ring.pop(max, |p| take(out, p));
        self.return_dropped(before, out);
    }

    fn poll(&mut self, max: usize, out: &mut FrameBatch) {
        let before = out.len();
        self.ring.poll(max, |p| take(out, p));
        self.return_dropped(before, out);
    }

    fn arm(&mut self) -> bool {
        self.ring.arm()
    }

    fn complete(&mut self, token: u64) {
        self.ring.complete(token);
    }

    fn flush(&mut self) {
        self.ring.flush();
    }

    fn publish(&mut self) {
        self.ring.publish();
    }
}

/// A popped frame into the worker's batch: its pieces as the ring popped them (one
/// [`switch::bytes::Seg`] type from the ring to the worker, so the slice is copied into
/// the frame as it is), the validated header, then the frame's first bytes copied from
/// the guest straight into the batch's head.
fn take(out: &mut FrameBatch, p: vring_engine::TxPopped<'_>) -> bool {
    out.push_with(p.token, p.segs, &p.hdr, p.hdr_in_segs, |head| {
        p.copy_frame_head(head)
    })
}

#[allow(clippy::cast_possible_truncation)]
#[cfg(test)]
mod tests {
    //! What `take` relies on, without a ring (a `TxPopped` is the ring's to make): the
    //! popped slice and header go into the batch as they are.
    use super::*;
    use switch::bytes::{Seg, HEAD_COPY, MAX_SEGS};

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 1) as u8).collect()
    }

    #[test]
    fn take_keeps_the_segments_and_copies_the_head_after_the_header() {
        let f = frame(600);
        let hdr = switch::VnetHdr {
            flags: switch::vnet::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..Default::default()
        };
        // VERSION_1 layout: the guest's 12-byte header in its own piece, the frame split.
        let segs = [
            Seg {
                addr: 0x1000,
                len: 12,
            },
            Seg {
                addr: 0x2000,
                len: 100,
            },
            Seg {
                addr: 0x3000,
                len: 500,
            },
        ];
        let mut out = FrameBatch::with_capacity(1);
        assert!(out.push_with(7, &segs, &hdr, true, |h| {
            let n = h.len().min(f.len());
            h[..n].copy_from_slice(&f[..n]);
            n
        }));
        let g = &out.frames()[0];
        assert_eq!(g.token, 7);
        assert_eq!(g.segs(), &segs[..]);
        assert_eq!((g.seg_hdr(), g.len()), (12, 612));
        // The head: our validated header (not the guest's bytes), then the frame's start.
        let mut h12 = [0u8; 12];
        hdr.emit(&mut h12, 12).unwrap();
        assert_eq!(&g.head()[..12], &h12);
        assert_eq!(&g.head()[12..], &f[..HEAD_COPY - 12]);
    }

    #[test]
    fn take_of_a_legacy_frame_counts_the_header_outside_the_segments() {
        let f = frame(60);
        let segs = [Seg {
            addr: 0x4000,
            len: 60,
        }];
        let mut out = FrameBatch::with_capacity(1);
        let hdr = switch::VnetHdr::default();
        assert!(out.push_with(1, &segs, &hdr, false, |h| {
            h[..60].copy_from_slice(&f);
            60
        }));
        let g = &out.frames()[0];
        assert_eq!((g.seg_hdr(), g.len(), g.head().len()), (0, 72, 72));
        assert_eq!(&g.head()[12..], &f[..]);
    }

    #[test]
    fn take_refuses_a_chain_the_batch_cannot_hold() {
        let segs = [Seg {
            addr: 0x1000,
            len: 1,
        }; MAX_SEGS + 1];
        let mut out = FrameBatch::with_capacity(1);
        let hdr = switch::VnetHdr::default();
        assert!(!out.push_with(1, &segs, &hdr, true, |_| 0));
        assert!(out.is_empty(), "refused: the ring drops and completes it");
    }
}
