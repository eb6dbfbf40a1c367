//! The seam for guest (vhost-user) TX queues.
//!
//! A vhost-user port becomes one more queue kind in a worker: the worker waits for the
//! queue's kick eventfd inside its own ring (a Read of the eventfd, re-armed after each
//! kick, so a kick costs no extra syscall), pops frames as *host addresses* of guest
//! buffers, lets the switch decide from a small copy of the headers, and writes the frame
//! to tap/AF_PACKET destinations as one writev: our validated header and that copy, then
//! the rest straight from guest memory (counted as `tx_fallback`). Guest memory is never
//! registered or pinned. A frame is completed — its descriptor goes back to the used ring
//! (virtio 1.2 §2.7.8) — only when every write reading it has finished.
//!
//! The vring engine implements [`GuestTxQueue`] on its virtqueue; this crate's tests
//! implement it on memfd "guest memory".

use std::os::fd::RawFd;

use switch::bytes::{Seg, HEAD_COPY, MAX_SEGS};
use switch::vnet::HDR_LEN;

// HDR_LEN is 12: it fits every integer type.
#[allow(clippy::cast_possible_truncation)]
const HDR_LEN_U8: u8 = HDR_LEN as u8;
#[allow(clippy::cast_possible_truncation)]
const HDR_LEN_U32: u32 = HDR_LEN as u32;

/// A frame a guest queued for transmission: its segments in guest memory and a private
/// copy of its first bytes, which always starts with the validated 12-byte virtio_net_hdr
/// (virtio 1.2 §5.1.6). The segments start with the guest's own copy of that header
/// (`seg_hdr() == 12`, the VERSION_1 layout: written to a tap as it is) or, for a driver
/// with the legacy 10-byte header, with the Ethernet frame (`seg_hdr() == 0`).
#[derive(Clone)]
pub struct GuestFrame {
    /// Opaque to the worker; handed back to [`GuestTxQueue::complete`].
    pub token: u64,
    segs: [Seg; MAX_SEGS],
    nsegs: u8,
    seg_hdr: u8,
    head: [u8; HEAD_COPY],
    head_len: u16,
    len: u32,
}

impl GuestFrame {
    /// Builds a frame from its segments and a copy of its first bytes (`head`, at most
    /// [`HEAD_COPY`] used). Returns `None` for a chain with no or too many segments or a
    /// total length that overflows: the caller counts and drops it.
    pub fn new(token: u64, segs: &[Seg], head: &[u8]) -> Option<GuestFrame> {
        let mut f = GuestFrame::empty();
        f.fill(token, segs, head, true).then_some(f)
    }

    /// Like [`new`](Self::new), but the segments hold only the Ethernet frame: `head` is
    /// the 12-byte header followed by the frame's first bytes (a legacy 10-byte header,
    /// normalised by the caller, does not live in guest memory in the 12-byte form).
    pub fn without_hdr_in_segs(token: u64, segs: &[Seg], head: &[u8]) -> Option<GuestFrame> {
        let mut f = GuestFrame::empty();
        f.fill(token, segs, head, false).then_some(f)
    }

    fn empty() -> GuestFrame {
        GuestFrame {
            token: 0,
            segs: [Seg::default(); MAX_SEGS],
            nsegs: 0,
            seg_hdr: HDR_LEN_U8,
            head: [0; HEAD_COPY],
            head_len: 0,
            len: 0,
        }
    }

    /// Overwrites this frame in place (only the bytes it uses: a popped frame is ~800
    /// bytes, and building one per frame and moving it into a batch cost a measurable
    /// share of a 64-byte frame's time). False, leaving the frame unusable, for a chain
    /// with no or too many segments or a length that overflows.
    fn fill(&mut self, token: u64, segs: &[Seg], head: &[u8], hdr_in_segs: bool) -> bool {
        let Ok(nsegs) = u8::try_from(segs.len()) else {
            return false;
        };
        if nsegs == 0 || usize::from(nsegs) > MAX_SEGS {
            return false;
        }
        // Written in place as they are summed (no staging array per frame).
        let mut len = 0u32;
        for (d, &s) in self.segs.iter_mut().zip(segs) {
            *d = s;
            match len.checked_add(s.len) {
                Some(l) => len = l,
                None => return false,
            }
        }
        let len = if hdr_in_segs {
            len
        } else {
            match len.checked_add(HDR_LEN_U32) {
                Some(l) => l,
                None => return false,
            }
        };
        self.token = token;
        self.nsegs = nsegs;
        self.seg_hdr = if hdr_in_segs { HDR_LEN_U8 } else { 0 };
        self.len = len;
        let n = head.len().min(HEAD_COPY).min(len as usize);
        self.head[..n].copy_from_slice(&head[..n]);
        // n <= HEAD_COPY (256).
        self.head_len = u16::try_from(n).unwrap_or(0);
        true
    }

