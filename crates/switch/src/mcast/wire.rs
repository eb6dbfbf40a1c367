//! Parsing of the control packets snooping looks at, starting at the IP header.
//!
//! smoltcp-style split: [`parse`] validates the bytes once (IP header, extension headers,
//! lengths, checksums, router alert, hop limit, source) and returns a [`Control`]
//! representation that borrows the packet; nothing is allocated. Everything is
//! guest-controlled, so every length is checked and every failure is a [`WireError`]
//! the caller counts.
//!
//! Messages:
//! - IGMP (IPv4 protocol 2): v1/v2/v3 queries and reports, v2 leave (RFC 1112 appendix I,
//!   RFC 2236 §2, RFC 3376 §4), MRD advertisement/solicitation/termination (RFC 4286 §4
//!   and §5, IGMP types 0x30–0x32);
//! - MLD (ICMPv6 after the extension headers): queries (130), v1 report (131), done (132),
//!   v2 report (143) (RFC 2710 §3, RFC 3810 §5), MRD (151–153);
//! - PIM (protocol/next header 103): hello and its holdtime option (RFC 7761 §4.9.2).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::addr::{is_v6_link_local_unicast, GroupAddr, NodeAddr};
use super::csum;

pub const PROTO_IGMP: u8 = 2;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_PIM: u8 = 103;

pub const IGMP_QUERY: u8 = 0x11;
pub const IGMP_V1_REPORT: u8 = 0x12;
pub const IGMP_V2_REPORT: u8 = 0x16;
pub const IGMP_V2_LEAVE: u8 = 0x17;
pub const IGMP_V3_REPORT: u8 = 0x22;
pub const IGMP_MRD_ADV: u8 = 0x30;
pub const IGMP_MRD_SOL: u8 = 0x31;
pub const IGMP_MRD_TERM: u8 = 0x32;

pub const MLD_QUERY: u8 = 130;
pub const MLD_V1_REPORT: u8 = 131;
pub const MLD_V1_DONE: u8 = 132;
pub const MLD_V2_REPORT: u8 = 143;
pub const MLD_MRD_ADV: u8 = 151;
pub const MLD_MRD_SOL: u8 = 152;
pub const MLD_MRD_TERM: u8 = 153;

/// 224.0.0.13 / ff02::d: ALL-PIM-ROUTERS (RFC 7761 §4.9).
pub const ALL_PIM_ROUTERS_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 13);
pub const ALL_PIM_ROUTERS_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xd);

/// Why a control packet was refused. Each is a counted drop; nothing is learned from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum WireError {
    #[error("IP header malformed (version, header length, extension header order)")]
    BadIpHeader,
    #[error("IPv4 header checksum wrong")]
    BadIpChecksum,
    #[error("a length field does not fit the packet")]
    BadLength,
    #[error("IGMP/MLD/PIM checksum wrong")]
    BadChecksum,
    #[error("fragmented control packet")]
    Fragment,
    #[error("router alert option missing (RFC 3376 §4, RFC 3810 §5)")]
    NoRouterAlert,
    #[error("MLD hop limit is not 1 (RFC 3810 §5)")]
    BadHopLimit,
    #[error("MLD source address not link-local (RFC 3810 §5.1.14)")]
    BadSource,
    #[error("group field is not a multicast address")]
    BadGroup,
}

/// The IGMP/MLD generation a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    IgmpV1,
    IgmpV2,
    IgmpV3,
    MldV1,
    MldV2,
}

/// A query: general (`group == None`) or group-specific.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub version: Version,
    pub group: Option<GroupAddr>,
    /// Maximum response time in milliseconds (decoded from the max resp code; an IGMPv1
    /// query's zero means 10 s, RFC 2236 §4).
    pub max_resp_ms: u64,
    /// QRV (v3/MLDv2 only; 0 is "not given" and reported as `None`).
    pub qrv: Option<u8>,
    /// Querier's query interval in seconds (v3/MLDv2 QQIC, decoded).
    pub qqi_s: Option<u64>,
}

/// Record types of IGMPv3/MLDv2 reports (RFC 3376 §4.2.12, RFC 3810 §5.2.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    ModeIsInclude,
    ModeIsExclude,
    ChangeToInclude,
    ChangeToExclude,
    AllowNewSources,
    BlockOldSources,
}

impl RecordType {
    fn from_u8(v: u8) -> Option<RecordType> {
        Some(match v {
            1 => RecordType::ModeIsInclude,
            2 => RecordType::ModeIsExclude,
            3 => RecordType::ChangeToInclude,
            4 => RecordType::ChangeToExclude,
            5 => RecordType::AllowNewSources,
            6 => RecordType::BlockOldSources,
            _ => return None,
        })
    }
}

/// One group record of a v3/MLDv2 report. Forwarding is at group granularity; the
/// sources only tell when an INCLUDE-mode port has none left (docs/design/mcast.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: RecordType,
    pub group: GroupAddr,
    pub sources: u16,
    /// The source list, `sources` addresses of 4 or 16 bytes (validated).
    raw_sources: &'a [u8],
}

