//! Decapsulation of one received VXLAN datagram, without I/O: the provided buffer a
//! multishot recvmsg filled (io_uring's `io_uring_recvmsg_out` header, the source
//! address, then the UDP payload: VXLAN header and inner frame) becomes the inner frame
//! with a virtio-net header in front, in place, so it takes the host path unchanged.
//!
//! Everything past the kernel's own header is the underlay's (attacker-controlled)
//! bytes; this is the function the `vxlan` fuzz target drives with hostile buffers.

use std::net::IpAddr;

use io_uring::types::RecvMsgOut;
use switch::vnet::{F_NEEDS_CSUM, HDR_LEN};
use switch::Mac;

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
}
