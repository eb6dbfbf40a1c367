//! Encapsulation of one frame for a VXLAN port, without I/O: the frame (vnet header and
//! Ethernet bytes, copied out of wherever it came from) becomes VXLAN datagrams that fit
//! the underlay, grouped into UDP GSO batches (UDP_SEGMENT, Linux ≥ 4.18: one sendmsg
//! carries up to [`BATCH_MAX_SEGS`] equal-sized datagrams, the last may be shorter).
//!
//! A UDP socket has no virtio-net header, so what a guest left to offloads is done here:
//! a partial checksum is completed, a GSO frame segmented in software (switch::offload,
//! the same bytes Linux's GSO would produce). A TCP frame whose segments would not fit
//! the underlay is segmented with a smaller MSS (legal for TCP, and what "segmented to
//! the underlay MTU" means); a UDP frame cannot be re-cut without changing its
//! datagrams, so one that does not fit is a counted drop, as is any oversized
//! non-GSO frame.

use switch::offload::{plan, Egress, Frame, GsoKind};
use switch::vxlan::HEADER_LEN;
use switch::{Chunk, Offloads, VnetHdr};

/// Datagrams in one UDP GSO send (Linux's UDP_MAX_SEGMENTS).
pub const BATCH_MAX_SEGS: usize = 64;
/// UDP payload bytes in one send (the IP length field, minus outer headers).
pub const BATCH_MAX_BYTES: usize = 65_000;

/// A run of datagrams in the output buffer sent with one sendmsg: `count` datagrams of
/// `seg` bytes each, the last possibly shorter, at `start..start + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub start: usize,
    pub len: usize,
    pub seg: usize,
    pub count: usize,
    /// A shorter datagram ended the batch.
    closed: bool,
}

/// Why a frame could not be encapsulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapError {
    /// Encapsulated, it would exceed the underlay MTU (and cannot be re-segmented).
    Mtu,
    /// The frame's offload request is malformed (switch::offload refused it).
    BadFrame,
}

/// What [`encapsulate`] did beyond the plain case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Encapped {
    /// A TCP GSO frame was segmented smaller than its gso_size.
    pub resegmented: bool,
}

/// Encapsulates `frame` (described by `hdr`) for `vni` into `out` (cleared first), as
/// `batches`, each inner frame at most `inner_max` bytes.
pub fn encapsulate(
    hdr: &VnetHdr,
    frame: &mut [u8],
    vni: u32,
    inner_max: usize,
    out: &mut Vec<u8>,
    batches: &mut Vec<Batch>,
) -> Result<Encapped, EncapError> {
    out.clear();
    batches.clear();
    let vh = switch::vxlan::emit(vni);
    let parts = [Chunk::from(&*frame)];
    let planned = plan(hdr, &Frame::new(&parts), &Offloads::NONE);
    let mut done = Encapped::default();
    match planned {
        Ok(Egress::PassThrough { .. }) => {
            if frame.len() > inner_max {
                // A full-sized TCP segment of a guest whose MTU is the underlay's: cut
                // it as a TSO frame would be (its checksum field becomes the seed).
                let h = tcp_as_tso(frame, inner_max, true).ok_or(EncapError::Mtu)?;
                return encapsulate(&h, frame, vni, inner_max, out, batches)
                    .map(|_| Encapped { resegmented: true });
            }
            out.extend_from_slice(&vh);
            out.extend_from_slice(frame);
            push(batches, 0, out.len());
        }
        Ok(Egress::CompleteCsum(job)) => {
            if frame.len() > inner_max {
                // The checksum field already holds the pseudo-header seed.
                let h = tcp_as_tso(frame, inner_max, false)
                    .filter(|h| usize::from(h.csum_start) == job.start)
                    .ok_or(EncapError::Mtu)?;
                return encapsulate(&h, frame, vni, inner_max, out, batches)
                    .map(|_| Encapped { resegmented: true });
            }
            if !job.apply(frame) {
                return Err(EncapError::BadFrame);
            }
            out.extend_from_slice(&vh);
            out.extend_from_slice(frame);
            push(batches, 0, out.len());
        }
        Ok(Egress::Segment(mut p)) => {
            let tcp = matches!(p.kind(), GsoKind::TcpV4 | GsoKind::TcpV6);
            if tcp {
                let l4 = p.l4_off();
                let doff = frame.get(l4 + 12).map_or(20, |b| usize::from(b >> 4) * 4);
                let hdr_end = l4 + doff;
                if hdr_end + p.gso_size() > inner_max {
                    let mss = inner_max.checked_sub(hdr_end).filter(|m| *m >= 8);
                    let mss = mss.and_then(|m| u16::try_from(m).ok());
                    let Some(mss) = mss else {
                        return Err(EncapError::Mtu);
                    };
                    let smaller = VnetHdr {
                        gso_size: mss,
                        ..*hdr
                    };
                    p = match plan(&smaller, &Frame::new(&parts), &Offloads::NONE) {
                        Ok(Egress::Segment(p)) => p,
                        _ => return Err(EncapError::BadFrame),
                    };
                    done.resegmented = true;
                }
            }
            let mut seg = p
                .segments(Frame::new(&parts))
                .map_err(|_| EncapError::BadFrame)?;
            while let Some(len) = seg.next_len() {
                if len > inner_max {
                    return Err(EncapError::Mtu);
                }
                let start = out.len();
                out.extend_from_slice(&vh);
                out.resize(start + HEADER_LEN + len, 0);
                match seg.copy_next(&mut out[start + HEADER_LEN..]) {
                    Ok(Some(_)) => push(batches, start, HEADER_LEN + len),
                    _ => return Err(EncapError::BadFrame),
                }
            }
        }
        Err(_) => return Err(EncapError::BadFrame),
    }
    Ok(done)
}

