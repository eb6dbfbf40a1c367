//! Frame bytes that another party may write while we read them.
//!
//! A frame on its way through the switch is a list of pieces: private memory (a tap's
//! read buffer, the head copy the decision was made on) and pages of the sending guest's
//! memory, which the guest's vCPUs can rewrite at any moment. A Rust reference (`&[u8]`)
//! promises the bytes behind it do not change while it lives; over guest memory that
//! promise is false, and the compiler may rely on it (re-read a length, fold two loads).
//! rust-vmm draws the same line (vm-memory's `VolatileSlice` instead of slices).
//!
//! [`Chunk`] is the one type for a piece of a frame: a pointer and a length, read only
//! by copying out of it (`ptr::copy_nonoverlapping`, as vm-memory's volatile copies do for
//! bulk data). No method hands out a reference to its bytes. What a decision rests on is
//! copied once into private memory before the decision (see `ARCHITECTURE.md`, "What the
//! guest can still change"); the rest is copied once more into its destination, and a
//! guest that rewrites it only changes its own payload.

use core::fmt;
use core::marker::PhantomData;
use core::ops::Range;

/// A read-only run of bytes that may be shared with a concurrent writer: private memory,
/// or guest memory that stays mapped for `'a`. Copied out, never borrowed.
#[derive(Clone, Copy)]
pub struct Chunk<'a> {
    ptr: *const u8,
    len: usize,
    _life: PhantomData<&'a [u8]>,
}

// SAFETY: a Chunk is a read-only view; its constructors require the bytes to stay mapped
// for 'a, whichever thread reads them (guest memory and our buffers are process-wide).
unsafe impl Send for Chunk<'_> {}
// SAFETY: as for Send: shared Chunks only ever copy out of the memory.
unsafe impl Sync for Chunk<'_> {}

impl Default for Chunk<'_> {
    fn default() -> Self {
        Chunk::EMPTY
    }
}

impl fmt::Debug for Chunk<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Chunk({:p}, {})", self.ptr, self.len)
    }
}

impl<'a> From<&'a [u8]> for Chunk<'a> {
    fn from(b: &'a [u8]) -> Chunk<'a> {
        Chunk::private(b)
    }
}

impl<'a, const N: usize> From<&'a [u8; N]> for Chunk<'a> {
    fn from(b: &'a [u8; N]) -> Chunk<'a> {
        Chunk::private(b)
    }
}

impl<'a> Chunk<'a> {
    /// No bytes.
    pub const EMPTY: Chunk<'static> = Chunk {
        ptr: core::ptr::NonNull::<u8>::dangling().as_ptr(),
        len: 0,
        _life: PhantomData,
    };

    /// Bytes of our own (they cannot change while borrowed).
    #[inline]
    pub fn private(b: &'a [u8]) -> Chunk<'a> {
        Chunk {
            ptr: b.as_ptr(),
            len: b.len(),
            _life: PhantomData,
        }
    }

    /// Bytes at a raw address, typically in a guest's memory.
    ///
    /// # Safety
    /// `ptr..ptr + len` must be mapped and readable for all of `'a`. Its contents may
    /// change at any time (that is the point of this type); its mapping may not.
    #[inline]
    pub unsafe fn shared(ptr: *const u8, len: usize) -> Chunk<'a> {
        Chunk {
            ptr,
            len,
            _life: PhantomData,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The start address (for an iovec handed to the kernel, which copies it once).
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr
    }

    /// The sub-range `r`, or None when it is not inside the chunk.
    #[inline]
    pub fn get(&self, r: Range<usize>) -> Option<Chunk<'a>> {
        if r.start > r.end || r.end > self.len {
            return None;
        }
        Some(Chunk {
            // SAFETY: r.start <= len: still inside (or one past) the same mapping.
            ptr: unsafe { self.ptr.add(r.start) },
            len: r.end - r.start,
            _life: PhantomData,
        })
    }

    /// The bytes from `n` on (empty when `n >= len`).
    #[inline]
    pub fn skip(&self, n: usize) -> Chunk<'a> {
        self.get(n.min(self.len)..self.len).unwrap_or(Chunk::EMPTY)
    }

    /// The first `n` bytes (all of them when `n >= len`).
    #[inline]
    pub fn take(&self, n: usize) -> Chunk<'a> {
        self.get(0..n.min(self.len)).unwrap_or(Chunk::EMPTY)
    }

    /// Copies the first `dst.len()` bytes into `dst`; false (copying nothing) when the
    /// chunk is shorter.
    #[inline]
    pub fn copy_to(&self, dst: &mut [u8]) -> bool {
        if dst.len() > self.len {
            return false;
        }
        // SAFETY: the source is readable for `len >= dst.len()` bytes (constructor
        // contract) and `dst` is our own memory, which no chunk can alias mutably (a
        // private chunk borrows its bytes shared; guest memory is never a Rust `&mut`).
        unsafe { core::ptr::copy_nonoverlapping(self.ptr, dst.as_mut_ptr(), dst.len()) };
        true
    }

    /// Copies all bytes to the raw address `dst`.
    ///
    /// # Safety
    /// `dst..dst + len` must be mapped and writable, and not referenced by any Rust
    /// reference while this runs (a guest's RX buffer the device owns, virtio 1.2 §2.7.4).
    #[inline]
    pub unsafe fn copy_to_raw(&self, dst: *mut u8) {
        // SAFETY: source readable for `len` (constructor contract), destination writable
        // for `len` (caller's contract); distinct buffers (an RX buffer is never a TX
        // buffer the device holds at the same time).
        unsafe { core::ptr::copy_nonoverlapping(self.ptr, dst, self.len) };
    }

    /// Appends the bytes to `out` (tests, slow paths).
    pub fn extend_vec(&self, out: &mut Vec<u8>) {
        let at = out.len();
        out.resize(at + self.len, 0);
        let _ = self.copy_to(&mut out[at..]);
    }

    /// The bytes as a new vector (tests, slow paths).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.extend_vec(&mut v);
        v
    }
}

