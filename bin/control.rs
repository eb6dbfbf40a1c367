//! The contract between the control plane (CLI, `ctl` socket, metrics) and the running
//! data plane. The runtime implements [`Control`]; the ctl server and the metrics endpoint
//! only call it, so either side can change without touching the other.
//!
//! Every type here is serde-serialisable: the ctl socket speaks JSON lines of
//! [`Request`] / [`Response`].

use serde::{Deserialize, Serialize};

/// A port as the user specifies it (`--port` syntax or TOML). Keep this stable: scripts
/// outside the project use `--port vhost-user:path=P[,queues=N][,client][,mac=M][,vlan=V]
/// [,offloads=on|off][,qmp=PATH[,qmp-nic=ID]][,max-queue-size=N][,socket-mode=0660]
/// [,socket-group=G][,max-mem-regions=N]`, `--port tap:name=N[,queues=N]`,
/// `--port afpacket:ifname=I`, `--port vxlan:local=IP,remote=IP[;IP...],vni=N[,dstport=P]
/// [,name=N]`, each kind also with the [`PortL2`] keys (and `mac=M` for tap, afpacket and
/// vxlan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PortSpec {
    VhostUser {
        /// Unix socket path.
        path: String,
        /// Queue pairs offered (1..=16).
        queues: u16,
        /// Connect to QEMU's socket instead of listening (QEMU `server=on`).
        client: bool,
        /// The guest NIC's MAC (config space); None = let QEMU/guest choose.
        mac: Option<String>,
        /// Access VLAN; None = trunk of all VLANs with native VLAN 1.
        vlan: Option<u16>,
        /// Offer checksum/TSO/USO offloads to the guest.
        offloads: bool,
        /// Mirror the guest's rx filter from QEMU's QMP socket (bin/qmp.rs). Absent in
        /// JSON from before the key existed: off.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        qmp: Option<QmpSpec>,
        /// Largest ring (virtqueue size) the guest may set: a power of two in 1..=32768.
        /// None: 32768, the largest split ring (virtio 1.2 §2.7). Absent in JSON from
        /// before the key existed: the default.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_queue_size: Option<u16>,
        /// Socket permissions and memory-region limit ([`VhostFrontend`]).
        #[serde(flatten)]
        frontend: VhostFrontend,
        #[serde(flatten)]
        l2: PortL2,
    },
    Tap {
        name: String,
        /// Queues (one per worker by default: None).
        queues: Option<u16>,
        vlan: Option<u16>,
        /// The MAC of the host side behind the tap (what port security binds to).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
        #[serde(flatten)]
        l2: PortL2,
    },
    /// `"kind": "afpacket"` as in the `--port` syntax and `PortInfo::kind`.
    #[serde(rename = "afpacket")]
    AfPacket {
        ifname: String,
        vlan: Option<u16>,
        /// The MAC of the far end (the container's interface of a veth pair).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
        #[serde(flatten)]
        l2: PortL2,
    },
    /// A VXLAN tunnel (RFC 7348) to remote VTEPs over UDP: floods are replicated to every
    /// remote (head-end replication), unicast goes to the VTEP its MAC was learned from.
    /// One port per VNI, and one per local address and UDP port (the workers' receive
    /// sockets of a port share `local:dstport` with SO_REUSEPORT).
    Vxlan {
        /// The port's name in `ctl` (`name=`; default `vxlan<VNI>`).
        name: String,
        /// This host's VTEP address (the receive sockets bind to it).
        local: std::net::IpAddr,
        /// The remote VTEPs, all of `local`'s family (`remote=A;B`).
        remotes: Vec<std::net::IpAddr>,
        /// VXLAN network identifier, 24 bits (RFC 7348 §5).
        vni: u32,
        /// UDP destination port (default 4789, the IANA port of RFC 7348 §5).
        dstport: u16,
        /// Access VLAN: the VNI maps onto it. None = trunk as for any port.
        vlan: Option<u16>,
        /// The one MAC behind the tunnel that port security binds to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mac: Option<String>,
        #[serde(flatten)]
        l2: PortL2,
    },
}

