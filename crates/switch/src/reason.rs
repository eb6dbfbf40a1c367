//! Why a frame was dropped. Every drop in the switch has exactly one reason and one
//! counter, so `ringswitch ctl stats` can say what happened to every frame.

use crate::frame::ParseError;
use crate::vlan::VlanReject;

macro_rules! reasons {
    ($($(#[$m:meta])* $name:ident => $label:literal,)*) => {
        /// A counted reason for dropping a frame.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $($(#[$m])* $name,)* }

        impl DropReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            /// Number of reasons (size of a counter array).
            pub const COUNT: usize = Self::ALL.len();

            /// Stable snake_case name for stats, logs and metrics.
            pub fn as_str(self) -> &'static str {
                match self { $(DropReason::$name => $label,)* }
            }
        }
    };
}

reasons! {
    Runt => "runt",
    TruncatedTag => "truncated_vlan_tag",
    TruncatedArp => "truncated_arp",
    BadIpv4Header => "bad_ipv4_header",
    BadIpv4Length => "bad_ipv4_length",
    BadIpv6Header => "bad_ipv6_header",
    BadIpv6Length => "bad_ipv6_length",
    BadIpv6ExtHeader => "bad_ipv6_ext_header",
    HeadersTooLong => "headers_too_long",
    /// Bad virtio-net header (unknown GSO type, truncated).
    BadVnetHdr => "bad_vnet_hdr",
    /// Source MAC is multicast/broadcast or all-zero (IEEE 802.1Q §8.8.12 never learns
    /// those; a frame carrying one is malformed).
    InvalidSource => "invalid_source_mac",
    TaggedOnAccess => "vlan_tagged_on_access_port",
    UntaggedNotAllowed => "vlan_untagged_not_allowed",
    VlanNotAllowed => "vlan_not_allowed",
    ReservedVid => "vlan_reserved_vid",
    /// IEEE 802.1D 01:80:c2:00:00:0x: link-local control protocols, never forwarded.
    ReservedGroup => "reserved_group_address",
    /// The ingress port is unknown or down.
    IngressDown => "ingress_port_down",
    /// The destination was learned on the ingress port (IEEE 802.1Q §8.6.3: never back
    /// out of the port it came in on).
    SameSegment => "destination_on_ingress_port",
    /// The destination port's rx filter (ctrl vq state) refuses this address.
    Filtered => "filtered_by_destination",
    /// The destination port is down or not a member of the VLAN.
    DestinationDown => "destination_down_or_not_member",
    /// Flooding found no port that would take the frame.
    NoDestination => "no_destination",
    /// Multicast with no registered listener under the "router ports only" policy.
    McastUnregistered => "multicast_unregistered",
    /// Invalid IGMP/MLD control packet (bad checksum/length): never learned from.
    McastBadControl => "multicast_bad_control",
    /// Offload metadata inconsistent with the frame (gso_size 0, csum_start past the end…).
    BadOffload => "bad_offload_metadata",
    /// The destination queue or socket had no room.
    DestinationFull => "destination_full",
    /// Port security: the Ethernet source or ARP sender is not the port's MAC.
    SpoofedSource => "spoofed_source",
    /// The port's flood limit (frames per second flooded) is spent (storm control).
    StormLimited => "storm_limited",
    /// A new source address beyond the port's MAC limit.
    MacLimit => "mac_limit",
    /// Longer than the destination port's MTU (a GSO frame: one of its segments would
    /// be); crate::mtu.
    MtuExceeded => "mtu_exceeded",
}

impl From<ParseError> for DropReason {
    fn from(e: ParseError) -> DropReason {
        match e {
            ParseError::Runt => DropReason::Runt,
            ParseError::TruncatedTag => DropReason::TruncatedTag,
            ParseError::TruncatedArp => DropReason::TruncatedArp,
            ParseError::BadIpv4Header => DropReason::BadIpv4Header,
            ParseError::BadIpv4Length => DropReason::BadIpv4Length,
            ParseError::BadIpv6Header => DropReason::BadIpv6Header,
            ParseError::BadIpv6Length => DropReason::BadIpv6Length,
            ParseError::BadIpv6ExtHeader => DropReason::BadIpv6ExtHeader,
            ParseError::HeadersTooLong => DropReason::HeadersTooLong,
        }
    }
}

impl From<VlanReject> for DropReason {
    fn from(r: VlanReject) -> DropReason {
        match r {
            VlanReject::TaggedOnAccess => DropReason::TaggedOnAccess,
            VlanReject::UntaggedNotAllowed => DropReason::UntaggedNotAllowed,
            VlanReject::NotAllowed => DropReason::VlanNotAllowed,
            VlanReject::ReservedVid => DropReason::ReservedVid,
        }
    }
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_unique_and_indexable() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
