//! The packed descriptor ring in guest memory (virtio 1.2 §2.8 "The Virtqueue
//! Descriptor Format") and the validation of one descriptor's buffers, direct or through
//! an indirect table (§2.8 "Indirect Flag: Scatter-Gather Support").
//!
//! A descriptor is `le64 addr; le32 len; le16 id; le16 flags`. The device reads its
//! second 8 bytes (len, id, flags) with one acquire load: the driver stores `flags` last
//! with a release barrier (§2.8 "Supplying Buffers to The Device", "Updating flags"), so
//! once the flags say "available" the length and ID in the same load and the address
//! loaded after it are the driver's finished values. Each value is read once into private memory ([`PackedDesc`]) and the
//! decisions are taken on that copy; the guest may rewrite the ring at any time.
//!
//! A used descriptor is written with one release store of the same 8 bytes (len, id,
//! flags; the address is unused in used descriptors, §2.8 "Element Address and Length"),
//! so its flags can never be seen before its ID and length.

use std::sync::atomic::Ordering;

use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::chain::{read_desc, Chain, ChainError, Direction, Mem};
use crate::split::Shared;

use super::{F_AVAIL, F_INDIRECT, F_NEXT, F_USED, F_WRITE};

/// Size of a packed descriptor (§2.8.13).
pub const DESC_LEN: usize = 16;

/// One descriptor as read from the ring, in private memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedDesc {
    pub addr: u64,
    pub len: u32,
    pub id: u16,
    pub flags: u16,
}

impl PackedDesc {
    /// Whether the driver made this descriptor available in the round whose wrap counter
    /// is `wrap` (§2.8 "Driver and Device Ring Wrap Counters": AVAIL matches the counter,
    /// USED does not).
    #[inline]
    pub fn is_avail(&self, wrap: bool) -> bool {
        let avail = self.flags & F_AVAIL != 0;
        let used = self.flags & F_USED != 0;
        avail == wrap && used != wrap
    }
}

/// The descriptor ring and the two event suppression areas of one packed queue,
/// translated once (each inside one memory region, aligned as §2.8 "Structure Size and
/// Alignment" requires).
pub struct DescRing<'m> {
    pub(super) desc: Shared<'m>,
    /// Driver Event Suppression (the driver writes, the device reads): the vhost-user
    /// "avail" address.
    pub(super) driver: Shared<'m>,
    /// Device Event Suppression (the device writes, the driver reads): the vhost-user
    /// "used" address.
    pub(super) device: Shared<'m>,
    pub(super) size: u16,
}

impl<'m> DescRing<'m> {
    /// Translates the three areas. `None` when one is not inside one memory region, is
    /// misaligned (ring 16, event areas 4 bytes), or the size is 0 or above 2^15
    /// (§2.8: "Packed virtqueues support up to 2^15 entries"): the caller treats the ring
    /// as broken.
    pub fn new(
        mem: &'m Mem,
        desc: u64,
        driver: u64,
        device: u64,
        size: u16,
    ) -> Option<DescRing<'m>> {
        if size == 0 || size > 1 << 15 || desc % 16 != 0 || driver % 4 != 0 || device % 4 != 0 {
            return None;
        }
        let ring_len = DESC_LEN * usize::from(size);
        Some(DescRing {
            desc: Shared::new(mem.get_slice(GuestAddress(desc), ring_len).ok()?, 16)?,
            driver: Shared::new(mem.get_slice(GuestAddress(driver), 4).ok()?, 4)?,
            device: Shared::new(mem.get_slice(GuestAddress(device), 4).ok()?, 4)?,
            size,
        })
    }

    /// Reads descriptor `slot` (< size) into private memory.
    // Bit fields of the second 8 bytes: len 0..32, id 32..48, flags 48..64.
    #[allow(clippy::cast_possible_truncation)]
    #[inline]
    pub fn read(&self, slot: u16) -> PackedDesc {
        let off = DESC_LEN * usize::from(slot % self.size);
        let hi = self.desc.load64(off + 8, Ordering::Acquire);
        let addr = self.desc.load64(off, Ordering::Relaxed);
        PackedDesc {
            addr,
            len: hi as u32,
            id: (hi >> 32) as u16,
            flags: (hi >> 48) as u16,
        }
    }

    /// Writes a used descriptor into `slot`: ID, length and flags in one release store
    /// (the flags carry the used wrap counter in AVAIL and USED, and WRITE when the device
    /// wrote `len` bytes, §2.8 "Write Flag").
    #[inline]
    pub fn write_used(&self, slot: u16, id: u16, len: u32, wrap: bool) {
        let mut flags = if wrap { F_AVAIL | F_USED } else { 0 };
        if len > 0 {
            flags |= F_WRITE;
        }
        let off = DESC_LEN * usize::from(slot % self.size);
        let word = u64::from(len) | (u64::from(id) << 32) | (u64::from(flags) << 48);
        self.desc.store64(off + 8, word, Ordering::Release);
    }
}

