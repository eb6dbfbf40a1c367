//! Fuzz the descriptor-chain walker (`vring_engine::chain::Chain::walk`, virtio 1.2
//! §2.7.5 "The Virtqueue Descriptor Table", §2.7.5.3 "Indirect Descriptors") over guest
//! memory the input fills: direct and indirect tables, loops, lengths, addresses outside
//! or across memory regions.
//!
//! Guest memory: region A `[0, 64 KiB)`, region B `[64 KiB, 128 KiB)` (adjacent: a buffer
//! may span both), region C `[192 KiB, 196 KiB)` (after a hole). Input: 2 bytes queue size
//! (1..=1024), 2 bytes head, 1 byte mode (bits 0-1 direction, bit 2 indirect allowed,
//! bit 3 table in region B), then bytes copied over the descriptor table and on into the
//! memory after it (where indirect tables put there are found).
//!
//! Invariants on success: the lengths equal the sums of the buffers returned, the
//! direction rules hold (§2.7.4.2: readable before writable), every buffer lies inside
//! guest memory; a second walk of the same memory gives the same chain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vring_engine::chain::{Chain, Direction, Mem, TableInfo};

const KIB: usize = 1024;

fn memory() -> Mem {
    GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 64 * KIB),
        (GuestAddress(64 * KIB as u64), 64 * KIB),
        (GuestAddress(192 * KIB as u64), 4 * KIB),
    ])
    .expect("guest memory")
}

/// The host ranges of every region, to check buffers against.
fn host_ranges(mem: &Mem) -> Vec<(usize, usize)> {
    mem.iter()
        .map(|r| {
            let p = r
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .unwrap() as usize;
            (p, p + r.len() as usize)
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let queue_size = (u16::from_le_bytes([data[0], data[1]]) % 1024) + 1;
    let head = u16::from_le_bytes([data[2], data[3]]);
    let mode = data[4];
    let dir = match mode & 3 {
        0 => Direction::ReadOnly,
        1 => Direction::WriteOnly,
        _ => Direction::ReadThenWrite,
    };
    let table_at: u64 = if mode & 8 != 0 { 64 * KIB as u64 } else { 0 };
    let mem = memory();
    let body = &data[5..];
    let room = 128 * KIB - table_at as usize;
    let body = &body[..body.len().min(room)];
    vm_memory::Bytes::write_slice(&mem, body, GuestAddress(table_at)).expect("in memory");
    let table = TableInfo {
        desc_table: GuestAddress(table_at),
        queue_size,
        indirect_allowed: mode & 4 != 0,
    };
    let mut chain = Chain::default();
    let first = chain.walk(&mem, table, head, dir);
    if first.is_ok() {
        check(&mem, &chain, dir);
    }
    let summary = |c: &Chain<'_>| {
        let s = |v: &[vm_memory::VolatileSlice<'_, ()>]| {
            v.iter()
                .map(|s| (s.ptr_guard().as_ptr() as usize, s.len()))
                .collect::<Vec<_>>()
        };
        (
            c.head,
            c.read_len,
            c.write_len,
            s(&c.readable),
            s(&c.writable),
        )
    };
    let before = summary(&chain);
    let mut again = Chain::default();
    let second = again.walk(&mem, table, head, dir);
    assert_eq!(first, second, "same memory, same verdict");
    if second.is_ok() {
        assert_eq!(before, summary(&again), "same memory, same chain");
    }
});

fn check(mem: &Mem, c: &Chain<'_>, dir: Direction) {
    let sum =
        |v: &[vm_memory::VolatileSlice<'_, ()>]| v.iter().map(|s| s.len() as u64).sum::<u64>();
    assert_eq!(u64::from(c.read_len), sum(&c.readable));
    assert_eq!(u64::from(c.write_len), sum(&c.writable));
    match dir {
        Direction::ReadOnly => assert!(c.writable.is_empty() && c.write_len == 0),
        Direction::WriteOnly => assert!(c.readable.is_empty() && c.read_len == 0),
        Direction::ReadThenWrite => {}
    }
    if dir == Direction::ReadOnly {
        assert!(
            c.readable.iter().all(|s| !s.is_empty()),
            "TX buffers are never empty"
        );
    }
    let ranges = host_ranges(mem);
    for s in c.readable.iter().chain(c.writable.iter()) {
        let p = s.ptr_guard().as_ptr() as usize;
        let end = p + s.len();
        assert!(
            ranges.iter().any(|&(a, b)| a <= p && end <= b),
            "buffer {p:#x}+{} outside guest memory",
            s.len()
        );
    }
}