/// What a vhost-user port allows its frontend (ARCHITECTURE.md "frontend boundary"):
/// `socket-mode=` (octal permission bits of the server socket, default 0600),
/// `socket-group=` (its group, a name or gid), `max-mem-regions=` (1..=509, default
/// 509) and `packed=` (offer packed virtqueues, experimental, default off). Absent keys
/// (JSON from before they existed) mean the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VhostFrontend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mem_regions: Option<u32>,
    /// Offer VIRTIO_F_RING_PACKED (vring-engine's `PortOptions::packed`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub packed: bool,
}

/// The L2 options every port kind takes: trunk VLANs (`trunk=10,20-30`, `native=V`),
/// port security, flood and MAC limits. Flattened into each [`PortSpec`] variant, so on
/// the wire the keys sit beside `vlan` and `mac`; absent keys (JSON from before they
/// existed) mean off.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortL2 {
    /// Trunk port carrying these VLANs tagged, canonical `10,20-30` (sorted, merged).
    /// None with `native` None: every VLAN, native VLAN 1 (the default port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trunk: Option<String>,
    /// The VLAN of untagged frames on a trunk (they leave untagged). None with `trunk`:
    /// untagged frames are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<u16>,
    /// Only the port's `mac` may be the Ethernet source and ARP sender (needs `mac`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub port_security: bool,
    /// Most frames per second the port may have flooded (0: no limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub flood_limit: u32,
    /// Most MACs the FDB learns behind the port (0: no limit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mac_limit: u32,
    /// Largest packet the port carries (68..=9000); None: 1500. Fixed when the port is
    /// added (a guest reads it once, at probe: virtio 1.2 §5.1.4.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn default_mtu() -> u16 {
    switch::mtu::DEFAULT_MTU
}

/// Where QEMU's QMP socket is and which of its NICs is this port's (`qmp=`, `qmp-nic=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QmpSpec {
    /// QEMU's `-qmp unix:PATH,server=on,wait=off` socket.
    pub path: String,
    /// The NIC's `id=` (or its netdev's id); None: QEMU's only NIC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nic: Option<String>,
}

impl PortSpec {
    /// The name the port is known by in `ctl` (socket path, tap name or interface name).
    pub fn name(&self) -> &str {
        match self {
            PortSpec::VhostUser { path, .. } => path,
            PortSpec::Tap { name, .. } => name,
            PortSpec::AfPacket { ifname, .. } => ifname,
            PortSpec::Vxlan { name, .. } => name,
        }
    }

    /// The access VLAN (`vlan=`), if any.
    pub fn vlan(&self) -> Option<u16> {
        match self {
            PortSpec::VhostUser { vlan, .. }
            | PortSpec::Tap { vlan, .. }
            | PortSpec::AfPacket { vlan, .. }
            | PortSpec::Vxlan { vlan, .. } => *vlan,
        }
    }

    /// The port's MAC (`mac=`): the guest NIC's, or the far end's for tap and afpacket.
    pub fn mac(&self) -> Option<&str> {
        match self {
            PortSpec::VhostUser { mac, .. }
            | PortSpec::Tap { mac, .. }
            | PortSpec::AfPacket { mac, .. }
            | PortSpec::Vxlan { mac, .. } => mac.as_deref(),
        }
    }

    /// The L2 options every kind has.
    pub fn l2(&self) -> &PortL2 {
        match self {
            PortSpec::VhostUser { l2, .. }
            | PortSpec::Tap { l2, .. }
            | PortSpec::AfPacket { l2, .. }
            | PortSpec::Vxlan { l2, .. } => l2,
        }
    }
}

