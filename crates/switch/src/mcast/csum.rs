//! The Internet checksum (RFC 1071) as IGMP (RFC 2236 §2.3, RFC 3376 §4.1.2), IPv4
//! (RFC 791), ICMPv6/MLD (RFC 4443 §2.3, with the RFC 8200 §8.1 pseudo-header) and PIM
//! (RFC 7761 §4.9) use it.

use std::net::Ipv6Addr;

/// One's-complement sum of `data` as big-endian 16-bit words (an odd last byte is padded
/// with zero), added to `acc`. Not yet folded.
#[inline]
pub fn add(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so a 64 KiB message cannot overflow the accumulator.
        if acc & 0x8000_0000 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
    }
    acc
}

/// Folds the carries and complements: the value to store in a checksum field.
#[inline]
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of `data` (with its checksum field zeroed by the caller).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(add(0, data))
}

/// True if `data`, checksum field included, sums to all ones (RFC 1071 §1 "verify").
#[inline]
pub fn verify(data: &[u8]) -> bool {
    finish(add(0, data)) == 0
}

/// The IPv6 pseudo-header sum (RFC 8200 §8.1): source, destination, upper-layer length,
/// three zero bytes and the next header value.
#[inline]
pub fn v6_pseudo(src: &Ipv6Addr, dst: &Ipv6Addr, len: u32, next_header: u8) -> u32 {
    let mut acc = add(0, &src.octets());
    acc = add(acc, &dst.octets());
    acc = add(acc, &len.to_be_bytes());
    add(acc, &[0, 0, 0, next_header])
}

/// Verifies an upper-layer message carried in IPv6 (ICMPv6, PIM).
#[inline]
pub fn verify_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, msg: &[u8]) -> bool {
    let Ok(len) = u32::try_from(msg.len()) else {
        return false;
    };
    finish(add(v6_pseudo(src, dst, len, next_header), msg)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 numerical example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(add(0, &d)), !0xddf2);
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
}
