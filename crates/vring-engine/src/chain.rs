//! Validating walk of one split-virtqueue descriptor chain (virtio 1.2 §2.7.5 "The Virtqueue
//! Descriptor Table", §2.7.5.3 "Indirect Descriptors").
//!
//! virtio-queue's own `DescriptorChain` iterator simply *ends* on a bad descriptor, which
//! is indistinguishable from a short chain. Every rule here instead produces a
//! [`ChainError`] that the caller counts, so a hostile driver's chain is dropped with a
//! reason and never read or written past guest memory:
//! - head or `next` index ≥ queue size (or ≥ indirect table length);
//! - more descriptors than the table holds (a loop);
//! - more descriptors than the queue size in the whole chain, direct and indirect ones
//!   together (§2.7.5.3.1: "A driver MUST NOT create a descriptor chain longer than the
//!   Queue Size of the device"): an indirect table may hold up to 65 535 descriptors
//!   whatever the ring's size, so without this bound one chain would cost a walk of 65 535
//!   descriptors on a 256-entry ring;
//! - a zero-length buffer in a TX (device-readable only) chain: it carries nothing, and a
//!   chain of them is pure work for the device;
//! - `addr + len` overflowing, or the total chain length overflowing u32 (§2.7.5.2: a chain
//!   is at most 2^32 bytes);
//! - a buffer not entirely inside guest memory;
//! - a device-readable descriptor after a device-writable one (§2.7.4.2), or a direction the
//!   queue does not allow (write-only on TX, read-only on RX);
//! - INDIRECT when not negotiated, not on the head, with NEXT set, nested in an indirect
//!   table, or with a table length that is zero or not a multiple of 16 (§2.7.5.3.1).

use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    MemoryRegionAddress, VolatileSlice,
};

/// Guest memory as mapped by vhost-user-backend (no dirty-page bitmap: we do not offer
/// LOG_ALL / live migration logging).
pub type Mem = GuestMemoryMmap<()>;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const F_INDIRECT: u16 = 4;
const DESC_SIZE: u64 = 16;
/// [`DESC_SIZE`] as a length in bytes.
// 16 fits every usize.
#[allow(clippy::cast_possible_truncation)]
const DESC_LEN: usize = DESC_SIZE as usize;

/// Why a chain was refused. Each variant has its own drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor index out of range")]
    BadIndex,
    #[error("chain loops or is longer than its table")]
    Loop,
    #[error("buffer address or chain length overflows")]
    Overflow,
    #[error("buffer outside guest memory")]
    OutOfMemory,
    #[error("buffer direction not allowed on this queue")]
    WrongDirection,
    #[error("device-readable descriptor after a device-writable one")]
    BadOrder,
    #[error("indirect descriptor not negotiated, not at the head, or with NEXT")]
    BadIndirect,
    #[error("indirect table nested in an indirect table")]
    NestedIndirect,
    #[error("indirect table length zero, not a multiple of 16, or too long")]
    BadIndirectTable,
    #[error("chain has more descriptors than the queue size")]
    TooLong,
    #[error("zero-length buffer in a TX chain")]
    ZeroLength,
}

impl ChainError {
    /// Every variant, for counters and reports.
    pub const ALL: [ChainError; 11] = [
        ChainError::BadIndex,
        ChainError::Loop,
        ChainError::Overflow,
        ChainError::OutOfMemory,
        ChainError::WrongDirection,
        ChainError::BadOrder,
        ChainError::BadIndirect,
        ChainError::NestedIndirect,
        ChainError::BadIndirectTable,
        ChainError::TooLong,
        ChainError::ZeroLength,
    ];

    /// Dense index for counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Which buffers the queue's chains may contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// TX: device-readable only.
    ReadOnly,
    /// RX: device-writable only.
    WriteOnly,
    /// Control queue: readable command followed by writable ack.
    ReadThenWrite,
}

/// Where a descriptor table lives and how the queue was negotiated.
#[derive(Debug, Clone, Copy)]
pub struct TableInfo {
    pub desc_table: GuestAddress,
    pub queue_size: u16,
    pub indirect_allowed: bool,
}

impl TableInfo {
    /// The whole descriptor table translated once (for [`single_descriptor`] and
    /// prefetching); `None` when it is not inside one memory region.
    pub(crate) fn translate<'m>(&self, mem: &'m Mem) -> Option<VolatileSlice<'m, ()>> {
        mem.get_slice(self.desc_table, DESC_LEN * usize::from(self.queue_size))
            .ok()
    }
}

