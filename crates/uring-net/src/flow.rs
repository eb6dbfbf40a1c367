//! Which RX queue pair of a multiqueue guest a frame goes to.
//!
//! Why here: both paths into a guest — the workers (frames from taps, AF_PACKET ports and
//! other guests' TX queues) and the daemon's switch-originated frames — must put one flow
//! on one queue (no reordering inside a flow) and spread different flows (virtio 1.2
//! §5.1.6.5.5: the device picks the receive queue; Linux's RPS-like steering is our model).

use switch::frame::L3;
use switch::Forward;

/// Flow hash of a decided frame: addresses and ports, never fields that change per packet
/// (IP ID, TTL, checksums), so one flow always hashes the same. FNV-1a; the spreading
/// quality comes from [`pick_queue`]'s finaliser.
pub fn flow_hash(fwd: &Forward, head: &[u8]) -> u32 {
    let f = &fwd.frame;
    let mut h: u32 = 0x811c_9dc5;
    let mut mix = |b: &[u8]| {
        for x in b {
            h = (h ^ u32::from(*x)).wrapping_mul(0x0100_0193);
        }
    };
    let l3 = usize::from(f.l3_offset);
    match f.l3 {
        L3::Ipv4 => mix(head.get(l3 + 12..l3 + 20).unwrap_or(&[])),
        L3::Ipv6 => mix(head.get(l3 + 8..l3 + 40).unwrap_or(&[])),
        _ => mix(head.get(..12).unwrap_or(&[])),
    }
    if f.l4_offset != 0 && matches!(f.l4_proto, 6 | 17) {
        let l4 = usize::from(f.l4_offset);
        mix(head.get(l4..l4 + 4).unwrap_or(&[]));
    }
    h
}

/// Maps a 32-bit hash onto `0..pairs` using its high bits (multiply-shift), after
/// murmur3's fmix32: FNV-1a's low bits barely change between flows (Linux picks even
/// source ports), so `h % pairs` put 8 TCP streams on one of two queues ~94 % of the time.
#[inline]
pub fn pick_queue(mut h: u32, pairs: u16) -> u16 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    ((u64::from(h) * u64::from(pairs.max(1))) >> 32) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_pick_spreads_flows_that_differ_in_one_bit() {
        // Flows whose hashes differ only in bit 1 (even source ports) must still spread.
        let mut counts = [0u32; 2];
        for port in (32768u32..33792).step_by(2) {
            let h = port.wrapping_mul(0x0100_0193) & !1;
            counts[usize::from(pick_queue(h, 2))] += 1;
        }
        assert!(counts[0] > 200 && counts[1] > 200, "{counts:?}");
        for h in [0u32, 1, u32::MAX] {
            assert!(pick_queue(h, 3) < 3);
            assert_eq!(pick_queue(h, 1), 0);
        }
    }
}