/// Total length of a list of chunks.
#[inline]
pub fn total_len(parts: &[Chunk<'_>]) -> usize {
    parts.iter().map(Chunk::len).sum()
}

/// The concatenation of `parts` as one vector (tests, slow paths).
pub fn concat(parts: &[Chunk<'_>]) -> Vec<u8> {
    let mut v = Vec::with_capacity(total_len(parts));
    for p in parts {
        p.extend_vec(&mut v);
    }
    v
}

// A frame in flight from a guest's TX ring to the io_uring workers. The device
// (vring-engine) pops it and the workers (uring-net) write it; both depend on this
// crate and not on each other, so the one description of such a frame lives here: pure
// data, nothing that reads or writes memory.

/// Most pieces one guest frame may span: a popped chain with more is refused (counted),
/// and a worker's write of a frame needs at most this many iovecs plus its own two.
/// Linux virtio-net sends at most MAX_SKB_FRAGS + 2 = 19.
pub const MAX_SEGS: usize = 32;

/// Bytes of a guest frame's beginning (its virtio-net header, then the L2–L4 headers)
/// copied into private memory once, at pop time: the switch decides on this copy and
/// every destination gets these bytes from it, never from guest memory again.
pub const HEAD_COPY: usize = 256;

/// One contiguous piece of a guest frame, as a host address inside the guest's mapped
/// memory. Only an address: reading it is the holder's business (as a [`Chunk`], or an
/// iovec handed to the kernel) under the rule that the frame stays mapped until it is
/// completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seg {
    pub addr: u64,
    pub len: u32,
}

/// `segs` without their first `skip` bytes: whole pieces inside the skipped range are
/// left out, the piece it ends in is shortened from the front. Used wherever a frame is
/// read past a prefix (a legacy header, the private head copy).
pub fn skip_segs<I>(segs: I, mut skip: usize) -> impl Iterator<Item = Seg>
where
    I: IntoIterator<Item = Seg>,
{
    segs.into_iter().filter_map(move |sg| {
        let l = sg.len as usize;
        if skip >= l {
            skip -= l;
            return None;
        }
        // skip < l = sg.len, a u32: the rest fits.
        #[allow(clippy::cast_possible_truncation)]
        let len = (l - skip) as u32;
        let s = Seg {
            addr: sg.addr + skip as u64,
            len,
        };
        skip = 0;
        Some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_segs_skips_across_pieces() {
        let segs = [
            Seg {
                addr: 1000,
                len: 12,
            },
            Seg {
                addr: 2000,
                len: 10,
            },
            Seg {
                addr: 3000,
                len: 50,
            },
        ];
        let got: Vec<Seg> = skip_segs(segs, 12 + 14).collect();
        assert_eq!(
            got,
            [Seg {
                addr: 3004,
                len: 46
            }]
        );
        assert_eq!(skip_segs(segs, 0).collect::<Vec<_>>(), segs);
        assert_eq!(
            skip_segs(segs, 5).next().map(|s| (s.addr, s.len)),
            Some((1005, 7))
        );
        assert_eq!(
            skip_segs(segs, 12).next(),
            Some(segs[1]),
            "exactly one piece"
        );
        assert_eq!(skip_segs(segs, 72).count(), 0);
        assert_eq!(skip_segs(segs, usize::MAX).count(), 0);
    }

    #[test]
    fn ranges_are_checked() {
        let b = [1u8, 2, 3, 4, 5];
        let c = Chunk::private(&b);
        assert_eq!(c.len(), 5);
        assert_eq!(c.get(1..3).map(|x| x.to_vec()), Some(vec![2, 3]));
        assert!(c.get(4..6).is_none());
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = c.get(3..2);
        assert!(backwards.is_none());
        assert_eq!(c.skip(3).to_vec(), vec![4, 5]);
        assert!(c.skip(9).is_empty());
        assert_eq!(c.take(2).to_vec(), vec![1, 2]);
        assert_eq!(c.take(99).len(), 5);
        let mut d = [0u8; 3];
        assert!(c.skip(2).copy_to(&mut d));
        assert_eq!(d, [3, 4, 5]);
        assert!(!c.skip(3).copy_to(&mut d), "too short: nothing copied");
        assert_eq!(concat(&[c.take(1), Chunk::EMPTY, c.skip(4)]), vec![1, 5]);
        assert!(Chunk::default().is_empty());
    }

    #[test]
    fn raw_copy_writes_every_byte() {
        let src = [7u8; 9];
        let mut dst = [0u8; 9];
        // SAFETY: `dst` is ours, 9 bytes, and not borrowed during the copy.
        unsafe { Chunk::from(&src).copy_to_raw(dst.as_mut_ptr()) };
        assert_eq!(dst, src);
    }
}
