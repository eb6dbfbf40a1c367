//! Building IGMP/MLD packets: the querier's general and group-specific queries (as whole
//! Ethernet frames the data plane injects) and, for tests and tools, host reports.
//!
//! Every packet carries what receivers check: IPv4 TTL 1 with router alert (RFC 2113,
//! RFC 3376 §4), IPv6 hop limit 1 with a hop-by-hop router alert (RFC 2711, value 0 = MLD,
//! RFC 3810 §5), RFC 1071 checksums, and the ICMPv6 pseudo-header (RFC 4443 §2.3).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::addr::GroupAddr;
use super::csum;
use super::wire::{
    IGMP_QUERY, IGMP_V1_REPORT, IGMP_V2_LEAVE, IGMP_V2_REPORT, IGMP_V3_REPORT, MLD_QUERY,
    MLD_V1_DONE, MLD_V1_REPORT, MLD_V2_REPORT, PROTO_ICMPV6, PROTO_IGMP,
};
use crate::mac::Mac;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

pub const ALL_SYSTEMS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
pub const IGMPV3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
pub const MLDV2_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x16);

/// RFC 3376 §4.1.1 encoding of an 8-bit code (max resp in 1/10 s, QQIC in s); values
/// beyond the largest representable one (31744) saturate.
pub fn encode_code8(v: u64) -> u8 {
    if let Ok(b @ 0..=127) = u8::try_from(v) {
        return b;
    }
    for exp in 0u8..8 {
        let mant = v >> (exp + 3);
        if mant < 0x20 {
            return 0x80 | (exp << 4) | ((mant & 0x0f) as u8);
        }
    }
    0xff
}

/// RFC 3810 §5.1.3 encoding of the 16-bit maximum response code (milliseconds).
pub fn encode_code16(v: u64) -> u16 {
    if let Ok(c @ 0..=32767) = u16::try_from(v) {
        return c;
    }
    for exp in 0u16..8 {
        let mant = v >> (exp + 3);
        if mant < 0x2000 {
            return 0x8000 | (exp << 12) | ((mant & 0x0fff) as u16);
        }
    }
    0xffff
}