/// A chain's buffers: inline up to 4 (a TX frame is header + data, an RX buffer one
/// descriptor), so walking a chain per frame allocates nothing in the common case.
pub type Slices<'m> = smallvec::SmallVec<[VolatileSlice<'m, ()>; 4]>;

/// One validated chain: its buffers as host-mapped guest memory, split at region
/// boundaries, readable ones first.
#[derive(Default)]
pub struct Chain<'m> {
    pub head: u16,
    pub readable: Slices<'m>,
    pub writable: Slices<'m>,
    pub read_len: u32,
    pub write_len: u32,
}

impl<'m> Chain<'m> {
    pub(crate) fn clear(&mut self, head: u16) {
        self.head = head;
        self.readable.clear();
        self.writable.clear();
        self.read_len = 0;
        self.write_len = 0;
    }

    /// The common case without the walk: `head` is one plain descriptor (no NEXT, no
    /// INDIRECT) of the queue's only direction, non-empty, inside one memory region — the
    /// same checks [`walk`](Self::walk) makes for such a chain. `desc` is the queue's
    /// descriptor table, translated once by the caller. Returns false, leaving the chain
    /// to be walked (and any fault reported) by `walk`, for anything else.
    pub(crate) fn try_single(
        &mut self,
        regions: &Regions<'m>,
        desc: &VolatileSlice<'_, ()>,
        head: u16,
        dir: Direction,
    ) -> bool {
        let Some(s) = single_descriptor(regions, desc, head, dir) else {
            return false;
        };
        self.clear(head);
        // The slice is one descriptor's buffer, whose length is a u32.
        #[allow(clippy::cast_possible_truncation)]
        let len = s.len() as u32;
        if dir == Direction::WriteOnly {
            self.writable.push(s);
            self.write_len = len;
        } else {
            self.readable.push(s);
            self.read_len = len;
        }
        true
    }

    /// Walks the chain starting at `head`, replacing this chain's contents.
    pub fn walk(
        &mut self,
        mem: &'m Mem,
        table: TableInfo,
        head: u16,
        dir: Direction,
    ) -> Result<(), ChainError> {
        self.clear(head);
        if head >= table.queue_size {
            return Err(ChainError::BadIndex);
        }
        let mut base = table.desc_table;
        let mut limit = table.queue_size;
        let mut idx = head;
        let mut in_indirect = false;
        let mut seen: u32 = 0;
        let mut first = true;
        // Buffer descriptors of the whole chain (the indirect descriptor that points to a
        // table is not a buffer): at most the queue size, §2.7.5.3.1.
        let mut buffers: u32 = 0;
        loop {
            seen += 1;
            if seen > u32::from(limit) {
                return Err(ChainError::Loop);
            }
            if in_indirect {
                buffers += 1;
                if buffers > u32::from(table.queue_size) {
                    return Err(ChainError::TooLong);
                }
            }
            let d = read_desc(mem, base, idx)?;
            if d.flags & F_INDIRECT != 0 {
                if in_indirect {
                    return Err(ChainError::NestedIndirect);
                }
                if !table.indirect_allowed || !first || d.flags & F_NEXT != 0 {
                    return Err(ChainError::BadIndirect);
                }
                if d.len == 0 || u64::from(d.len) % DESC_SIZE != 0 {
                    return Err(ChainError::BadIndirectTable);
                }
                let n = u64::from(d.len) / DESC_SIZE;
                let n = u16::try_from(n).map_err(|_| ChainError::BadIndirectTable)?;
                if d.addr.checked_add(u64::from(d.len)).is_none() {
                    return Err(ChainError::Overflow);
                }
                if !mem.check_range(GuestAddress(d.addr), d.len as usize) {
                    return Err(ChainError::OutOfMemory);
                }
                base = GuestAddress(d.addr);
                limit = n;
                idx = 0;
                seen = 0;
                in_indirect = true;
                first = false;
                continue;
            }
            first = false;
            let write = d.flags & F_WRITE != 0;
            match (dir, write) {
                (Direction::ReadOnly, true) | (Direction::WriteOnly, false) => {
                    return Err(ChainError::WrongDirection)
                }
                _ => {}
            }
            if !write && !self.writable.is_empty() {
                return Err(ChainError::BadOrder);
            }
            self.push(mem, d.addr, d.len, write, dir)?;
            if d.flags & F_NEXT == 0 {
                return Ok(());
            }
            if d.next >= limit {
                return Err(ChainError::BadIndex);
            }
            idx = d.next;
        }
    }

