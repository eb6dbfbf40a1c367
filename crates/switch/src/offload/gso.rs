//! Software segmentation producing the bytes Linux's own GSO produces
//! (`inet_gso_segment`/`ipv6_gso_segment`, `tcp_gso_segment`, `__udp_gso_segment`,
//! `udp4_ufo_fragment`), so that a receiver cannot tell whether a NIC, the kernel or we
//! cut the frame:
//!
//! - IPv4: total length and header checksum per segment; the ID increments by one per
//!   segment for TCP and USO, and stays the same for UFO fragments (RFC 791 §3.2: the
//!   fragments of one datagram share its ID).
//! - IPv6: payload length per segment (RFC 8200 §3).
//! - TCP (RFC 9293 §3.1): sequence number advances by the MSS; FIN and PSH only on the
//!   last segment; CWR only on the first (RFC 3168 §6.1.2: a NIC doing TSO_ECN must not
//!   repeat CWR; Linux clears it on all later segments in any case).
//! - UDP L4 (USO): one datagram per segment, UDP length per segment.
//! - UFO: IPv4 fragmentation (RFC 791) or IPv6 fragmentation with a Fragment header
//!   (RFC 8200 §4.5) of one datagram, the UDP checksum computed once over the whole
//!   datagram.
//!
//! L4 checksums: the frame arrives with NEEDS_CSUM, the checksum field holding the
//! pseudo-header seed. Like Linux we adjust that seed for each segment's length and then
//! either complete it (RFC 1071) or leave it partial with NEEDS_CSUM for a receiver that
//! accepts partial checksums, which saves reading the payload at all.
//!
//! Each segment is a small rewritten header block (≤ [`MAX_HDR`] bytes) plus one payload
//! range of the source frame, so callers either gather-write it (header buffer +
//! [`Frame::slices`] of the range as iovecs: zero payload copies) or copy it straight into
//! a destination buffer with [`Segmenter::copy_next`] (one copy, guest → guest).

use super::csum::{add16, sub16, Csum};
use super::drop::OffloadDrop;
use super::frame::Frame;
use super::plan::{Hdrs, GSO_MAX_SEGMENTS, MAX_HDR, USO_MAX_SEGMENTS};
use crate::bytes::Chunk;
use crate::port::Offloads;
use crate::vnet::{Gso, VnetHdr, F_DATA_VALID, F_NEEDS_CSUM};
use core::ops::Range;

/// Which segmentation a plan performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    TcpV4,
    TcpV6,
    /// UDP L4 segmentation over IPv4.
    UsoV4,
    /// UDP L4 segmentation over IPv6.
    UsoV6,
    /// UDP fragmentation offload: IPv4 fragments of one datagram.
    UfoV4,
    /// UDP fragmentation offload: IPv6 fragments (RFC 8200 §4.5) of one datagram,
    /// for frames without extension headers.
    UfoV6,
}

/// A validated segmentation job for one frame toward one destination. Small and `Copy`;
/// it holds offsets only and re-reads header bytes from the frame when segmenting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GsoPlan {
    kind: GsoKind,
    l3_off: u16,
    l4_off: u16,
    /// End of the L4 header.
    hdr_end: u16,
    gso_size: u16,
    frame_len: u32,
    segs: u32,
    /// Leave L4 checksums partial (NEEDS_CSUM) instead of completing them.
    partial: bool,
    data_valid: bool,
    /// IPv6 UFO: the Fragment header's Identification; `None` derives one.
    frag_id: Option<u32>,
}

/// One output segment: `hdr_len` bytes of header (in the caller's header buffer) followed
/// by the source frame bytes `payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub hdr_len: usize,
    pub payload: Range<usize>,
    /// The virtio-net header to send with it (num_buffers left 0 for the caller).
    pub vnet: VnetHdr,
}

