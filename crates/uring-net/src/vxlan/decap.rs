//! Decapsulation of one received VXLAN datagram (`decapsulate`), or of a UDP_GRO run
//! of them with one flow's TCP segments coalesced (`decapsulate_burst`, what the worker
//! runs), without I/O: the provided buffer a multishot recvmsg filled (io_uring's `io_uring_recvmsg_out` header, the source
//! address, then the UDP payload: VXLAN header and inner frame) becomes the inner frame
//! with a virtio-net header in front, in place, so it takes the host path unchanged.
//!
//! Everything past the kernel's own header is the underlay's (attacker-controlled)
//! bytes; these are the functions the `vxlan` fuzz target drives with hostile buffers.

use std::net::IpAddr;

use io_uring::types::RecvMsgOut;
use switch::vnet::{F_NEEDS_CSUM, HDR_LEN};
use switch::{Mac, VnetHdr};

use super::encap::tcp_as_tso;
use super::source_ip;

/// `msg_namelen` of a VXLAN receive: room for a sockaddr_in6.
// 28 fits a u32.
#[allow(clippy::cast_possible_truncation)]
pub const NAME_LEN: u32 = std::mem::size_of::<libc::sockaddr_in6>() as u32;

/// The msghdr a VXLAN receive queue arms its multishot recvmsg with: a name (the
/// source address names the VTEP), no control data, no iovecs (provided buffers).
pub fn recv_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is plain old data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_namelen = NAME_LEN;
    msg.msg_controllen = 0;
    msg
}

/// Why a received datagram was dropped; each maps onto one of the port's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxDrop {
    /// Cut short (by the kernel, for our buffer) or too short for the VXLAN and an
    /// Ethernet header.
    Truncated,
    /// The I flag is clear (RFC 7348 §5).
    BadFlags,
    /// Another VNI.
    WrongVni,
    /// The outer source is not one of the port's remotes.
    UnknownVtep,
    /// Larger than the underlay carries and not a TCP segment that can be passed on as
    /// a segmentation frame.
    Oversized,
}

/// A datagram that passed: its frame, vnet header first, is `start..start + len` of
/// the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapped {
    pub start: usize,
    pub len: usize,
    /// Index into `remotes` of the VTEP it came from.
    pub remote: u16,
    /// The inner source MAC, to learn behind `remote`.
    pub src: Mac,
}

/// Checks the datagram in `b` (received with `msg`, see [`recv_msghdr`]) for `vni`
/// from one of `remotes`, and writes the inner frame's vnet header over the VXLAN
/// header and what precedes it (the recvmsg header and name, already read). An inner
/// frame larger than `inner_max` is passed on as a TSO frame if it is a single TCP
/// segment (a sender on this kernel, over a veth, may hand the socket its segmentation
/// frame whole), else dropped.
pub fn decapsulate(
    b: &mut [u8],
    msg: &libc::msghdr,
    vni: u32,
    inner_max: usize,
    remotes: &[IpAddr],
) -> Result<Decapped, RxDrop> {
    let out = RecvMsgOut::parse(b, msg).map_err(|()| RxDrop::Truncated)?;
    if out.is_payload_truncated() || out.is_name_data_truncated() {
        return Err(RxDrop::Truncated);
    }
    let remote = source_ip(out.name_data())
        .and_then(|ip| remotes.iter().position(|r| *r == ip))
        .and_then(|i| u16::try_from(i).ok())
        .ok_or(RxDrop::UnknownVtep)?;
    let payload = out.payload_data();
    let inner_off = switch::vxlan::parse(payload, vni).map_err(|e| match e {
        switch::vxlan::VxlanError::Truncated => RxDrop::Truncated,
        switch::vxlan::VxlanError::BadFlags => RxDrop::BadFlags,
        switch::vxlan::VxlanError::WrongVni(_) => RxDrop::WrongVni,
    })?;
    let pstart = payload.as_ptr() as usize - b.as_ptr() as usize;
    let pend = pstart + payload.len();
    let inner = pstart + inner_off;
    // Room for the vnet header: the recvmsg header and name (16 + 28 bytes) at least.
    let start = inner.checked_sub(HDR_LEN).ok_or(RxDrop::Truncated)?;
    let frame = b.get_mut(inner..pend).ok_or(RxDrop::Truncated)?;
    let src = frame
        .get(6..12)
        .and_then(Mac::from_slice)
        .ok_or(RxDrop::Truncated)?;
    let mut hdr = switch::vxlan::rx_vnet_hdr(frame);
    if frame.len() > inner_max {
        let partial = hdr.flags & F_NEEDS_CSUM != 0;
        hdr = tcp_as_tso(frame, inner_max, !partial).ok_or(RxDrop::Oversized)?;
    }
    let vh = b.get_mut(start..inner).ok_or(RxDrop::Truncated)?;
    hdr.emit(vh, HDR_LEN).ok_or(RxDrop::Truncated)?;
    Ok(Decapped {
        start,
        len: pend - start,
        remote,
        src,
    })
}

