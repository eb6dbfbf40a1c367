//! Egress MTU: does a frame fit the destination port's MTU?
//!
//! The MTU is the largest network-layer packet a port carries (RFC 894, RFC 791 §3.1
//! "Total Length"; Linux `dev->mtu`), so the Ethernet header and a VLAN tag are not part
//! of it: a frame may be MTU + 14 bytes long, + 4 when it carries a tag (IEEE 802.1Q-2018
//! §6.9: a tag does not reduce the MTU). What counts is the packet, which a tag push or
//! pop on egress does not change, so the check needs only the frame as it came in.
//!
//! A GSO frame (virtio 1.2 §5.1.6.2) is a train of packets: it fits when every segment
//! does, i.e. its headers plus one `gso_size` — Linux's `skb_gso_validate_network_len`,
//! the test IP forwarding applies. A segment's network length is the network and
//! transport headers plus `gso_size`; for UFO `gso_size` already counts the UDP header
//! (it is the IP fragment payload). A GSO frame whose headers are not in the bytes the
//! switch holds is let through here: offload adaptation validates those headers and
//! drops a broken frame with its own reason.

use crate::frame::FrameView;
use crate::vnet::{Gso, VnetHdr};

/// The smallest MTU: IPv4's minimum datagram every host must take (RFC 791 §3.1).
pub const MIN_MTU: u16 = 68;
/// The largest MTU a port may have: jumbo frames of 9000 bytes, the common ceiling of
/// NICs and switches.
pub const MAX_MTU: u16 = 9000;
/// A port's MTU when none is configured: Ethernet's (RFC 894).
pub const DEFAULT_MTU: u16 = 1500;

/// The network-layer length of `frame`'s largest packet on the wire: the whole packet,
/// or for a GSO frame its largest segment (whichever is smaller, so a GSO frame that is
/// itself small fits like any other). `head` is the frame's first bytes as decided on.
#[inline]
pub fn packet_len(hdr: &VnetHdr, frame: &FrameView, head: &[u8]) -> usize {
    let whole = (frame.frame_len as usize).saturating_sub(usize::from(frame.l3_offset));
    if hdr.gso_type == crate::vnet::GSO_NONE {
        return whole;
    }
    whole.min(segment_len(hdr, frame, head).unwrap_or(0))
}

/// One GSO segment's network-layer length, None when the headers are not known.
#[inline]
fn segment_len(hdr: &VnetHdr, frame: &FrameView, head: &[u8]) -> Option<usize> {
    let (l3, l4) = (usize::from(frame.l3_offset), usize::from(frame.l4_offset));
    if l4 <= l3 {
        return None;
    }
    let transport = match hdr.gso().ok()? {
        Gso::None => return None,
        // TCP data offset: the header length in 32-bit words (RFC 9293 §3.1).
        Gso::TcpV4 | Gso::TcpV6 => usize::from(head.get(l4 + 12)? >> 4) * 4,
        Gso::UdpL4 => 8,
        Gso::Udp => 0,
    };
    Some(l4 - l3 + transport + usize::from(hdr.gso_size))
}