/// A TSO request (virtio 1.2 §5.1.6.2) that cuts `frame`, a single TCP segment over
/// IPv4 or IPv6 (no extension headers, no IP options beyond the header length), into
/// segments of at most `inner_max` bytes; `None` for anything else. With `seed`, the TCP
/// checksum field is overwritten with the pseudo-header sum the segmenter starts from
/// (Linux's `tcp_v4_check`/`tcp_v6_check` seed, not complemented).
pub(crate) fn tcp_as_tso(frame: &mut [u8], inner_max: usize, seed: bool) -> Option<VnetHdr> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let l3 = 14;
    let (l4, v6) = match et {
        0x0800 if frame.get(l3 + 9) == Some(&6) => {
            // Not a fragment: flags MF clear and offset 0.
            let frag = u16::from_be_bytes([*frame.get(l3 + 6)?, *frame.get(l3 + 7)?]);
            if frag & 0x3fff != 0 {
                return None;
            }
            (l3 + usize::from(frame.get(l3)? & 0x0f) * 4, false)
        }
        0x86dd if frame.get(l3 + 6) == Some(&6) => (l3 + 40, true),
        _ => return None,
    };
    let doff = usize::from(frame.get(l4 + 12)? >> 4) * 4;
    let hdr_end = l4 + doff;
    if doff < 20 || hdr_end >= frame.len() {
        return None;
    }
    let mss = u16::try_from(inner_max.checked_sub(hdr_end)?).ok()?;
    if mss < 8 {
        return None;
    }
    if seed {
        let mut c = switch::offload::Csum::new();
        let addrs = if v6 {
            l3 + 8..l3 + 40
        } else {
            l3 + 12..l3 + 20
        };
        c.add_bytes(frame.get(addrs)?);
        c.add_u16(6);
        c.add_u16(u16::try_from(frame.len() - l4).ok()?);
        let v = c.fold();
        frame
            .get_mut(l4 + 16..l4 + 18)?
            .copy_from_slice(&v.to_be_bytes());
    }
    Some(VnetHdr {
        flags: switch::vnet::F_NEEDS_CSUM,
        gso_type: if v6 {
            switch::vnet::GSO_TCPV6
        } else {
            switch::vnet::GSO_TCPV4
        },
        hdr_len: u16::try_from(hdr_end).ok()?,
        gso_size: mss,
        csum_start: u16::try_from(l4).ok()?,
        csum_offset: 16,
        num_buffers: 0,
    })
}

