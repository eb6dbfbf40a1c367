//! Fuzz a VXLAN port's two byte paths (RFC 7348), the functions the worker runs:
//! - receive: `uring_net::vxlan::decap::decapsulate` (one datagram) and
//!   `decapsulate_burst` (a UDP_GRO run, TCP segments coalesced) on a provided buffer as
//!   a multishot recvmsg fills it (kernel header, source address, UDP payload from the
//!   underlay);
//! - send: `uring_net::vxlan::encap::encapsulate` on a frame and virtio-net header as a
//!   guest (or any port) hands it over, plus the inner flow hash that picks the socket.
//!
//! Input: 1 byte mode (bit 0: 0 receive, 1 send; bit 1 with bit 0 clear: a UDP_GRO
//! receive, its buffer with 24 bytes of control data after the name), 3 bytes VNI
//! (big-endian), 2 bytes inner_max (little-endian; at least 64, as `VxlanPort::open` requires), then
//! - receive: the buffer: `io_uring_recvmsg_out` (namelen, controllen, payloadlen, flags:
//!   u32 each, native order), 28 bytes of name (a sockaddr_in or sockaddr_in6), payload;
//! - send: 1 control byte (high bit: "fix-up" mode as in the offload target), the 12-byte
//!   virtio-net header, the frame.
//!
//! Invariants: receive accepts only a datagram from a configured remote with the I flag
//! and the port's VNI, and hands on exactly its inner frame behind a valid vnet header,
//! inside the buffer, fitting the underlay (a larger TCP segment only as a TSO frame
//! whose segments fit); each refusal names a reason that holds. Send produces UDP GSO
//! batches that tile its output, within Linux's limits, every datagram a VXLAN header
//! for the VNI and an inner frame that fits the underlay; a plain frame that fits is
//! sent unchanged.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libfuzzer_sys::fuzz_target;
use switch::offload::{plan, Egress, Frame};
use switch::vnet::{F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, GSO_TCPV6, HDR_LEN};
use switch::{Chunk, Offloads, VnetHdr};
use uring_net::vxlan::decap::{
    decapsulate, decapsulate_burst, recv_msghdr, recv_msghdr_gro, RxDrop, COALESCE_MAX_SEGS,
    NAME_LEN,
};
use uring_net::vxlan::encap::{encapsulate, BATCH_MAX_BYTES, BATCH_MAX_SEGS};

#[path = "shared/frames.rs"]
mod frames;

const REMOTES: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(198, 18, 100, 2)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2)),
];
/// `io_uring_recvmsg_out`'s size: the name follows it.
const OUT_HDR: usize = 16;

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The source address in a name, read independently of the daemon's parser.
fn name_ip(name: &[u8]) -> Option<IpAddr> {
    match i32::from(u16::from_ne_bytes(name.get(..2)?.try_into().ok()?)) {
        libc::AF_INET => Some(IpAddr::from(<[u8; 4]>::try_from(name.get(4..8)?).ok()?)),
        libc::AF_INET6 => {
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(name.get(8..24)?).ok()?);
            Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4))
        }
        _ => None,
    }
}