/// Adds the buffers of one ring descriptor `d` to `chain`. `first`: `d` heads its chain
/// (only a head may be INDIRECT). The chain's extent does not depend on any of this (it
/// is set by the NEXT flags alone), so every error here is a drop of this chain only.
pub fn add_desc<'m>(
    chain: &mut Chain<'m>,
    mem: &'m Mem,
    d: &PackedDesc,
    first: bool,
    indirect_allowed: bool,
    dir: Direction,
    queue_size: u16,
) -> Result<(), ChainError> {
    if d.flags & F_INDIRECT == 0 {
        return add_buffer(chain, mem, d.addr, d.len, d.flags & F_WRITE != 0, dir);
    }
    // §2.8 driver requirements for indirect descriptors: only with INDIRECT_DESC, never
    // in a NEXT-linked list — so only a lone head descriptor.
    if !indirect_allowed || !first || d.flags & F_NEXT != 0 {
        return Err(ChainError::BadIndirect);
    }
    if d.len == 0 || d.len as usize % DESC_LEN != 0 {
        return Err(ChainError::BadIndirectTable);
    }
    // The whole table is the list (entries follow each other, §2.8 "Indirect Flag"): at
    // most the queue size (§2.8 scatter-gather driver requirements: "A driver MUST NOT
    // create a descriptor list longer than the Queue Size"), which bounds the walk
    // whatever length the driver wrote.
    let n = d.len as usize / DESC_LEN;
    if n > usize::from(queue_size) {
        return Err(ChainError::TooLong);
    }
    if d.addr.checked_add(u64::from(d.len)).is_none() {
        return Err(ChainError::Overflow);
    }
    if !mem.check_range(GuestAddress(d.addr), d.len as usize) {
        return Err(ChainError::OutOfMemory);
    }
    for i in 0..n {
        let i = u16::try_from(i).map_err(|_| ChainError::BadIndirectTable)?;
        // `read_desc` reads the split layout: its `flags` field is the packed `id`
        // (reserved in a table, ignored) and its `next` the packed `flags`, of which
        // only WRITE is valid in a table; the others are reserved and ignored (§2.8
        // "Indirect Flag").
        let e = read_desc(mem, GuestAddress(d.addr), i)?;
        add_buffer(chain, mem, e.addr, e.len, e.next & F_WRITE != 0, dir)?;
    }
    Ok(())
}

/// One buffer element: direction allowed on this queue, readable ones before writable
/// ones (§2.8 scatter-gather driver requirements), then the bounds [`Chain::push`] checks.
fn add_buffer<'m>(
    chain: &mut Chain<'m>,
    mem: &'m Mem,
    addr: u64,
    len: u32,
    write: bool,
    dir: Direction,
) -> Result<(), ChainError> {
    match (dir, write) {
        (Direction::ReadOnly, true) | (Direction::WriteOnly, false) => {
            return Err(ChainError::WrongDirection)
        }
        _ => {}
    }
    if !write && !chain.writable.is_empty() {
        return Err(ChainError::BadOrder);
    }
    chain.push(mem, addr, len, write, dir)
}