/// A change to a running port (`ctl set-port NAME vlan=…,port-security=on,…`). Every
/// field: None (key absent on the wire) leaves the setting as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortChange {
    /// Some(Some(v)): access VLAN v (the trunk settings are cleared); Some(None): no
    /// access VLAN (a trunk: the default one unless `trunk`/`native` are set).
    /// On the wire: `"vlan": 10`, `"vlan": null` (back to trunk), key absent (unchanged);
    /// serde's default would read `null` as "unchanged".
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub vlan: Option<Option<u16>>,
    /// Some(Some(list)): trunk of these VLANs (`10,20-30`; clears `vlan`); Some(None):
    /// no allowed list (every VLAN).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub trunk: Option<Option<String>>,
    /// Some(Some(v)): native VLAN v of a trunk (clears `vlan`); Some(None): none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub native: Option<Option<u16>>,
    /// The MAC port security binds to (tap and afpacket ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_security: Option<bool>,
    /// Frames flooded per second (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood_limit: Option<u32>,
    /// MACs learned behind the port (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_limit: Option<u32>,
}

impl PortChange {
    /// True when the change names no setting at all.
    pub fn is_empty(&self) -> bool {
        *self == PortChange::default()
    }
}

/// Deserialises a key that is present (even as `null`) into `Some(..)`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// One port as `ctl ports` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortInfo {
    pub id: u16,
    pub name: String,
    /// "vhost-user", "tap", "afpacket" or "vxlan".
    pub kind: String,
    /// "up", "down", "waiting" (vhost-user without a frontend), …
    pub state: String,
    pub mac: Option<String>,
    /// "access 10", "trunk native 1 allowed all", …
    pub vlan: String,
    /// Queue pairs (configured / enabled by the guest).
    pub queues: u16,
    pub queues_enabled: u16,
    /// Negotiated virtio feature names (vhost-user), empty otherwise.
    pub features: Vec<String>,
    /// vhost-user: the largest ring the port accepts (`max-queue-size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_size: Option<u16>,
    /// vhost-user: the ring sizes the driver set, per virtqueue (RX of pair N is 2N, TX
    /// 2N+1, control last; 0 = not set up). Empty without a frontend.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue_sizes: Vec<u16>,
    /// vhost-user: a frontend is connected to the socket (it may not have a driver yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// vhost-user: bytes of guest RAM mapped from the frontend's memory table (0 once a
    /// frontend is gone: its memory is unmapped on disconnect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_memory_bytes: Option<u64>,
    /// What the port can receive without adaptation: "csum", "tso4", …
    pub offloads: Vec<String>,
    /// Port security on (`port-security=on`): only `mac` may be source and ARP sender.
    #[serde(default)]
    pub port_security: bool,
    /// Frames flooded per second (`flood-limit=`; 0: no limit).
    #[serde(default)]
    pub flood_limit: u32,
    /// MACs learned behind the port (`mac-limit=`; 0: no limit).
    #[serde(default)]
    pub mac_limit: u32,
    /// Largest packet the port carries (`mtu=`): for an afpacket port the smaller of
    /// that and its interface's MTU. Absent in JSON from before the key existed: 1500.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// "promisc" or e.g. "mac 52:54:00:00:00:01 +bcast +allmulti uni[2] multi[3]".
    pub rx_filter: String,
    /// vxlan: the tunnel's endpoints and VNI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<Box<VxlanInfo>>,
}

/// A VXLAN port's tunnel as `ctl ports` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanInfo {
    pub local: std::net::IpAddr,
    pub remotes: Vec<std::net::IpAddr>,
    pub vni: u32,
    pub dstport: u16,
    /// The largest inner frame (Ethernet header included) whose encapsulation fits the
    /// underlay's MTU towards every remote, measured when the port was added.
    pub inner_max: u32,
}

/// One FDB entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FdbRow {
    pub mac: String,
    pub vlan: u16,
    pub port: String,
    pub is_static: bool,
    pub age_s: f64,
    /// The remote VTEP a MAC learned on a vxlan port is behind (RFC 7348 §4.1: learned
    /// from the outer source address); absent for other ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<std::net::IpAddr>,
}

