//! Fuzz the descriptor-chain walker (virtio 1.2 §2.7.5, §2.7.5.3 indirect tables) over
//! guest memory the fuzzer writes: any table, any chain, any address or length. The walk
//! must end (no hang), never panic, and an accepted chain must hold what it claims:
//! its lengths are the sums of its buffers, every buffer is inside guest memory, the
//! directions are those the queue allows, and it has at most `queue_size` buffers per
//! region split.
//!
//! Input: byte 0 queue-size exponent (size 1 << (b % 9): 1..256), byte 1 flags (bit 0
//! indirect allowed, bits 1-2 direction), bytes 2-3 head (LE), then the guest memory image
//! placed from GPA 0 (region 0, 16 KiB; the table lives at GPA 0). A second 4 KiB region
//! sits right after the first, so chains may cross a region boundary.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vring_engine::chain::{Chain, Direction, TableInfo};

const R0: usize = 16 * 1024;
const R1: usize = 4 * 1024;

fuzz_target!(|data: &[u8]| {
    let [exp, flags, h0, h1, image @ ..] = data else {
        return;
    };
    let queue_size = 1u16 << (exp % 9);
    let dir = match (flags >> 1) & 3 {
        0 => Direction::ReadOnly,
        1 => Direction::WriteOnly,
        _ => Direction::ReadThenWrite,
    };
    let table = TableInfo {
        desc_table: GuestAddress(0),
        queue_size,
        indirect_allowed: flags & 1 != 0,
    };
    let Ok(mem) =
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), R0), (GuestAddress(R0 as u64), R1)])
    else {
        return;
    };
    let n = image.len().min(R0 + R1);
    if mem.write_slice(&image[..n], GuestAddress(0)).is_err() {
        return;
    }
    let head = u16::from_le_bytes([*h0, *h1]);
    let mut chain = Chain::default();
    if chain.walk(&mem, table, head, dir).is_ok() {
        let sum = |s: &[vm_memory::VolatileSlice<'_, ()>]| -> u64 {
            s.iter().map(|x| x.len() as u64).sum()
        };
        assert_eq!(u64::from(chain.read_len), sum(&chain.readable));
        assert_eq!(u64::from(chain.write_len), sum(&chain.writable));
        match dir {
            Direction::ReadOnly => assert!(chain.writable.is_empty()),
            Direction::WriteOnly => assert!(chain.readable.is_empty()),
            Direction::ReadThenWrite => {}
        }
        // Every buffer descriptor may be split once per region boundary it crosses
        // (two regions here), and there are at most queue_size of them (§2.7.5.3.1).
        let pieces = chain.readable.len() + chain.writable.len();
        assert!(pieces <= 2 * usize::from(queue_size), "{pieces} pieces");
        assert!(
            chain.read_len as usize + chain.write_len as usize
                <= 2 * (R0 + R1) * usize::from(queue_size)
        );
    }
});
