//! VXLAN (RFC 7348), sans I/O: the 8-byte header (§5), the inner flow hash the UDP
//! source port is picked by (§5, "Source Port"), and the table of which remote VTEP each
//! inner MAC was learned from (§4.1: learning from the outer source address).
//!
//! Why here: the header is attacker-controlled input off the underlay, so its parse is a
//! plain function over bytes with unit tests and a fuzz target; the I/O (the UDP sockets
//! in the io_uring workers) lives in uring-net and only calls these.
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```

use std::collections::HashMap;

use crate::mac::Mac;
use crate::offload::Csum;
use crate::time::Millis;
use crate::vnet::VnetHdr;

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: "MUST be set to 1 for a valid VXLAN Network ID" (RFC 7348 §5).
pub const FLAG_I: u8 = 0x08;
/// The IANA-assigned UDP destination port (RFC 7348 §5).
pub const DEFAULT_PORT: u16 = 4789;
/// Largest VNI (24 bits).
pub const VNI_MAX: u32 = 0x00ff_ffff;
/// Outer UDP + VXLAN bytes in front of the inner frame; the outer IP header comes on top.
pub const ENCAP_LEN: usize = 8 + HEADER_LEN;

/// Why a received VXLAN packet was refused (each a counted drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VxlanError {
    /// Shorter than the header plus an Ethernet header.
    #[error("truncated VXLAN packet")]
    Truncated,
    /// The I flag is clear: the VNI is not valid (§5). The reserved bits are ignored on
    /// receipt, as §5 says.
    #[error("VXLAN I flag not set")]
    BadFlags,
    /// A VNI this port does not carry (one port per VNI).
    #[error("VXLAN VNI {0} is not this port's")]
    WrongVni(u32),
}

/// Checks a received VXLAN payload (header first) for `vni` and returns the inner
/// Ethernet frame's offset in it (always [`HEADER_LEN`]).
pub fn parse(b: &[u8], vni: u32) -> Result<usize, VxlanError> {
    if b.len() < HEADER_LEN + 14 {
        return Err(VxlanError::Truncated);
    }
    if b[0] & FLAG_I == 0 {
        return Err(VxlanError::BadFlags);
    }
    let got = u32::from_be_bytes([0, b[4], b[5], b[6]]);
    if got != vni {
        return Err(VxlanError::WrongVni(got));
    }
    Ok(HEADER_LEN)
}

/// The header for `vni` (only the I flag set, reserved fields zero, §5).
pub fn emit(vni: u32) -> [u8; HEADER_LEN] {
    let v = (vni & VNI_MAX).to_be_bytes();
    [FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// A hash of the inner frame's flow (IP addresses and TCP/UDP ports, or the MAC
/// addresses of a non-IP frame), never of fields that change per packet, so one flow
/// always leaves from one UDP source port and the underlay's ECMP spreads flows (§5:
/// "the source port be calculated using a hash of fields from the inner packet").
pub fn inner_flow_hash(frame: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut add = |b: &[u8]| {
        for &x in b {
            h = (h ^ u32::from(x)).wrapping_mul(0x0100_0193);
        }
    };
    let mut off = 12;
    let mut et = be16(frame, off);
    // Up to two VLAN tags (802.1ad outer, 802.1Q inner).
    for _ in 0..2 {
        if matches!(et, Some(0x8100 | 0x88a8)) {
            off += 4;
            et = be16(frame, off);
        }
    }
    let l3 = off + 2;
    let (addrs, proto, l4) = match et {
        Some(0x0800) => {
            let ihl = frame.get(l3).map_or(0, |v| usize::from(v & 0x0f) * 4);
            (
                frame.get(l3 + 12..l3 + 20),
                frame.get(l3 + 9).copied(),
                l3 + ihl,
            )
        }
        Some(0x86dd) => (
            frame.get(l3 + 8..l3 + 40),
            frame.get(l3 + 6).copied(),
            l3 + 40,
        ),
        _ => (None, None, 0),
    };
    match addrs {
        Some(a) => {
            add(a);
            if matches!(proto, Some(6 | 17)) {
                add(frame.get(l4..l4 + 4).unwrap_or(&[]));
            }
        }
        None => add(frame.get(..12).unwrap_or(&[])),
    }
    // fmix32: spread the low bits, which pick the source socket.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// The virtio-net header for a received inner frame. Usually none is needed (the sender
/// completed its checksums), but a VXLAN packet that crossed a veth from a stack on the
/// same kernel keeps the sender's partial checksum (CHECKSUM_PARTIAL survives veth and
/// decapsulation into our socket): its TCP/UDP checksum field holds only the pseudo-
/// header sum. Such a frame is handed on with VIRTIO_NET_HDR_F_NEEDS_CSUM (virtio 1.2
/// §5.1.6.2) so the next hop completes it. Marking a complete checksum that happens to
/// equal that sum is harmless: completing it again yields the same value.
pub fn rx_vnet_hdr(frame: &[u8]) -> VnetHdr {
    let none = VnetHdr::default();
    let Some(et) = be16(frame, 12) else {
        return none;
    };
    let l3 = 14;
    let (l4, proto, v6) = match et {
        0x0800 => {
            let (Some(vihl), Some(frag), Some(&p)) =
                (frame.get(l3), be16(frame, l3 + 6), frame.get(l3 + 9))
            else {
                return none;
            };
            if frag & 0x3fff != 0 {
                return none;
            }
            (l3 + usize::from(vihl & 0x0f) * 4, p, false)
        }
        0x86dd => match frame.get(l3 + 6) {
            Some(&p) => (l3 + 40, p, true),
            None => return none,
        },
        _ => return none,
    };
    let off: u16 = match proto {
        6 => 16,
        17 => 6,
        _ => return none,
    };
    let (Some(field), Ok(l4_len), Ok(start)) = (
        be16(frame, l4 + usize::from(off)),
        u16::try_from(frame.len().saturating_sub(l4)),
        u16::try_from(l4),
    ) else {
        return none;
    };
    let addrs = if v6 {
        l3 + 8..l3 + 40
    } else {
        l3 + 12..l3 + 20
    };
    let Some(a) = frame.get(addrs) else {
        return none;
    };
    let mut c = Csum::new();
    c.add_bytes(a);
    c.add_u16(u16::from(proto));
    c.add_u16(l4_len);
    if field != c.fold() {
        return none;
    }
    VnetHdr {
        flags: crate::vnet::F_NEEDS_CSUM,
        csum_start: start,
        csum_offset: off,
        ..none
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Which remote VTEP (an index into the port's remote list) each inner source MAC was
/// last seen behind. Bounded: a peer sending from ever new addresses fills it to
/// `capacity`, after which entries older than the ageing time are swept and, if none
/// is, new addresses are not learned (their frames are flooded to every remote, which
/// is always correct, only slower).
#[derive(Debug, Clone)]
pub struct VtepTable {
    map: HashMap<Mac, (u16, Millis)>,
    capacity: usize,
    aging_ms: u64,
}

impl VtepTable {
    /// A table of at most `capacity` addresses whose entries age out after `aging_ms`
    /// (the FDB's ageing time, so a VTEP is forgotten when the FDB forgets its MAC).
    pub fn new(capacity: usize, aging_ms: u64) -> VtepTable {
        VtepTable {
            map: HashMap::new(),
            capacity,
            aging_ms,
        }
    }

    /// The remote `mac` was last seen behind, if not aged out.
    pub fn get(&self, mac: &Mac, now: Millis) -> Option<u16> {
        let (r, seen) = *self.map.get(mac)?;
        (now.0.saturating_sub(seen.0) < self.aging_ms).then_some(r)
    }

    /// Whether `learn(mac, remote, now)` would change anything a reader sees soon: a new
    /// address, a move, or a refresh due (more than a second old). Lets the data path
    /// take the write lock only then.
    pub fn needs_update(&self, mac: &Mac, remote: u16, now: Millis) -> bool {
        match self.map.get(mac) {
            Some(&(r, seen)) => r != remote || now.0.saturating_sub(seen.0) >= 1000,
            None => true,
        }
    }

    /// Records that `mac` was seen behind `remote` at `now`. Returns false when the table
    /// is full of live entries and `mac` was not learned.
    pub fn learn(&mut self, mac: Mac, remote: u16, now: Millis) -> bool {
        if mac.is_multicast() || mac == Mac::ZERO {
            return false;
        }
        if !self.map.contains_key(&mac) && self.map.len() >= self.capacity {
            self.sweep(now);
            if self.map.len() >= self.capacity {
                return false;
            }
        }
        self.map.insert(mac, (remote, now));
        true
    }

    /// Removes entries older than the ageing time; returns how many.
    pub fn sweep(&mut self, now: Millis) -> usize {
        let before = self.map.len();
        let aging = self.aging_ms;
        self.map
            .retain(|_, (_, seen)| now.0.saturating_sub(seen.0) < aging);
        before - self.map.len()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(flags: u8, vni: u32, inner: usize) -> Vec<u8> {
        let mut p = emit(vni).to_vec();
        p[0] = flags;
        p.extend(std::iter::repeat_n(0xab, inner));
        p
    }

    #[test]
    fn header_round_trips() {
        let h = emit(0x12_3456);
        assert_eq!(h, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        assert_eq!(parse(&packet(0x08, 0x12_3456, 14), 0x12_3456), Ok(8));
        // The VNI is 24 bits: a larger value is masked, never spills into the flags.
        assert_eq!(emit(0x0100_0001)[..4], [0x08, 0, 0, 0]);
    }

    #[test]
    fn refuses_bad_flags_wrong_vni_and_truncation() {
        assert_eq!(parse(&packet(0x00, 5, 14), 5), Err(VxlanError::BadFlags));
        assert_eq!(parse(&packet(0x08, 6, 14), 5), Err(VxlanError::WrongVni(6)));
        assert_eq!(parse(&packet(0x08, 5, 13), 5), Err(VxlanError::Truncated));
        assert_eq!(parse(&[], 5), Err(VxlanError::Truncated));
        // Reserved bits are ignored on receipt (§5).
        assert_eq!(parse(&packet(0xff, 5, 14), 5), Ok(8));
        let mut p = packet(0x08, 5, 14);
        p[1] = 0xff;
        p[7] = 0xff;
        assert_eq!(parse(&p, 5), Ok(8));
    }

    fn tcp4(sport: u16, ttl: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[14 + 8] = ttl;
        f[14 + 9] = 6;
        f[26..30].copy_from_slice(&[198, 18, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f
    }

    #[test]
    fn flow_hash_follows_the_flow_not_the_packet() {
        assert_eq!(
            inner_flow_hash(&tcp4(1000, 64)),
            inner_flow_hash(&tcp4(1000, 3))
        );
        assert_ne!(
            inner_flow_hash(&tcp4(1000, 64)),
            inner_flow_hash(&tcp4(1001, 64))
        );
        // Behind a VLAN tag the same flow hashes the same.
        let mut tagged = tcp4(1000, 64);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
        assert_eq!(inner_flow_hash(&tagged), inner_flow_hash(&tcp4(1000, 64)));
        // Short and odd frames hash without panicking.
        for n in 0..40 {
            let _ = inner_flow_hash(&tcp4(1, 1)[..n]);
        }
    }

    #[test]
    fn a_partial_checksum_is_handed_on_as_needs_csum() {
        let mut f = tcp4(1000, 64);
        assert_eq!(
            rx_vnet_hdr(&f),
            VnetHdr::default(),
            "zero field: complete (or absent)"
        );
        let mut c = Csum::new();
        c.add_bytes(&f[26..34]);
        c.add_u16(6);
        c.add_u16(20);
        f[50..52].copy_from_slice(&c.fold().to_be_bytes());
        let h = rx_vnet_hdr(&f);
        assert_eq!((h.flags, h.csum_start, h.csum_offset), (1, 34, 16));
        // Any other field value is left alone; short frames too.
        f[51] ^= 1;
        assert_eq!(rx_vnet_hdr(&f), VnetHdr::default());
        for n in 0..f.len() {
            let _ = rx_vnet_hdr(&f[..n]);
        }
    }

    #[test]
    fn vtep_table_learns_moves_ages_and_is_bounded() {
        let m = |i: u8| Mac([2, 0, 0, 0, 0, i]);
        let mut t = VtepTable::new(2, 10_000);
        assert!(t.learn(m(1), 0, Millis(0)));
        assert_eq!(t.get(&m(1), Millis(5)), Some(0));
        assert!(!t.needs_update(&m(1), 0, Millis(500)));
        assert!(t.needs_update(&m(1), 1, Millis(500)));
        assert!(t.learn(m(1), 1, Millis(500)));
        assert_eq!(t.get(&m(1), Millis(600)), Some(1));
        assert_eq!(t.get(&m(1), Millis(10_500)), None, "aged out");
        assert!(
            !t.learn(Mac::BROADCAST, 0, Millis(0)),
            "group addresses are not learned"
        );
        assert!(t.learn(m(2), 0, Millis(1000)));
        assert!(!t.learn(m(3), 0, Millis(2000)), "full of live entries");
        assert!(
            t.learn(m(3), 0, Millis(10_600)),
            "m(1) aged out and was swept"
        );
        assert_eq!(t.len(), 2);
    }
}