/// One multicast group membership.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MdbRow {
    pub group: String,
    pub vlan: u16,
    pub ports: Vec<String>,
    /// Seconds until the membership expires (None: static/permanent).
    pub expires_s: Option<f64>,
}

/// Counters of one queue of a port.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QueueCounters {
    pub queue: u16,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: u64,
}

/// Counters of one port. "rx" = received by ringswitch from the port; "tx" = sent to it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortCounters {
    pub name: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Drops by reason (snake_case reason → count), only non-zero ones.
    pub drops: Vec<(String, u64)>,
    /// Guest frames written to host ports (one writev each: our header and head copy,
    /// then the guest's pages; no payload copy in our process). The name is historical.
    pub fallback_writes: u64,
    pub queues: Vec<QueueCounters>,
    /// The port's QMP watcher (`qmp=`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qmp: Option<QmpCounters>,
    /// A vxlan port's tunnel events that are not drops (its drops are in `drops`, as
    /// `vxlan_*` reasons).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<VxlanCounters>,
}

/// What a vxlan port did besides forwarding and dropping.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VxlanCounters {
    /// TCP segmentation frames cut smaller than their gso_size so that each segment's
    /// encapsulation fits the underlay's MTU.
    pub resegmented: u64,
    /// Frames sent to every remote because their destination's VTEP was not known
    /// (head-end replication).
    pub flooded: u64,
}

/// What a vhost-user port's QMP watcher did (bin/qmp.rs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct QmpCounters {
    /// Sessions established with QEMU.
    pub connects: u64,
    /// query-rx-filter answers received.
    pub queries: u64,
    /// Filters applied to the switch port.
    pub applied: u64,
    /// Sessions ended by an error (connection, protocol or bad reply).
    pub errors: u64,
}

/// Counters of one worker thread.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WorkerCounters {
    pub worker: u16,
    pub packets: u64,
    pub io_uring_enters: u64,
    /// io_uring_enter calls per forwarded packet.
    pub syscalls_per_packet: f64,
}

/// Everything `ctl stats` and the metrics endpoint show.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StatsReport {
    pub uptime_s: f64,
    pub ports: Vec<PortCounters>,
    pub workers: Vec<WorkerCounters>,
    pub fdb_entries: u64,
    pub mdb_entries: u64,
}

/// Errors a control request can return; the message names what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ControlError {
    #[error("no port named {0:?}: see `ringswitch ctl ports`")]
    NoSuchPort(String),
    #[error("invalid port: {0}")]
    InvalidPort(String),
    #[error("{0}")]
    Failed(String),
}

/// What the running daemon offers to its control plane.
pub trait Control: Send + Sync {
    fn ports(&self) -> Vec<PortInfo>;
    fn fdb(&self) -> Vec<FdbRow>;
    fn mdb(&self) -> Vec<MdbRow>;
    fn stats(&self) -> StatsReport;
    fn add_port(&self, spec: PortSpec) -> Result<PortInfo, ControlError>;
    fn del_port(&self, name: &str) -> Result<(), ControlError>;
    fn set_port(&self, name: &str, change: PortChange) -> Result<(), ControlError>;
}

/// One request line on the ctl socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Ports,
    Fdb,
    Mdb,
    Stats,
    /// `spec` is a port object, or a string in the `--port` syntax (what scripts and the
    /// CNI plugin send: options are validated by this daemon, whatever its version).
    AddPort {
        #[serde(deserialize_with = "spec_or_port_syntax")]
        spec: PortSpec,
    },
    DelPort {
        name: String,
    },
    SetPort {
        name: String,
        change: PortChange,
    },
}

/// Reads a [`PortSpec`] object, or a `--port` string through the same parser as `--port`.
fn spec_or_port_syntax<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PortSpec, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => {
            crate::config::port::parse_port(&s).map_err(serde::de::Error::custom)
        }
        v => serde_json::from_value(v).map_err(serde::de::Error::custom),
    }
}