    /// Writes the head of a frame [`fill`](Self::fill)ed without one: `hdr` in the
    /// 12-byte form, then what `copy_frame(out)` copies of the frame's first bytes
    /// straight into the rest (it returns how many).
    fn set_head(&mut self, hdr: &switch::VnetHdr, copy_frame: impl FnOnce(&mut [u8]) -> usize) {
        let _ = hdr.emit(&mut self.head, HDR_LEN);
        let room = (self.len as usize).min(HEAD_COPY).saturating_sub(HDR_LEN);
        let n = copy_frame(&mut self.head[HDR_LEN..HDR_LEN + room]).min(room);
        // HDR_LEN + n <= HEAD_COPY (256).
        self.head_len = u16::try_from(HDR_LEN + n).unwrap_or(0);
    }

    pub fn segs(&self) -> &[Seg] {
        &self.segs[..self.nsegs as usize]
    }

    /// Bytes of virtio_net_hdr at the start of [`segs`](Self::segs): 12 or 0.
    pub fn seg_hdr(&self) -> usize {
        usize::from(self.seg_hdr)
    }

    /// The copied first bytes (vnet header first).
    pub fn head(&self) -> &[u8] {
        &self.head[..self.head_len as usize]
    }

    /// Total length including the (12-byte) vnet header.
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Frames popped in one round, built in place in storage kept across rounds.
#[derive(Default)]
pub struct FrameBatch {
    frames: Vec<GuestFrame>,
    len: usize,
}

impl FrameBatch {
    pub fn with_capacity(n: usize) -> FrameBatch {
        FrameBatch {
            frames: (0..n).map(|_| GuestFrame::empty()).collect(),
            len: 0,
        }
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn frames(&self) -> &[GuestFrame] {
        &self.frames[..self.len]
    }

    /// Appends an already built frame.
    pub fn push_frame(&mut self, f: GuestFrame) {
        if self.len == self.frames.len() {
            self.frames.push(f);
        } else {
            self.frames[self.len] = f;
        }
        self.len += 1;
    }

    /// Appends a frame (see [`GuestFrame::new`] and
    /// [`GuestFrame::without_hdr_in_segs`] for `hdr_in_segs` true and false). False when
    /// the chain is unusable: the caller drops and completes it.
    pub fn push(&mut self, token: u64, segs: &[Seg], head: &[u8], hdr_in_segs: bool) -> bool {
        self.append(|f| f.fill(token, segs, head, hdr_in_segs))
    }

    /// Appends a frame whose head is written in place: `hdr` (the validated header, in
    /// the 12-byte form) and then what `copy_frame` copies of the frame's first bytes into
    /// the slice it is given (returning the count). Otherwise as [`push`](Self::push).
    /// `segs` is the device's pop output as it is (one [`Seg`] type from ring to worker).
    pub fn push_with(
        &mut self,
        token: u64,
        segs: &[Seg],
        hdr: &switch::VnetHdr,
        hdr_in_segs: bool,
        copy_frame: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        self.append(|f| {
            let ok = f.fill(token, segs, &[], hdr_in_segs);
            if ok {
                f.set_head(hdr, copy_frame);
            }
            ok
        })
    }

    /// Builds the next frame in place with `fill`; it counts only if `fill` succeeds.
    fn append(&mut self, fill: impl FnOnce(&mut GuestFrame) -> bool) -> bool {
        if self.len == self.frames.len() {
            self.frames.push(GuestFrame::empty());
        }
        let ok = fill(&mut self.frames[self.len]);
        if ok {
            self.len += 1;
        }
        ok
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
    fn pop(&mut self, max: usize, out: &mut FrameBatch);
    /// [`pop`](GuestTxQueue::pop) while the worker busy-polls: a queue found empty need
    /// not ask the guest for a kick (the worker comes back, and calls
    /// [`arm`](GuestTxQueue::arm) before it stops polling). Default: `pop`.
    fn poll(&mut self, max: usize, out: &mut FrameBatch) {
        self.pop(max, out)
    }
    /// The worker stops polling this queue: ask the guest to kick again. True when frames
    /// arrived meanwhile (pop them now; no kick will come for them). Default: false, for
    /// a queue whose `poll` is `pop`.
    fn arm(&mut self) -> bool {
        false
    }
    /// Every write of the frame `token` finished (or it was dropped): return its
    /// descriptor chain to the guest.
    fn complete(&mut self, token: u64);
    /// End of a worker batch in which frames of this queue were completed: signal the
    /// guest once if it wants it (EVENT_IDX, virtio 1.2 §2.7.10).
    fn flush(&mut self) {}
    /// Mid-batch: make completed descriptors visible to the guest without signalling it
    /// (that is [`flush`](GuestTxQueue::flush)'s, once per batch). Default: nothing.
    fn publish(&mut self) {}
}

/// What became of one frame handed to a guest's RX side: placed, or the reason it was
/// not, counted under that reason (`ctl stats`), never collapsed into "full".
pub type Delivery = Result<(), switch::DropReason>;

/// One frame of a [`GuestRx::deliver_burst`].
#[derive(Clone, Copy)]
pub struct RxFrame<'a> {
    pub hdr: switch::VnetHdr,
    /// The Ethernet frame, in order: private bytes and pieces of the sending guest's
    /// memory, copied out of, never borrowed ([`switch::Chunk`]).
    pub parts: &'a [switch::Chunk<'a>],
    /// Its flow hash ([`crate::flow::flow_hash`]).
    pub flow: u32,
}

/// A guest's RX side, shared by all workers: any worker may deliver into it, so an
/// implementation writes the frame under the destination queue's own lock (uncontended in
/// the common case, since flows hash to workers). This is the one copy of a frame that
/// goes to a guest: from the source's buffers (a tap/AF_PACKET rx buffer or the sending
/// guest's memory) straight into the destination's RX buffers.
///
/// Every source reaches a guest through [`deliver_burst`](Self::deliver_burst): frames
/// from other guests, taps and AF_PACKET ports and the frames the switch originates.
pub trait GuestRx: Send + Sync {
    /// Copies each frame (its `parts` in order, after a header made from `hdr`) into one
    /// RX buffer chain, adapted to `offloads` — what the guest accepts, as the worker's
    /// batch view of the switch says (so the sink needs no view of its own) — and sets
    /// `out[i]` to what became of frame `i`. An implementation visits each destination
    /// queue once for the lot (one lock, one used-index update; see `stage.rs` for why
    /// that matters). `flow` spreads a multiqueue guest's flows over its RX queue pairs,
    /// one flow always on one queue. Must not block.
    fn deliver_burst(
        &self,
        frames: &[RxFrame<'_>],
        offloads: &switch::Offloads,
        out: &mut [Delivery],
    );
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
        assert_eq!(f.seg_hdr(), 12);
        let g = GuestFrame::without_hdr_in_segs(
            8,
            &[Seg {
                addr: 4096,
                len: 60,
            }],
            &[2u8; 100],
        )
        .unwrap();
        assert_eq!((g.seg_hdr(), g.len(), g.head().len()), (0, 72, 72));
    }