/// SOL_UDP and its UDP_GRO option and control message (linux/udp.h).
pub const SOL_UDP: libc::c_int = 17;
pub const UDP_GRO: libc::c_int = 104;
/// `msg_controllen` of a GRO receive: one cmsg carrying an int (CMSG_SPACE(4) on LP64).
pub const GRO_CONTROL_LEN: usize = 24;
/// Most TCP segments coalesced into one frame handed on.
pub const COALESCE_MAX_SEGS: usize = 64;

/// The msghdr a VXLAN receive socket with UDP_GRO arms its multishot recvmsg with: the
/// name, and room for the UDP_GRO control message giving the segment size.
pub fn recv_msghdr_gro() -> libc::msghdr {
    let mut msg = recv_msghdr();
    msg.msg_controllen = GRO_CONTROL_LEN;
    msg
}

/// The UDP_GRO segment size in a receive's control data, if the kernel put one there
/// (it does only for a coalesced or GSO datagram).
fn gro_size(mut control: &[u8]) -> Option<usize> {
    // struct cmsghdr on LP64: size_t len, int level, int type, then the data.
    while control.len() >= 16 {
        let len = usize::try_from(u64::from_ne_bytes(control.get(..8)?.try_into().ok()?)).ok()?;
        let level = i32::from_ne_bytes(control.get(8..12)?.try_into().ok()?);
        let ty = i32::from_ne_bytes(control.get(12..16)?.try_into().ok()?);
        if len < 16 {
            return None;
        }
        if level == SOL_UDP && ty == UDP_GRO {
            let v = i32::from_ne_bytes(control.get(16..20)?.try_into().ok()?);
            return usize::try_from(v).ok().filter(|v| *v > 0);
        }
        control = control.get(len.checked_add(7)? & !7..)?;
    }
    None
}

/// One inner frame of a receive: `start..start + len` of the buffer, described by `hdr`.
/// `hdr_in_place`: `hdr` is also written in the `HDR_LEN` bytes before `start` (the
/// frame can be written on as one contiguous buffer); otherwise those bytes belong to
/// another frame and the header must travel separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxFrame {
    pub start: usize,
    pub len: usize,
    pub hdr: VnetHdr,
    pub hdr_in_place: bool,
    /// The inner source MAC, to learn behind the receive's remote.
    pub src: Mac,
    /// TCP segments coalesced into this frame (1: as received).
    pub segments: u16,
}

/// Where a plain TCP segment's headers are, for coalescing.
#[derive(Debug, Clone, Copy)]
struct Tcp {
    l4: usize,
    hdr_end: usize,
    v6: bool,
    seq: u32,
    /// Flags byte (ACK, maybe PSH: nothing else is coalesced).
    flags: u8,
}