fn receive(vni: u32, inner_max: usize, buf: &[u8]) {
    let mut b = buf.to_vec();
    let r = decapsulate(&mut b, &recv_msghdr(), vni, inner_max, &REMOTES);
    let name_end = OUT_HDR + NAME_LEN as usize;
    let namelen = u32_at(buf, 0).map_or(0, |n| (n as usize).min(NAME_LEN as usize));
    let from = buf.get(OUT_HDR..OUT_HDR + namelen).and_then(name_ip);
    let plen = u32_at(buf, 8).map_or(0, |n| n as usize);
    let payload = buf.get(name_end..).map(|p| &p[..plen.min(p.len())]);
    match r {
        Ok(d) => {
            let payload = payload.expect("accepted without a payload");
            assert!(d.start + d.len <= b.len(), "{d:?} outside {}", b.len());
            assert_eq!(from, Some(REMOTES[usize::from(d.remote)]), "{d:?}");
            assert!(payload[0] & 0x08 != 0, "accepted without the I flag");
            assert_eq!(
                u32::from_be_bytes([0, payload[4], payload[5], payload[6]]),
                vni
            );
            let inner = &payload[8..];
            let out = &b[d.start..d.start + d.len];
            let (vh, frame) = out.split_at(HDR_LEN);
            assert_eq!(frame.len(), inner.len());
            assert_eq!(&frame[..14], &inner[..14]);
            assert_eq!(d.src.0[..], inner[6..12]);
            let hdr = VnetHdr::parse(vh, HDR_LEN).expect("the emitted vnet header parses");
            match hdr.gso_type {
                GSO_NONE => {
                    assert!(frame.len() <= inner_max, "oversized frame passed on");
                    assert_eq!(frame, inner, "a frame passed on as it came");
                    if hdr.flags & F_NEEDS_CSUM != 0 {
                        let end = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset);
                        assert!(end + 2 <= frame.len(), "{hdr:?}");
                    }
                }
                GSO_TCPV4 | GSO_TCPV6 => {
                    assert!(frame.len() > inner_max, "{hdr:?}");
                    let seg = usize::from(hdr.hdr_len) + usize::from(hdr.gso_size);
                    assert!(seg <= inner_max, "{hdr:?} cuts segments over {inner_max}");
                    let parts = [Chunk::from(frame)];
                    if let Ok(Egress::Segment(p)) = plan(&hdr, &Frame::new(&parts), &Offloads::NONE)
                    {
                        if let Ok(mut s) = p.segments(Frame::new(&parts)) {
                            while let Some(len) = s.next_len() {
                                assert!(len <= inner_max, "a {len}-byte segment");
                                let mut v = vec![0u8; len];
                                if !matches!(s.copy_next(&mut v), Ok(Some(_))) {
                                    break;
                                }
                            }
                        }
                    }
                }
                other => panic!("gso_type {other} handed on"),
            }
        }
        Err(RxDrop::BadFlags) => {
            assert!(payload.is_some_and(|p| p.first().is_some_and(|f| f & 0x08 == 0)));
        }
        Err(RxDrop::WrongVni) => {
            let p = payload.expect("a VNI without a payload");
            assert_ne!(u32::from_be_bytes([0, p[4], p[5], p[6]]), vni);
        }
        Err(RxDrop::UnknownVtep) => {
            assert!(from.is_none_or(|ip| !REMOTES.contains(&ip)), "{from:?}");
        }
        Err(RxDrop::Oversized) => {
            assert!(payload.is_some_and(|p| p.len() - 8 > inner_max));
        }
        Err(RxDrop::Truncated) => {}
    }
}

fn send(vni: u32, inner_max: usize, data: &[u8]) {
    let [ctl, rest @ ..] = data else { return };
    // As the worker: the copied-out bytes are the vnet header, then the frame.
    let mut input = rest.to_vec();
    let Ok(mut hdr) = VnetHdr::parse(&input, HDR_LEN) else {
        return;
    };
    if ctl & 0x80 != 0 {
        frames::fix_up(&mut input[HDR_LEN..], &mut hdr);
    }
    let frame = &mut input[HDR_LEN..];
    let _ = switch::vxlan::inner_flow_hash(frame);
    let original = frame.to_vec();
    let (mut out, mut batches) = (Vec::new(), Vec::new());
    let Ok(_) = encapsulate(&hdr, frame, vni, inner_max, &mut out, &mut batches) else {
        return;
    };
    assert!(!batches.is_empty(), "nothing to send");
    let vh = switch::vxlan::emit(vni);
    let mut at = 0;
    for b in &batches {
        assert_eq!(b.start, at, "batches tile the output: {batches:?}");
        assert!(b.count >= 1 && b.count <= BATCH_MAX_SEGS, "{b:?}");
        assert!(b.len <= BATCH_MAX_BYTES, "{b:?}");
        assert!(
            b.len > b.seg * (b.count - 1) && b.len <= b.seg * b.count,
            "{b:?}"
        );
        let mut d = b.start;
        while d < b.start + b.len {
            let len = b.seg.min(b.start + b.len - d);
            let dgram = &out[d..d + len];
            assert_eq!(dgram[..8], vh, "a datagram without the VNI's header");
            let inner = &dgram[8..];
            assert!(
                inner.len() <= inner_max,
                "a {}-byte inner frame",
                inner.len()
            );
            let _ = switch::vxlan::inner_flow_hash(inner);
            d += len;
        }
        at = b.start + b.len;
    }
    assert_eq!(at, out.len(), "bytes outside every batch");
    if hdr.flags == 0 && hdr.gso_type == GSO_NONE && original.len() <= inner_max {
        assert_eq!(batches.len(), 1);
        assert_eq!(&out[..8], &vh);
        assert_eq!(
            &out[8..],
            &original[..],
            "a plain frame that fits is sent as it is"
        );
    }
}