impl Record<'_> {
    /// The record's source addresses.
    pub fn source_addrs(&self) -> impl Iterator<Item = NodeAddr> + '_ {
        let v6 = matches!(self.group, GroupAddr::V6(_));
        self.raw_sources
            .chunks_exact(if v6 { 16 } else { 4 })
            .filter_map(|c| match GroupAddr::from_slice(c)? {
                GroupAddr::V4(a) => Some(NodeAddr::V4(a)),
                GroupAddr::V6(a) => Some(NodeAddr::V6(a)),
            })
    }
}

/// The validated group records of a v3/MLDv2 report. Iterating cannot fail: [`parse`]
/// checked every record's bounds and group. Records of unknown type are skipped, as
/// RFC 3376 §4.2.12 asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Records<'a> {
    bytes: &'a [u8],
    count: u16,
    v6: bool,
}

impl<'a> Records<'a> {
    /// Number of records in the packet, including skipped unknown types.
    pub fn len(&self) -> usize {
        self.count as usize
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn iter(&self) -> RecordIter<'a> {
        RecordIter {
            bytes: self.bytes,
            left: self.count,
            v6: self.v6,
        }
    }
}

pub struct RecordIter<'a> {
    bytes: &'a [u8],
    left: u16,
    v6: bool,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Record<'a>;
    fn next(&mut self) -> Option<Record<'a>> {
        while self.left > 0 {
            self.left -= 1;
            let (kind, group, nsrc, len) = record_at(self.bytes, self.v6).ok()?;
            let alen = if self.v6 { 16 } else { 4 };
            let raw_sources = self.bytes.get(4 + alen..4 + alen + alen * nsrc as usize)?;
            self.bytes = self.bytes.get(len..)?;
            if let Some(kind) = RecordType::from_u8(kind) {
                return Some(Record {
                    kind,
                    group,
                    sources: nsrc,
                    raw_sources,
                });
            }
        }
        None
    }
}

/// Reads the record at the start of `b`: (type, group, number of sources, total length).
fn record_at(b: &[u8], v6: bool) -> Result<(u8, GroupAddr, u16, usize), WireError> {
    let alen = if v6 { 16 } else { 4 };
    let head = b.get(..4 + alen).ok_or(WireError::BadLength)?;
    let nsrc = u16::from_be_bytes([head[2], head[3]]);
    let len = 4 + alen + alen * nsrc as usize + 4 * head[1] as usize;
    if b.len() < len {
        return Err(WireError::BadLength);
    }
    let group = GroupAddr::from_slice(&head[4..4 + alen]).ok_or(WireError::BadLength)?;
    Ok((head[0], group, nsrc, len))
}

/// What a control packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    Query(Query),
    /// IGMPv1/v2 or MLDv1 report for one group.
    Report {
        version: Version,
        group: GroupAddr,
    },
    /// IGMPv2 leave or MLDv1 done.
    Leave {
        group: GroupAddr,
    },
    /// IGMPv3 or MLDv2 report.
    ReportV3 {
        records: Records<'a>,
    },
    /// PIM hello to ALL-PIM-ROUTERS with its holdtime (seconds; default 105 s when the
    /// option is absent, RFC 7761 §4.11; 0 means "forget me", 0xffff "forever").
    PimHello {
        holdtime_s: u16,
    },
    /// MRD advertisement (RFC 4286 §4): a multicast router announces itself.
    MrdAdvertisement {
        interval_s: u8,
    },
    /// MRD termination (RFC 4286 §6): the router stops routing multicast.
    MrdTermination,
    /// MRD solicitation and any other IGMP type, PIM message or group-less message we do not
    /// interpret (DVMRP, mtrace, PIM join/prune …): forwarded like link-local traffic,
    /// never learned from (RFC 4541 §2.1.1 asks to flood unrecognised IGMP).
    Other,
}

/// A validated control packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control<'a> {
    pub src: NodeAddr,
    pub dst: GroupAddr,
    pub msg: Message<'a>,
}

/// The located upper-layer payload of an IP packet.
struct Located<'a> {
    src: NodeAddr,
    /// Destination (for checksums and classification); may be unicast.
    dst: [u8; 16],
    v6: bool,
    proto: u8,
    payload: &'a [u8],
    router_alert: bool,
    hop_limit: u8,
    /// An IPv6 routing header was walked over: the pseudo-header destination is unknown.
    routed: bool,
}

fn be16(b: &[u8], at: usize) -> Result<u16, WireError> {
    let s = b.get(at..at + 2).ok_or(WireError::BadLength)?;
    Ok(u16::from_be_bytes([s[0], s[1]]))
}

fn locate_v4(ip: &[u8]) -> Result<Located<'_>, WireError> {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err(WireError::BadIpHeader);
    }
    let hl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2)?);
    if hl < 20 || hl > ip.len() {
        return Err(WireError::BadIpHeader);
    }
    if total < hl || total > ip.len() {
        return Err(WireError::BadLength);
    }
    if !csum::verify(&ip[..hl]) {
        return Err(WireError::BadIpChecksum);
    }
    let frag = be16(ip, 6)?;
    if frag & 0x3fff != 0 {
        // MF set or a non-zero offset.
        return Err(WireError::Fragment);
    }
    // RFC 791 options: 0 = end, 1 = no-op, others type/length/value; RFC 2113 router
    // alert is 0x94 with length 4.
    let mut router_alert = false;
    let mut o = 20;
    while o < hl {
        match ip[o] {
            0 => break,
            1 => o += 1,
            t => {
                let l = usize::from(*ip.get(o + 1).ok_or(WireError::BadIpHeader)?);
                if l < 2 || o + l > hl {
                    return Err(WireError::BadIpHeader);
                }
                if t == 0x94 && l == 4 {
                    router_alert = true;
                }
                o += l;
            }
        }
    }
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&ip[16..20]);
    Ok(Located {
        src: NodeAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15])),
        dst,
        v6: false,
        proto: ip[9],
        payload: &ip[hl..total],
        router_alert,
        hop_limit: ip[8],
        routed: false,
    })
}

