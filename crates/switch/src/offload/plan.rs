//! The egress decision per frame and destination: pass the virtio-net header through,
//! complete the checksum, or segment in software (virtio 1.2 §5.1.6.2 for the header's
//! meaning, §5.1.6.4 for what a receiving driver may be given).
//!
//! The planner does not trust any other parser: it reads the L2/L3/L4 headers it needs
//! from the frame itself and checks every offset and length it will later use, so a
//! [`GsoPlan`] can be executed without further bounds failures.

use super::csum::Csum;
use super::drop::OffloadDrop;
use super::frame::Frame;
use super::gso::GsoPlan;
use crate::port::Offloads;
use crate::vnet::{Gso, VnetHdr, F_DATA_VALID, F_NEEDS_CSUM, GSO_NONE};

/// Longest L2+L3+L4 header block we segment (802.1ad+802.1Q, IPv6 with extension
/// headers, TCP with options all fit). Longer headers are a counted drop.
pub const MAX_HDR: usize = 256;

/// Most segments one USO frame may produce: Linux's `UDP_MAX_SEGMENTS`, enforced the same
/// way in `virtio_net_hdr_to_skb`, so a guest cannot amplify one descriptor into more
/// datagrams than a Linux host would send.
pub const USO_MAX_SEGMENTS: usize = 128;

/// Most segments any other GSO frame may produce: a 64 KiB frame cut at Linux's smallest
/// TCP send MSS (`TCP_MIN_SND_MSS`, 48 bytes; the floor Linux set against
/// CVE-2019-11479's tiny-MSS amplification). Beyond it the frame is a counted drop
/// (`too_many_segments`): a 64 KiB frame with `gso_size = 1` would otherwise cost ~65 K
/// segments per destination without TSO.
pub const GSO_MAX_SEGMENTS: usize = 65_535 / 48 + 1;

/// What to do with one frame toward one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Egress {
    /// Send the frame bytes unchanged, preceded by `hdr` (flags the destination does not
    /// understand are already cleared).
    PassThrough { hdr: VnetHdr },
    /// Send the frame with its checksum completed (see [`CsumJob`]), preceded by `hdr`.
    CompleteCsum(CsumJob),
    /// Segment in software: see [`GsoPlan::segments`].
    Segment(GsoPlan),
}

/// Checksum completion for VIRTIO_NET_HDR_F_NEEDS_CSUM (virtio 1.2 §5.1.6.2): the RFC 1071
/// checksum of bytes `start..` (the field itself holds the pseudo-header seed and is part
/// of the sum) stored at `at`. Both are validated against the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsumJob {
    /// First byte summed (csum_start).
    pub start: usize,
    /// Offset of the 16-bit checksum field (csum_start + csum_offset).
    pub at: usize,
    /// The header to send with the completed frame.
    pub hdr: VnetHdr,
}

impl CsumJob {
    /// The checksum value to store at `at` (network order), computed in place over the
    /// frame. A result of 0 is sent as 0xffff, as Linux's `skb_checksum_help` does
    /// (RFC 768 needs this for UDP; for TCP both encodings verify).
    pub fn value(&self, frame: &Frame) -> u16 {
        let mut c = Csum::new();
        frame.csum(self.start..frame.len(), &mut c);
        match c.finish() {
            0 => 0xffff,
            v => v,
        }
    }

    /// Completes the checksum in a contiguous, writable copy of the frame (e.g. after
    /// copying it into a guest RX buffer). Returns false if `frame` is shorter than the
    /// frame the job was planned for.
    pub fn apply(&self, frame: &mut [u8]) -> bool {
        if self.at + 2 > frame.len() || self.start > self.at {
            return false;
        }
        let mut c = Csum::new();
        c.add_bytes(&frame[self.start..]);
        let v = match c.finish() {
            0 => 0xffff,
            v => v,
        };
        frame[self.at..self.at + 2].copy_from_slice(&v.to_be_bytes());
        true
    }
}