    /// Adds one buffer of `len` bytes at `addr` (checked: overflow, inside memory, empty
    /// TX buffers); direction and order are the caller's to check.
    pub(crate) fn push(
        &mut self,
        mem: &'m Mem,
        addr: u64,
        len: u32,
        write: bool,
        dir: Direction,
    ) -> Result<(), ChainError> {
        if addr.checked_add(u64::from(len)).is_none() {
            return Err(ChainError::Overflow);
        }
        let total = if write {
            &mut self.write_len
        } else {
            &mut self.read_len
        };
        *total = total.checked_add(len).ok_or(ChainError::Overflow)?;
        if self.read_len.checked_add(self.write_len).is_none() {
            return Err(ChainError::Overflow);
        }
        if len == 0 {
            // A TX chain's buffers all carry frame bytes; an empty one is refused. (RX and
            // control-queue chains may hold empty buffers: the device writes nothing
            // there, which costs nothing.)
            if !write && dir == Direction::ReadOnly {
                return Err(ChainError::ZeroLength);
            }
            return Ok(());
        }
        let list = if write {
            &mut self.writable
        } else {
            &mut self.readable
        };
        // Fast path: the buffer lies inside one region (always, for a sane driver): one
        // region lookup, no slice iterator.
        if let Some(sl) = in_one_region(mem, addr, len as usize) {
            list.push(sl);
            return Ok(());
        }
        let mut got = 0usize;
        for s in GuestMemoryBackend::get_slices(mem, GuestAddress(addr), len as usize) {
            let s = s.map_err(|_| ChainError::OutOfMemory)?;
            got += s.len();
            list.push(s);
        }
        if got != len as usize {
            return Err(ChainError::OutOfMemory);
        }
        Ok(())
    }
}

/// The buffer of descriptor `head` of table `desc` when it is a whole chain by itself:
/// no NEXT, no INDIRECT, the direction `dir` allows (ReadThenWrite never: a control
/// command has two parts), non-empty, no overflow, inside one memory region. These are
/// the checks [`Chain::walk`] makes for such a chain; `None` means "walk it".
pub(crate) fn single_descriptor<'m>(
    regions: &Regions<'m>,
    desc: &VolatileSlice<'_, ()>,
    head: u16,
    dir: Direction,
) -> Option<VolatileSlice<'m, ()>> {
    let want = match dir {
        Direction::ReadOnly => 0,
        Direction::WriteOnly => F_WRITE,
        Direction::ReadThenWrite => return None,
    };
    let d = load_desc(desc, usize::from(head) * DESC_LEN)?;
    if d.flags != want || d.len == 0 {
        return None;
    }
    d.addr.checked_add(u64::from(d.len))?;
    regions.slice(d.addr, d.len as usize)
}

/// `len` bytes at guest address `addr` when they lie inside one region.
#[inline]
pub(crate) fn in_one_region(mem: &Mem, addr: u64, len: usize) -> Option<VolatileSlice<'_, ()>> {
    let r = mem.find_region(GuestAddress(addr))?;
    let off = addr - r.start_addr().raw_value();
    if off.checked_add(len as u64)? > r.len() {
        return None;
    }
    r.get_slice(MemoryRegionAddress(off), len).ok()
}

/// Guest memory's regions as a flat array (start, length, host address), read once per
/// burst, for the per-frame lookups of the fast paths ([`single_descriptor`],
/// [`crate::split::prefetch_chains`]).
///
/// Why: `find_region` is a binary search through an `Arc` per region, and a burst
/// looks up two or more buffers per frame; a scan of one or two inline entries is a few
/// compares. Memory with more regions than fit here falls back to `find_region`.
pub(crate) struct Regions<'m> {
    mem: &'m Mem,
    r: [(u64, u64, *mut u8); REGIONS_INLINE],
    n: usize,
}

const REGIONS_INLINE: usize = 4;