/// An IPv4 packet (TTL 1, router alert, DSCP CS6 as Linux sends IGMP) carrying `msg` of
/// protocol `proto`; the message's checksum field (bytes 2..4: IGMP, PIM) is filled in.
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, msg: &[u8]) -> Vec<u8> {
    let total = 24 + msg.len();
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x46, 0xc0]);
    p.extend_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0, 1, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0x94, 0x04, 0, 0]);
    let c = csum::checksum(&p[..24]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(msg);
    if msg.len() >= 4 {
        p[26..28].copy_from_slice(&[0, 0]);
        let c = csum::checksum(&p[24..]);
        p[26..28].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// An IGMP packet (see [`ipv4_packet`]).
pub fn ipv4_igmp(src: Ipv4Addr, dst: Ipv4Addr, igmp: &[u8]) -> Vec<u8> {
    ipv4_packet(src, dst, PROTO_IGMP, igmp)
}

/// An IPv6 packet (hop limit 1, hop-by-hop router alert with value 0 = MLD) carrying `msg`
/// with next header `next`; the message's checksum field (bytes 2..4: ICMPv6, PIM) is
/// filled in with the pseudo-header.
pub fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, next: u8, msg: &[u8]) -> Vec<u8> {
    let plen = 8 + msg.len();
    let mut p = Vec::with_capacity(40 + plen);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&u16::try_from(plen).unwrap_or(u16::MAX).to_be_bytes());
    p.extend_from_slice(&[0, 1]); // next header hop-by-hop, hop limit 1
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    // Hop-by-hop: next header, length 0 (8 bytes), router alert (5, 2, value 0), PadN.
    p.extend_from_slice(&[next, 0, 5, 2, 0, 0, 1, 0]);
    p.extend_from_slice(msg);
    if msg.len() >= 4 {
        let m = &mut p[48..];
        m[2..4].copy_from_slice(&[0, 0]);
        let c = csum::checksum_v6(&src, &dst, next, m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// An ICMPv6 packet (see [`ipv6_packet`]).
pub fn ipv6_icmpv6(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> Vec<u8> {
    ipv6_packet(src, dst, PROTO_ICMPV6, icmp)
}

/// Prepends an untagged Ethernet header; the egress path adds a VLAN tag where needed.
pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(ip);
    f
}

/// Which query generation the querier speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// IGMPv2 query (8 bytes, RFC 2236 §2); v1 hosts understand it too.
    IgmpV2,
    /// IGMPv3 query (RFC 3376 §4.1); v1/v2 hosts treat it as a v2/v1 query (§7.1).
    IgmpV3,
    MldV1,
    MldV2,
}

/// Parameters of one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryParams {
    pub kind: QueryKind,
    /// `None`: general query to all systems/nodes; `Some`: group-specific, sent to the group.
    pub group: Option<GroupAddr>,
    pub max_resp_ms: u64,
    /// Robustness (QRV, v3/MLDv2; values above 7 are sent as 0 = "unknown", RFC 3376
    /// §4.1.6).
    pub robustness: u8,
    pub query_interval_s: u64,
    /// v3/MLDv2 "suppress router-side processing" flag, set on the repeated group-specific
    /// queries of a leave (RFC 3376 §6.6.3.1).
    pub suppress: bool,
}

/// The IGMP query message itself (without IP header).
pub fn igmp_query(q: &QueryParams) -> Vec<u8> {
    let group = match q.group {
        Some(GroupAddr::V4(g)) => g,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let mut m = Vec::with_capacity(12);
    let code = match q.kind {
        QueryKind::IgmpV3 => encode_code8(q.max_resp_ms / 100),
        _ => (q.max_resp_ms / 100).clamp(1, 255) as u8,
    };
    m.extend_from_slice(&[IGMP_QUERY, code, 0, 0]);
    m.extend_from_slice(&group.octets());
    if q.kind == QueryKind::IgmpV3 {
        let qrv = if q.robustness <= 7 { q.robustness } else { 0 };
        m.push(u8::from(q.suppress) << 3 | qrv);
        m.push(encode_code8(q.query_interval_s));
        m.extend_from_slice(&[0, 0]);
    }
    m
}

/// The MLD query message (ICMPv6 type 130, without IP header).
pub fn mld_query(q: &QueryParams) -> Vec<u8> {
    let group = match q.group {
        Some(GroupAddr::V6(g)) => g,
        _ => Ipv6Addr::UNSPECIFIED,
    };
    let mut m = Vec::with_capacity(28);
    let code = match q.kind {
        QueryKind::MldV2 => encode_code16(q.max_resp_ms),
        _ => u16::try_from(q.max_resp_ms).unwrap_or(u16::MAX),
    };
    m.extend_from_slice(&[MLD_QUERY, 0, 0, 0]);
    m.extend_from_slice(&code.to_be_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&group.octets());
    if q.kind == QueryKind::MldV2 {
        let qrv = if q.robustness <= 7 { q.robustness } else { 0 };
        m.push(u8::from(q.suppress) << 3 | qrv);
        m.push(encode_code8(q.query_interval_s));
        m.extend_from_slice(&[0, 0]);
    }
    m
}

/// A complete IGMP query frame from `src`/`src_mac` (RFC 2236 §2, RFC 3376 §4.1).
pub fn igmp_query_frame(src: Ipv4Addr, src_mac: Mac, q: &QueryParams) -> Vec<u8> {
    let dst = match q.group {
        Some(GroupAddr::V4(g)) => g,
        _ => ALL_SYSTEMS,
    };
    let ip = ipv4_igmp(src, dst, &igmp_query(q));
    ethernet(GroupAddr::V4(dst).mac(), src_mac, ETHERTYPE_IPV4, &ip)
}

/// A complete MLD query frame from the link-local `src` (RFC 2710 §3, RFC 3810 §5.1).
pub fn mld_query_frame(src: Ipv6Addr, src_mac: Mac, q: &QueryParams) -> Vec<u8> {
    let dst = match q.group {
        Some(GroupAddr::V6(g)) => g,
        _ => ALL_NODES,
    };
    let ip = ipv6_icmpv6(src, dst, &mld_query(q));
    ethernet(GroupAddr::V6(dst).mac(), src_mac, ETHERTYPE_IPV6, &ip)
}

/// Host side, for tests and tools: IGMPv1/v2 report (to the group) or v2 leave (to
/// 224.0.0.2), as an IP packet.
pub fn igmp_v12(kind: u8, src: Ipv4Addr, group: Ipv4Addr) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0];
    m.extend_from_slice(&group.octets());
    let dst = if kind == IGMP_V2_LEAVE {
        Ipv4Addr::new(224, 0, 0, 2)
    } else {
        group
    };
    ipv4_igmp(src, dst, &m)
}