/// Header offsets found and checked by [`parse_gso_headers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hdrs {
    pub l3_off: usize,
    pub v6: bool,
    pub l4_off: usize,
    pub tcp: bool,
    /// End of the L4 header (= start of the L4 payload).
    pub hdr_end: usize,
}

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Reads and checks the headers of a GSO frame from `b` (the first `min(len, MAX_HDR)`
/// bytes of a frame of `frame_len` bytes).
pub(crate) fn parse_gso_headers(
    b: &[u8],
    frame_len: usize,
    hdr: &VnetHdr,
    gso: Gso,
) -> Result<Hdrs, OffloadDrop> {
    let be16 = |i: usize| -> Result<u16, OffloadDrop> {
        match (b.get(i), b.get(i + 1)) {
            (Some(&x), Some(&y)) => Ok(u16::from_be_bytes([x, y])),
            _ => Err(if frame_len > b.len() {
                OffloadDrop::HeadersTooLong
            } else {
                OffloadDrop::Truncated
            }),
        }
    };
    let byte = |i: usize| -> Result<u8, OffloadDrop> {
        b.get(i).copied().ok_or(if frame_len > b.len() {
            OffloadDrop::HeadersTooLong
        } else {
            OffloadDrop::Truncated
        })
    };
    // L2: Ethernet with up to two VLAN tags.
    let mut l3_off = 14;
    let mut ethertype = be16(12)?;
    for _ in 0..2 {
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            ethertype = be16(l3_off + 2)?;
            l3_off += 4;
        }
    }
    let (v6, l4_off, proto, ip_end) = match ethertype {
        ETH_P_IP => {
            let vihl = byte(l3_off)?;
            let ihl = (vihl & 0x0f) as usize * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return Err(OffloadDrop::BadIpHeader);
            }
            let tot = be16(l3_off + 2)? as usize;
            let frag = be16(l3_off + 6)?;
            if frag & 0x3fff != 0 {
                return Err(OffloadDrop::IpUnsupported);
            }
            if tot != 0 && tot < ihl {
                return Err(OffloadDrop::BadIpHeader);
            }
            byte(l3_off + ihl - 1)?;
            // 0: the large-send convention "length to be filled in per segment"; Linux
            // segments such a frame exactly like one with the right length.
            let end = if tot == 0 { frame_len } else { l3_off + tot };
            (false, l3_off + ihl, byte(l3_off + 9)?, end)
        }
        ETH_P_IPV6 => {
            if byte(l3_off)? >> 4 != 6 {
                return Err(OffloadDrop::BadIpHeader);
            }
            let plen = be16(l3_off + 4)? as usize;
            let mut next = byte(l3_off + 6)?;
            // Payload length 0 behind a hop-by-hop header is a jumbogram (RFC 2675); without
            // one it is the large-send "fill in per segment" convention, as for IPv4.
            if plen == 0 && next == 0 {
                return Err(OffloadDrop::IpUnsupported);
            }
            let mut off = l3_off + 40;
            loop {
                match next {
                    IPPROTO_TCP | IPPROTO_UDP => break,
                    // Hop-by-hop, routing, destination options (RFC 8200 §4).
                    0 | 43 | 60 => {
                        let n = byte(off)?;
                        let len = (byte(off + 1)? as usize + 1) * 8;
                        next = n;
                        off += len;
                    }
                    // Authentication header (RFC 4302 §2.2).
                    51 => {
                        let n = byte(off)?;
                        let len = (byte(off + 1)? as usize + 2) * 4;
                        next = n;
                        off += len;
                    }
                    44 => return Err(OffloadDrop::IpUnsupported),
                    _ => return Err(OffloadDrop::GsoTypeMismatch),
                }
                if off >= MAX_HDR {
                    return Err(OffloadDrop::HeadersTooLong);
                }
            }
            let end = if plen == 0 {
                frame_len
            } else {
                l3_off + 40 + plen
            };
            (true, off, next, end)
        }
        _ => return Err(OffloadDrop::NotIp),
    };
    // The datagram must be exactly the frame: a GSO frame has no Ethernet padding, and a
    // nonzero length that disagrees is a broken sender (Linux would segment it anyway;
    // we refuse rather than pass on or "repair" a frame whose meaning is unclear).
    if ip_end != frame_len {
        return Err(OffloadDrop::IpLengthMismatch);
    }
    let tcp = proto == IPPROTO_TCP;
    let type_ok = match gso {
        Gso::TcpV4 => !v6 && tcp,
        Gso::TcpV6 => v6 && tcp,
        Gso::Udp | Gso::UdpL4 => !tcp && !hdr.ecn(),
        Gso::None => false,
    };
    if !type_ok {
        return Err(OffloadDrop::GsoTypeMismatch);
    }
    if hdr.csum_start as usize != l4_off {
        return Err(OffloadDrop::CsumStartMismatch);
    }
    let want_off = if tcp { 16 } else { 6 };
    if hdr.csum_offset != want_off {
        return Err(OffloadDrop::CsumOffsetMismatch);
    }
    let l4_hlen = if tcp {
        let doff = (byte(l4_off + 12)? >> 4) as usize * 4;
        if doff < 20 {
            return Err(OffloadDrop::BadTcpHeader);
        }
        doff
    } else {
        8
    };
    let hdr_end = l4_off + l4_hlen;
    if hdr_end > frame_len {
        return Err(OffloadDrop::Truncated);
    }
    if hdr_end > b.len() {
        return Err(OffloadDrop::HeadersTooLong);
    }
    Ok(Hdrs {
        l3_off,
        v6,
        l4_off,
        tcp,
        hdr_end,
    })
}

/// Output flags for a frame whose checksum is complete: DATA_VALID only for a receiver
/// that understands it (virtio 1.2 §5.1.6.4.1).
#[inline]
fn complete_flags(dest: &Offloads) -> u8 {
    if dest.data_valid {
        F_DATA_VALID
    } else {
        0
    }
}