/// One response line on the ctl socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    Ports { ports: Vec<PortInfo> },
    Fdb { entries: Vec<FdbRow> },
    Mdb { entries: Vec<MdbRow> },
    Stats { stats: StatsReport },
    Port { port: PortInfo },
    Ok,
    Error { message: String },
}

/// What `ringswitch run` starts (CLI flags and TOML merged and validated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    pub ports: Vec<PortSpec>,
    /// Worker threads; 0 = one per core.
    pub workers: usize,
    /// Busy-poll window after each batch, µs (0 = off); None (the default): automatic —
    /// a short window only while a worker is busy (see `DataplaneConfig::auto_poll`).
    #[serde(default)]
    pub poll_us: Option<u32>,
    /// IGMP/MLD snooping and the optional querier.
    #[serde(default)]
    pub mcast: McastOptions,
}

/// Multicast snooping settings (`--no-mcast-snooping`, `--mcast-querier[-ip]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct McastOptions {
    /// Snoop IGMP/MLD (RFC 4541); off = all multicast floods.
    pub snooping: bool,
    /// Send general queries when no multicast router does (Linux's multicast_querier).
    pub querier: bool,
    /// IGMP source address of our queries (None: 0.0.0.0, which loses every election).
    pub querier_ip4: Option<std::net::Ipv4Addr>,
}

impl Default for McastOptions {
    fn default() -> Self {
        McastOptions {
            snooping: true,
            querier: false,
            querier_ip4: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vhost_user_spec_json_without_qmp_still_parses() {
        let old = r#"{"kind":"vhost-user","path":"/run/a.sock","queues":1,"client":false,
                      "mac":null,"vlan":null,"offloads":true}"#;
        let spec: PortSpec = serde_json::from_str(old).unwrap();
        assert!(matches!(
            spec,
            PortSpec::VhostUser {
                qmp: None,
                max_queue_size: None,
                ..
            }
        ));
        // Without qmp the JSON is what it was; with it, it round-trips.
        let text = serde_json::to_string(&spec).unwrap();
        assert!(
            !text.contains("qmp") && !text.contains("max_queue_size"),
            "{text}"
        );
        let PortSpec::VhostUser {
            path,
            queues,
            client,
            mac,
            vlan,
            offloads,
            ..
        } = spec
        else {
            panic!("not vhost-user")
        };
        let with = PortSpec::VhostUser {
            path,
            queues,
            client,
            mac,
            vlan,
            offloads,
            qmp: Some(QmpSpec {
                path: "/run/a.qmp".into(),
                nic: Some("net0".into()),
            }),
            max_queue_size: Some(1024),
            frontend: VhostFrontend::default(),
            l2: PortL2::default(),
        };
        let text = serde_json::to_string(&with).unwrap();
        assert!(
            text.contains(r#""qmp":{"path":"/run/a.qmp","nic":"net0"}"#),
            "{text}"
        );
        assert!(text.contains(r#""max_queue_size":1024"#), "{text}");
        assert_eq!(serde_json::from_str::<PortSpec>(&text).unwrap(), with);
    }

    #[test]
    fn add_port_takes_an_object_or_the_port_syntax() {
        let spec = PortSpec::AfPacket {
            ifname: "rs1".into(),
            vlan: Some(10),
            mac: None,
            l2: PortL2::default(),
        };
        let text: Request =
            serde_json::from_str(r#"{"cmd":"add-port","spec":"afpacket:ifname=rs1,vlan=10"}"#)
                .unwrap();
        assert_eq!(text, Request::AddPort { spec: spec.clone() });
        let object = serde_json::to_string(&Request::AddPort { spec: spec.clone() }).unwrap();
        assert_eq!(
            serde_json::from_str::<Request>(&object).unwrap(),
            Request::AddPort { spec }
        );
        let e = serde_json::from_str::<Request>(
            r#"{"cmd":"add-port","spec":"afpacket:ifname=rs1,bogus=1"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown key `bogus`"), "{e}");
    }
}