fn locate_v6(ip: &[u8]) -> Result<Located<'_>, WireError> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return Err(WireError::BadIpHeader);
    }
    let plen = usize::from(be16(ip, 4)?);
    if plen == 0 {
        // A jumbogram (RFC 2675) or an empty packet: neither is a control message.
        return Err(WireError::BadLength);
    }
    let end = 40 + plen;
    if end > ip.len() {
        return Err(WireError::BadLength);
    }
    let mut next = ip[6];
    let mut off = 40;
    let mut router_alert = false;
    let mut routed = false;
    let mut first = true;
    loop {
        match next {
            0 | 43 | 60 | 51 => {
                if next == 0 && !first {
                    // RFC 8200 §4.1: hop-by-hop only directly after the IPv6 header.
                    return Err(WireError::BadIpHeader);
                }
                let h = ip.get(off..off + 2).ok_or(WireError::BadLength)?;
                let len = if next == 51 {
                    (usize::from(h[1]) + 2) * 4
                } else {
                    (usize::from(h[1]) + 1) * 8
                };
                if off + len > end {
                    return Err(WireError::BadLength);
                }
                if next == 0 {
                    router_alert = hbh_router_alert(&ip[off + 2..off + len])?;
                }
                if next == 43 {
                    routed = true;
                }
                next = h[0];
                off += len;
            }
            44 => return Err(WireError::Fragment),
            _ => break,
        }
        first = false;
    }
    let src: [u8; 16] = ip[8..24].try_into().map_err(|_| WireError::BadLength)?;
    let dst: [u8; 16] = ip[24..40].try_into().map_err(|_| WireError::BadLength)?;
    Ok(Located {
        src: NodeAddr::V6(Ipv6Addr::from(src)),
        dst,
        v6: true,
        proto: next,
        payload: &ip[off..end],
        router_alert,
        hop_limit: ip[7],
        routed,
    })
}

/// Walks hop-by-hop TLV options (RFC 8200 §4.2) looking for router alert (RFC 2711,
/// type 5, length 2; value 0 = MLD, but any value tells a router to look).
fn hbh_router_alert(mut opts: &[u8]) -> Result<bool, WireError> {
    let mut ra = false;
    while let Some(&t) = opts.first() {
        if t == 0 {
            opts = &opts[1..];
            continue;
        }
        let l = usize::from(*opts.get(1).ok_or(WireError::BadIpHeader)?);
        if opts.len() < 2 + l {
            return Err(WireError::BadIpHeader);
        }
        if t == 5 && l == 2 {
            ra = true;
        }
        opts = &opts[2 + l..];
    }
    Ok(ra)
}

fn locate(ip: &[u8]) -> Result<Located<'_>, WireError> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => locate_v4(ip),
        Some(6) => locate_v6(ip),
        _ => Err(WireError::BadIpHeader),
    }
}

/// ICMPv6 types snooping handles (RFC 3810 §5, RFC 4286 §3).
#[inline]
fn is_snooped_icmpv6(t: u8) -> bool {
    matches!(
        t,
        MLD_QUERY
            | MLD_V1_REPORT
            | MLD_V1_DONE
            | MLD_V2_REPORT
            | MLD_MRD_ADV
            | MLD_MRD_SOL
            | MLD_MRD_TERM
    )
}

/// Cheap pre-check for the decision path: does this IP packet (starting at the IP header)
/// belong to the snooper — IGMP, PIM, or an MLD/MRD ICMPv6 message — rather than to the
/// multicast data path?
///
/// Works on a *truncated* head of the packet (only headers up to the ICMPv6 type byte are
/// read), so a caller holding a header copy can tell whether it must pass the whole frame.
/// When the head ends inside the IPv6 extension-header chain the answer is `true`
/// ("maybe"): [`parse`] on the whole packet then decides (`Ok(None)` = data). Only the
/// first fragment of an IPv6 packet can be ours (and [`parse`] refuses it as a fragment:
/// MLD is never fragmented); IPv4 fragments of IGMP/PIM are ours, to be counted.
pub fn is_control(ip: &[u8]) -> bool {
    match ip.first().map(|b| b >> 4) {
        Some(4) => ip.len() >= 20 && matches!(ip[9], PROTO_IGMP | PROTO_PIM),
        Some(6) if ip.len() >= 40 => {
            let mut next = ip[6];
            let mut off = 40usize;
            loop {
                match next {
                    0 | 43 | 60 | 51 => {
                        let Some(h) = ip.get(off..off + 2) else {
                            return true;
                        };
                        off += if next == 51 {
                            (usize::from(h[1]) + 2) * 4
                        } else {
                            (usize::from(h[1]) + 1) * 8
                        };
                        next = h[0];
                    }
                    44 => {
                        let Some(h) = ip.get(off..off + 4) else {
                            return true;
                        };
                        if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                            return false; // not the first fragment
                        }
                        next = h[0];
                        off += 8;
                    }
                    PROTO_PIM => return true,
                    PROTO_ICMPV6 => return ip.get(off).is_none_or(|t| is_snooped_icmpv6(*t)),
                    _ => return false,
                }
            }
        }
        _ => false,
    }
}

