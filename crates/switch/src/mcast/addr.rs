//! Multicast group addresses and their classes (RFC 1112 §4, RFC 4291 §2.7, RFC 4541 §2.1.2
//! and §3).

use core::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::mac::Mac;

/// An IPv4 or IPv6 multicast group: the key of the MDB (together with the VLAN).
///
/// The MDB is keyed by IP group and not by Ethernet address because 32 IPv4 groups share
/// one MAC (RFC 1112 §6.4): snooping by MAC would leak traffic between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupAddr {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

/// Which protocol family a group, querier or router port belongs to: IGMP (IPv4) or
/// MLD (IPv6). Both run side by side with separate queriers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl GroupAddr {
    #[inline]
    pub fn family(&self) -> Family {
        match self {
            GroupAddr::V4(_) => Family::V4,
            GroupAddr::V6(_) => Family::V6,
        }
    }

    /// A multicast address at all (224.0.0.0/4, ff00::/8).
    #[inline]
    pub fn is_multicast(&self) -> bool {
        match self {
            GroupAddr::V4(a) => a.is_multicast(),
            GroupAddr::V6(a) => a.is_multicast(),
        }
    }

    /// Groups that are never snooped and always flooded: 224.0.0.0/24 (RFC 4541 §2.1.2
    /// (2): local network control block) and ff02::/16 (link-local scope), plus the
    /// reserved and interface-local IPv6 scopes ff00::/15 that must never appear on a link
    /// at all (RFC 4541 §3) — flooding them is the harmless choice.
    #[inline]
    pub fn is_link_local(&self) -> bool {
        match self {
            GroupAddr::V4(a) => {
                let o = a.octets();
                o[0] == 224 && o[1] == 0 && o[2] == 0
            }
            GroupAddr::V6(a) => {
                let o = a.octets();
                o[0] == 0xff && (o[1] == 0x02 || o[1] == 0x00 || o[1] == 0x01)
            }
        }
    }

    /// A group a host may join and we may learn: multicast and not link-local.
    #[inline]
    pub fn is_snoopable(&self) -> bool {
        self.is_multicast() && !self.is_link_local()
    }

    /// The Ethernet destination a frame to this group carries: 01:00:5e + low 23 bits
    /// (RFC 1112 §6.4), or 33:33 + low 32 bits (RFC 2464 §7).
    pub fn mac(&self) -> Mac {
        match self {
            GroupAddr::V4(a) => {
                let o = a.octets();
                Mac([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
            }
            GroupAddr::V6(a) => {
                let o = a.octets();
                Mac([0x33, 0x33, o[12], o[13], o[14], o[15]])
            }
        }
    }

    /// Reads a group from 4 or 16 bytes.
    pub fn from_slice(b: &[u8]) -> Option<GroupAddr> {
        match b.len() {
            4 => Some(GroupAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
            16 => {
                let a: [u8; 16] = b.try_into().ok()?;
                Some(GroupAddr::V6(Ipv6Addr::from(a)))
            }
            _ => None,
        }
    }
}

impl fmt::Display for GroupAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupAddr::V4(a) => a.fmt(f),
            GroupAddr::V6(a) => a.fmt(f),
        }
    }
}

impl From<Ipv4Addr> for GroupAddr {
    fn from(a: Ipv4Addr) -> Self {
        GroupAddr::V4(a)
    }
}

impl From<Ipv6Addr> for GroupAddr {
    fn from(a: Ipv6Addr) -> Self {
        GroupAddr::V6(a)
    }
}

/// The address a querier or router speaks from, for the election by lowest address
/// (RFC 2236 §3, RFC 3376 §6.6.2, RFC 3810 §7.6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeAddr {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeAddr::V4(a) => a.fmt(f),
            NodeAddr::V6(a) => a.fmt(f),
        }
    }
}

/// fe80::/10, the only source an MLD query may carry (RFC 3810 §5.1.14, RFC 2710 §3).
#[inline]
pub fn is_v6_link_local_unicast(a: &Ipv6Addr) -> bool {
    let o = a.octets();
    o[0] == 0xfe && o[1] & 0xc0 == 0x80
}

/// The EUI-64 link-local address of `mac` (RFC 4291 appendix A), used as the querier's
/// MLD source when none is configured.
pub fn v6_link_local_from_mac(mac: Mac) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 0x02,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> GroupAddr {
        GroupAddr::V4(s.parse().unwrap())
    }
    fn v6(s: &str) -> GroupAddr {
        GroupAddr::V6(s.parse().unwrap())
    }

    #[test]
    fn classes() {
        assert!(v4("224.0.0.1").is_link_local() && !v4("224.0.0.1").is_snoopable());
        assert!(v4("224.0.0.255").is_link_local());
        assert!(!v4("224.0.1.1").is_link_local() && v4("224.0.1.1").is_snoopable());
        assert!(v4("239.255.255.250").is_snoopable());
        assert!(!v4("10.0.0.1").is_snoopable());
        assert!(v6("ff02::1:ff00:1").is_link_local());
        assert!(v6("ff01::1").is_link_local());
        assert!(v6("ff05::1:3").is_snoopable());
        assert!(v6("ff0e::1").is_snoopable());
        assert!(!v6("2001:db8::1").is_snoopable());
    }

    #[test]
    fn macs() {
        assert_eq!(v4("239.129.1.2").mac().to_string(), "01:00:5e:01:01:02");
        assert_eq!(v4("224.0.0.1").mac().to_string(), "01:00:5e:00:00:01");
        assert_eq!(v6("ff02::1").mac().to_string(), "33:33:00:00:00:01");
        assert_eq!(
            v6("ff05::1:ff12:3456").mac().to_string(),
            "33:33:ff:12:34:56"
        );
    }

    #[test]
    fn eui64() {
        let m: Mac = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(
            v6_link_local_from_mac(m),
            "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert!(is_v6_link_local_unicast(&v6_link_local_from_mac(m)));
        assert!(!is_v6_link_local_unicast(&"2001:db8::1".parse().unwrap()));
    }
}
