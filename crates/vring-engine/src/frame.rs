//! The TX frame handed to the daemon's [`crate::Forwarder`]: guest memory, not a copy.

use vm_memory::VolatileSlice;

/// Bytes of the frame start copied out of guest memory for header parsing: enough for
/// Ethernet + two tags + IPv6 with extension headers + TCP with options.
pub const HEAD_COPY: usize = 256;

/// A validated TX frame (virtio-net header already removed).
///
/// `segments` point straight into the sending guest's memory: the frame is copied exactly
/// once, by whoever delivers it (another guest's RX buffers, a tap write). The guest can
/// still scribble on those bytes while we hold them (a driver bug, §2.7.4: an available
/// buffer belongs to the device), so anything the switch decides on is taken from
/// [`TxFrame::head`], a private copy taken once.
pub struct TxFrame<'a> {
    segments: &'a [&'a [u8]],
    len: usize,
    head: [u8; HEAD_COPY],
    head_len: usize,
}

impl<'a> TxFrame<'a> {
    /// Builds a frame from its segments; copies the head.
    pub fn new(segments: &'a [&'a [u8]]) -> TxFrame<'a> {
        let len = segments.iter().map(|s| s.len()).sum();
        let mut head = [0u8; HEAD_COPY];
        let mut head_len = 0;
        for s in segments {
            if head_len == HEAD_COPY {
                break;
            }
            let n = s.len().min(HEAD_COPY - head_len);
            head[head_len..head_len + n].copy_from_slice(&s[..n]);
            head_len += n;
        }
        TxFrame {
            segments,
            len,
            head,
            head_len,
        }
    }

    /// The frame as guest-memory slices, in order; their lengths add up to [`len`](Self::len).
    pub fn segments(&self) -> &'a [&'a [u8]] {
        self.segments
    }

    /// Total frame length (Ethernet header to end of payload).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A private copy of the first `min(len, 256)` bytes, stable against guest writes.
    pub fn head(&self) -> &[u8] {
        &self.head[..self.head_len]
    }

    /// Copies the whole frame into `out` (tests, slow paths). Returns the bytes copied.
    pub fn copy_to(&self, out: &mut Vec<u8>) -> usize {
        for s in self.segments {
            out.extend_from_slice(s);
        }
        self.len
    }
}

/// Views a guest-memory slice as bytes for the lifetime of the memory snapshot.
pub(crate) fn as_bytes<'m>(s: &VolatileSlice<'m, ()>) -> &'m [u8] {
    let ptr = s.ptr_guard().as_ptr();
    // SAFETY: `s` was produced by `GuestMemoryMmap::get_slices` for a range checked to lie
    // inside one mapped region; the mapping stays alive for 'm because the caller holds the
    // memory snapshot (`GuestMemoryLoadGuard`) the slice borrows from. The bytes are shared
    // with the guest, which may change them concurrently only by violating the virtio
    // ownership rules; such writes change the data we read, never its bounds, and every
    // decision is made on the private copy in `TxFrame::head`.
    unsafe { std::slice::from_raw_parts(ptr, s.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_copies_across_segments() {
        let a = [1u8; 200];
        let b = [2u8; 100];
        let segs: [&[u8]; 2] = [&a, &b];
        let f = TxFrame::new(&segs);
        assert_eq!(f.len(), 300);
        assert_eq!(f.head().len(), HEAD_COPY);
        assert_eq!(f.head()[199], 1);
        assert_eq!(f.head()[200], 2);
        let mut v = Vec::new();
        f.copy_to(&mut v);
        assert_eq!(v.len(), 300);
        let short: [&[u8]; 1] = [&a[..20]];
        assert_eq!(TxFrame::new(&short).head().len(), 20);
    }
}