impl Segment {
    /// Total frame length of the segment.
    #[inline]
    pub fn len(&self) -> usize {
        self.hdr_len + self.payload.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl GsoPlan {
    pub(crate) fn new(
        hdr: &VnetHdr,
        gso: Gso,
        h: &Hdrs,
        frame_len: usize,
        dest: &Offloads,
    ) -> Result<GsoPlan, OffloadDrop> {
        let mss = hdr.gso_size as usize;
        let kind = match (gso, h.v6) {
            (Gso::TcpV4, false) => GsoKind::TcpV4,
            (Gso::TcpV6, true) => GsoKind::TcpV6,
            (Gso::UdpL4, false) => GsoKind::UsoV4,
            (Gso::UdpL4, true) => GsoKind::UsoV6,
            (Gso::Udp, false) => GsoKind::UfoV4,
            // With extension headers Linux copies them into every fragment and counts
            // them into the fragment offsets: broken output we do not imitate.
            (Gso::Udp, true) if h.l4_off == h.l3_off + 40 => GsoKind::UfoV6,
            (Gso::Udp, true) => return Err(OffloadDrop::UfoUnsupported),
            _ => return Err(OffloadDrop::GsoTypeMismatch),
        };
        let ufo = matches!(kind, GsoKind::UfoV4 | GsoKind::UfoV6);
        let unit_start = if ufo { h.l4_off } else { h.hdr_end };
        // Fragment offsets count 8-byte units (RFC 791): every fragment but the last must
        // carry a multiple of 8 bytes, or the offsets would be wrong.
        if ufo && mss % 8 != 0 {
            return Err(OffloadDrop::UfoUnsupported);
        }
        let segs = (frame_len - unit_start).div_ceil(mss);
        let max = if matches!(kind, GsoKind::UsoV4 | GsoKind::UsoV6) {
            USO_MAX_SEGMENTS
        } else {
            GSO_MAX_SEGMENTS
        };
        if segs > max {
            return Err(OffloadDrop::TooManySegments);
        }
        // Every segment's IP length (headers, a fragment header, one unit) must fit the
        // 16-bit length field; a larger gso_size would be written wrapped.
        if h.hdr_end - h.l3_off + 8 + mss > usize::from(u16::MAX) {
            return Err(OffloadDrop::IpLengthMismatch);
        }
        let to_u16 = |v: usize| u16::try_from(v).map_err(|_| OffloadDrop::HeadersTooLong);
        Ok(GsoPlan {
            kind,
            l3_off: to_u16(h.l3_off)?,
            l4_off: to_u16(h.l4_off)?,
            hdr_end: to_u16(h.hdr_end)?,
            gso_size: hdr.gso_size,
            frame_len: u32::try_from(frame_len).map_err(|_| OffloadDrop::IpLengthMismatch)?,
            // segs <= GSO_MAX_SEGMENTS (checked above).
            segs: u32::try_from(segs).map_err(|_| OffloadDrop::TooManySegments)?,
            partial: dest.csum && !ufo,
            data_valid: dest.data_valid,
            frag_id: None,
        })
    }

    #[inline]
    pub fn kind(&self) -> GsoKind {
        self.kind
    }

    /// Number of segments this plan produces.
    #[inline]
    pub fn segment_count(&self) -> usize {
        self.segs as usize
    }

    /// Offset of the IP header (callers rewriting the L2 head, e.g. for VLAN egress, replace
    /// the first `l3_off` bytes of every segment header).
    #[inline]
    pub fn l3_off(&self) -> usize {
        self.l3_off as usize
    }

    #[inline]
    pub fn l4_off(&self) -> usize {
        self.l4_off as usize
    }

    #[inline]
    pub fn gso_size(&self) -> usize {
        self.gso_size as usize
    }

    /// Sets the Identification of the Fragment header for IPv6 UFO (RFC 8200 §4.5; RFC
    /// 7739 asks for values that are hard to predict and do not repeat soon for the same
    /// source and destination, e.g. a keyed hash plus a per-port counter). Without it
    /// the segmenter derives one from the addresses, ports, length and UDP checksum of
    /// the datagram. Ignored for other kinds.
    pub fn set_ipv6_frag_id(&mut self, id: u32) {
        self.frag_id = Some(id);
    }

    /// True when segments leave with a partial checksum and NEEDS_CSUM.
    #[inline]
    pub fn partial_csum(&self) -> bool {
        self.partial
    }

    /// Starts segmenting `frame`, which must be the frame the plan was made for.
    pub fn segments<'a>(&self, frame: Frame<'a>) -> Result<Segmenter<'a>, OffloadDrop> {
        if frame.len() != self.frame_len as usize {
            return Err(OffloadDrop::IpLengthMismatch);
        }
        let mut tmpl = [0u8; MAX_HDR];
        let hdr_end = self.hdr_end as usize;
        if !frame.copy_to(0, &mut tmpl[..hdr_end]) {
            return Err(OffloadDrop::Truncated);
        }
        let l3 = self.l3_off as usize;
        let l4 = self.l4_off as usize;
        let be16 = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let mut s = Segmenter {
            plan: *self,
            frame,
            ip_id: 0,
            seq: 0,
            seed: be16(&tmpl, l4 + if self.is_tcp() { 16 } else { 6 }),
            old_len: 0,
            frag_id: 0,
            idx: 0,
            tmpl,
        };
        match self.kind {
            GsoKind::TcpV4 | GsoKind::TcpV6 => {
                s.seq =
                    u32::from_be_bytes([tmpl[l4 + 4], tmpl[l4 + 5], tmpl[l4 + 6], tmpl[l4 + 7]]);
                // tcp_gso_segment: the seed's length is the L4 length of the whole frame.
                // The low 16 bits, as Linux's `(u16)~skb->len`.
                #[allow(clippy::cast_possible_truncation)]
                let old_len = (self.frame_len as usize - l4) as u16;
                s.old_len = old_len;
            }
            // __udp_gso_segment: the seed is adjusted by the UDP length *field*.
            GsoKind::UsoV4 | GsoKind::UsoV6 => s.old_len = be16(&tmpl, l4 + 4),
            GsoKind::UfoV4 | GsoKind::UfoV6 => {
                // udp4/udp6_ufo_fragment: checksum of the whole datagram from scratch,
                // with the pseudo header built from the IP addresses and the real length.
                let udp_len = self.frame_len as usize - l4;
                let mut c = Csum::new();
                if self.kind == GsoKind::UfoV4 {
                    c.add_bytes(&tmpl[l3 + 12..l3 + 20]);
                } else {
                    c.add_bytes(&tmpl[l3 + 8..l3 + 40]);
                }
                c.add_u16(17);
                // The datagram's length must fit the UDP length field.
                c.add_u16(u16::try_from(udp_len).map_err(|_| OffloadDrop::IpLengthMismatch)?);
                s.tmpl[l4 + 6] = 0;
                s.tmpl[l4 + 7] = 0;
                c.add_bytes(&s.tmpl[l4..l4 + 8]);
                frame.csum(l4 + 8..self.frame_len as usize, &mut c);
                let v = match c.finish() {
                    0 => 0xffff,
                    v => v,
                };
                s.tmpl[l4 + 6..l4 + 8].copy_from_slice(&v.to_be_bytes());
                if self.kind == GsoKind::UfoV6 {
                    s.frag_id = match self.frag_id {
                        Some(id) => id,
                        None => derive_frag_id(&s.tmpl[l3 + 8..l4 + 8]),
                    };
                }
            }
        }
        if matches!(self.kind, GsoKind::TcpV4 | GsoKind::UsoV4 | GsoKind::UfoV4) {
            s.ip_id = be16(&tmpl, l3 + 4);
        }
        Ok(s)
    }

