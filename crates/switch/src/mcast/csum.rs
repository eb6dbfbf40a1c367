//! The Internet checksum as IGMP (RFC 2236 §2.3, RFC 3376 §4.1.2), IPv4 (RFC 791),
//! ICMPv6/MLD (RFC 4443 §2.3, with the RFC 8200 §8.1 pseudo-header) and PIM (RFC 7761
//! §4.9) use it: thin helpers over the one RFC 1071 implementation,
//! [`crate::offload::csum`].

use std::net::Ipv6Addr;

use crate::offload::csum::Csum;

/// The checksum of `data` (with its checksum field zeroed by the caller).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    crate::offload::csum::checksum(data)
}

/// True if `data`, checksum field included, sums to all ones (RFC 1071 §1 "verify").
#[inline]
pub fn verify(data: &[u8]) -> bool {
    checksum(data) == 0
}

/// The IPv6 pseudo-header sum (RFC 8200 §8.1): source, destination, upper-layer length,
/// three zero bytes and the next header value.
#[inline]
pub fn v6_pseudo(src: &Ipv6Addr, dst: &Ipv6Addr, len: u32, next_header: u8) -> Csum {
    let mut c = Csum::new();
    c.add_bytes(&src.octets());
    c.add_bytes(&dst.octets());
    c.add_u32(len);
    c.add_u32(u32::from(next_header));
    c
}

/// The checksum of an upper-layer message `msg` carried in IPv6 (checksum field zeroed).
#[inline]
pub fn checksum_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, msg: &[u8]) -> u16 {
    // A message inside a frame is far below 4 GiB; saturating is unreachable.
    let mut c = v6_pseudo(
        src,
        dst,
        u32::try_from(msg.len()).unwrap_or(u32::MAX),
        next_header,
    );
    c.add_bytes(msg);
    c.finish()
}

/// Verifies an upper-layer message carried in IPv6 (ICMPv6, PIM).
#[inline]
pub fn verify_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, msg: &[u8]) -> bool {
    if u32::try_from(msg.len()).is_err() {
        return false;
    }
    checksum_v6(src, dst, next_header, msg) == 0
}

#[allow(clippy::cast_possible_truncation)]
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 numerical example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn roundtrip_odd_and_long() {
        let mut d: Vec<u8> = (0..70001u32).map(|i| (i * 7 + 3) as u8).collect();
        d[0] = 0;
        d[1] = 0;
        let c = checksum(&d);
        d[0..2].copy_from_slice(&c.to_be_bytes());
        assert!(verify(&d));
        d[5] ^= 1;
        assert!(!verify(&d));
    }

    #[test]
    fn v6_pseudo_header_roundtrip() {
        let (s, d) = ("2001:db8::1".parse().unwrap(), "ff02::1".parse().unwrap());
        let mut msg = vec![130u8, 0, 0, 0, 1, 2, 3, 4, 5];
        let c = checksum_v6(&s, &d, 58, &msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
        assert!(verify_v6(&s, &d, 58, &msg));
        assert!(!verify_v6(&d, &s, 17, &msg));
    }
}