/// A payload length in sequence space (inside one 64 KiB receive buffer).
fn seq_len(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// `frame` as a TCP segment that may be coalesced (RFC 9293 §3.1): IPv4 without options
/// or fragmentation or IPv6 without extension headers, lengths exactly the frame's,
/// flags ACK or ACK|PSH, a payload, and a checksum that verifies (a segment whose
/// checksum is wrong or only partial is handed on alone, for the receiver to judge).
fn coalescable(frame: &[u8]) -> Option<Tcp> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let l3 = 14;
    let (l4, v6) = match et {
        0x0800 => {
            let ok = *frame.get(l3)? == 0x45
                && frame.get(l3 + 9) == Some(&6)
                && u16::from_be_bytes([*frame.get(l3 + 6)?, *frame.get(l3 + 7)?]) & 0x3fff == 0
                && usize::from(u16::from_be_bytes([
                    *frame.get(l3 + 2)?,
                    *frame.get(l3 + 3)?,
                ])) == frame.len() - l3;
            (ok.then_some(l3 + 20)?, false)
        }
        0x86dd => {
            let ok = frame.get(l3 + 6) == Some(&6)
                && usize::from(u16::from_be_bytes([
                    *frame.get(l3 + 4)?,
                    *frame.get(l3 + 5)?,
                ])) == frame.len().checked_sub(l3 + 40)?;
            (ok.then_some(l3 + 40)?, true)
        }
        _ => return None,
    };
    let doff = usize::from(frame.get(l4 + 12)? >> 4) * 4;
    let hdr_end = l4 + doff;
    let flags = *frame.get(l4 + 13)?;
    if doff < 20 || hdr_end >= frame.len() || (flags != TCP_ACK && flags != TCP_ACK | TCP_PSH) {
        return None;
    }
    let mut c = switch::offload::Csum::new();
    c.add_bytes(frame.get(if v6 {
        l3 + 8..l3 + 40
    } else {
        l3 + 12..l3 + 20
    })?);
    c.add_u16(6);
    c.add_u16(u16::try_from(frame.len() - l4).ok()?);
    c.add_bytes(frame.get(l4..)?);
    if c.finish() != 0 {
        return None;
    }
    let seq = u32::from_be_bytes(frame.get(l4 + 4..l4 + 8)?.try_into().ok()?);
    Some(Tcp {
        l4,
        hdr_end,
        v6,
        seq,
        flags,
    })
}

/// A frame being coalesced: the first segment's headers stay at its start, the
/// payloads of the following segments are moved to its end.
struct Merge {
    /// Index in the frames list.
    idx: usize,
    first: Tcp,
    /// Payload bytes per segment (the first's): gso_size of the result.
    mss: usize,
    next_seq: u32,
    /// End of the frame's bytes in the buffer.
    end: usize,
    /// More segments may follow (the last was full-sized and without PSH).
    open: bool,
    /// The last segment appended had PSH.
    psh: bool,
}

/// The header bytes two segments of one flow share: everything but the IPv4 length,
/// ID and checksum (or the IPv6 payload length), the sequence number, the PSH flag
/// and the TCP checksum.
fn same_flow(a: &[u8], b: &[u8], t: &Tcp) -> bool {
    let l3 = 14;
    let l4 = t.l4;
    let ip: &[std::ops::Range<usize>] = if t.v6 {
        &[0..l3 + 4, l3 + 6..l4 + 4]
    } else {
        &[0..l3 + 2, l3 + 6..l3 + 10, l3 + 12..l4 + 4]
    };
    let tcp = [l4 + 8..l4 + 13, l4 + 14..l4 + 16, l4 + 18..t.hdr_end];
    ip.iter().chain(tcp.iter()).all(|r| {
        a.get(r.clone())
            .is_some_and(|x| Some(x) == b.get(r.clone()))
    })
}

