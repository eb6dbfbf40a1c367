//! Fuzz the TX pop path the daemon's data plane runs (crates/vring-engine/src/txring.rs:
//! the lent [`TxRing`], its chain walk, header read and completion; virtio 1.2 §5.1.6.2
//! "Packet Transmission") on a real device: the input writes a hostile TX ring into guest
//! memory, then the ring is popped, each frame inspected as the switch does
//! (`copy_frame_head`) and completed, and the used ring published.
//!
//! Input: 1 byte mode (bit 0: legacy header without VERSION_1; bit 1: refuse every other
//! frame, as a full destination does), 1 byte avail count, the avail heads, then 8-byte
//! descriptor records (see `shared/fixture.rs`).
//!
//! Invariants: frames handed over never exceed the announced chains; each frame's segments
//! hold the frame (plus the guest's header when `hdr_in_segs`);
//! after completing everything each announced chain is used exactly once, nothing stays in
//! flight, and guest memory other than the used ring is untouched (TX never writes).
#![no_main]

#[path = "shared/fixture.rs"]
#[allow(dead_code, unused_imports)]
mod fixture;

use fixture::{write_ring, Fixture, ITAB, MEM_BASE, QS};
use libfuzzer_sys::fuzz_target;

const VERSION_1: u64 = 1 << 32;
const INDIRECT: u64 = 1 << 28;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let legacy = data[0] & 1 != 0;
    let features = INDIRECT | if legacy { 0 } else { VERSION_1 };
    fixture::with(usize::from(legacy), features, |fx| run(fx, data));
});

fn run(fx: &mut Fixture, data: &[u8]) {
    let refuse = data[0] & 2 != 0;
    let rest = &data[2..];
    let n_avail = usize::from(data[1]).min(QS as usize).min(rest.len());
    let (heads, recs) = rest.split_at(n_avail);
    fx.reset_queue(1);
    let Some(mut ring) = wait_ring(fx) else {
        panic!("the device did not lend TX ring 0 after setting it up");
    };
    write_ring(fx, 1, heads, recs);
    let lo = MEM_BASE;
    let hi = fx.itab + ITAB;
    let before = fx.read(lo, (hi - lo) as usize);

    let mut tokens = Vec::new();
    let mut handed = 0usize;
    let mut k = 0usize;
    loop {
        let n = ring.pop(16, |p| {
            let seg_bytes: u64 = p.segs.iter().map(|s| u64::from(s.len)).sum();
            let expect = p.frame_len as u64 + if p.hdr_in_segs { 12 } else { 0 };
            assert_eq!(seg_bytes, expect, "segments hold exactly the frame");
            assert!(p.segs.len() <= switch::bytes::MAX_SEGS);
            let mut head = [0u8; 64];
            let got = p.copy_frame_head(&mut head);
            assert_eq!(got, p.frame_len.min(64));
            assert_eq!(p.hdr.num_buffers, 0);
            k += 1;
            if refuse && k % 2 == 0 {
                return false;
            }
            tokens.push(p.token);
            true
        });
        handed += n;
        if n == 0 {
            break;
        }
        assert!(handed <= n_avail, "more frames than announced chains");
    }
    for t in tokens {
        ring.complete(t);
    }
    ring.flush();
    assert_eq!(ring.in_flight(), 0, "every completed frame left the ring");
    drop(ring);

    let after = fx.read(lo, (hi - lo) as usize);
    let dq = &fx.guest.queues[1];
    let used_lo = dq.used.0;
    let used_hi = used_lo + 4 + 8 * u64::from(QS) + 2;
    for (i, (x, y)) in before.iter().zip(after.iter()).enumerate() {
        let at = lo + i as u64;
        assert!(
            x == y || (used_lo..used_hi).contains(&at),
            "TX wrote guest memory at {at:#x}"
        );
    }
    let used = fx.guest.queues[1].take_used(&fx.guest.mem);
    if !fx.guest.queues[1].errored() {
        assert_eq!(
            used.len(),
            n_avail,
            "each announced chain used once: {used:?}"
        );
    }
}

/// The ring the device lends once queue 1 is live.
fn wait_ring(fx: &Fixture) -> Option<vring_engine::TxRing> {
    for _ in 0..2000 {
        if let Some(r) = fx.lender.tx.lock().pop() {
            return Some(r);
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    None
}