impl<'m> Regions<'m> {
    pub(crate) fn new(mem: &'m Mem) -> Regions<'m> {
        let mut r = [(0, 0, std::ptr::null_mut()); REGIONS_INLINE];
        let mut n = 0;
        for reg in mem.iter() {
            let Ok(host) = reg.get_host_address(MemoryRegionAddress(0)) else {
                n = 0;
                break;
            };
            if n == REGIONS_INLINE {
                n = 0;
                break;
            }
            r[n] = (reg.start_addr().raw_value(), reg.len(), host);
            n += 1;
        }
        Regions { mem, r, n }
    }

    /// `len` bytes at guest address `addr` when they lie inside one region (as
    /// [`in_one_region`]).
    #[inline]
    pub(crate) fn slice(&self, addr: u64, len: usize) -> Option<VolatileSlice<'m, ()>> {
        if self.n == 0 {
            return in_one_region(self.mem, addr, len);
        }
        for &(start, size, host) in &self.r[..self.n] {
            let off = addr.wrapping_sub(start);
            if addr >= start && off < size {
                if size - off < len as u64 {
                    return None;
                }
                let off = usize::try_from(off).ok()?;
                // SAFETY: `host..host+size` is the region's mapping, alive as long as the
                // memory snapshot `'m`; `off + len <= size` was checked above.
                return Some(unsafe { VolatileSlice::new(host.add(off), len) });
            }
        }
        None
    }

    /// The host address of guest address `addr`, if any region holds it (for hints).
    #[inline]
    pub(crate) fn host(&self, addr: u64) -> Option<*const u8> {
        self.slice(addr, 1).map(|s| s.ptr_guard().as_ptr())
    }
}

/// One split-ring descriptor (§2.7.5), as read from guest memory.
pub(crate) struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// The descriptor at byte `off` of a translated table: two aligned 8-byte loads
/// (descriptor tables are 16-byte aligned, §2.7.5). `None` past the table's end or at an
/// unaligned offset.
#[inline]
pub(crate) fn load_desc(table: &VolatileSlice<'_, ()>, off: usize) -> Option<RawDesc> {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    if off.checked_add(16)? > table.len() {
        return None;
    }
    // Plain atomic loads, not `VolatileSlice::load`: that one is a non-inlined trait
    // call with its own checks per load (see crate::split::Rings).
    let p = table.ptr_guard().as_ptr().cast_mut().wrapping_add(off);
    if p as usize % 8 != 0 {
        return None;
    }
    // SAFETY: `p..p+16` lies inside `table` (checked above), which is guest memory
    // mapped (read-write, as all guest RAM) for the slice's lifetime, and is 8-aligned
    // (checked). The guest may write it concurrently, hence atomic loads, as
    // vm-memory's own `load` does.
    let (lo, hi) = unsafe {
        (
            u64::from_le(AtomicU64::from_ptr(p.cast()).load(Relaxed)),
            u64::from_le(AtomicU64::from_ptr(p.add(8).cast()).load(Relaxed)),
        )
    };
    Some(RawDesc {
        addr: lo,
        len: (hi & 0xffff_ffff) as u32,
        flags: ((hi >> 32) & 0xffff) as u16,
        next: (hi >> 48) as u16,
    })
}

/// Descriptor `idx` of the table at `base`, anywhere in guest memory (aligned or not).
/// Packed-ring tables share the 16-byte size but not the layout: see
/// [`crate::packed`] for how their fields map onto [`RawDesc`].
pub(crate) fn read_desc(mem: &Mem, base: GuestAddress, idx: u16) -> Result<RawDesc, ChainError> {
    let at = base
        .checked_add(u64::from(idx) * DESC_SIZE)
        .ok_or(ChainError::Overflow)?;
    // Fast path: aligned loads; an unaligned indirect table takes the byte copy below.
    if let Some(d) = in_one_region(mem, at.raw_value(), 16).and_then(|sl| load_desc(&sl, 0)) {
        return Ok(d);
    }
    let mut b = [0u8; 16];
    mem.read_slice(&mut b, at)
        .map_err(|_| ChainError::OutOfMemory)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[0..8]);
    Ok(RawDesc {
        addr: u64::from_le_bytes(a),
        len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        flags: u16::from_le_bytes([b[12], b[13]]),
        next: u16::from_le_bytes([b[14], b[15]]),
    })
}

