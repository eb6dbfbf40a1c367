//! Test frames and port options shared by the integration tests.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

use switch::Mac;
use vring_engine::PortOptions;

pub const MAC_A: Mac = Mac([0x52, 0x54, 0, 0, 0, 0xa]);
pub const MAC_B: Mac = Mac([0x52, 0x54, 0, 0, 0, 0xb]);

pub fn opts(tag: &str, mac: Mac) -> PortOptions {
    PortOptions {
        mac: Some(mac),
        mtu: Some(1500),
        ..PortOptions::new(super::sock_path(tag))
    }
}

/// A UDP/IPv4 frame from `src` to `dst` with `payload_len` bytes of payload.
pub fn udp_frame(src: Mac, dst: Mac, payload_len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + 3) as u8).collect();
    let b = etherparse::PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4([198, 18, 0, 1], [198, 18, 0, 2], 64)
        .udp(1000, 2000);
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).unwrap();
    v
}