/// IGMPv2 membership report as an IP packet.
pub fn igmp_v2_report(src: Ipv4Addr, group: Ipv4Addr) -> Vec<u8> {
    igmp_v12(IGMP_V2_REPORT, src, group)
}

/// IGMPv1 membership report as an IP packet.
pub fn igmp_v1_report(src: Ipv4Addr, group: Ipv4Addr) -> Vec<u8> {
    igmp_v12(IGMP_V1_REPORT, src, group)
}

/// IGMPv2 leave group as an IP packet.
pub fn igmp_leave(src: Ipv4Addr, group: Ipv4Addr) -> Vec<u8> {
    igmp_v12(IGMP_V2_LEAVE, src, group)
}

/// IGMPv3 report (to 224.0.0.22) with records (type, group, number of sources; the
/// sources are filled with 198.18.0.x).
pub fn igmp_v3_report(src: Ipv4Addr, records: &[(u8, Ipv4Addr, u16)]) -> Vec<u8> {
    let mut m = vec![IGMP_V3_REPORT, 0, 0, 0, 0, 0];
    // The count field is 16 bits: a longer list is cut to what it can count.
    let records = &records[..records.len().min(usize::from(u16::MAX))];
    m.extend_from_slice(
        &u16::try_from(records.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    for (t, g, n) in records {
        m.extend_from_slice(&[*t, 0]);
        m.extend_from_slice(&n.to_be_bytes());
        m.extend_from_slice(&g.octets());
        for i in 0..*n {
            m.extend_from_slice(&[198, 18, 0, i.to_le_bytes()[0]]);
        }
    }
    ipv4_igmp(src, IGMPV3_ROUTERS, &m)
}

/// MLDv1 report (to the group) or done (to ff02::2) as an IP packet.
pub fn mld_v1(kind: u8, src: Ipv6Addr, group: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![kind, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&group.octets());
    let dst = if kind == MLD_V1_DONE {
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2)
    } else {
        group
    };
    ipv6_icmpv6(src, dst, &m)
}

/// MLDv1 report as an IP packet.
pub fn mld_v1_report(src: Ipv6Addr, group: Ipv6Addr) -> Vec<u8> {
    mld_v1(MLD_V1_REPORT, src, group)
}

/// MLDv1 done as an IP packet.
pub fn mld_done(src: Ipv6Addr, group: Ipv6Addr) -> Vec<u8> {
    mld_v1(MLD_V1_DONE, src, group)
}

/// MLDv2 report (to ff02::16) with records (type, group, number of sources; sources are
/// 2001:db8::x).
pub fn mld_v2_report(src: Ipv6Addr, records: &[(u8, Ipv6Addr, u16)]) -> Vec<u8> {
    let mut m = vec![MLD_V2_REPORT, 0, 0, 0, 0, 0];
    // The count field is 16 bits: a longer list is cut to what it can count.
    let records = &records[..records.len().min(usize::from(u16::MAX))];
    m.extend_from_slice(
        &u16::try_from(records.len())
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    for (t, g, n) in records {
        m.extend_from_slice(&[*t, 0]);
        m.extend_from_slice(&n.to_be_bytes());
        m.extend_from_slice(&g.octets());
        for i in 0..*n {
            m.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i).octets());
        }
    }
    ipv6_icmpv6(src, MLDV2_ROUTERS, &m)
}

#[cfg(test)]
mod tests {
    use super::super::wire::{decode_code16, decode_code8};
    use super::*;

    #[test]
    fn codes_roundtrip_within_precision() {
        for v in [0u64, 1, 100, 127, 128, 129, 250, 1000, 3175, 31744, 40000] {
            let d = decode_code8(encode_code8(v));
            assert!(
                d <= v.max(31744) && (v > 31744 || v - d < v / 16 + 1),
                "{v} -> {d}"
            );
        }
        assert_eq!(decode_code8(encode_code8(125)), 125);
        for v in [0u64, 10_000, 32767, 32768, 125_000, 8_387_584] {
            let d = decode_code16(encode_code16(v));
            assert!(d <= v && v - d < v / 4096 + 1, "{v} -> {d}");
        }
    }
}
