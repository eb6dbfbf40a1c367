//! The seam for guest (vhost-user) TX queues.
//!
//! A vhost-user port becomes one more queue kind in a worker: the worker waits for the
//! queue's kick eventfd inside its own ring (a Read of the eventfd, re-armed after each
//! kick, so a kick costs no extra syscall), pops frames as *host addresses* of guest
//! buffers, lets the switch decide from a small copy of the headers, and writes the frame
//! to tap/AF_PACKET destinations straight from guest memory. When the guest's memory is
//! registered ([`crate::fixed::FixedTable`]) the write is WriteFixed/WritevFixed; otherwise
//! plain writev (counted as `tx_fallback`). A frame is completed — its descriptor goes back
//! to the used ring (virtio 1.2 §2.7.8) — only when every write reading it has finished.
//!
//! The vring engine implements [`GuestTxQueue`] on its virtqueue; this crate's tests
//! implement it on memfd "guest memory".

use std::os::fd::RawFd;
use std::sync::Arc;

use crate::fixed::FixedTable;

/// Most descriptors one frame may span (Linux virtio-net sends ≤ MAX_SKB_FRAGS + 2 = 19).
pub const MAX_SEGS: usize = 32;
/// Header bytes copied for the decision: vnet header + L2 + L3/L4 headers. Only these are
/// copied; the payload never is.
pub const HEAD_COPY: usize = 256;

/// One contiguous piece of a frame in guest memory, as a host address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seg {
    pub addr: u64,
    pub len: u32,
}

/// A frame a guest queued for transmission: its segments (the first starts with the
/// 12-byte virtio_net_hdr, virtio 1.2 §5.1.6) and a copy of its first bytes.
#[derive(Clone)]
pub struct GuestFrame {
    /// Opaque to the worker; handed back to [`GuestTxQueue::complete`].
    pub token: u64,
    segs: [Seg; MAX_SEGS],
    nsegs: u8,
    head: [u8; HEAD_COPY],
    head_len: u16,
    len: u32,
}

impl GuestFrame {
    /// Builds a frame from its segments and a copy of its first bytes (`head`, at most
    /// [`HEAD_COPY`] used). Returns `None` for a chain with no or too many segments or a
    /// total length that overflows: the caller counts and drops it.
    pub fn new(token: u64, segs: &[Seg], head: &[u8]) -> Option<GuestFrame> {
        if segs.is_empty() || segs.len() > MAX_SEGS {
            return None;
        }
        let len = segs
            .iter()
            .try_fold(0u32, |acc, s| acc.checked_add(s.len))?;
        let mut f = GuestFrame {
            token,
            segs: [Seg::default(); MAX_SEGS],
            nsegs: segs.len() as u8,
            head: [0; HEAD_COPY],
            head_len: 0,
            len,
        };
        f.segs[..segs.len()].copy_from_slice(segs);
        let n = head.len().min(HEAD_COPY).min(len as usize);
        f.head[..n].copy_from_slice(&head[..n]);
        f.head_len = n as u16;
        Some(f)
    }

    pub fn segs(&self) -> &[Seg] {
        &self.segs[..self.nsegs as usize]
    }

    /// The copied first bytes (vnet header first).
    pub fn head(&self) -> &[u8] {
        &self.head[..self.head_len as usize]
    }

    /// Total length including the vnet header.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A guest TX queue driven by a worker.
///
/// Contract: the host addresses in a popped frame's segments stay mapped and readable until
/// [`complete`](GuestTxQueue::complete) is called for its token (the descriptor is still
/// owned by the device, virtio 1.2 §2.7.4), so the worker may write or copy from them.
pub trait GuestTxQueue: Send {
    /// The queue's kick eventfd (the guest writes it when it adds buffers).
    fn kick_fd(&self) -> RawFd;
    /// Pops at most `max` frames into `out`. Chains that are malformed are the
    /// implementation's to drop and complete; they never reach `out`.
    fn pop(&mut self, max: usize, out: &mut Vec<GuestFrame>);
    /// Every write of the frame `token` finished (or it was dropped): return its
    /// descriptor chain to the guest.
    fn complete(&mut self, token: u64);
    /// The guest's memory as registered fixed buffers, when registration succeeded.
    fn memory(&self) -> Option<Arc<FixedTable>>;
}

/// Why a guest RX queue did not take a frame (counted as `drop_dest_full`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest RX queue full or not ready")]
pub struct RxFull;

/// A guest's RX side, shared by all workers: any worker may deliver into it, so an
/// implementation writes the frame under the destination queue's own lock (uncontended in
/// the common case, since flows hash to workers). This is the one copy of a frame that
/// goes to a guest: from the source's buffers (a tap/AF_PACKET rx buffer or the sending
/// guest's memory) straight into the destination's RX buffers.
///
/// The vring engine's `NetDevice::deliver(queue_pair, hdr, parts)` / `flush_rx` have
/// exactly this shape; the daemon adapts one to the other.
pub trait GuestRx: Send + Sync {
    /// Copies `parts` (the Ethernet frame, in order) with header `hdr` into one RX buffer
    /// chain, adapted to `offloads` — what the guest accepts, as the worker's batch view of
    /// the switch says (so the sink needs no view of its own). Must not block.
    fn deliver(
        &self,
        hdr: &switch::VnetHdr,
        parts: &[&[u8]],
        offloads: &switch::Offloads,
    ) -> Result<(), RxFull>;
    /// End of a worker batch that delivered at least one frame: signal the guest once
    /// (honouring EVENT_IDX, virtio 1.2 §2.7.10).
    fn flush(&self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_bounds_are_checked() {
        assert!(GuestFrame::new(1, &[], &[]).is_none());
        let many = [Seg { addr: 0, len: 1 }; MAX_SEGS + 1];
        assert!(GuestFrame::new(1, &many, &[]).is_none());
        let big = [Seg {
            addr: 0,
            len: u32::MAX,
        }; 2];
        assert!(GuestFrame::new(1, &big, &[]).is_none());
        let f = GuestFrame::new(
            7,
            &[Seg {
                addr: 4096,
                len: 10,
            }],
            &[1u8; 300],
        )
        .unwrap();
        assert_eq!(f.head().len(), 10, "never more head than frame");
        assert_eq!(f.len(), 10);
        assert_eq!(f.segs().len(), 1);
    }
}