/// Whether [`plan`] would pass the frame through with `hdr` exactly as it is (apart
/// from `num_buffers`, which the receiving ring sets): nothing requested, no stray
/// fields, and no DATA_VALID hint for a receiver that does not take it.
///
/// Why callers ask first: then they hand on the header they already hold. `plan`'s
/// pass-through builds a fresh header on the stack, and the receive path reading it back
/// straight away missed store-to-load forwarding (mixed-width stores, one wider load):
/// ≈ 8 % of a 64-byte guest→guest frame's cost in the profile.
#[inline]
pub fn passes_unchanged(hdr: &VnetHdr, dest: &Offloads) -> bool {
    (hdr.flags == 0 || (hdr.flags == F_DATA_VALID && dest.data_valid))
        && hdr.gso_type == GSO_NONE
        && hdr.hdr_len == 0
        && hdr.gso_size == 0
        && hdr.csum_start == 0
        && hdr.csum_offset == 0
}

/// Decides what happens to `frame` (with header `hdr`) on its way to a port that can
/// receive `dest`.
///
/// Never panics and never reads outside `frame`; every inconsistency is an
/// [`OffloadDrop`] for the caller to count.
#[inline]
pub fn plan(hdr: &VnetHdr, frame: &Frame, dest: &Offloads) -> Result<Egress, OffloadDrop> {
    // The common case inline: nothing requested (no partial checksum, no GSO) — the same
    // result the general path gives, without its call and match per frame.
    if hdr.flags & !F_DATA_VALID == 0 && hdr.gso_type == GSO_NONE && hdr.hdr_len == 0 {
        let flags = if dest.data_valid {
            hdr.flags & F_DATA_VALID
        } else {
            0
        };
        return Ok(Egress::PassThrough {
            hdr: VnetHdr {
                flags,
                ..VnetHdr::default()
            },
        });
    }
    plan_general(hdr, frame, dest)
}

#[inline(never)]
fn plan_general(hdr: &VnetHdr, frame: &Frame, dest: &Offloads) -> Result<Egress, OffloadDrop> {
    let len = frame.len();
    let gso = hdr.gso().map_err(|_| OffloadDrop::UnknownGsoType)?;
    if hdr.hdr_len as usize > len {
        return Err(OffloadDrop::HdrLenPastFrame);
    }
    let needs_csum = hdr.needs_csum();
    if needs_csum {
        let start = hdr.csum_start as usize;
        if start + hdr.csum_offset as usize + 2 > len {
            return Err(OffloadDrop::CsumPastFrame);
        }
    }
    let plain = VnetHdr {
        flags: 0,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
        num_buffers: 0,
    };
    let csum_only = |dest: &Offloads| -> Egress {
        if !needs_csum {
            let flags = if dest.data_valid {
                hdr.flags & F_DATA_VALID
            } else {
                0
            };
            Egress::PassThrough {
                hdr: VnetHdr { flags, ..plain },
            }
        } else if dest.csum {
            Egress::PassThrough {
                hdr: VnetHdr {
                    flags: F_NEEDS_CSUM,
                    csum_start: hdr.csum_start,
                    csum_offset: hdr.csum_offset,
                    ..plain
                },
            }
        } else {
            let start = hdr.csum_start as usize;
            Egress::CompleteCsum(CsumJob {
                start,
                at: start + hdr.csum_offset as usize,
                hdr: VnetHdr {
                    flags: complete_flags(dest),
                    ..plain
                },
            })
        }
    };
    if gso == Gso::None {
        if hdr.ecn() {
            return Err(OffloadDrop::UnknownGsoType);
        }
        return Ok(csum_only(dest));
    }
    if hdr.gso_size == 0 {
        return Err(OffloadDrop::GsoSizeZero);
    }
    if !needs_csum {
        return Err(OffloadDrop::GsoWithoutCsum);
    }
    let mut head = [0u8; MAX_HDR];
    let n = len.min(MAX_HDR);
    if !frame.copy_to(0, &mut head[..n]) {
        return Err(OffloadDrop::Truncated);
    }
    let h = parse_gso_headers(&head[..n], len, hdr, gso)?;
    // UFO's unit is the whole UDP datagram, the others' the L4 payload (Linux:
    // virtio_net_hdr_to_skb, "Too small packets are not really GSO ones").
    let seg_base = if gso == Gso::Udp { h.l4_off } else { h.hdr_end };
    if len - seg_base <= hdr.gso_size as usize {
        return Ok(csum_only(dest));
    }
    let capable = match gso {
        Gso::TcpV4 => dest.tso4 && (!hdr.ecn() || dest.tso_ecn),
        Gso::TcpV6 => dest.tso6 && (!hdr.ecn() || dest.tso_ecn),
        Gso::UdpL4 => (if h.v6 { dest.uso6 } else { dest.uso4 }) && dest.csum,
        Gso::Udp => dest.ufo && dest.csum,
        Gso::None => false,
    };
    if capable {
        return Ok(Egress::PassThrough {
            hdr: VnetHdr {
                flags: F_NEEDS_CSUM,
                num_buffers: 0,
                ..*hdr
            },
        });
    }
    GsoPlan::new(hdr, gso, &h, len, dest).map(Egress::Segment)
}