/// The destination group of a multicast IP packet (the MDB lookup key for data frames), or
/// `None` when the packet is too short or the destination is not multicast. Only the fixed
/// header is read: the frame parser has validated the packet already.
#[inline]
pub fn dst_group(ip: &[u8]) -> Option<GroupAddr> {
    let g = match ip.first()? >> 4 {
        4 => GroupAddr::from_slice(ip.get(16..20)?)?,
        6 => GroupAddr::from_slice(ip.get(24..40)?)?,
        _ => return None,
    };
    g.is_multicast().then_some(g)
}

/// Parses and validates a snooping control packet, starting at the IP header.
///
/// `Ok(None)`: a valid IP packet that is not a snooping message (e.g. ICMPv6 neighbour
/// discovery, UDP) — the caller treats it as data.
pub fn parse(ip: &[u8]) -> Result<Option<Control<'_>>, WireError> {
    let l = locate(ip)?;
    let dst = if l.v6 {
        GroupAddr::V6(Ipv6Addr::from(l.dst))
    } else {
        GroupAddr::V4(Ipv4Addr::new(l.dst[0], l.dst[1], l.dst[2], l.dst[3]))
    };
    let msg = match (l.v6, l.proto) {
        (false, PROTO_IGMP) => parse_igmp(&l)?,
        (true, PROTO_ICMPV6) => {
            if !l.payload.first().is_some_and(|t| is_snooped_icmpv6(*t)) {
                return Ok(None);
            }
            parse_mld(&l)?
        }
        (_, PROTO_PIM) => parse_pim(&l, &dst)?,
        _ => return Ok(None),
    };
    Ok(Some(Control {
        src: l.src,
        dst,
        msg,
    }))
}

/// RFC 3376 §4.1.1 / §4.1.7 floating-point code (8 bits): max resp code in 1/10 s or QQIC
/// in seconds.
#[inline]
pub fn decode_code8(c: u8) -> u64 {
    if c < 128 {
        u64::from(c)
    } else {
        let exp = u32::from((c >> 4) & 7);
        let mant = u64::from(c & 0x0f);
        (mant | 0x10) << (exp + 3)
    }
}

/// RFC 3810 §5.1.3 16-bit maximum response code, in milliseconds.
#[inline]
pub fn decode_code16(c: u16) -> u64 {
    if c < 32768 {
        u64::from(c)
    } else {
        let exp = u32::from((c >> 12) & 7);
        let mant = u64::from(c & 0x0fff);
        (mant | 0x1000) << (exp + 3)
    }
}

fn group4(b: &[u8], at: usize) -> Result<GroupAddr, WireError> {
    GroupAddr::from_slice(b.get(at..at + 4).ok_or(WireError::BadLength)?)
        .ok_or(WireError::BadLength)
}

fn group16(b: &[u8], at: usize) -> Result<GroupAddr, WireError> {
    GroupAddr::from_slice(b.get(at..at + 16).ok_or(WireError::BadLength)?)
        .ok_or(WireError::BadLength)
}

/// A reported or left group must be multicast.
fn mgroup(g: GroupAddr) -> Result<GroupAddr, WireError> {
    if g.is_multicast() {
        Ok(g)
    } else {
        Err(WireError::BadGroup)
    }
}

/// Validates all records of a v3/MLDv2 report and returns them.
fn records(p: &[u8], v6: bool) -> Result<Records<'_>, WireError> {
    let count = be16(p, 6)?;
    let body = &p[8..];
    let mut rest = body;
    for _ in 0..count {
        let (_, group, _, len) = record_at(rest, v6)?;
        mgroup(group)?;
        rest = &rest[len..];
    }
    Ok(Records {
        bytes: body,
        count,
        v6,
    })
}

