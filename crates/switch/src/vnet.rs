//! The virtio-net packet header (virtio 1.2 §5.1.6 "Device Operation", struct
//! virtio_net_hdr). Packet/Repr split in the style of smoltcp: [`VnetHdr`] is the parsed
//! representation, `parse`/`emit` convert from/to the little-endian wire bytes.
//!
//! The header is 12 bytes when VIRTIO_F_VERSION_1 or VIRTIO_NET_F_MRG_RXBUF is negotiated
//! (with `num_buffers`), 10 bytes for legacy devices without mergeable buffers. Linux
//! tap/AF_PACKET use the same layout (TUNSETVNETHDRSZ / PACKET_VNET_HDR_SZ = 12).

/// `flags`: the checksum starting at `csum_start` must be completed at `csum_offset`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum is already known good (receive side only).
pub const F_DATA_VALID: u8 = 2;
/// `flags`: RSC information present (not used by us).
pub const F_RSC_INFO: u8 = 4;

/// `gso_type` values (virtio 1.2 §5.1.6.2).
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

/// Size of the header with `num_buffers`.
pub const HDR_LEN: usize = 12;
/// Size of the legacy header without `num_buffers`.
pub const HDR_LEN_LEGACY: usize = 10;

/// Generic segmentation kind, decoded from `gso_type` without the ECN bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Gso {
    #[default]
    None,
    TcpV4,
    TcpV6,
    /// UFO: IPv4/IPv6 fragmentation of one big UDP datagram.
    Udp,
    /// USO: UDP L4 segmentation (one datagram per segment).
    UdpL4,
}

/// Parsed virtio_net_hdr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
    /// Only meaningful on the 12-byte form (receive side, mergeable buffers).
    pub num_buffers: u16,
}

/// Why a virtio_net_hdr was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VnetHdrError {
    #[error("virtio-net header truncated")]
    Truncated,
    #[error("unknown gso_type {0:#x}")]
    UnknownGso(u8),
}

impl VnetHdr {
    /// Parses `len` (10 or 12) bytes of header from `b`.
    #[inline]
    pub fn parse(b: &[u8], len: usize) -> Result<VnetHdr, VnetHdrError> {
        if b.len() < len || len < HDR_LEN_LEGACY {
            return Err(VnetHdrError::Truncated);
        }
        let u16le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16le(2),
            gso_size: u16le(4),
            csum_start: u16le(6),
            csum_offset: u16le(8),
            num_buffers: if len >= HDR_LEN { u16le(10) } else { 0 },
        })
    }

    /// Writes the header in its `len`-byte form (10 or 12) to the start of `out`, as
    /// two stores ([`le_words`](Self::le_words)), never field by field: a wide copy of
    /// the result could not be store-forwarded from byte stores. Returns the number of
    /// bytes written, or `None` if `out` is too short.
    #[inline]
    pub fn emit(&self, out: &mut [u8], len: usize) -> Option<usize> {
        if out.len() < len || len < HDR_LEN_LEGACY {
            return None;
        }
        let (lo, hi) = self.le_words();
        out[..8].copy_from_slice(&lo.to_le_bytes());
        if len >= HDR_LEN {
            out[8..12].copy_from_slice(&hi.to_le_bytes());
        } else {
            out[8..10].copy_from_slice(&hi.to_le_bytes()[..2]);
        }
        Some(len)
    }

    /// The 12-byte form as two little-endian words: bytes 0..8 and 8..12 (the 10-byte
    /// form is the first word and the low half of the second). For [`emit`](Self::emit)
    /// and for writers that store the header straight into guest memory: a header built
    /// byte by byte and then copied makes the copy's wide loads wait for the narrow stores
    /// to reach the cache (no store forwarding), behind every store still queued — on the
    /// RX path those are the previous frame's writes into lines the driver's core owns.
    #[inline]
    pub fn le_words(&self) -> (u64, u32) {
        let lo = u64::from(self.flags)
            | u64::from(self.gso_type) << 8
            | u64::from(self.hdr_len) << 16
            | u64::from(self.gso_size) << 32
            | u64::from(self.csum_start) << 48;
        let hi = u32::from(self.csum_offset) | u32::from(self.num_buffers) << 16;
        (lo, hi)
    }

    /// The segmentation kind, or an error for an unknown `gso_type`.
    #[inline]
    pub fn gso(&self) -> Result<Gso, VnetHdrError> {
        match self.gso_type & !GSO_ECN {
            GSO_NONE => Ok(Gso::None),
            GSO_TCPV4 => Ok(Gso::TcpV4),
            GSO_TCPV6 => Ok(Gso::TcpV6),
            GSO_UDP => Ok(Gso::Udp),
            GSO_UDP_L4 => Ok(Gso::UdpL4),
            other => Err(VnetHdrError::UnknownGso(other)),
        }
    }

    #[inline]
    pub fn ecn(&self) -> bool {
        self.gso_type & GSO_ECN != 0
    }

    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// True when the frame needs nothing from its receiver: no GSO, no pending checksum.
    #[inline]
    pub fn is_plain(&self) -> bool {
        self.gso_type == GSO_NONE && !self.needs_csum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_12_and_10() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 54,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        let mut b = [0u8; 12];
        assert_eq!(h.emit(&mut b, 12), Some(12));
        assert_eq!(VnetHdr::parse(&b, 12), Ok(h));
        let mut b10 = [0u8; 10];
        h.emit(&mut b10, 10).unwrap();
        let p = VnetHdr::parse(&b10, 10).unwrap();
        assert_eq!(p.num_buffers, 0);
        assert_eq!(p.gso(), Ok(Gso::TcpV4));
        assert!(p.ecn() && p.needs_csum());
    }

    #[test]
    fn le_words_are_the_emitted_bytes() {
        let h = VnetHdr {
            flags: 0x81,
            gso_type: 0x93,
            hdr_len: 0xa1b2,
            gso_size: 0xc3d4,
            csum_start: 0xe5f6,
            csum_offset: 0x0718,
            num_buffers: 0x293a,
        };
        let mut b = [0u8; 12];
        h.emit(&mut b, 12).unwrap();
        let (lo, hi) = h.le_words();
        assert_eq!(lo.to_le_bytes(), b[..8]);
        assert_eq!(hi.to_le_bytes(), b[8..]);
    }

    #[test]
    fn rejects_short_and_unknown() {
        assert_eq!(VnetHdr::parse(&[0; 9], 10), Err(VnetHdrError::Truncated));
        assert_eq!(VnetHdr::parse(&[0; 11], 12), Err(VnetHdrError::Truncated));
        let h = VnetHdr {
            gso_type: 2,
            ..Default::default()
        };
        assert_eq!(h.gso(), Err(VnetHdrError::UnknownGso(2)));
    }
}
