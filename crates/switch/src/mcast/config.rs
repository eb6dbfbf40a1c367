//! Snooping configuration and its defaults (RFC 3376 §8, RFC 3810 §9, RFC 4541).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::build::QueryKind;
use crate::mac::Mac;

/// What happens to multicast for a group nobody has joined (RFC 4541 §2.1.2 lets the
/// switch choose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnregisteredPolicy {
    /// Flood to every port of the VLAN, as a plain bridge would (default: nothing breaks
    /// for hosts that never send reports).
    #[default]
    Flood,
    /// Only to router ports (static or learned).
    RouterPorts,
}

/// Per-VLAN settings. Defaults come from [`SnoopConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanSnoopConfig {
    /// Snoop in this VLAN; off = multicast floods like broadcast.
    pub snooping: bool,
    /// Run the querier in this VLAN (still subject to the election).
    pub querier: bool,
    pub unregistered: UnregisteredPolicy,
}

/// How a port takes part in router port learning (Linux's `multicast_router` 0/1/2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouterMode {
    /// Becomes a router port while queries, PIM hellos or MRD advertisements arrive on it.
    #[default]
    Learn,
    /// Never a router port: queries from it neither make it one nor win the querier
    /// election (use on untrusted guest ports).
    Never,
    /// Always a router port (receives all multicast of its VLANs).
    Static,
}

/// The optional querier (off by default, like Linux's `multicast_querier`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuerierConfig {
    /// Default for VLANs without their own [`VlanSnoopConfig`].
    pub enabled: bool,
    /// IGMP source address. 0.0.0.0 (default, as Linux's bridge without an address) loses
    /// every election to a real router and is not learned as a router by other snoopers
    /// (RFC 4541 §2.1.1).
    pub ip4: Ipv4Addr,
    /// MLD source address; must be link-local. `None`: the EUI-64 address of `mac`.
    pub ip6: Option<Ipv6Addr>,
    /// Ethernet source of the injected queries.
    pub mac: Mac,
    pub igmp: QueryKind,
    pub mld: QueryKind,
}

impl Default for QuerierConfig {
    fn default() -> Self {
        QuerierConfig {
            enabled: false,
            ip4: Ipv4Addr::UNSPECIFIED,
            ip6: None,
            // Locally administered, recognisable.
            mac: Mac([0x02, 0x72, 0x73, 0x00, 0x00, 0x01]),
            igmp: QueryKind::IgmpV3,
            mld: QueryKind::MldV2,
        }
    }
}

/// Snooping settings for the whole switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnoopConfig {
    /// Master switch; off = every multicast frame floods.
    pub enabled: bool,
    /// Robustness variable (RFC 3376 §8.1), until a query tells us the querier's.
    pub robustness: u8,
    /// Query interval (§8.2), until a query tells us the querier's.
    pub query_interval_ms: u64,
    /// Query response interval (§8.3), until a query tells us the querier's.
    pub query_response_ms: u64,
    /// Last member query interval (§8.8).
    pub last_member_interval_ms: u64,
    /// Last member query count (§8.9; RFC default: the robustness variable).
    pub last_member_count: u8,
    /// Most groups one port may join across all VLANs; 0 = no limit.
    pub group_limit: u32,
    /// Default unregistered-multicast policy of VLANs.
    pub unregistered: UnregisteredPolicy,
    pub querier: QuerierConfig,
}

impl Default for SnoopConfig {
    fn default() -> Self {
        SnoopConfig {
            enabled: true,
            robustness: 2,
            query_interval_ms: 125_000,
            query_response_ms: 10_000,
            last_member_interval_ms: 1_000,
            last_member_count: 2,
            group_limit: 256,
            unregistered: UnregisteredPolicy::Flood,
            querier: QuerierConfig::default(),
        }
    }
}

impl SnoopConfig {
    /// The settings a VLAN without its own configuration gets.
    pub fn vlan_default(&self) -> VlanSnoopConfig {
        VlanSnoopConfig {
            snooping: self.enabled,
            querier: self.querier.enabled,
            unregistered: self.unregistered,
        }
    }
}

/// The timer inputs of one VLAN and family: configured, or learnt from the querier's
/// queries (RFC 3376 §4.1.6–4.1.7: non-queriers adopt QRV and QQI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub robustness: u8,
    pub query_interval_ms: u64,
    pub query_response_ms: u64,
}

impl Timers {
    /// Group membership interval = robustness × query interval + response interval
    /// (RFC 3376 §8.4, RFC 3810 §9.4).
    pub fn membership_ms(&self) -> u64 {
        u64::from(self.robustness.max(1))
            .saturating_mul(self.query_interval_ms)
            .saturating_add(self.query_response_ms)
    }

    /// Other querier present interval = robustness × query interval + response / 2
    /// (RFC 3376 §8.5, RFC 3810 §9.5); also how long a query makes a router port.
    pub fn other_querier_ms(&self) -> u64 {
        u64::from(self.robustness.max(1))
            .saturating_mul(self.query_interval_ms)
            .saturating_add(self.query_response_ms / 2)
    }
}