fn parse_igmp<'a>(l: &Located<'a>) -> Result<Message<'a>, WireError> {
    let p = l.payload;
    if p.len() < 4 {
        return Err(WireError::BadLength);
    }
    if !csum::verify(p) {
        return Err(WireError::BadChecksum);
    }
    let min = |n: usize| {
        if p.len() < n {
            Err(WireError::BadLength)
        } else {
            Ok(())
        }
    };
    Ok(match p[0] {
        IGMP_QUERY => {
            min(8)?;
            let g = group4(p, 4)?;
            let group = if g == GroupAddr::V4(Ipv4Addr::UNSPECIFIED) {
                None
            } else {
                Some(mgroup(g)?)
            };
            if p.len() == 8 {
                let (version, max_resp_ms) = if p[1] == 0 {
                    (Version::IgmpV1, 10_000)
                } else {
                    (Version::IgmpV2, u64::from(p[1]) * 100)
                };
                Message::Query(Query {
                    version,
                    group,
                    max_resp_ms,
                    qrv: None,
                    qqi_s: None,
                })
            } else {
                // RFC 3376 §7.1: 9–11 bytes is not a valid query of any version.
                min(12)?;
                let nsrc = usize::from(be16(p, 10)?);
                min(12 + 4 * nsrc)?;
                if !l.router_alert {
                    return Err(WireError::NoRouterAlert);
                }
                let qrv = p[8] & 7;
                Message::Query(Query {
                    version: Version::IgmpV3,
                    group,
                    max_resp_ms: decode_code8(p[1]) * 100,
                    qrv: (qrv != 0).then_some(qrv),
                    qqi_s: (p[9] != 0).then(|| decode_code8(p[9])),
                })
            }
        }
        IGMP_V1_REPORT | IGMP_V2_REPORT => {
            min(8)?;
            Message::Report {
                version: if p[0] == IGMP_V1_REPORT {
                    Version::IgmpV1
                } else {
                    Version::IgmpV2
                },
                group: mgroup(group4(p, 4)?)?,
            }
        }
        IGMP_V2_LEAVE => {
            min(8)?;
            Message::Leave {
                group: mgroup(group4(p, 4)?)?,
            }
        }
        IGMP_V3_REPORT => {
            min(8)?;
            if !l.router_alert {
                return Err(WireError::NoRouterAlert);
            }
            Message::ReportV3 {
                records: records(p, false)?,
            }
        }
        IGMP_MRD_ADV => {
            min(8)?;
            Message::MrdAdvertisement { interval_s: p[1] }
        }
        IGMP_MRD_TERM => Message::MrdTermination,
        _ => Message::Other,
    })
}

fn parse_mld<'a>(l: &Located<'a>) -> Result<Message<'a>, WireError> {
    let p = l.payload;
    if p.len() < 4 {
        return Err(WireError::BadLength);
    }
    let NodeAddr::V6(src) = l.src else {
        return Err(WireError::BadIpHeader);
    };
    let dst = Ipv6Addr::from(l.dst);
    if l.routed {
        // The pseudo-header would need the routing header's final destination; no MLD
        // message is ever routed.
        return Err(WireError::BadIpHeader);
    }
    if !csum::verify_v6(&src, &dst, PROTO_ICMPV6, p) {
        return Err(WireError::BadChecksum);
    }
    let t = p[0];
    if matches!(t, MLD_MRD_ADV | MLD_MRD_SOL | MLD_MRD_TERM) {
        return Ok(match t {
            MLD_MRD_ADV if p.len() >= 8 => Message::MrdAdvertisement { interval_s: p[1] },
            MLD_MRD_ADV => return Err(WireError::BadLength),
            MLD_MRD_TERM => Message::MrdTermination,
            _ => Message::Other,
        });
    }
    // RFC 3810 §5 / RFC 2710 §3: link-local source, hop limit 1, router alert. The
    // unspecified source is allowed for host messages: RFC 3810 §5.2.13 for reports, and
    // Linux also sends MLDv1 reports and dones from :: while its link-local address is
    // tentative (seen in the kernel interop test); only queries must be link-local.
    if l.hop_limit != 1 {
        return Err(WireError::BadHopLimit);
    }
    if !l.router_alert {
        return Err(WireError::NoRouterAlert);
    }
    let host = matches!(t, MLD_V1_REPORT | MLD_V2_REPORT | MLD_V1_DONE);
    if !(is_v6_link_local_unicast(&src) || (host && src.is_unspecified())) {
        return Err(WireError::BadSource);
    }
    let min = |n: usize| {
        if p.len() < n {
            Err(WireError::BadLength)
        } else {
            Ok(())
        }
    };
    Ok(match t {
        MLD_QUERY => {
            min(24)?;
            let g = group16(p, 8)?;
            let group = if g == GroupAddr::V6(Ipv6Addr::UNSPECIFIED) {
                None
            } else {
                Some(mgroup(g)?)
            };
            if p.len() == 24 {
                Message::Query(Query {
                    version: Version::MldV1,
                    group,
                    max_resp_ms: u64::from(be16(p, 4)?),
                    qrv: None,
                    qqi_s: None,
                })
            } else {
                min(28)?;
                let nsrc = usize::from(be16(p, 26)?);
                min(28 + 16 * nsrc)?;
                let qrv = p[24] & 7;
                Message::Query(Query {
                    version: Version::MldV2,
                    group,
                    max_resp_ms: decode_code16(be16(p, 4)?),
                    qrv: (qrv != 0).then_some(qrv),
                    qqi_s: (p[25] != 0).then(|| decode_code8(p[25])),
                })
            }
        }
        MLD_V1_REPORT => {
            min(24)?;
            Message::Report {
                version: Version::MldV1,
                group: mgroup(group16(p, 8)?)?,
            }
        }
        MLD_V1_DONE => {
            min(24)?;
            Message::Leave {
                group: mgroup(group16(p, 8)?)?,
            }
        }
        // MLD_V2_REPORT: the only type left after is_snooped_icmpv6.
        _ => {
            min(8)?;
            Message::ReportV3 {
                records: records(p, true)?,
            }
        }
    })
}