/// Decapsulates everything one receive delivered: one datagram, or with UDP_GRO a
/// run of datagrams of the cmsg's segment size (the last may be shorter), each checked
/// as [`decapsulate`] checks one. Consecutive in-order TCP segments of one flow whose
/// checksums verify are coalesced in place into one TSO frame (virtio 1.2 §5.1.6.2:
/// NEEDS_CSUM with the pseudo-header seed, gso_size the segments' payload size), the
/// way Linux's GRO does (same headers but lengths, IDs, checksums and PSH; sequence
/// numbers contiguous; equal-sized segments but the last). The frames go to `frames`
/// (cleared first), each refused datagram to `drop`. Returns the remote the receive
/// came from, `None` when nothing passed.
pub fn decapsulate_burst(
    b: &mut [u8],
    msg: &libc::msghdr,
    vni: u32,
    inner_max: usize,
    remotes: &[IpAddr],
    frames: &mut Vec<RxFrame>,
    drop: &mut dyn FnMut(RxDrop),
) -> Option<u16> {
    frames.clear();
    let (remote, pstart, pend, seg) = {
        let Ok(out) = RecvMsgOut::parse(b, msg) else {
            drop(RxDrop::Truncated);
            return None;
        };
        if out.is_payload_truncated() || out.is_name_data_truncated() {
            drop(RxDrop::Truncated);
            return None;
        }
        let remote = source_ip(out.name_data())
            .and_then(|ip| remotes.iter().position(|r| *r == ip))
            .and_then(|i| u16::try_from(i).ok());
        let Some(remote) = remote else {
            drop(RxDrop::UnknownVtep);
            return None;
        };
        let payload = out.payload_data();
        let pstart = payload.as_ptr() as usize - b.as_ptr() as usize;
        let pend = pstart + payload.len();
        let seg = gro_size(out.control_data()).unwrap_or(payload.len()).max(1);
        (remote, pstart, pend, seg)
    };
    // Bytes before this belong to a frame already listed.
    let mut used = 0usize;
    let mut merge: Option<Merge> = None;
    let mut at = pstart;
    while at < pend {
        let end = pend.min(at + seg);
        let dgram = at..end;
        at = end;
        let inner_off = match switch::vxlan::parse(&b[dgram.clone()], vni) {
            Ok(o) => o,
            Err(e) => {
                drop(match e {
                    switch::vxlan::VxlanError::Truncated => RxDrop::Truncated,
                    switch::vxlan::VxlanError::BadFlags => RxDrop::BadFlags,
                    switch::vxlan::VxlanError::WrongVni(_) => RxDrop::WrongVni,
                });
                continue;
            }
        };
        let inner = dgram.start + inner_off;
        let Some(src) = b.get(inner + 6..inner + 12).and_then(Mac::from_slice) else {
            drop(RxDrop::Truncated);
            continue;
        };
        if let Some(m) = merge.as_mut().filter(|m| m.open) {
            if let Some(t) = append_to(b, m, inner, end, frames) {
                let plen = end - inner - t.hdr_end;
                b.copy_within(inner + t.hdr_end..end, m.end);
                m.end += plen;
                m.next_seq = m.next_seq.wrapping_add(seq_len(plen));
                m.psh = t.flags & TCP_PSH != 0;
                m.open = plen == m.mss && !m.psh;
                if let Some(f) = frames.get_mut(m.idx) {
                    f.segments += 1;
                }
                continue;
            }
        }
        if let Some(m) = merge.take() {
            used = finish(b, m, frames);
        }
        let frame = &mut b[inner..end];
        let mut hdr = switch::vxlan::rx_vnet_hdr(frame);
        let mut tcp = None;
        if frame.len() > inner_max {
            let partial = hdr.flags & F_NEEDS_CSUM != 0;
            match tcp_as_tso(frame, inner_max, !partial) {
                Some(h) => hdr = h,
                None => {
                    drop(RxDrop::Oversized);
                    continue;
                }
            }
        } else {
            tcp = coalescable(frame);
        }
        let hdr_in_place = inner.checked_sub(HDR_LEN).is_some_and(|s| s >= used);
        frames.push(RxFrame {
            start: inner,
            len: end - inner,
            hdr,
            hdr_in_place,
            src,
            segments: 1,
        });
        used = end;
        if let Some(t) = tcp {
            let mss = end - inner - t.hdr_end;
            merge = Some(Merge {
                idx: frames.len() - 1,
                first: t,
                mss,
                next_seq: t.seq.wrapping_add(seq_len(mss)),
                end,
                open: t.flags & TCP_PSH == 0 && mss >= 8,
                psh: false,
            });
        }
    }
    if let Some(m) = merge.take() {
        finish(b, m, frames);
    }
    for f in frames.iter() {
        if f.hdr_in_place {
            let _ = f.hdr.emit(&mut b[f.start - HDR_LEN..f.start], HDR_LEN);
        }
    }
    (!frames.is_empty()).then_some(remote)
}

/// The segment at `inner..end` if it continues merge `m` (same flow, next in sequence,
/// not larger than the first, room left in one TSO frame).
fn append_to(b: &[u8], m: &Merge, inner: usize, end: usize, frames: &[RxFrame]) -> Option<Tcp> {
    let f = frames.get(m.idx)?;
    if usize::from(f.segments) >= COALESCE_MAX_SEGS {
        return None;
    }
    let seg = b.get(inner..end)?;
    let t = coalescable(seg)?;
    let plen = seg.len() - t.hdr_end;
    let l3_len = m.end - f.start + plen - if m.first.v6 { 54 } else { 14 };
    let first = b.get(f.start..f.start + m.first.hdr_end)?;
    let ok = t.hdr_end == m.first.hdr_end
        && t.v6 == m.first.v6
        && t.seq == m.next_seq
        && plen <= m.mss
        && l3_len <= usize::from(u16::MAX)
        && same_flow(first, seg, &t);
    ok.then_some(t)
}

