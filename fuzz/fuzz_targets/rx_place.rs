//! Fuzz RX placement (crates/vring-engine/src/rx.rs, virtio 1.2 §5.1.6.3-4) on a real
//! device: the input writes a hostile RX ring (descriptor table, indirect tables, avail
//! ring) into guest memory, then frames are delivered with `NetDevice::rx_burst`, the call
//! the daemon's data plane makes, with MRG_RXBUF negotiated or not.
//!
//! Input: 1 byte mode (bit 0: no MRG_RXBUF), 1 byte avail count (≤ queue size), 1 byte
//! frame count (1..=4), 2 bytes per frame length, the avail heads, then 8-byte descriptor
//! records (see `shared/fixture.rs`).
//!
//! Invariants: no byte of guest memory outside the used ring and the device-writable
//! buffers the input described changes (checked against a shadow copy); the used ring
//! holds only announced heads; the used lengths add up to header + frame of every frame
//! reported placed; the used index advances by at most the avail count.
#![no_main]

#[path = "shared/fixture.rs"]
#[allow(dead_code, unused_imports)]
mod fixture;

use fixture::{write_ring, Fixture, F_WRITE, ITAB, MEM_BASE, MEM_SIZE, QS};
use libfuzzer_sys::fuzz_target;
use switch::{Chunk, VnetHdr};

const VERSION_1: u64 = 1 << 32;
const INDIRECT: u64 = 1 << 28;
const MRG_RXBUF: u64 = 1 << 15;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let plain = data[0] & 1 != 0;
    let features = VERSION_1 | INDIRECT | if plain { 0 } else { MRG_RXBUF };
    fixture::with(usize::from(plain), features, |fx| run(fx, data));
});

fn run(fx: &mut Fixture, data: &[u8]) {
    let n_avail = usize::from(data[1]).min(QS as usize);
    let n_frames = usize::from(data[2] % 4) + 1;
    let mut rest = &data[3..];
    let mut lens = Vec::new();
    for _ in 0..n_frames {
        let [a, b, tail @ ..] = rest else { return };
        lens.push(usize::from(u16::from_le_bytes([*a, *b])));
        rest = tail;
    }
    let n_avail = n_avail.min(rest.len());
    let (heads, recs) = rest.split_at(n_avail);

    fx.reset_queue(0);
    // Checked ranges: everything from the rings to the end of the indirect area, and the
    // last page of guest memory (descriptors may point there).
    let lo = MEM_BASE;
    let hi = fx.itab + ITAB;
    let tail_lo = MEM_BASE + MEM_SIZE as u64 - 4096;
    fx.write(fx.area, &vec![0xa5; fixture::AREA as usize]);
    fx.write(tail_lo, &[0x5a; 4096]);
    let descs = write_ring(fx, 0, heads, recs);
    let before = fx.read(lo, (hi - lo) as usize);
    let before_tail = fx.read(tail_lo, 4096);

    let hdr_len = fx.guest.hdr_len();
    let frames: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &l)| (0..l).map(|j| (i * 31 + j) as u8).collect())
        .collect();
    let results: Vec<_> = fx.dev().rx_burst(0, |b| {
        frames
            .iter()
            .map(|f| {
                let hdr = VnetHdr::default();
                // Two parts, as a frame from the switch's stage often is.
                let (a, c) = f.split_at(f.len() / 2);
                b.deliver(&hdr, &[Chunk::from(a), Chunk::from(c)])
            })
            .collect()
    });
    let _ = fx.dev().flush_rx(0);

    // Allowed writes: the used ring and every device-writable buffer described.
    let dq = &fx.guest.queues[0];
    let used_lo = dq.used.0;
    let used_hi = used_lo + 4 + 8 * u64::from(QS) + 2;
    let allowed = |a: u64| {
        (used_lo..used_hi).contains(&a)
            || descs
                .iter()
                .any(|d| d.flags & F_WRITE != 0 && a >= d.addr && a - d.addr < u64::from(d.len))
    };
    let after = fx.read(lo, (hi - lo) as usize);
    let after_tail = fx.read(tail_lo, 4096);
    for (base, b, a) in [(lo, &before, &after), (tail_lo, &before_tail, &after_tail)] {
        for (i, (x, y)) in b.iter().zip(a.iter()).enumerate() {
            let at = base + i as u64;
            assert!(
                x == y || allowed(at),
                "device wrote {at:#x} outside the chains it was given"
            );
        }
    }

    let used = fx.guest.queues[0].take_used(&fx.guest.mem);
    assert!(
        used.len() <= n_avail,
        "more used entries than announced chains"
    );
    let announced: Vec<u16> = heads
        .iter()
        .map(|h| {
            if *h >= 0xf0 {
                u16::from(*h) << 4
            } else {
                u16::from(*h) % QS
            }
        })
        .collect();
    for (k, (id, _)) in used.iter().enumerate() {
        assert_eq!(*id, announced[k], "used entries in avail order for RX");
    }
    let placed: u64 = results
        .iter()
        .zip(&frames)
        .filter(|(r, _)| r.is_ok())
        .map(|(_, f)| (hdr_len + f.len()) as u64)
        .sum();
    let used_bytes: u64 = used.iter().map(|&(_, l)| u64::from(l)).sum();
    assert_eq!(
        used_bytes, placed,
        "used lengths vs frames placed: {results:?} {used:?}"
    );
}