    #[test]
    fn push_with_writes_the_header_then_the_copied_head() {
        let hdr = switch::VnetHdr {
            flags: 1,
            gso_type: 0,
            hdr_len: 0,
            gso_size: 0,
            csum_start: 34,
            csum_offset: 6,
            num_buffers: 0,
        };
        let seg = |len| Seg { addr: 4096, len };
        let mut b = FrameBatch::with_capacity(1);
        // 12-byte header + 1500-byte frame in the segments: HEAD_COPY bytes of head, the
        // copier offered exactly the room after the header.
        assert!(b.push_with(1, &[seg(1512)], &hdr, true, |out| {
            assert_eq!(out.len(), HEAD_COPY - 12);
            out.fill(0xab);
            out.len()
        }));
        // A short frame without the header in its segments: head = 12 + frame, and a
        // copier that claims more than it was given is clamped.
        assert!(b.push_with(2, &[seg(50)], &hdr, false, |out| {
            assert_eq!(out.len(), 50);
            out.fill(0xcd);
            usize::MAX
        }));
        // Unusable chains are refused as by `push`.
        assert!(!b.push_with(3, &[], &hdr, true, |_| 0));
        assert_eq!(b.len(), 2);
        let mut want = [0u8; 12];
        hdr.emit(&mut want, 12).unwrap();
        let f = &b.frames()[0];
        assert_eq!((f.token, f.len(), f.head().len()), (1, 1512, HEAD_COPY));
        assert_eq!(&f.head()[..12], &want);
        assert!(f.head()[12..].iter().all(|&x| x == 0xab));
        let g = &b.frames()[1];
        assert_eq!((g.seg_hdr(), g.len(), g.head().len()), (0, 62, 62));
        assert_eq!(switch::VnetHdr::parse(g.head(), 12), Ok(hdr));
        assert!(g.head()[12..].iter().all(|&x| x == 0xcd));
    }
}