fn parse_pim<'a>(l: &Located<'a>, dst: &GroupAddr) -> Result<Message<'a>, WireError> {
    let p = l.payload;
    if p.len() < 4 {
        return Err(WireError::BadLength);
    }
    let ok = match l.src {
        NodeAddr::V4(_) => csum::verify(p),
        NodeAddr::V6(src) => {
            !l.routed && csum::verify_v6(&src, &Ipv6Addr::from(l.dst), PROTO_PIM, p)
        }
    };
    if !ok {
        return Err(WireError::BadChecksum);
    }
    let to_all_pim = match dst {
        GroupAddr::V4(a) => *a == ALL_PIM_ROUTERS_V4,
        GroupAddr::V6(a) => *a == ALL_PIM_ROUTERS_V6,
    };
    // Version 2, type 0 = hello (RFC 7761 §4.9).
    if p[0] != 0x20 || !to_all_pim {
        return Ok(Message::Other);
    }
    let mut holdtime_s = 105;
    let mut o = 4;
    while o < p.len() {
        let t = be16(p, o)?;
        let len = usize::from(be16(p, o + 2)?);
        let v = p.get(o + 4..o + 4 + len).ok_or(WireError::BadLength)?;
        if t == 1 && len == 2 {
            holdtime_s = u16::from_be_bytes([v[0], v[1]]);
        }
        o += 4 + len;
    }
    Ok(Message::PimHello { holdtime_s })
}

#[cfg(test)]
mod tests {
    use super::super::build::*;
    use super::*;

    fn a4(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn a6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }
    const H4: &str = "198.18.0.2";
    const LL: &str = "fe80::2";

    /// Recomputes the IPv4 header checksum after a test edited the header.
    fn fix_ip4(p: &mut [u8]) {
        let hl = usize::from(p[0] & 15) * 4;
        p[10..12].copy_from_slice(&[0, 0]);
        let c = csum::checksum(&p[..hl]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }

    fn msg(p: &[u8]) -> Message<'_> {
        parse(p).unwrap().unwrap().msg
    }

    #[test]
    fn igmp_v1_v2_reports_and_leave() {
        let g = a4("239.1.2.3");
        let p = igmp_v2_report(a4(H4), g);
        let c = parse(&p).unwrap().unwrap();
        assert_eq!(c.src, NodeAddr::V4(a4(H4)));
        assert_eq!(c.dst, GroupAddr::V4(g));
        assert_eq!(
            c.msg,
            Message::Report {
                version: Version::IgmpV2,
                group: GroupAddr::V4(g)
            }
        );
        assert!(matches!(
            msg(&igmp_v1_report(a4(H4), g)),
            Message::Report {
                version: Version::IgmpV1,
                ..
            }
        ));
        assert_eq!(
            msg(&igmp_leave(a4(H4), g)),
            Message::Leave {
                group: GroupAddr::V4(g)
            }
        );
        assert!(is_control(&p));
    }