/// Copies up to `out.len()` bytes starting `skip` bytes into `slices`. Returns the count.
pub fn copy_out(slices: &[VolatileSlice<'_, ()>], mut skip: usize, out: &mut [u8]) -> usize {
    let mut done = 0;
    for s in slices {
        if done == out.len() {
            break;
        }
        if skip >= s.len() {
            skip -= s.len();
            continue;
        }
        let Ok(sub) = s.offset(skip) else { break };
        skip = 0;
        done += sub.copy_to(&mut out[done..]);
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u16 = 8;
    const TABLE: u64 = 0x1000;

    fn mem() -> Mem {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn put(mem: &Mem, base: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&b, GuestAddress(base + 16 * u64::from(i)))
            .unwrap();
    }

    fn info(indirect: bool) -> TableInfo {
        TableInfo {
            desc_table: GuestAddress(TABLE),
            queue_size: SIZE,
            indirect_allowed: indirect,
        }
    }

    fn walk(m: &Mem, head: u16, dir: Direction, ind: bool) -> Result<(u32, u32), ChainError> {
        let mut c = Chain::default();
        c.walk(m, info(ind), head, dir)?;
        Ok((c.read_len, c.write_len))
    }

    #[test]
    fn simple_and_split_chain() {
        let m = mem();
        put(&m, TABLE, 0, 0x4000, 12, F_NEXT, 1);
        put(&m, TABLE, 1, 0x5000, 100, 0, 0);
        assert_eq!(walk(&m, 0, Direction::ReadOnly, false), Ok((112, 0)));
        put(&m, TABLE, 2, 0x6000, 10, F_NEXT, 3);
        put(&m, TABLE, 3, 0x7000, 20, F_WRITE, 0);
        assert_eq!(walk(&m, 2, Direction::ReadThenWrite, false), Ok((10, 20)));
    }

    #[test]
    fn hostile_chains() {
        let m = mem();
        assert_eq!(
            walk(&m, SIZE, Direction::ReadOnly, false),
            Err(ChainError::BadIndex)
        );
        // loop 0 -> 1 -> 0
        put(&m, TABLE, 0, 0x4000, 1, F_NEXT, 1);
        put(&m, TABLE, 1, 0x4000, 1, F_NEXT, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, false),
            Err(ChainError::Loop)
        );
        // next out of range
        put(&m, TABLE, 1, 0x4000, 1, F_NEXT, 99);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, false),
            Err(ChainError::BadIndex)
        );
        // outside memory
        put(&m, TABLE, 0, 0xfff0, 0x100, 0, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, false),
            Err(ChainError::OutOfMemory)
        );
        // addr + len overflow
        put(&m, TABLE, 0, u64::MAX - 4, 16, 0, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, false),
            Err(ChainError::Overflow)
        );
        // total length overflow (0xffff_ffff + 2) even with zero-size memory touched
        put(&m, TABLE, 0, 0x4000, u32::MAX, F_NEXT, 1);
        put(&m, TABLE, 1, 0x4000, 2, 0, 0);
        assert!(matches!(
            walk(&m, 0, Direction::ReadOnly, false),
            Err(ChainError::Overflow | ChainError::OutOfMemory)
        ));
        // write-only on TX, read-only on RX
        put(&m, TABLE, 0, 0x4000, 10, F_WRITE, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, false),
            Err(ChainError::WrongDirection)
        );
        put(&m, TABLE, 0, 0x4000, 10, 0, 0);
        assert_eq!(
            walk(&m, 0, Direction::WriteOnly, false),
            Err(ChainError::WrongDirection)
        );
        // readable after writable
        put(&m, TABLE, 0, 0x4000, 10, F_WRITE | F_NEXT, 1);
        put(&m, TABLE, 1, 0x4000, 10, 0, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadThenWrite, false),
            Err(ChainError::BadOrder)
        );
    }

    /// The flat region table answers exactly as `find_region` does: inside, at the
    /// edges, across two regions, in a hole, past the end — inline (2 regions) and
    /// through the fallback (more regions than fit inline).
    #[test]
    fn regions_agree_with_find_region() {
        let two = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x4000),
            (GuestAddress(0x4000), 0x2000),
        ])
        .unwrap();
        let many = GuestMemoryMmap::<()>::from_ranges(
            &(0..6u64)
                .map(|i| (GuestAddress(i * 0x3000), 0x2000))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        for m in [&two, &many] {
            let r = Regions::new(m);
            for addr in (0..0x13000u64)
                .step_by(0x7f0)
                .chain([0x1fff, 0x3fff, 0x4000, u64::MAX])
            {
                for len in [1usize, 16, 0x800, 0x2000, 0x4001] {
                    let want =
                        in_one_region(m, addr, len).map(|s| (s.ptr_guard().as_ptr(), s.len()));
                    let got = r
                        .slice(addr, len)
                        .map(|s| (s.ptr_guard().as_ptr(), s.len()));
                    assert_eq!(got, want, "addr {addr:#x} len {len:#x}");
                }
            }
        }
        assert_eq!(Regions::new(&two).n, 2);
        assert_eq!(Regions::new(&many).n, 0, "six regions take the fallback");
    }

    #[test]
    fn single_descriptor_fast_path_agrees_with_the_walk() {
        let m = mem();
        let table = m
            .get_slice(GuestAddress(TABLE), 16 * usize::from(SIZE))
            .unwrap();
        let regions = Regions::new(&m);
        let single = |i: u16, dir| {
            let mut c = Chain::default();
            c.try_single(&regions, &table, i, dir)
                .then_some((c.read_len, c.write_len))
        };
        put(&m, TABLE, 0, 0x4000, 100, 0, 0);
        assert_eq!(single(0, Direction::ReadOnly), Some((100, 0)));
        assert_eq!(walk(&m, 0, Direction::ReadOnly, false), Ok((100, 0)));
        put(&m, TABLE, 1, 0x4000, 100, F_WRITE, 0);
        assert_eq!(single(1, Direction::WriteOnly), Some((0, 100)));
        // Everything else goes to the walk: wrong direction, NEXT, INDIRECT, outside
        // memory, overflow, empty, index beyond the table.
        assert_eq!(single(1, Direction::ReadOnly), None);
        put(&m, TABLE, 2, 0x4000, 100, F_NEXT, 0);
        assert_eq!(single(2, Direction::ReadOnly), None);
        put(&m, TABLE, 3, 0x8000, 32, F_INDIRECT, 0);
        assert_eq!(single(3, Direction::ReadOnly), None);
        put(&m, TABLE, 4, 0xfff0, 0x100, 0, 0);
        assert_eq!(single(4, Direction::ReadOnly), None);
        assert_eq!(
            walk(&m, 4, Direction::ReadOnly, false),
            Err(ChainError::OutOfMemory)
        );
        put(&m, TABLE, 5, u64::MAX - 4, 16, 0, 0);
        assert_eq!(single(5, Direction::ReadOnly), None);
        put(&m, TABLE, 6, 0x4000, 0, 0, 0);
        assert_eq!(single(6, Direction::ReadOnly), None);
        assert_eq!(single(SIZE, Direction::ReadOnly), None);
        assert_eq!(single(0, Direction::ReadThenWrite), None);
    }

    #[test]
    fn unaligned_indirect_table_is_read_through_the_slow_path() {
        let m = mem();
        let it = 0x8004u64;
        put(&m, it, 0, 0x4000, 12, F_NEXT, 1);
        put(&m, it, 1, 0x5000, 60, 0, 0);
        put(&m, TABLE, 0, it, 32, F_INDIRECT, 0);
        assert_eq!(walk(&m, 0, Direction::ReadOnly, true), Ok((72, 0)));
    }

    #[test]
    fn indirect_rules() {
        let m = mem();
        let it = 0x8000u64;
        put(&m, it, 0, 0x4000, 12, F_NEXT, 1);
        put(&m, it, 1, 0x5000, 60, 0, 0);
        put(&m, TABLE, 0, it, 32, F_INDIRECT, 0);
        assert_eq!(walk(&m, 0, Direction::ReadOnly, true), Ok((72, 0)));
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, false),
            Err(ChainError::BadIndirect)
        );
        put(&m, TABLE, 0, it, 32, F_INDIRECT | F_NEXT, 1);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, true),
            Err(ChainError::BadIndirect)
        );
        put(&m, TABLE, 0, it, 24, F_INDIRECT, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, true),
            Err(ChainError::BadIndirectTable)
        );
        put(&m, TABLE, 0, it, 0, F_INDIRECT, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, true),
            Err(ChainError::BadIndirectTable)
        );
        // nested
        put(&m, TABLE, 0, it, 32, F_INDIRECT, 0);
        put(&m, it, 1, 0x9000, 16, F_INDIRECT, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, true),
            Err(ChainError::NestedIndirect)
        );
        // loop inside the indirect table
        put(&m, it, 1, 0x5000, 60, F_NEXT, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, true),
            Err(ChainError::Loop)
        );
        // table itself outside memory
        put(&m, TABLE, 0, 0xfff0, 32, F_INDIRECT, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, true),
            Err(ChainError::OutOfMemory)
        );
    }

    /// An indirect table may hold up to 65 535 descriptors whatever the queue size; the
    /// chain (direct and indirect descriptors) may not be longer than the queue size.
    #[test]
    fn chain_longer_than_the_queue_size_is_refused() {
        let m = mem();
        let it = 0x8000u64;
        let n = SIZE + 1;
        for k in 0..n {
            let flags = if k + 1 < n { F_NEXT } else { 0 };
            put(&m, it, k, 0x4000, 4, flags, k + 1);
        }
        put(&m, TABLE, 0, it, 16 * u32::from(n), F_INDIRECT, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, true),
            Err(ChainError::TooLong)
        );
        // Exactly the queue size is fine (the indirect descriptor itself is no buffer).
        put(&m, it, SIZE - 1, 0x4000, 4, 0, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, true),
            Ok((4 * u32::from(SIZE), 0))
        );
        // A long table with a short chain in it is fine: only the chain is walked.
        put(&m, it, 1, 0x4000, 4, 0, 0);
        assert_eq!(walk(&m, 0, Direction::ReadOnly, true), Ok((8, 0)));
        // The largest table the descriptor length allows, one long chain through it: the
        // walk stops after queue size + 1 descriptors, with the reason.
        let big = 4096u16;
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20000)]).unwrap();
        for k in 0..big {
            put(&m, 0x10000, k, 0x4000, 4, F_NEXT, k + 1);
        }
        put(&m, TABLE, 0, 0x10000, 16 * u32::from(big), F_INDIRECT, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, true),
            Err(ChainError::TooLong)
        );
    }

    #[test]
    fn zero_length_buffers_are_refused_on_tx_only() {
        let m = mem();
        put(&m, TABLE, 0, 0x4000, 12, F_NEXT, 1);
        put(&m, TABLE, 1, 0x5000, 0, F_NEXT, 2);
        put(&m, TABLE, 2, 0x5000, 60, 0, 0);
        assert_eq!(
            walk(&m, 0, Direction::ReadOnly, false),
            Err(ChainError::ZeroLength)
        );
        put(&m, TABLE, 3, 0x5000, 0, 0, 0);
        assert_eq!(
            walk(&m, 3, Direction::ReadOnly, false),
            Err(ChainError::ZeroLength)
        );
        // Inside an indirect table too.
        let it = 0x8000u64;
        put(&m, it, 0, 0x4000, 0, 0, 0);
        put(&m, TABLE, 4, it, 16, F_INDIRECT, 0);
        assert_eq!(
            walk(&m, 4, Direction::ReadOnly, true),
            Err(ChainError::ZeroLength)
        );
        // RX: an empty writable buffer is harmless (nothing is written there).
        put(&m, TABLE, 5, 0x5000, 0, F_WRITE | F_NEXT, 6);
        put(&m, TABLE, 6, 0x6000, 100, F_WRITE, 0);
        assert_eq!(walk(&m, 5, Direction::WriteOnly, false), Ok((0, 100)));
    }

    #[test]
    fn copy_out_skips_across_slices() {
        let m = mem();
        m.write_slice(&[1, 2, 3, 4], GuestAddress(0x4000)).unwrap();
        m.write_slice(&[5, 6, 7, 8], GuestAddress(0x5000)).unwrap();
        put(&m, TABLE, 0, 0x4000, 4, F_NEXT, 1);
        put(&m, TABLE, 1, 0x5000, 4, 0, 0);
        let mut c = Chain::default();
        c.walk(&m, info(false), 0, Direction::ReadOnly).unwrap();
        let mut out = [0u8; 5];
        assert_eq!(copy_out(&c.readable, 2, &mut out), 5);
        assert_eq!(out, [3, 4, 5, 6, 7]);
    }
}