/// Closes merge `m`: a frame of several segments gets its IP length (and IPv4 header
/// checksum) for the whole, PSH if the last had it, and a TSO header with the
/// pseudo-header seed. Returns the end of the frame's bytes.
fn finish(b: &mut [u8], m: Merge, frames: &mut [RxFrame]) -> usize {
    let Some(f) = frames.get_mut(m.idx) else {
        return m.end;
    };
    if f.segments < 2 {
        return m.end;
    }
    let l3 = 14;
    let frame = &mut b[f.start..m.end];
    let len = frame.len();
    // Lengths fit: `append_to` kept the IP length within a u16.
    #[allow(clippy::cast_possible_truncation)]
    if m.first.v6 {
        frame[l3 + 4..l3 + 6].copy_from_slice(&((len - l3 - 40) as u16).to_be_bytes());
    } else {
        frame[l3 + 2..l3 + 4].copy_from_slice(&((len - l3) as u16).to_be_bytes());
        frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
        let c = switch::offload::checksum(&frame[l3..l3 + 20]);
        frame[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    if m.psh {
        // The last segment's PSH (RFC 9293 §3.9.1.2) stays with the data it ended.
        frame[m.first.l4 + 13] |= TCP_PSH;
    }
    match tcp_as_tso(frame, m.first.hdr_end + m.mss, true) {
        Some(h) => {
            f.hdr = h;
            f.len = len;
        }
        None => f.len = len,
    }
    m.end
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::VnetHdr;

    /// A receive buffer as the kernel fills it: recvmsg_out header, a sockaddr_in from
    /// `from` (padded to NAME_LEN), then `payload`.
    fn received(from: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [16u32, 0, u32::try_from(payload.len()).unwrap(), 0] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        let mut name = vec![0u8; NAME_LEN as usize];
        name[..2].copy_from_slice(&u16::try_from(libc::AF_INET).unwrap().to_ne_bytes());
        name[2..4].copy_from_slice(&4789u16.to_be_bytes());
        name[4..8].copy_from_slice(&from);
        b.extend_from_slice(&name);
        b.extend_from_slice(payload);
        b
    }

    fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
        let mut p = switch::vxlan::emit(vni).to_vec();
        p.extend_from_slice(inner);
        p
    }

    const REMOTES: [IpAddr; 1] = [IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 100, 2))];

    #[test]
    fn a_good_datagram_becomes_its_frame_behind_a_vnet_header() {
        let mut inner = vec![0xffu8; 6];
        inner.extend_from_slice(&[2, 0, 0, 0, 0, 7, 0x08, 0x06]);
        inner.resize(60, 0);
        let mut b = received([198, 18, 100, 2], &vxlan(42, &inner));
        let d = decapsulate(&mut b, &recv_msghdr(), 42, 1450, &REMOTES).unwrap();
        assert_eq!((d.remote, d.src), (0, Mac([2, 0, 0, 0, 0, 7])));
        assert_eq!(d.start + d.len, b.len());
        let f = &b[d.start..d.start + d.len];
        assert_eq!(VnetHdr::parse(f, HDR_LEN), Ok(VnetHdr::default()));
        assert_eq!(&f[HDR_LEN..], &inner[..]);
    }

    #[test]
    fn each_malformed_datagram_has_its_reason() {
        let inner = [0u8; 60];
        let m = recv_msghdr();
        let mut from_stranger = received([198, 18, 100, 3], &vxlan(42, &inner));
        let r = decapsulate(&mut from_stranger, &m, 42, 1450, &REMOTES);
        assert_eq!(r, Err(RxDrop::UnknownVtep));
        let mut other_vni = received([198, 18, 100, 2], &vxlan(43, &inner));
        let r = decapsulate(&mut other_vni, &m, 42, 1450, &REMOTES);
        assert_eq!(r, Err(RxDrop::WrongVni));
        let mut no_i = vxlan(42, &inner);
        no_i[0] = 0;
        let mut no_i = received([198, 18, 100, 2], &no_i);
        let r = decapsulate(&mut no_i, &m, 42, 1450, &REMOTES);
        assert_eq!(r, Err(RxDrop::BadFlags));
        let mut short = received([198, 18, 100, 2], &vxlan(42, &inner[..13]));
        let r = decapsulate(&mut short, &m, 42, 1450, &REMOTES);
        assert_eq!(r, Err(RxDrop::Truncated));
        // The kernel says the payload was longer than our buffer.
        let mut cut = received([198, 18, 100, 2], &vxlan(42, &inner));
        cut[8..12].copy_from_slice(&1000u32.to_ne_bytes());
        cut[12..16].copy_from_slice(&u32::try_from(libc::MSG_TRUNC).unwrap().to_ne_bytes());
        let r = decapsulate(&mut cut, &m, 42, 1450, &REMOTES);
        assert_eq!(r, Err(RxDrop::Truncated));
        assert_eq!(
            decapsulate(&mut [0u8; 10], &m, 42, 1450, &REMOTES),
            Err(RxDrop::Truncated)
        );
        // Larger than the underlay and not TCP.
        let mut big = vec![0u8; 2000];
        big[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut big = received([198, 18, 100, 2], &vxlan(42, &big));
        let r = decapsulate(&mut big, &m, 42, 1450, &REMOTES);
        assert_eq!(r, Err(RxDrop::Oversized));
    }

    /// A GRO receive: recvmsg_out header, name, a UDP_GRO cmsg of `seg`, the payload.
    fn received_gro(from: [u8; 4], seg: usize, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        let cl = u32::try_from(GRO_CONTROL_LEN).unwrap();
        for v in [NAME_LEN, cl, u32::try_from(payload.len()).unwrap(), 0] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        let mut name = vec![0u8; NAME_LEN as usize];
        name[..2].copy_from_slice(&u16::try_from(libc::AF_INET).unwrap().to_ne_bytes());
        name[4..8].copy_from_slice(&from);
        b.extend_from_slice(&name);
        b.extend_from_slice(&20u64.to_ne_bytes());
        b.extend_from_slice(&SOL_UDP.to_ne_bytes());
        b.extend_from_slice(&UDP_GRO.to_ne_bytes());
        b.extend_from_slice(&i32::try_from(seg).unwrap().to_ne_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(payload);
        b
    }

    /// An Ethernet + IPv4 + TCP (12 bytes of options) segment with valid checksums.
    fn tcp4(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let tot = u16::try_from(20 + 32 + payload.len()).unwrap();
        let mut ip = vec![0x45, 0];
        ip.extend_from_slice(&tot.to_be_bytes());
        ip.extend_from_slice(&[
            0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
        ]);
        let c = switch::offload::checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut tcp = vec![0x30, 0x39, 0x14, 0x51];
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 9, 0x80, flags, 0x01, 0xf5, 0, 0, 0, 0]);
        tcp.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        tcp.extend_from_slice(payload);
        let mut cs = switch::offload::Csum::new();
        cs.add_bytes(&[198, 18, 0, 1, 198, 18, 0, 2]);
        cs.add_u16(6);
        cs.add_u16(u16::try_from(tcp.len()).unwrap());
        cs.add_bytes(&tcp);
        let c = cs.finish();
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&tcp);
        f
    }

    fn burst(b: &mut [u8], frames: &mut Vec<RxFrame>) -> (Option<u16>, Vec<RxDrop>) {
        let mut drops = vec![];
        let r = decapsulate_burst(
            b,
            &recv_msghdr_gro(),
            42,
            1550,
            &REMOTES,
            frames,
            &mut |d| drops.push(d),
        );
        (r, drops)
    }

    #[test]
    fn a_gro_run_of_one_flow_becomes_one_tso_frame() {
        let mss = 100;
        let data: Vec<u8> = (0..250u8).collect();
        let segs = [
            tcp4(1000, 0x10, &data[..100]),
            tcp4(1100, 0x10, &data[100..200]),
            tcp4(1200, 0x18, &data[200..]),
        ];
        let seg = vxlan(42, &segs[0]).len();
        let payload: Vec<u8> = segs.iter().flat_map(|s| vxlan(42, s)).collect();
        let mut b = received_gro([198, 18, 100, 2], seg, &payload);
        let mut frames = vec![];
        assert_eq!(burst(&mut b, &mut frames), (Some(0), vec![]));
        assert_eq!(frames.len(), 1, "{frames:?}");
        let f = frames[0];
        assert_eq!((f.segments, f.len, f.hdr_in_place), (3, 66 + 250, true));
        assert_eq!(f.hdr.gso_type, switch::vnet::GSO_TCPV4);
        assert_eq!(
            (f.hdr.gso_size, f.hdr.hdr_len, f.hdr.csum_start),
            (mss, 66, 34)
        );
        assert_eq!(VnetHdr::parse(&b[f.start - HDR_LEN..], HDR_LEN), Ok(f.hdr));
        let fr = &b[f.start..f.start + f.len];
        assert_eq!(&fr[66..], &data[..], "payloads in order");
        assert_eq!(u16::from_be_bytes([fr[16], fr[17]]), 20 + 32 + 250);
        assert_eq!(
            switch::offload::checksum(&fr[14..34]),
            0,
            "IPv4 header checksum"
        );
        assert_eq!(fr[14 + 20 + 13], 0x18, "the last segment's PSH");
        // The TCP checksum field is the pseudo-header seed for the whole frame.
        let mut cs = switch::offload::Csum::new();
        cs.add_bytes(&[198, 18, 0, 1, 198, 18, 0, 2]);
        cs.add_u16(6);
        cs.add_u16(32 + 250);
        assert_eq!(u16::from_be_bytes([fr[50], fr[51]]), cs.fold());
    }

    #[test]
    fn what_does_not_continue_the_flow_is_handed_on_alone_and_junk_is_counted() {
        let p = [7u8; 100];
        let mut bad_csum = tcp4(1200, 0x10, &p);
        bad_csum[70] ^= 1;
        let mut bad_flags = vxlan(42, &tcp4(1300, 0x10, &p));
        bad_flags[0] = 0;
        let segs = [
            vxlan(42, &tcp4(1000, 0x10, &p)),
            vxlan(42, &tcp4(1100, 0x10, &p)),
            vxlan(42, &bad_csum),
            bad_flags,
            vxlan(42, &tcp4(9999, 0x10, &p)),
            vxlan(43, &tcp4(1400, 0x10, &p)),
        ];
        let seg = segs[0].len();
        let payload: Vec<u8> = segs.concat();
        let mut b = received_gro([198, 18, 100, 2], seg, &payload);
        let mut frames = vec![];
        let (r, drops) = burst(&mut b, &mut frames);
        assert_eq!(r, Some(0));
        assert_eq!(drops, vec![RxDrop::BadFlags, RxDrop::WrongVni]);
        let got: Vec<_> = frames.iter().map(|f| (f.segments, f.len)).collect();
        assert_eq!(got, vec![(2, 266), (1, 166), (1, 166)]);
        // The bad checksum stays as it came, for the receiver to refuse.
        let f = frames[1];
        assert_eq!(&b[f.start..f.start + f.len], &bad_csum[..]);
        assert_eq!(f.hdr, VnetHdr::default());
        // After a coalesced frame there is room for the next one's header in place.
        assert!(frames[1].hdr_in_place);
        for f in &frames {
            assert!(f.start + f.len <= b.len());
            if f.hdr_in_place {
                assert_eq!(VnetHdr::parse(&b[f.start - HDR_LEN..], HDR_LEN), Ok(f.hdr));
            }
        }
        // From an unknown VTEP: nothing.
        let mut b = received_gro([198, 18, 100, 9], seg, &payload);
        assert_eq!(
            burst(&mut b, &mut frames),
            (None, vec![RxDrop::UnknownVtep])
        );
        assert!(frames.is_empty());
    }

    #[test]
    fn datagrams_without_room_for_a_header_say_so() {
        // Two unrelated frames back to back: the second's header would overwrite the
        // first's tail.
        let mut a = vec![0xffu8; 6];
        a.extend_from_slice(&[2, 0, 0, 0, 0, 7, 0x08, 0x06]);
        a.resize(60, 0);
        let segs = [vxlan(42, &a), vxlan(42, &a)];
        let mut b = received_gro([198, 18, 100, 2], segs[0].len(), &segs.concat());
        let mut frames = vec![];
        assert_eq!(burst(&mut b, &mut frames), (Some(0), vec![]));
        let got: Vec<_> = frames.iter().map(|f| (f.hdr_in_place, f.len)).collect();
        assert_eq!(got, vec![(true, 60), (false, 60)]);
        assert_eq!(&b[frames[1].start..frames[1].start + 60], &a[..]);
        assert_eq!(&b[frames[0].start..frames[0].start + 60], &a[..]);
    }
}
