//! Guest TX on the io_uring workers ([`GuestTx`]): the seam between vring-engine's
//! [`TxRing`] (a TX virtqueue lent out by a vhost-user device) and uring-net's
//! [`GuestTxQueue`] (what a worker services). The ring validates and pops chains; this
//! turns each into the worker's frame — host-address segments plus a private head copy
//! made once, straight into the batch — and hands completions back.

use std::os::fd::RawFd;
use std::sync::Arc;

use uring_net::{FixedTable, FrameBatch, GuestTxQueue, Seg};
use vring_engine::TxRing;

/// A device's TX ring as a worker's guest queue.
pub struct GuestTx {
    ring: TxRing,
    memory: Option<Arc<FixedTable>>,
}

impl GuestTx {
    pub fn new(ring: TxRing, memory: Option<Arc<FixedTable>>) -> GuestTx {
        GuestTx { ring, memory }
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

    fn memory(&self) -> Option<Arc<FixedTable>> {
        self.memory.clone()
    }

    fn flush(&mut self) {
        self.ring.flush();
    }

    fn publish(&mut self) {
        self.ring.publish();
    }
}

/// A popped frame into the worker's batch: its pieces and a copy of its head.
fn take(out: &mut FrameBatch, p: vring_engine::TxPopped<'_>) -> bool {
    let segs = p.segs.iter().map(|s| Seg {
        addr: s.addr,
        len: s.len,
    });
    out.push_with(p.token, segs, &p.hdr, p.hdr_in_segs, |head| {
        p.copy_frame_head(head)
    })
}