/// Adds the datagram at `start..start + len` to the last batch if UDP GSO can carry it
/// there (same size, or a shorter last one), else starts a new batch.
fn push(batches: &mut Vec<Batch>, start: usize, len: usize) {
    if let Some(b) = batches.last_mut() {
        let fits = !b.closed
            && b.count < BATCH_MAX_SEGS
            && b.len + len <= BATCH_MAX_BYTES
            && b.start + b.len == start
            && len <= b.seg;
        if fits {
            b.len += len;
            b.count += 1;
            b.closed = len < b.seg;
            return;
        }
    }
    batches.push(Batch {
        start,
        len,
        seg: len,
        count: 1,
        closed: false,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::vnet::{F_NEEDS_CSUM, GSO_TCPV4};

    /// An IPv4 TCP frame with `payload` bytes; as a TSO frame when `mss` is set.
    fn tcp4(payload: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        let tot = u16::try_from(20 + 20 + payload).unwrap_or(0);
        f[16..18].copy_from_slice(&tot.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[198, 18, 0, 1]);
        f[30..34].copy_from_slice(&[198, 18, 0, 2]);
        f[34..36].copy_from_slice(&1000u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[46] = 0x50;
        f[47] = 0x18;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = u8::try_from(i % 251).unwrap_or(0);
        }
        // The IPv4 header checksum (the segmenter rewrites it per segment anyway).
        let c = switch::offload::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn tso(mss: u16) -> VnetHdr {
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 0,
        }
    }

    #[test]
    fn a_plain_frame_is_one_datagram_with_the_header() {
        let mut f = tcp4(100);
        let (mut out, mut b) = (Vec::new(), Vec::new());
        let r = encapsulate(&VnetHdr::default(), &mut f, 7, 1450, &mut out, &mut b);
        assert_eq!(r, Ok(Encapped::default()));
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].count, b[0].len), (1, 8 + f.len()));
        assert_eq!(&out[..8], &switch::vxlan::emit(7));
        assert_eq!(&out[8..], &f[..]);
    }

    #[test]
    fn an_oversized_plain_frame_is_an_mtu_drop_unless_it_is_tcp() {
        let mut f = tcp4(1446);
        f[23] = 17; // UDP: cannot be re-cut
        let (mut out, mut b) = (Vec::new(), Vec::new());
        let r = encapsulate(&VnetHdr::default(), &mut f, 7, 1450, &mut out, &mut b);
        assert_eq!(r, Err(EncapError::Mtu));
        // A complete full-sized TCP segment becomes two, each with a valid checksum.
        let mut f = tcp4(1446);
        let mut c = switch::offload::Csum::new();
        c.add_bytes(&f[26..34]);
        c.add_u16(6);
        c.add_u16(u16::try_from(f.len() - 34).unwrap());
        c.add_bytes(&f[34..]);
        let v = c.finish();
        f[50..52].copy_from_slice(&v.to_be_bytes());
        let r = encapsulate(&VnetHdr::default(), &mut f, 7, 1450, &mut out, &mut b).unwrap();
        assert!(r.resegmented);
        let total: usize = b.iter().map(|x| x.count).sum();
        assert_eq!(total, 2);
        let mut at = 0;
        let mut payload = 0;
        for len in [b[0].seg, out.len() - b[0].seg] {
            let inner = &out[at + 8..at + len];
            assert!(inner.len() <= 1450);
            let mut c = switch::offload::Csum::new();
            c.add_bytes(&inner[26..34]);
            c.add_u16(6);
            c.add_u16(u16::try_from(inner.len() - 34).unwrap());
            c.add_bytes(&inner[34..]);
            assert_eq!(c.fold(), 0xffff, "TCP checksum of segment at {at}");
            payload += inner.len() - 54;
            at += len;
        }
        assert_eq!(payload, 1446);
    }

    #[test]
    fn a_tso_frame_is_segmented_to_the_underlay_in_gso_batches() {
        // A guest with MTU 1500 sends MSS 1448; the underlay leaves 1450 for the frame.
        let mut f = tcp4(60_000);
        let (mut out, mut b) = (Vec::new(), Vec::new());
        let r = encapsulate(&tso(1448), &mut f, 7, 1450, &mut out, &mut b).unwrap();
        assert!(r.resegmented);
        let mut total_payload = 0;
        for batch in &b {
            assert!(batch.count <= BATCH_MAX_SEGS && batch.len <= BATCH_MAX_BYTES);
            assert!(batch.seg - 8 <= 1450, "{batch:?}");
            let mut at = batch.start;
            let end = batch.start + batch.len;
            while at < end {
                let len = batch.seg.min(end - at);
                let d = &out[at..at + len];
                assert_eq!(&d[..8], &switch::vxlan::emit(7));
                let inner = &d[8..];
                assert!(inner.len() <= 1450);
                // Each segment's IPv4 total length matches its size.
                let tot = usize::from(u16::from_be_bytes([inner[16], inner[17]]));
                assert_eq!(tot, inner.len() - 14);
                total_payload += inner.len() - 54;
                at += len;
            }
        }
        assert_eq!(total_payload, 60_000);
        // Equal-sized segments share batches: far fewer sends than datagrams.
        assert!(b.len() < 5, "{}", b.len());
    }

    #[test]
    fn a_tso_frame_that_fits_keeps_its_mss() {
        let mut f = tcp4(5000);
        let (mut out, mut b) = (Vec::new(), Vec::new());
        let r = encapsulate(&tso(1000), &mut f, 7, 1450, &mut out, &mut b).unwrap();
        assert!(!r.resegmented);
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].count, b[0].seg), (5, 8 + 1054));
    }

    #[test]
    fn batches_split_on_size_count_and_bytes() {
        let mut b = Vec::new();
        push(&mut b, 0, 100);
        push(&mut b, 100, 100);
        push(&mut b, 200, 50); // shorter: ends the batch
        push(&mut b, 250, 50);
        push(&mut b, 300, 80); // longer than the batch's size: a new one
        assert_eq!(b.len(), 3);
        assert_eq!((b[0].count, b[0].len), (3, 250));
        assert_eq!((b[1].count, b[1].seg), (1, 50));
        let mut b = Vec::new();
        for i in 0..(BATCH_MAX_SEGS + 1) {
            push(&mut b, i * 10, 10);
        }
        assert_eq!(b.len(), 2);
    }
}