/// Whether `frame` may leave through a port of MTU `mtu`.
#[inline]
pub fn fits(mtu: u16, hdr: &VnetHdr, frame: &FrameView, head: &[u8]) -> bool {
    packet_len(hdr, frame, head) <= usize::from(mtu)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::{eth, ipv4, ipv6};
    use crate::frame::{ETHERTYPE_IPV4, ETHERTYPE_IPV6};
    use crate::vlan::TPID_8021Q;
    use crate::vnet::{GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4};

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn view(f: &[u8], gso: bool) -> FrameView {
        FrameView::parse(f, f.len(), TPID_8021Q, gso).unwrap()
    }

    /// An IPv4 frame whose packet is exactly `ip_len` bytes (TCP, 20-byte header).
    fn v4(ip_len: usize, vid: Option<u16>) -> Vec<u8> {
        let mut p = ipv4(6, ip_len - 20);
        p[20 + 12] = 5 << 4;
        eth(B, A, vid, ETHERTYPE_IPV4, &p)
    }

    #[test]
    fn plain_frames_fit_up_to_the_mtu_tag_or_not() {
        let plain = VnetHdr::default();
        for vid in [None, Some(10)] {
            let f = v4(1500, vid);
            assert_eq!(f.len(), 1514 + if vid.is_some() { 4 } else { 0 });
            assert!(fits(1500, &plain, &view(&f, false), &f));
            let f = v4(1501, vid);
            assert!(!fits(1500, &plain, &view(&f, false), &f));
            assert!(fits(9000, &plain, &view(&f, false), &f));
            let f = v4(9000, vid);
            assert!(fits(9000, &plain, &view(&f, false), &f));
            let f = v4(9001, vid);
            assert!(!fits(9000, &plain, &view(&f, false), &f));
        }
        // Not IP: the payload after the EtherType is the packet.
        let f = eth(B, A, None, 0x88b5, &[0; 1501]);
        assert_eq!(packet_len(&plain, &view(&f, false), &f), 1501);
    }

    #[test]
    fn gso_frames_fit_when_each_segment_does() {
        // 20 bytes of IPv4 + 20 of TCP + 1460 = 1500 per segment.
        let f = v4(20_000, None);
        let v = view(&f, true);
        let mut h = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1460,
            csum_start: 34,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        assert_eq!(packet_len(&h, &v, &f), 1500);
        assert!(fits(1500, &h, &v, &f));
        h.gso_size = 1461;
        assert!(!fits(1500, &h, &v, &f));
        h.gso_size = 8960;
        assert!(fits(9000, &h, &v, &f));
        assert!(!fits(1500, &h, &v, &f));
        // TCP options count: a 32-byte header leaves 1448 bytes of payload.
        let mut f2 = f.clone();
        f2[34 + 12] = 8 << 4;
        h.gso_size = 1448;
        assert!(fits(1500, &h, &view(&f2, true), &f2));
        h.gso_size = 1449;
        assert!(!fits(1500, &h, &view(&f2, true), &f2));
        // Headers not in the bytes held: left to offload adaptation.
        h.gso_size = 60_000;
        assert!(fits(1500, &h, &v, &f[..40]));
        // A GSO frame smaller than one segment is just its packet.
        let small = v4(600, None);
        h.gso_size = 8960;
        assert_eq!(packet_len(&h, &view(&small, true), &small), 600);
    }

    #[test]
    fn udp_gso_counts_headers_as_linux_does() {
        let udp = {
            let mut u = vec![0u8; 8 + 20_000];
            let len = u16::try_from(u.len()).unwrap();
            u[4..6].copy_from_slice(&len.to_be_bytes());
            u
        };
        let f = eth(B, A, None, ETHERTYPE_IPV6, &ipv6(17, &udp));
        let v = view(&f, true);
        // USO: 40 (IPv6) + 8 (UDP) + gso_size.
        let uso = VnetHdr {
            gso_type: GSO_UDP_L4,
            gso_size: 1452,
            ..VnetHdr::default()
        };
        assert_eq!(packet_len(&uso, &v, &f), 1500);
        // UFO: gso_size is the fragment payload, UDP header included.
        let ufo = VnetHdr {
            gso_type: GSO_UDP,
            gso_size: 1460,
            ..VnetHdr::default()
        };
        assert_eq!(packet_len(&ufo, &v, &f), 1500);
        // A GSO type over IPv6 TCP headers that are not there (UDP): no TCP data offset
        // is invented; the frame's headers say 40 + (byte 12 of the UDP payload).
        let tso6 = VnetHdr {
            gso_type: GSO_TCPV6,
            gso_size: 1000,
            ..VnetHdr::default()
        };
        assert_eq!(packet_len(&tso6, &v, &f), 1040);
    }
}
