//! Switch ports: identity, kind, what they can receive, and their L2 configuration.

use crate::filter::RxFilter;
use crate::mac::Mac;
use crate::vlan::{VlanMode, TPID_8021Q};

/// Most ports one switch holds; port sets are fixed-size bitmaps of this many bits so
/// flooding allocates nothing.
pub const MAX_PORTS: usize = 256;

/// Index of a port inside one switch, `0..MAX_PORTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u16);

impl PortId {
    #[inline]
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl core::fmt::Display for PortId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "port{}", self.0)
    }
}

/// What sits behind a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// A guest NIC over vhost-user.
    VhostUser,
    /// A Linux tap device.
    Tap,
    /// An AF_PACKET socket on an existing interface (the host end of a veth).
    AfPacket,
    /// A VXLAN tunnel (RFC 7348): one VNI over UDP to a list of remote VTEPs.
    Vxlan,
}

/// Offloaded frames a port can *receive*, i.e. what may be passed to it without software
/// checksum completion or segmentation. For a guest these come from the negotiated
/// GUEST_* features (virtio 1.2 §5.1.3); for a tap from TUNSETOFFLOAD; for AF_PACKET with
/// vnet headers from what the kernel accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offloads {
    /// Accepts VIRTIO_NET_HDR_F_NEEDS_CSUM (partial checksums). GUEST_CSUM / TUN_F_CSUM.
    pub csum: bool,
    /// Accepts DATA_VALID hints (any virtio-net header reader).
    pub data_valid: bool,
    pub tso4: bool,
    pub tso6: bool,
    /// Accepts TSO frames with the ECN bit (GUEST_ECN / TUN_F_TSO_ECN).
    pub tso_ecn: bool,
    /// UFO: accepts big UDP datagrams to fragment itself.
    pub ufo: bool,
    pub uso4: bool,
    pub uso6: bool,
}

impl Offloads {
    /// Everything: a tap with all offloads on, or AF_PACKET with vnet headers.
    pub const ALL: Offloads = Offloads {
        csum: true,
        data_valid: true,
        tso4: true,
        tso6: true,
        tso_ecn: true,
        ufo: true,
        uso4: true,
        uso6: true,
    };
    /// Nothing: every frame must arrive complete and at most MTU-sized.
    pub const NONE: Offloads = Offloads {
        csum: false,
        data_valid: false,
        tso4: false,
        tso6: false,
        tso_ecn: false,
        ufo: false,
        uso4: false,
        uso6: false,
    };
}

/// Static configuration of a port, plus its mutable L2 state (rx filter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Unique, human-facing name (socket path stem, tap or interface name).
    pub name: String,
    pub kind: PortKind,
    /// The MAC configured for this port, if any (a guest's NIC address).
    pub mac: Option<Mac>,
    pub vlan: VlanMode,
    /// TPID of tags on this port's wire; frames with another TPID are untagged payload.
    pub tpid: u16,
    /// What this port may receive without adaptation.
    pub offloads: Offloads,
    /// Most MAC addresses the FDB learns behind this port (0 = no limit).
    pub mac_limit: u32,
    /// Learn source addresses seen on this port.
    pub learning: bool,
    /// Only `mac` may be claimed as Ethernet source and ARP sender (crate::security).
    pub port_security: bool,
    /// Most frames per second this port may have flooded (0 = no limit).
    pub flood_limit_pps: u32,
    /// What the port accepts (set by the guest through the ctrl vq).
    pub rx_filter: RxFilter,
    /// Largest packet (network layer, without the Ethernet header and tag) the port
    /// carries; longer frames toward it are dropped as `mtu_exceeded` ([`crate::mtu`]).
    pub mtu: u16,
}

impl PortConfig {
    /// A port with the defaults users of a Linux bridge expect: learning on, every VLAN
    /// trunked with native VLAN 1, no offloads, promiscuous receive, MTU 1500.
    pub fn new(name: impl Into<String>, kind: PortKind) -> PortConfig {
        PortConfig {
            name: name.into(),
            kind,
            mac: None,
            vlan: VlanMode::default(),
            tpid: TPID_8021Q,
            offloads: Offloads::NONE,
            mac_limit: 0,
            learning: true,
            port_security: false,
            flood_limit_pps: 0,
            rx_filter: RxFilter::promiscuous(),
            mtu: crate::mtu::DEFAULT_MTU,
        }
    }

    /// Sets the port's own MAC; its rx filter then accepts only that unicast address.
    pub fn with_mac(mut self, mac: Mac) -> PortConfig {
        self.mac = Some(mac);
        self.rx_filter = RxFilter::for_mac(mac);
        self
    }
}