    #[test]
    fn igmp_v3_report_records() {
        let p = igmp_v3_report(
            a4(H4),
            &[
                (4, a4("239.1.1.1"), 0),
                (7, a4("239.9.9.9"), 1),
                (6, a4("239.2.2.2"), 2),
            ],
        );
        let Message::ReportV3 { records } = msg(&p) else {
            panic!("not a v3 report")
        };
        assert_eq!(records.len(), 3);
        let r: Vec<Record<'_>> = records.iter().collect();
        // The record of unknown type 7 is skipped.
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].kind, RecordType::ChangeToExclude);
        assert_eq!(r[1].kind, RecordType::BlockOldSources);
        assert_eq!(r[1].group, GroupAddr::V4(a4("239.2.2.2")));
        let s: Vec<NodeAddr> = r[1].source_addrs().collect();
        assert_eq!(
            s,
            vec![
                NodeAddr::V4(a4("198.18.0.0")),
                NodeAddr::V4(a4("198.18.0.1"))
            ]
        );
    }

    #[test]
    fn queries_from_builder() {
        for (kind, version, len) in [
            (QueryKind::IgmpV2, Version::IgmpV2, 8),
            (QueryKind::IgmpV3, Version::IgmpV3, 12),
        ] {
            let q = QueryParams {
                kind,
                group: Some(GroupAddr::V4(a4("239.1.2.3"))),
                max_resp_ms: 1000,
                robustness: 3,
                query_interval_s: 60,
                suppress: false,
            };
            let m = igmp_query(&q);
            assert_eq!(m.len(), len);
            let p = ipv4_igmp(a4("198.18.0.1"), a4("239.1.2.3"), &m);
            let Message::Query(got) = msg(&p) else {
                panic!("not a query")
            };
            assert_eq!(got.version, version);
            assert_eq!(got.group, q.group);
            assert_eq!(got.max_resp_ms, 1000);
            if version == Version::IgmpV3 {
                assert_eq!(got.qrv, Some(3));
                assert_eq!(got.qqi_s, Some(60));
            }
        }
        // IGMPv1 query: max resp 0 means 10 s.
        let p = ipv4_igmp(a4("198.18.0.1"), ALL_SYSTEMS, &[0x11, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            msg(&p),
            Message::Query(Query {
                version: Version::IgmpV1,
                group: None,
                max_resp_ms: 10_000,
                qrv: None,
                qqi_s: None
            })
        );
        for (kind, version) in [
            (QueryKind::MldV1, Version::MldV1),
            (QueryKind::MldV2, Version::MldV2),
        ] {
            let q = QueryParams {
                kind,
                group: None,
                max_resp_ms: 10_000,
                robustness: 2,
                query_interval_s: 125,
                suppress: false,
            };
            let p = ipv6_icmpv6(a6(LL), ALL_NODES, &mld_query(&q));
            let Message::Query(got) = msg(&p) else {
                panic!("not a query")
            };
            assert_eq!(
                (got.version, got.group, got.max_resp_ms),
                (version, None, 10_000)
            );
        }
    }

    #[test]
    fn mld_messages() {
        let g = a6("ff05::1:3");
        assert_eq!(
            msg(&mld_v1_report(a6(LL), g)),
            Message::Report {
                version: Version::MldV1,
                group: GroupAddr::V6(g)
            }
        );
        assert_eq!(
            msg(&mld_done(a6(LL), g)),
            Message::Leave {
                group: GroupAddr::V6(g)
            }
        );
        // MLDv2 report from :: (during DAD) is fine.
        let p = mld_v2_report(Ipv6Addr::UNSPECIFIED, &[(3, g, 0), (5, a6("ff0e::9"), 2)]);
        let Message::ReportV3 { records } = msg(&p) else {
            panic!("not a report")
        };
        let r: Vec<Record<'_>> = records.iter().collect();
        assert_eq!(r[0].kind, RecordType::ChangeToInclude);
        assert_eq!(r[1].source_addrs().count(), 2);
        assert!(is_control(&p));
        // A header copy shorter than the packet still tells.
        assert!(is_control(&p[..49]));
        assert!(is_control(&p[..44])); // inside hop-by-hop: maybe
        assert!(!is_control(&p[..39]));
        // Neighbour solicitation to a solicited-node group is not ours.
        let ns = ipv6_icmpv6(a6(LL), a6("ff02::1:ff00:1"), &[135, 0, 0, 0, 0, 0, 0, 0]);
        assert!(!is_control(&ns));
        assert_eq!(parse(&ns), Ok(None));
    }

    #[test]
    fn pim_hello_and_mrd() {
        let mut hello = vec![0x20, 0, 0, 0, 0, 1, 0, 2, 0, 30, 0, 20, 0, 4, 1, 2, 3, 4];
        let p = ipv4_packet(a4("198.18.0.1"), ALL_PIM_ROUTERS_V4, PROTO_PIM, &hello);
        assert!(is_control(&p));
        assert_eq!(msg(&p), Message::PimHello { holdtime_s: 30 });
        let p = ipv6_packet(a6(LL), ALL_PIM_ROUTERS_V6, PROTO_PIM, &hello);
        assert_eq!(msg(&p), Message::PimHello { holdtime_s: 30 });
        // Without holdtime option: 105 s.
        let p = ipv4_packet(a4("198.18.0.1"), ALL_PIM_ROUTERS_V4, PROTO_PIM, &hello[..4]);
        assert_eq!(msg(&p), Message::PimHello { holdtime_s: 105 });
        // An option running past the end.
        hello.truncate(16);
        let p = ipv4_packet(a4("198.18.0.1"), ALL_PIM_ROUTERS_V4, PROTO_PIM, &hello);
        assert_eq!(parse(&p), Err(WireError::BadLength));
        // MRD.
        let adv = [IGMP_MRD_ADV, 20, 0, 0, 0, 125, 0, 2];
        let p = ipv4_igmp(a4("198.18.0.1"), a4("224.0.0.106"), &adv);
        assert_eq!(msg(&p), Message::MrdAdvertisement { interval_s: 20 });
        let p = ipv6_icmpv6(
            a6(LL),
            a6("ff02::6a"),
            &[MLD_MRD_ADV, 20, 0, 0, 0, 125, 0, 2],
        );
        assert_eq!(msg(&p), Message::MrdAdvertisement { interval_s: 20 });
        let p = ipv6_icmpv6(a6(LL), a6("ff02::6a"), &[MLD_MRD_TERM, 0, 0, 0]);
        assert_eq!(msg(&p), Message::MrdTermination);
    }

    #[test]
    fn bad_packets_are_refused() {
        let g = a4("239.1.2.3");
        let good = igmp_v2_report(a4(H4), g);
        // IGMP checksum.
        let mut p = good.clone();
        p[30] ^= 1;
        assert_eq!(parse(&p), Err(WireError::BadChecksum));
        // IP header checksum.
        let mut p = good.clone();
        p[10] ^= 1;
        assert_eq!(parse(&p), Err(WireError::BadIpChecksum));
        // Total length beyond the buffer; and shorter than the header.
        let mut p = good.clone();
        p[3] += 1;
        fix_ip4(&mut p);
        assert_eq!(parse(&p), Err(WireError::BadLength));
        let mut p = good.clone();
        p[3] = 20;
        fix_ip4(&mut p);
        assert_eq!(parse(&p), Err(WireError::BadLength));
        // Ethernet padding after the datagram is fine.
        let mut p = good.clone();
        p.extend_from_slice(&[0; 6]);
        assert!(parse(&p).is_ok());
        // Fragment.
        let mut p = good.clone();
        p[6] = 0x20;
        fix_ip4(&mut p);
        assert_eq!(parse(&p), Err(WireError::Fragment));
        assert!(is_control(&p));
        // IHL < 5, bad option length.
        let mut p = good.clone();
        p[0] = 0x44;
        assert_eq!(parse(&p), Err(WireError::BadIpHeader));
        let mut p = good.clone();
        p[21] = 9;
        fix_ip4(&mut p);
        assert_eq!(parse(&p), Err(WireError::BadIpHeader));
        // Report for a unicast group.
        let p = igmp_v2_report(a4(H4), a4("10.0.0.1"));
        assert_eq!(parse(&p), Err(WireError::BadGroup));
        // v3 report claiming more records than present.
        let mut m = vec![
            IGMP_V3_REPORT,
            0,
            0,
            0,
            0,
            0,
            0,
            2,
            4,
            0,
            0,
            0,
            239,
            1,
            1,
            1,
        ];
        let p = ipv4_igmp(a4(H4), IGMPV3_ROUTERS, &m);
        assert_eq!(parse(&p), Err(WireError::BadLength));
        // ... or a record with more sources than bytes.
        m[7] = 1;
        m[11] = 3;
        let p = ipv4_igmp(a4(H4), IGMPV3_ROUTERS, &m);
        assert_eq!(parse(&p), Err(WireError::BadLength));
        // v3 report without router alert (the option replaced by NOPs).
        let mut p = igmp_v3_report(a4(H4), &[(4, g, 0)]);
        p[20..24].copy_from_slice(&[1, 1, 1, 1]);
        fix_ip4(&mut p);
        assert_eq!(parse(&p), Err(WireError::NoRouterAlert));
        // ... while a v2 report without it is accepted (RFC 2236 hosts may omit it).
        let mut p = good.clone();
        p[20..24].copy_from_slice(&[1, 1, 1, 1]);
        fix_ip4(&mut p);
        assert!(parse(&p).is_ok());
        // A 10-byte query is no query of any version.
        let p = ipv4_igmp(
            a4("198.18.0.1"),
            ALL_SYSTEMS,
            &[0x11, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        );
        assert_eq!(parse(&p), Err(WireError::BadLength));
        // Truncated IP.
        assert_eq!(parse(&good[..19]), Err(WireError::BadIpHeader));
        assert_eq!(parse(&[]), Err(WireError::BadIpHeader));
    }

    #[test]
    fn bad_mld_is_refused() {
        let g = a6("ff05::1:3");
        let good = mld_v1_report(a6(LL), g);
        let mut p = good.clone();
        p[60] ^= 1;
        assert_eq!(parse(&p), Err(WireError::BadChecksum));
        // Hop limit (not covered by the checksum).
        let mut p = good.clone();
        p[7] = 2;
        assert_eq!(parse(&p), Err(WireError::BadHopLimit));
        // Global source.
        let p = mld_v1_report(a6("2001:db8::1"), g);
        assert_eq!(parse(&p), Err(WireError::BadSource));
        // Query from ::.
        let q = QueryParams {
            kind: QueryKind::MldV2,
            group: None,
            max_resp_ms: 1000,
            robustness: 2,
            query_interval_s: 125,
            suppress: false,
        };
        let p = ipv6_icmpv6(Ipv6Addr::UNSPECIFIED, ALL_NODES, &mld_query(&q));
        assert_eq!(parse(&p), Err(WireError::BadSource));
        // No router alert: the option turned into PadN.
        let mut p = good.clone();
        p[42] = 1;
        assert_eq!(parse(&p), Err(WireError::NoRouterAlert));
        // Hop-by-hop option running past its header.
        let mut p = good.clone();
        p[43] = 9;
        assert_eq!(parse(&p), Err(WireError::BadIpHeader));
        // Payload length beyond the buffer.
        let mut p = good.clone();
        p[5] += 1;
        assert_eq!(parse(&p), Err(WireError::BadLength));
        // A fragment header (hop-by-hop turned into a first fragment of ICMPv6): ours,
        // refused. A later fragment is data.
        let mut p = good.clone();
        p[6] = 44;
        p[40..48].copy_from_slice(&[58, 0, 0, 0, 0, 0, 0, 1]);
        assert!(is_control(&p));
        assert_eq!(parse(&p), Err(WireError::Fragment));
        p[43] = 8 | 1;
        assert!(!is_control(&p));
        // UDP to a multicast group is data, whole or truncated.
        let mut u = good.clone();
        u[40] = 17;
        assert!(!is_control(&u) && !is_control(&u[..50]));
        assert_eq!(parse(&u), Ok(None));
    }

    #[test]
    fn reference_check_with_etherparse() {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let q = QueryParams {
            kind: QueryKind::IgmpV3,
            group: None,
            max_resp_ms: 10_000,
            robustness: 2,
            query_interval_s: 125,
            suppress: false,
        };
        let f = igmp_query_frame(a4("198.18.0.1"), crate::Mac([2, 0, 0, 0, 0, 1]), &q);
        let s = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Ipv4(ip)) = s.net else {
            panic!("no IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(h.time_to_live, 1);
        assert_eq!(ip.payload().payload.len(), 12);
        assert!(csum::verify(ip.payload().payload));
        let q6 = QueryParams {
            kind: QueryKind::MldV2,
            ..q
        };
        let f = mld_query_frame(a6(LL), crate::Mac([2, 0, 0, 0, 0, 1]), &q6);
        let s = SlicedPacket::from_ethernet(&f).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &s.net else {
            panic!("no IPv6")
        };
        let (src, dst) = (ip.header().source(), ip.header().destination());
        let Some(TransportSlice::Icmpv6(icmp)) = s.transport else {
            panic!("no ICMPv6")
        };
        assert!(icmp.is_checksum_valid(src, dst));
        assert_eq!(icmp.type_u8(), MLD_QUERY);
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
    }
}
