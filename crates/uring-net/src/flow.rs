//! Which RX queue pair of a multiqueue guest a frame goes to.
//!
//! Why here: both paths into a guest — the workers (frames from taps, AF_PACKET ports and
//! other guests' TX queues) and the daemon's switch-originated frames — must put one flow
//! on one queue (no reordering inside a flow) and spread different flows (virtio 1.2
//! §5.1.6.5.5: the device picks the receive queue; Linux's RPS-like steering is our model).

use switch::frame::L3;
use switch::Forward;

/// Flow hash of a decided frame: addresses and ports, never fields that change per packet
/// (IP ID, TTL, checksums), so one flow always hashes the same. The fields are mixed a
/// word at a time (multiply and rotate): it runs once per forwarded frame, and FNV-1a a
/// byte at a time was ≈ 3 % of the 64-byte vhost profile. The spreading quality comes
/// from [`pick_queue`]'s finaliser.
pub fn flow_hash(fwd: &Forward, head: &[u8]) -> u32 {
    let f = &fwd.frame;
    let l3 = usize::from(f.l3_offset);
    let addrs = match f.l3 {
        L3::Ipv4 => head.get(l3 + 12..l3 + 20),
        L3::Ipv6 => head.get(l3 + 8..l3 + 40),
        _ => head.get(..12),
    };
    let mut h: u64 = 0;
    for c in addrs.unwrap_or(&[]).chunks(8) {
        h = mix(h, word(c));
    }
    if f.l4_offset != 0 && matches!(f.l4_proto, 6 | 17) {
        let l4 = usize::from(f.l4_offset);
        h = mix(h, word(head.get(l4..l4 + 4).unwrap_or(&[])));
    }
    (h >> 32) as u32 ^ (h & 0xffff_ffff) as u32
}

#[inline(always)]
fn mix(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(31)
}

/// Up to 8 bytes as a little-endian word (shorter input zero-extended).
#[inline(always)]
fn word(c: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = c.len().min(8);
    b[..n].copy_from_slice(&c[..n]);
    u64::from_le_bytes(b)
}

/// Maps a 32-bit hash onto `0..pairs` using its high bits (multiply-shift), after
/// murmur3's fmix32: FNV-1a's low bits barely change between flows (Linux picks even
/// source ports), so `h % pairs` put 8 TCP streams on one of two queues ~94 % of the time.
#[inline]
// (h * pairs) >> 32 is below `pairs`, a u16.
#[allow(clippy::cast_possible_truncation)]
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

    fn udp4(src_port: u16) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[0..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&46u16.to_be_bytes());
        f[22] = 64;
        f[23] = 17;
        f[26..30].copy_from_slice(&[198, 18, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        f[34..36].copy_from_slice(&src_port.to_be_bytes());
        f[36..38].copy_from_slice(&53u16.to_be_bytes());
        f[38..40].copy_from_slice(&26u16.to_be_bytes());
        f
    }

    fn hash(frame: &[u8]) -> u32 {
        let fwd = Forward {
            vid: 1,
            ports: switch::PortSet::default(),
            frame: switch::frame::FrameView::parse(frame, frame.len(), 0x8100, false).unwrap(),
        };
        flow_hash(&fwd, frame)
    }

    #[test]
    fn one_flow_one_hash_and_flows_spread() {
        let a = udp4(40000);
        let mut b = a.clone();
        b[18..20].copy_from_slice(&[0x12, 0x34]); // IP ID changes per packet
        b[22] = 3; // so does the TTL
        assert_eq!(hash(&a), hash(&b));
        assert_ne!(hash(&a), hash(&udp4(40002)));
        // Even source ports only (Linux's connect() pattern), over 2 and 4 queues.
        for pairs in [2u16, 4] {
            let mut counts = [0u32; 4];
            for port in (32768u16..34816).step_by(2) {
                counts[usize::from(pick_queue(hash(&udp4(port)), pairs))] += 1;
            }
            let each = 1024 / u32::from(pairs);
            for c in &counts[..usize::from(pairs)] {
                assert!(
                    *c > each * 3 / 4 && *c < each * 5 / 4,
                    "{pairs}: {counts:?}"
                );
            }
        }
    }
}
