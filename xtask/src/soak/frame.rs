//! The soak test's frames: an Ethernet header and a payload that says who sent the frame,
//! to whom, in which fault window and with which sequence number, so that every receiver
//! can check each frame it gets on its own.
//!
//! Ethertype 0x88B5 is IEEE 802's "local experimental" type (IEEE Std 802-2014 §9.2.2):
//! no host stack in the namespaces reacts to it.

/// IEEE 802 local experimental ethertype 1.
pub const ETHERTYPE: u16 = 0x88B5;
const MAGIC: [u8; 4] = *b"RSSK";
/// The sender did not know for sure that the switch had learned the destination (a
/// fault was under way, or no frame from the destination had come back since the last
/// one): the switch may legitimately flood it (unknown unicast, IEEE 802.1Q §8.8.1).
pub const MAY_FLOOD: u8 = 1;
/// Destination id of broadcast frames.
pub const BROADCAST_ID: u8 = 0xff;
pub const BROADCAST: [u8; 6] = [0xff; 6];
/// Ethernet header + payload, padded to the 60-byte minimum (without FCS).
pub const LEN: usize = 60;
const HDR: usize = 14;

/// The locally administered MAC of endpoint `id` (02:53:4b = "SK").
pub fn mac(id: u8) -> [u8; 6] {
    [0x02, 0x53, 0x4b, 0x00, 0x00, id + 1]
}

/// What a frame carries besides its Ethernet addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Payload {
    pub flags: u8,
    pub src: u8,
    pub dst: u8,
    /// The destination MAC the sender meant (checked against the Ethernet header).
    pub dst_mac: [u8; 6],
    /// The daemon generation (bumped after each daemon restart) at send time.
    pub epoch: u32,
    /// The sender's port generation (bumped after its port was re-made) at send time.
    pub src_epoch: u32,
    /// The destination's port generation at send time.
    pub dst_epoch: u32,
    /// The fault window at send time (odd: a fault under way).
    pub window: u32,
    pub seq: u64,
}

/// A decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub p: Payload,
}

pub fn encode(eth_dst: [u8; 6], eth_src: [u8; 6], p: &Payload) -> [u8; LEN] {
    let mut b = [0u8; LEN];
    b[0..6].copy_from_slice(&eth_dst);
    b[6..12].copy_from_slice(&eth_src);
    b[12..14].copy_from_slice(&ETHERTYPE.to_be_bytes());
    let q = &mut b[HDR..];
    q[0..4].copy_from_slice(&MAGIC);
    q[4] = p.flags;
    q[5] = p.src;
    q[6] = p.dst;
    q[8..14].copy_from_slice(&p.dst_mac);
    q[14..18].copy_from_slice(&p.epoch.to_be_bytes());
    q[18..22].copy_from_slice(&p.src_epoch.to_be_bytes());
    q[22..26].copy_from_slice(&p.dst_epoch.to_be_bytes());
    q[26..30].copy_from_slice(&p.window.to_be_bytes());
    q[30..38].copy_from_slice(&p.seq.to_be_bytes());
    b
}

/// None for frames that are not ours (other ethertype, no magic, too short).
pub fn decode(b: &[u8]) -> Option<Frame> {
    if b.len() < HDR + 38 || b[12..14] != ETHERTYPE.to_be_bytes() || b[HDR..HDR + 4] != MAGIC {
        return None;
    }
    let q = &b[HDR..];
    let u32_at = |i: usize| u32::from_be_bytes([q[i], q[i + 1], q[i + 2], q[i + 3]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&q[30..38]);
    let six = |s: &[u8]| {
        let mut m = [0u8; 6];
        m.copy_from_slice(&s[..6]);
        m
    };
    Some(Frame {
        eth_dst: six(&b[0..6]),
        eth_src: six(&b[6..12]),
        p: Payload {
            flags: q[4],
            src: q[5],
            dst: q[6],
            dst_mac: six(&q[8..14]),
            epoch: u32_at(14),
            src_epoch: u32_at(18),
            dst_epoch: u32_at(22),
            window: u32_at(26),
            seq: u64::from_be_bytes(seq),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_foreign_frames() {
        let p = Payload {
            flags: MAY_FLOOD,
            src: 1,
            dst: 3,
            dst_mac: mac(3),
            epoch: 7,
            src_epoch: 2,
            dst_epoch: 9,
            window: 12,
            seq: 1 << 40,
        };
        let b = encode(mac(3), mac(1), &p);
        let f = decode(&b).unwrap();
        assert_eq!((f.eth_dst, f.eth_src, f.p), (mac(3), mac(1), p));
        let mut other = b;
        other[13] = 0x00; // another ethertype
        assert_eq!(decode(&other), None);
        let mut nomagic = b;
        nomagic[HDR] = b'X';
        assert_eq!(decode(&nomagic), None);
        assert_eq!(decode(&b[..40]), None);
    }
}