    #[inline]
    fn is_tcp(&self) -> bool {
        matches!(self.kind, GsoKind::TcpV4 | GsoKind::TcpV6)
    }

    #[inline]
    fn is_v4(&self) -> bool {
        matches!(self.kind, GsoKind::TcpV4 | GsoKind::UsoV4 | GsoKind::UfoV4)
    }
}

/// Produces the segments of one plan, in order.
#[derive(Debug, Clone)]
pub struct Segmenter<'a> {
    plan: GsoPlan,
    frame: Frame<'a>,
    /// Header bytes of the source frame (UFO: with the final UDP checksum).
    tmpl: [u8; MAX_HDR],
    ip_id: u16,
    seq: u32,
    /// The L4 checksum field of the source: the pseudo-header seed.
    seed: u16,
    /// Length the seed was computed for (see `segments`).
    old_len: u16,
    /// IPv6 UFO Fragment header Identification.
    frag_id: u32,
    idx: u32,
}

/// A default IPv6 fragment Identification from the datagram's addresses, ports, length
/// and completed checksum (`b` = IPv6 addresses followed by the UDP header): FNV-1a,
/// never 0. Datagrams that differ in content get different IDs with high probability.
fn derive_frag_id(b: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &x in b {
        h = (h ^ x as u32).wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// Folds a sum of 16-bit values with end-around carry (Linux's `csum_fold` without the
/// final complement).
#[inline]
fn fold_eac(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    (s & 0xffff) as u16
}

impl<'a> Segmenter<'a> {
    /// Segments still to come.
    #[inline]
    pub fn remaining(&self) -> usize {
        (self.plan.segs - self.idx) as usize
    }

    /// Frame length of the next segment, if any (to size a destination buffer).
    pub fn next_len(&self) -> Option<usize> {
        let (hdr_len, payload) = self.layout(self.idx)?;
        Some(hdr_len + payload.len())
    }

    /// Header length and payload range of segment `i`.
    fn layout(&self, i: u32) -> Option<(usize, Range<usize>)> {
        if i >= self.plan.segs {
            return None;
        }
        let p = &self.plan;
        let len = p.frame_len as usize;
        let mss = p.gso_size as usize;
        if matches!(p.kind, GsoKind::UfoV4 | GsoKind::UfoV6) {
            let l4 = p.l4_off as usize;
            let start = l4 + i as usize * mss;
            let end = (start + mss).min(len);
            // IPv6 fragments carry a Fragment header; the first fragment also carries the
            // (rewritten) UDP header in our header block.
            let frag_hdr = if p.kind == GsoKind::UfoV6 { 8 } else { 0 };
            let udp = if i == 0 { 8.min(end - start) } else { 0 };
            Some((l4 + frag_hdr + udp, start + udp..end))
        } else {
            let start = p.hdr_end as usize + i as usize * mss;
            Some((p.hdr_end as usize, start..(start + mss).min(len)))
        }
    }

    /// Writes the next segment's header into `out` and returns the segment; its L4
    /// checksum is complete (reading the payload in place) unless the plan is partial.
    pub fn next_into(&mut self, out: &mut [u8; MAX_HDR]) -> Option<Segment> {
        let (seg, complete) = self.build(out)?;
        if complete {
            let l4 = self.plan.l4_off as usize;
            let mut c = Csum::new();
            c.add_bytes(&out[l4..seg.hdr_len]);
            self.frame.csum(seg.payload.clone(), &mut c);
            self.store_l4_csum(out, c);
        }
        Some(seg)
    }

    /// Writes the next segment (header and payload) into `dst`, the one copy of the
    /// guest → guest path, completing the L4 checksum over the freshly written (cache-hot)
    /// bytes. Returns its length and virtio-net header, `Ok(None)` at the end, or
    /// `DstTooSmall` without consuming the segment.
    pub fn copy_next(&mut self, dst: &mut [u8]) -> Result<Option<(usize, VnetHdr)>, OffloadDrop> {
        self.copy_next_scatter(&mut [dst])
    }

    /// Like [`Segmenter::copy_next`], into a destination made of several buffers in order
    /// (e.g. mergeable RX buffers, virtio 1.2 §5.1.6.3.2), any of which may be smaller
    /// than the segment.
    pub fn copy_next_scatter(
        &mut self,
        dst: &mut [&mut [u8]],
    ) -> Result<Option<(usize, VnetHdr)>, OffloadDrop> {
        self.copy_next_with_head(&[], 0, dst)
    }

    /// Like [`Segmenter::copy_next_scatter`], with the segment's first `body_offset`
    /// bytes (the source L2 head) replaced by `head`: the VLAN push/pop of
    /// `switch::egress::Egress` (`head()`, `body_offset`) applied while copying, so a
    /// retagged segment still costs one copy. `body_offset` must not reach into the IP
    /// header. The returned virtio-net header's `csum_start` is already moved by the
    /// length change.
    pub fn copy_next_with_head(
        &mut self,
        head: &[u8],
        body_offset: usize,
        dst: &mut [&mut [u8]],
    ) -> Result<Option<(usize, VnetHdr)>, OffloadDrop> {
        let Some(len) = self.next_len() else {
            return Ok(None);
        };
        if body_offset > self.plan.l3_off as usize || head.len() > MAX_HDR {
            return Err(OffloadDrop::HeadersTooLong);
        }
        let need = len - body_offset + head.len();
        if dst.iter().map(|d| d.len()).sum::<usize>() < need {
            return Err(OffloadDrop::DstTooSmall);
        }
        let mut hdr = [0u8; MAX_HDR];
        let Some((seg, complete)) = self.build(&mut hdr) else {
            return Ok(None);
        };
        let mut w = ScatterWriter {
            dst,
            idx: 0,
            pos: 0,
        };
        w.write(Chunk::private(head));
        w.write(Chunk::private(&hdr[body_offset..seg.hdr_len]));
        for s in self.frame.slices(seg.payload.clone()) {
            w.write(s);
        }
        // Offsets in the output = offsets in the source + shift (shift may be negative).
        let l4_out = self.plan.l4_off as usize + head.len() - body_offset;
        if complete {
            let mut c = Csum::new();
            scatter_csum(dst, l4_out..need, &mut c);
            let (at, v) = self.l4_csum(c);
            scatter_put(dst, at + head.len() - body_offset, &v.to_be_bytes());
        }
        let mut vnet = seg.vnet;
        if vnet.flags & F_NEEDS_CSUM != 0 {
            // l4_out is inside the rewritten header (at most MAX_HDR bytes).
            vnet.csum_start = u16::try_from(l4_out).map_err(|_| OffloadDrop::HeadersTooLong)?;
        }
        Ok(Some((need, vnet)))
    }

    /// Where the completed L4 checksum goes and its value: TCP as computed
    /// (tcp_gso_segment), UDP with 0 sent as 0xffff (RFC 768; __udp_gso_segment's
    /// CSUM_MANGLED_0).
    fn l4_csum(&self, c: Csum) -> (usize, u16) {
        let l4 = self.plan.l4_off as usize;
        if self.plan.is_tcp() {
            (l4 + 16, c.finish())
        } else {
            (
                l4 + 6,
                match c.finish() {
                    0 => 0xffff,
                    v => v,
                },
            )
        }
    }

    fn store_l4_csum(&self, out: &mut [u8], c: Csum) {
        let (at, v) = self.l4_csum(c);
        out[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Builds the next header; returns the segment and whether its L4 checksum still has
    /// to be completed over header + payload.
    fn build(&mut self, out: &mut [u8; MAX_HDR]) -> Option<(Segment, bool)> {
        let i = self.idx;
        let (hdr_len, payload) = self.layout(i)?;
        self.idx += 1;
        let p = self.plan;
        let last = self.idx == p.segs;
        let l3 = p.l3_off as usize;
        let l4 = p.l4_off as usize;
        let plen = payload.len();
        if p.kind == GsoKind::UfoV6 {
            // L2 + IPv6 header, then the Fragment header (RFC 8200 §4.5), then for the
            // first fragment the UDP header: the layout of ipv6_gso_segment's output.
            out[..l4].copy_from_slice(&self.tmpl[..l4]);
            out[l3 + 6] = 44;
            // A multiple of 8, inside the datagram (its length fits 16 bits: `segments`).
            let off = u16::try_from(i as usize * p.gso_size as usize).ok()?;
            out[l4] = 17;
            out[l4 + 1] = 0;
            out[l4 + 2..l4 + 4].copy_from_slice(&(off | u16::from(!last)).to_be_bytes());
            out[l4 + 4..l4 + 8].copy_from_slice(&self.frag_id.to_be_bytes());
            let udp = hdr_len - (l4 + 8);
            out[l4 + 8..hdr_len].copy_from_slice(&self.tmpl[l4..l4 + udp]);
        } else {
            out[..hdr_len].copy_from_slice(&self.tmpl[..hdr_len]);
        }
        let put16 = |out: &mut [u8; MAX_HDR], at: usize, v: u16| {
            out[at..at + 2].copy_from_slice(&v.to_be_bytes())
        };

        // L3.
        if p.is_v4() {
            // Every segment's IP length fits 16 bits (`GsoPlan::new`).
            put16(out, l3 + 2, u16::try_from(hdr_len - l3 + plen).ok()?);
            if p.kind == GsoKind::UfoV4 {
                // inet_gso_segment for UFO: offset in 8-byte units, MF on all but the
                // last; DF and the reserved bit are not kept.
                let off = (i as usize * p.gso_size as usize) >> 3;
                put16(
                    out,
                    l3 + 6,
                    u16::try_from(off).ok()? | if last { 0 } else { 0x2000 },
                );
            } else {
                // The IP ID wraps, as Linux's does.
                put16(out, l3 + 4, self.ip_id.wrapping_add((i & 0xffff) as u16));
            }
            put16(out, l3 + 10, 0);
            let mut c = Csum::new();
            c.add_bytes(&out[l3..l4]);
            put16(out, l3 + 10, c.finish());
        } else {
            put16(out, l3 + 4, u16::try_from(hdr_len - l3 - 40 + plen).ok()?);
        }

        // L4.
        let mut complete = false;
        match p.kind {
            GsoKind::TcpV4 | GsoKind::TcpV6 => {
                let seq = self.seq.wrapping_add(i.wrapping_mul(p.gso_size as u32));
                out[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                let mut flags = out[l4 + 13];
                if !last {
                    flags &= !(0x01 | 0x08); // FIN, PSH
                }
                if i > 0 {
                    flags &= !0x80; // CWR
                }
                out[l4 + 13] = flags;
                let new_len = (hdr_len - l4 + plen) as u64;
                let seed = fold_eac(self.seed as u64 + (!self.old_len) as u64 + new_len);
                put16(out, l4 + 16, seed);
                complete = !p.partial;
            }
            GsoKind::UsoV4 | GsoKind::UsoV6 => {
                let new_len = u16::try_from(8 + plen).ok()?;
                put16(out, l4 + 4, new_len);
                put16(out, l4 + 6, add16(sub16(self.seed, self.old_len), new_len));
                complete = !p.partial;
            }
            GsoKind::UfoV4 | GsoKind::UfoV6 => {}
        }
        let vnet = if p.partial {
            VnetHdr {
                flags: F_NEEDS_CSUM,
                csum_start: p.l4_off,
                csum_offset: if p.is_tcp() { 16 } else { 6 },
                ..VnetHdr::default()
            }
        } else {
            VnetHdr {
                flags: if p.data_valid { F_DATA_VALID } else { 0 },
                ..VnetHdr::default()
            }
        };
        Some((
            Segment {
                hdr_len,
                payload,
                vnet,
            },
            complete,
        ))
    }
}

/// Sequential writer over a list of destination buffers; the caller checked the total
/// capacity, so writes never run past the end.
struct ScatterWriter<'d, 'b> {
    dst: &'d mut [&'b mut [u8]],
    idx: usize,
    pos: usize,
}

impl ScatterWriter<'_, '_> {
    fn write(&mut self, mut src: Chunk<'_>) {
        while !src.is_empty() {
            let Some(d) = self.dst.get_mut(self.idx) else {
                return;
            };
            let n = (d.len() - self.pos).min(src.len());
            if !src.copy_to(&mut d[self.pos..self.pos + n]) {
                return;
            }
            src = src.skip(n);
            self.pos += n;
            if self.pos == d.len() {
                self.idx += 1;
                self.pos = 0;
            }
        }
    }
}

/// Sums `range` of the concatenated buffers.
fn scatter_csum(dst: &[&mut [u8]], range: Range<usize>, c: &mut Csum) {
    let mut base = 0;
    for d in dst {
        let (lo, hi) = (range.start.max(base), range.end.min(base + d.len()));
        if lo < hi {
            c.add_bytes(&d[lo - base..hi - base]);
        }
        base += d.len();
    }
}

/// Overwrites bytes at offset `at` of the concatenated buffers (may straddle two).
fn scatter_put(dst: &mut [&mut [u8]], at: usize, bytes: &[u8]) {
    let mut base = 0;
    for d in dst.iter_mut() {
        for (i, b) in bytes.iter().enumerate() {
            let p = at + i;
            if p >= base && p < base + d.len() {
                d[p - base] = *b;
            }
        }
        base += d.len();
    }
}

/// Segments a whole frame into owned buffers. Allocates: for tests, tools and slow
/// paths; the data plane uses [`Segmenter::next_into`] or [`Segmenter::copy_next`].
pub fn segment_to_vecs(
    plan: &GsoPlan,
    frame: Frame,
) -> Result<Vec<(VnetHdr, Vec<u8>)>, OffloadDrop> {
    let mut s = plan.segments(frame)?;
    let mut out = Vec::with_capacity(s.remaining());
    let mut hdr = [0u8; MAX_HDR];
    while let Some(seg) = s.next_into(&mut hdr) {
        let mut v = Vec::with_capacity(seg.len());
        v.extend_from_slice(&hdr[..seg.hdr_len]);
        for part in frame.slices(seg.payload.clone()) {
            part.extend_vec(&mut v);
        }
        out.push((seg.vnet, v));
    }
    Ok(out)
}
