//! One frame toward one destination, adapted to what the destination accepts: passed
//! through, its checksum completed, or segmented in software — handed to the destination
//! as a short list of pieces, without copying the payload.
//!
//! Why here: this is the whole offload decision at egress and it is pure (no I/O, no
//! guest state), so it lives with [`plan`](super::plan) and the segmenter, is covered by
//! the offload fuzz target, and every delivery path (guest RX, tap and AF_PACKET writes,
//! frames the switch originates) runs the same code.

use super::drop::OffloadDrop;
use super::frame::Frame;
use super::plan::{passes_unchanged, plan, Egress, MAX_HDR};
use crate::bytes::Chunk;
use crate::port::Offloads;
use crate::vnet::VnetHdr;

/// Most pieces one outgoing frame is made of: a rewritten head, the source's pieces
/// (at most 32 guest descriptors, a head copy and an egress head), and the two around a
/// checksum patch.
pub const MAX_PARTS: usize = 72;

/// A frame as a short list of pieces, without allocating.
#[derive(Clone, Copy)]
pub struct Parts<'a> {
    v: [Chunk<'a>; MAX_PARTS],
    n: usize,
}

impl Default for Parts<'_> {
    fn default() -> Self {
        Parts::new()
    }
}

impl<'a> Parts<'a> {
    pub fn new() -> Parts<'a> {
        Parts {
            v: [Chunk::EMPTY; MAX_PARTS],
            n: 0,
        }
    }

    /// Appends `c` (empty pieces are skipped); false when full.
    pub fn push(&mut self, c: Chunk<'a>) -> bool {
        if c.is_empty() {
            return true;
        }
        let Some(slot) = self.v.get_mut(self.n) else {
            return false;
        };
        *slot = c;
        self.n += 1;
        true
    }

    pub fn as_slice(&self) -> &[Chunk<'a>] {
        &self.v[..self.n]
    }
}

/// `parts` with the two bytes at `at` replaced by `patch` (a completed checksum), as a new
/// piece list: the payload itself is never copied. None when `at..at + 2` is not inside
/// the frame or the list would not fit.
pub fn patched<'a>(parts: &[Chunk<'a>], at: usize, patch: &'a [u8; 2]) -> Option<Parts<'a>> {
    let mut out = Parts::new();
    let mut off = 0;
    let mut done = 0usize; // bytes of the patch already emitted
    for s in parts {
        let (start, end) = (off, off + s.len());
        off = end;
        // Overlap of [at, at+2) with [start, end).
        let lo = at.max(start);
        let hi = (at + 2).min(end);
        if lo >= hi {
            if !out.push(*s) {
                return None;
            }
            continue;
        }
        let ok = out.push(s.take(lo - start))
            && out.push(Chunk::private(&patch[done..done + (hi - lo)]))
            && out.push(s.skip(hi - start));
        if !ok {
            return None;
        }
        done += hi - lo;
    }
    (done == 2).then_some(out)
}

/// Why [`adapt`] did not hand a frame (or all of its segments) to the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Undelivered<E> {
    /// The frame's offload metadata is inconsistent with it (or it would make more
    /// pieces than [`MAX_PARTS`]): nothing was handed over.
    BadOffload(OffloadDrop),
    /// The destination refused a piece with this error. A segmented frame stops at the
    /// first refused segment: a full destination is not offered the rest.
    Refused(E),
}

/// Hands `parts` (an Ethernet frame as it leaves toward one destination) with header `hdr`
/// to `sink`, adapted to `offloads`, what the destination accepts: pass through, complete
/// the checksum (RFC 1071, virtio 1.2 §5.1.6.2), or segment in software. No payload copy
/// here: the sink copies once (guest RX) or writes the pieces as they are (host ports).
///
/// The pass-through test is inlined into the caller and the rest is a function of its
/// own: the segmentation path needs ~5 KiB of stack (header scratch and piece lists), and
/// a frame that reserves it pays a stack probe on a cold line per call — ≈ 15 % of the
/// worker's time for 64-byte guest→guest frames in the profile, where every frame passes.
#[inline]
pub fn adapt<E>(
    hdr: &VnetHdr,
    parts: &[Chunk<'_>],
    offloads: &Offloads,
    mut sink: impl FnMut(&VnetHdr, &[Chunk<'_>]) -> Result<(), E>,
) -> Result<(), Undelivered<E>> {
    if passes_unchanged(hdr, offloads) {
        return sink(hdr, parts).map_err(Undelivered::Refused);
    }
    adapt_changed(hdr, parts, offloads, sink)
}

/// [`adapt`] for a frame that does not pass unchanged: checksum completion or segmentation.
#[inline(never)]
fn adapt_changed<E>(
    hdr: &VnetHdr,
    parts: &[Chunk<'_>],
    offloads: &Offloads,
    mut sink: impl FnMut(&VnetHdr, &[Chunk<'_>]) -> Result<(), E>,
) -> Result<(), Undelivered<E>> {
    let src = Frame::new(parts);
    match plan(hdr, &src, offloads).map_err(Undelivered::BadOffload)? {
        Egress::PassThrough { hdr } => sink(&hdr, parts).map_err(Undelivered::Refused),
        Egress::CompleteCsum(job) => {
            let v = job.value(&src).to_be_bytes();
            let p = patched(parts, job.at, &v)
                .ok_or(Undelivered::BadOffload(OffloadDrop::CsumPastFrame))?;
            sink(&job.hdr, p.as_slice()).map_err(Undelivered::Refused)
        }
        Egress::Segment(gp) => {
            let mut segs = gp.segments(src).map_err(Undelivered::BadOffload)?;
            let mut h = [0u8; MAX_HDR];
            while let Some(s) = segs.next_into(&mut h) {
                let mut p = Parts::new();
                let mut ok = p.push(Chunk::private(&h[..s.hdr_len]));
                for sl in src.slices(s.payload.clone()) {
                    ok &= p.push(sl);
                }
                if !ok {
                    return Err(Undelivered::BadOffload(OffloadDrop::TooManySegments));
                }
                sink(&s.vnet, p.as_slice()).map_err(Undelivered::Refused)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bytes::concat;

    #[test]
    fn parts_patch() {
        let a = [1u8, 2, 3];
        let b = [4u8, 5, 6, 7];
        let mut p = Parts::new();
        assert!(p.push(Chunk::from(&a[2..])) && p.push(Chunk::from(&b)));
        assert!(p.push(Chunk::EMPTY), "empty pieces are skipped");
        assert_eq!(concat(p.as_slice()), vec![3, 4, 5, 6, 7]);
        assert_eq!(p.as_slice().len(), 2);
        // Patch across the boundary of the two pieces: bytes 0..2 = [3, 4].
        let patch = [9u8, 8];
        let q = patched(p.as_slice(), 0, &patch).unwrap();
        assert_eq!(concat(q.as_slice()), vec![9, 8, 5, 6, 7]);
        let q = patched(p.as_slice(), 3, &patch).unwrap();
        assert_eq!(concat(q.as_slice()), vec![3, 4, 5, 9, 8]);
        assert!(patched(p.as_slice(), 4, &patch).is_none(), "past the end");
    }

    #[test]
    fn parts_refuse_past_capacity() {
        let b = [1u8];
        let mut p = Parts::new();
        for _ in 0..MAX_PARTS {
            assert!(p.push(Chunk::from(&b)));
        }
        assert!(!p.push(Chunk::from(&b)));
        assert_eq!(p.as_slice().len(), MAX_PARTS);
    }
}
