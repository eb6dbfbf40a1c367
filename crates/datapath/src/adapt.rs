//! Offload adaptation of one outgoing frame (`switch::offload`): pass through, complete
//! the checksum, or segment in software, as borrowed slices without copying the payload.
//! Shared by guest RX ([`crate::GuestSink`]) and switch-originated frames
//! ([`crate::Glue::inject`]).

use switch::offload::{passes_unchanged, plan, Egress as Offload, Frame, MAX_HDR};
use switch::{Offloads, VnetHdr};

/// Most slices one outgoing frame is made of (rewritten head + source pieces + the two
/// around a checksum patch).
const MAX_PARTS: usize = 72;

/// A frame as a short list of borrowed slices, without allocating.
pub(crate) struct Parts<'a> {
    v: [&'a [u8]; MAX_PARTS],
    n: usize,
}

impl<'a> Parts<'a> {
    fn new() -> Parts<'a> {
        Parts {
            v: [&[]; MAX_PARTS],
            n: 0,
        }
    }

    /// Appends `s` (empty slices are skipped); false when full.
    fn push(&mut self, s: &'a [u8]) -> bool {
        if s.is_empty() {
            return true;
        }
        if self.n == MAX_PARTS {
            return false;
        }
        self.v[self.n] = s;
        self.n += 1;
        true
    }

    fn as_slice(&self) -> &[&'a [u8]] {
        &self.v[..self.n]
    }
}

/// `parts` with the two bytes at `at` replaced by `patch` (a completed checksum), as a new
/// slice list: the payload itself is never copied.
pub(crate) fn patched<'a>(parts: &[&'a [u8]], at: usize, patch: &'a [u8; 2]) -> Option<Parts<'a>> {
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
            if !out.push(s) {
                return None;
            }
            continue;
        }
        if !out.push(&s[..lo - start]) {
            return None;
        }
        if !out.push(&patch[done..done + (hi - lo)]) {
            return None;
        }
        done += hi - lo;
        if !out.push(&s[hi - start..]) {
            return None;
        }
    }
    (done == 2).then_some(out)
}

/// Why a frame did not reach a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undelivered {
    /// Offload metadata inconsistent with the frame.
    BadOffload,
    /// No room in the RX queue (or the queue is not ready).
    Full,
    /// A host port but no data plane (shutting down).
    NoPath,
}

/// Hands `parts` (an Ethernet frame as it leaves toward one destination) with header `hdr`
/// to `sink`, adapted to what the destination accepts (`switch::offload`): pass through,
/// complete the checksum, or segment in software. `sink` returns false when the
/// destination had no room. No payload copy here: the sink copies once (guest RX) or
/// writes the slices as they are (host ports).
pub(crate) fn adapt(
    hdr: &VnetHdr,
    parts: &[&[u8]],
    offloads: &Offloads,
    mut sink: impl FnMut(&VnetHdr, &[&[u8]]) -> bool,
) -> Result<(), Undelivered> {
    if passes_unchanged(hdr, offloads) {
        return if sink(hdr, parts) {
            Ok(())
        } else {
            Err(Undelivered::Full)
        };
    }
    let src = Frame::new(parts);
    let ok = match plan(hdr, &src, offloads) {
        Ok(Offload::PassThrough { hdr }) => sink(&hdr, parts),
        Ok(Offload::CompleteCsum(job)) => {
            let v = job.value(&src).to_be_bytes();
            match patched(parts, job.at, &v) {
                Some(p) => sink(&job.hdr, p.as_slice()),
                None => return Err(Undelivered::BadOffload),
            }
        }
        Ok(Offload::Segment(gp)) => {
            let Ok(mut segs) = gp.segments(src) else {
                return Err(Undelivered::BadOffload);
            };
            let mut all = true;
            let mut h = [0u8; MAX_HDR];
            while let Some(s) = segs.next_into(&mut h) {
                let mut p = Parts::new();
                let mut ok = p.push(&h[..s.hdr_len]);
                for sl in src.slices(s.payload.clone()) {
                    ok &= p.push(sl);
                }
                all &= ok && sink(&s.vnet, p.as_slice());
            }
            all
        }
        Err(_) => return Err(Undelivered::BadOffload),
    };
    if ok {
        Ok(())
    } else {
        Err(Undelivered::Full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_patch() {
        let a = [1u8, 2, 3];
        let b = [4u8, 5, 6, 7];
        let mut p = Parts::new();
        assert!(p.push(&a[2..]) && p.push(&b));
        assert_eq!(p.as_slice(), &[&a[2..], &b[..]]);
        // Patch across the boundary of the two slices: bytes 0..2 = [3, 4].
        let patch = [9u8, 8];
        let q = patched(p.as_slice(), 0, &patch).unwrap();
        let flat: Vec<u8> = q
            .as_slice()
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(flat, vec![9, 8, 5, 6, 7]);
        let q = patched(p.as_slice(), 3, &patch).unwrap();
        let flat: Vec<u8> = q
            .as_slice()
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(flat, vec![3, 4, 5, 9, 8]);
        assert!(patched(p.as_slice(), 4, &patch).is_none(), "past the end");
    }
}
