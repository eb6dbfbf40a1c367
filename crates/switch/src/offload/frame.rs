//! A read-only frame that may be split over several pieces (guest descriptors, a tap
//! read buffer plus its continuation). Offsets are into the logical concatenation. The
//! pieces are [`Chunk`]s: guest memory is copied out of, never borrowed.
//!
//! Why: guest→guest must stay one copy and guest→tap zero copies, so the segmenter never
//! linearises the source; it works with ranges of this view, and callers turn ranges
//! into iovecs ([`Frame::slices`]) or copy them straight into the destination.

use super::csum::Csum;
use crate::bytes::Chunk;
use core::ops::Range;

/// The source frame: Ethernet header onward (no virtio-net header), in one or more parts.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    parts: &'a [Chunk<'a>],
    len: usize,
}

impl<'a> Frame<'a> {
    /// A frame made of `parts` in order. Empty parts are allowed.
    pub fn new(parts: &'a [Chunk<'a>]) -> Frame<'a> {
        Frame {
            parts,
            len: parts.iter().map(|p| p.len()).sum(),
        }
    }

    /// A frame in one piece: `Frame::single(core::slice::from_ref(&chunk))`.
    pub fn single(part: &'a [Chunk<'a>; 1]) -> Frame<'a> {
        Frame::new(part)
    }

    /// The pieces, in order.
    pub fn parts(&self) -> &'a [Chunk<'a>] {
        self.parts
    }

    /// Total length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sub-slices that make up `range`, in order (empty pieces skipped). Yields
    /// nothing past the end of the frame; callers check ranges against [`Frame::len`].
    pub fn slices(&self, range: Range<usize>) -> Slices<'a> {
        Slices {
            parts: self.parts,
            idx: 0,
            base: 0,
            start: range.start,
            end: range.end.min(self.len),
        }
    }

    /// Copies `dst.len()` bytes starting at `off` into `dst`. Returns false (and copies
    /// nothing useful) when that range is not inside the frame.
    pub fn copy_to(&self, off: usize, dst: &mut [u8]) -> bool {
        let Some(end) = off.checked_add(dst.len()) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        let mut at = 0;
        for s in self.slices(off..end) {
            if !s.copy_to(&mut dst[at..at + s.len()]) {
                return false;
            }
            at += s.len();
        }
        at == dst.len()
    }

    /// Adds the bytes of `range` to a running checksum, reading in place.
    pub fn csum(&self, range: Range<usize>, acc: &mut Csum) {
        for s in self.slices(range) {
            acc.add_chunk(s);
        }
    }
}

/// Iterator over the pieces of a frame range, see [`Frame::slices`].
#[derive(Debug, Clone)]
pub struct Slices<'a> {
    parts: &'a [Chunk<'a>],
    idx: usize,
    /// Frame offset of `parts[idx]`.
    base: usize,
    start: usize,
    end: usize,
}

impl<'a> Iterator for Slices<'a> {
    type Item = Chunk<'a>;

    fn next(&mut self) -> Option<Chunk<'a>> {
        while self.start < self.end {
            let p = *self.parts.get(self.idx)?;
            let p_end = self.base + p.len();
            if self.start >= p_end {
                self.base = p_end;
                self.idx += 1;
                continue;
            }
            let lo = self.start - self.base;
            let hi = self.end.min(p_end) - self.base;
            self.start = self.base + hi;
            return p.get(lo..hi);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_and_copy_across_parts() {
        let a: &[u8] = &[0, 1, 2];
        let b: &[u8] = &[];
        let c: &[u8] = &[3, 4, 5, 6];
        let parts = [a, b, c].map(Chunk::from);
        let f = Frame::new(&parts);
        assert_eq!(f.len(), 7);
        let got: Vec<Vec<u8>> = f.slices(1..5).map(|c| c.to_vec()).collect();
        assert_eq!(got, vec![vec![1u8, 2], vec![3, 4]]);
        let mut d = [0u8; 4];
        assert!(f.copy_to(2, &mut d));
        assert_eq!(d, [2, 3, 4, 5]);
        assert!(!f.copy_to(4, &mut d));
        assert!(!f.copy_to(usize::MAX, &mut d));
        assert_eq!(
            f.slices(5..100)
                .flat_map(|c| c.to_vec())
                .collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert_eq!(f.slices(9..12).count(), 0);
        let mut s = Csum::new();
        f.csum(0..7, &mut s);
        assert_eq!(
            s.finish(),
            super::super::csum::checksum(&[0, 1, 2, 3, 4, 5, 6])
        );
    }
}