/// A UDP_GRO receive (`decapsulate_burst`, what the worker runs): the buffer has
/// `GRO_CONTROL_LEN` bytes of control data (a UDP_GRO cmsg or junk) after the name.
/// Every frame lies inside the buffer after the one before (an in-place header too),
/// its in-place header is the one reported, a coalesced frame is a TSO frame whose
/// segments cover it, and a result names the sender's remote.
fn receive_burst(vni: u32, inner_max: usize, buf: &[u8]) {
    let mut b = buf.to_vec();
    let mut frames = Vec::new();
    let mut drops = 0usize;
    let r = decapsulate_burst(
        &mut b,
        &recv_msghdr_gro(),
        vni,
        inner_max,
        &REMOTES,
        &mut frames,
        &mut |_| drops += 1,
    );
    assert_eq!(r.is_some(), !frames.is_empty());
    if let Some(remote) = r {
        let namelen = u32_at(buf, 0).map_or(0, |n| (n as usize).min(NAME_LEN as usize));
        let from = buf.get(OUT_HDR..OUT_HDR + namelen).and_then(name_ip);
        assert_eq!(from, Some(REMOTES[usize::from(remote)]));
    }
    let mut end = 0usize;
    for f in &frames {
        assert!(f.len >= 14 && f.start + f.len <= b.len(), "{f:?} in {}", b.len());
        assert!(f.start >= end, "{f:?} overlaps the frame before (ends {end})");
        if f.hdr_in_place {
            assert!(f.start >= end + HDR_LEN, "{f:?}");
            let h = VnetHdr::parse(&b[f.start - HDR_LEN..f.start], HDR_LEN);
            assert_eq!(h, Ok(f.hdr));
        }
        assert!(f.segments >= 1 && usize::from(f.segments) <= COALESCE_MAX_SEGS);
        if f.segments > 1 {
            assert!(matches!(f.hdr.gso_type, GSO_TCPV4 | GSO_TCPV6), "{f:?}");
            let body = f.len - usize::from(f.hdr.hdr_len);
            let most = usize::from(f.segments) * usize::from(f.hdr.gso_size);
            assert!(body <= most && body > most - usize::from(f.hdr.gso_size), "{f:?}");
        }
        end = f.start + f.len;
    }
}

fuzz_target!(|data: &[u8]| {
    let [mode, v0, v1, v2, m0, m1, rest @ ..] = data else {
        return;
    };
    let vni = u32::from_be_bytes([0, *v0, *v1, *v2]);
    let inner_max = usize::from(u16::from_le_bytes([*m0, *m1])).max(64);
    if mode & 3 == 2 {
        receive_burst(vni, inner_max, rest);
    } else if mode & 1 == 0 {
        receive(vni, inner_max, rest);
    } else {
        send(vni, inner_max, rest);
    }
});
