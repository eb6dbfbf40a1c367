//! Port specifications: the `--port KIND:key=value,...` syntax, the TOML `[[port]]`
//! table and specs arriving on the ctl socket all go through [`RawPort::into_spec`], so
//! every path gives the same error for the same mistake.
//!
//! The syntax is a public interface (scripts outside the project use it): add keys, never
//! rename or repurpose one.

use std::net::IpAddr;

use serde::Deserialize;
use switch::vlan::VlanSet;
use switch::Mac;

use crate::control::{PortChange, PortL2, PortSpec, QmpSpec, VhostFrontend};

/// Queue pairs a vhost-user port may offer (the contract in `control.rs`).
pub const VHOST_QUEUES_MAX: i64 = 16;
/// Linux `MAX_TAP_QUEUES` (drivers/net/tun.c).
pub const TAP_QUEUES_MAX: i64 = 256;
/// `sun_path` is 108 bytes including the terminating NUL (unix(7)).
pub const SUN_PATH_MAX: usize = 107;
/// `IFNAMSIZ` is 16 including the terminating NUL (netdevice(7)).
pub const IFNAME_MAX: usize = 15;
/// `flood-limit=` above this is no limit in practice (and beyond the switch's token
/// bucket burst, security.rs).
pub const FLOOD_LIMIT_MAX: i64 = 10_000_000;
/// `mac-limit=` up to the FDB's default size.
pub const MAC_LIMIT_MAX: i64 = 65_536;
/// Remote VTEPs of one vxlan port: head-end replication sends every flooded frame once
/// to each, so the list bounds the work one broadcast costs.
pub const VXLAN_REMOTES_MAX: usize = 64;

const VHOST_KEYS: &[&str] = &[
    "path",
    "queues",
    "client",
    "mac",
    "vlan",
    "offloads",
    "qmp",
    "qmp-nic",
    "max-queue-size",
    "trunk",
    "native",
    "port-security",
    "flood-limit",
    "mac-limit",
    "socket-mode",
    "socket-group",
    "max-mem-regions",
    "packed",
    "mtu",
];
/// The largest split ring (virtio 1.2 §2.7), vring-engine's default.
pub const MAX_QUEUE_SIZE: i64 = vring_engine::MAX_QUEUE_SIZE as i64;
/// QEMU's `id_wellformed()` (util/id.c) limits ids to this alphabet; QEMU ids have no
/// length limit, ours keep log lines and QMP requests small.
const QEMU_ID_MAX: usize = 128;
// The L2 keys (mac, vlan, trunk, native, port-security, flood-limit, mac-limit, mtu) are
// the same for every kind.
const TAP_KEYS: &[&str] = &[
    "name",
    "queues",
    "vlan",
    "mac",
    "trunk",
    "native",
    "port-security",
    "flood-limit",
    "mac-limit",
    "mtu",
];
const AFPACKET_KEYS: &[&str] = &[
    "ifname",
    "vlan",
    "mac",
    "trunk",
    "native",
    "port-security",
    "flood-limit",
    "mac-limit",
    "mtu",
];
const VXLAN_KEYS: &[&str] = &[
    "local",
    "remote",
    "vni",
    "dstport",
    "name",
    "vlan",
    "mac",
    "trunk",
    "native",
    "port-security",
    "flood-limit",
    "mac-limit",
    "mtu",
];

/// The port kinds and the keys each accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    VhostUser,
    Tap,
    AfPacket,
    Vxlan,
}

impl Kind {
    fn parse(s: &str) -> Result<Kind, PortError> {
        match s {
            "vhost-user" => Ok(Kind::VhostUser),
            "tap" => Ok(Kind::Tap),
            "afpacket" => Ok(Kind::AfPacket),
            "vxlan" => Ok(Kind::Vxlan),
            other => Err(PortError::UnknownKind(other.to_string())),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::VhostUser => "vhost-user",
            Kind::Tap => "tap",
            Kind::AfPacket => "afpacket",
            Kind::Vxlan => "vxlan",
        }
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::VhostUser => VHOST_KEYS,
            Kind::Tap => TAP_KEYS,
            Kind::AfPacket => AFPACKET_KEYS,
            Kind::Vxlan => VXLAN_KEYS,
        }
    }

    fn example(self) -> &'static str {
        match self {
            Kind::VhostUser => "vhost-user:path=/run/vm1.sock",
            Kind::Tap => "tap:name=rs0",
            Kind::AfPacket => "afpacket:ifname=veth0",
            Kind::Vxlan => "vxlan:local=198.18.0.1,remote=198.18.0.2,vni=42",
        }
    }
}

/// Why a port spec was rejected. Each message names the key, the value and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("unknown port kind `{0}`: use vhost-user, tap, afpacket or vxlan")]
    UnknownKind(String),
    #[error("missing port kind: write KIND:key=value,... e.g. vhost-user:path=/run/vm1.sock")]
    NoKind,
    #[error("unknown key `{key}` for {kind} ports; valid keys: {}", .valid.join(", "))]
    UnknownKey {
        kind: &'static str,
        key: String,
        valid: &'static [&'static str],
    },
    #[error("key `{0}` given twice: give each key once")]
    DuplicateKey(String),
    #[error("missing `{key}=`: {kind} ports need it, e.g. {example}")]
    Missing {
        kind: &'static str,
        key: &'static str,
        example: &'static str,
    },
    #[error("`{key}` needs a value: write {key}={example}")]
    NoValue {
        key: &'static str,
        example: &'static str,
    },
    #[error("{key}={value}: {key} must be {range}")]
    Range {
        key: &'static str,
        value: String,
        range: String,
    },
    #[error("{key}={value}: {expected}")]
    BadValue {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("mac={value}: {why}")]
    Mac { value: String, why: String },
    #[error(
        "nothing to change: give KEY=VALUE, e.g. vlan=10, vlan=none, trunk=10,20-30, \
         native=1, mac=M, port-security=on, flood-limit=1000 or mac-limit=16"
    )]
    NoChange,
}

/// A port as written by the user, before validation. Deserialised directly from a TOML
/// `[[port]]` table (unknown keys rejected by serde); the `--port` parser fills it too.
/// Numbers are `i64` so that out-of-range values reach our own range message rather
/// than a generic integer-overflow error.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPort {
    pub kind: String,
    pub path: Option<String>,
    pub name: Option<String>,
    pub ifname: Option<String>,
    pub queues: Option<i64>,
    pub client: Option<bool>,
    pub mac: Option<String>,
    pub vlan: Option<i64>,
    pub offloads: Option<bool>,
    /// QEMU's QMP socket (vhost-user only).
    pub qmp: Option<String>,
    /// The guest NIC's id (or its netdev's id) in that QEMU.
    #[serde(rename = "qmp-nic")]
    pub qmp_nic: Option<String>,
    /// Largest ring the guest may set (vhost-user only): a power of two, 1..=32768.
    #[serde(rename = "max-queue-size")]
    pub max_queue_size: Option<i64>,
    /// Trunk VLANs, `"10,20-30"` (every kind).
    pub trunk: Option<String>,
    /// Native VLAN of a trunk.
    pub native: Option<i64>,
    #[serde(rename = "port-security")]
    pub port_security: Option<bool>,
    /// Frames flooded per second (0: no limit).
    #[serde(rename = "flood-limit")]
    pub flood_limit: Option<i64>,
    /// MACs learned behind the port (0: no limit).
    #[serde(rename = "mac-limit")]
    pub mac_limit: Option<i64>,
    /// Octal permission bits of the server socket, `"0660"` (vhost-user only).
    #[serde(rename = "socket-mode")]
    pub socket_mode: Option<String>,
    /// Group of the server socket: a name or a numeric gid (vhost-user only).
    #[serde(rename = "socket-group")]
    pub socket_group: Option<String>,
    /// Most guest memory regions the frontend may map (vhost-user only).
    #[serde(rename = "max-mem-regions")]
    pub max_mem_regions: Option<i64>,
    /// Offer packed virtqueues (vhost-user only; experimental, default off).
    pub packed: Option<bool>,
    /// Largest packet the port carries (every kind), 68..=9000; default 1500.
    pub mtu: Option<i64>,
    /// This host's VTEP address (vxlan only).
    pub local: Option<String>,
    /// Remote VTEPs (vxlan only): `"A;B"` as on the command line, or a TOML array.
    #[serde(default, deserialize_with = "remote_list")]
    pub remote: Option<String>,
    /// VXLAN network identifier (vxlan only), 0..=16777215.
    pub vni: Option<i64>,
    /// UDP destination port (vxlan only), default 4789.
    pub dstport: Option<i64>,
}

/// `remote = "198.18.0.2;198.18.0.3"` or `remote = ["198.18.0.2", "198.18.0.3"]` in TOML:
/// both become the `;`-separated list of the `--port` syntax.
fn remote_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Remotes {
        One(String),
        List(Vec<String>),
    }
    Ok(Some(match Remotes::deserialize(d)? {
        Remotes::One(s) => s,
        Remotes::List(v) => v.join(";"),
    }))
}

impl RawPort {
    fn present_keys(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        let mut add = |present: bool, key| {
            if present {
                k.push(key)
            }
        };
        add(self.path.is_some(), "path");
        add(self.name.is_some(), "name");
        add(self.ifname.is_some(), "ifname");
        add(self.queues.is_some(), "queues");
        add(self.client.is_some(), "client");
        add(self.mac.is_some(), "mac");
        add(self.vlan.is_some(), "vlan");
        add(self.offloads.is_some(), "offloads");
        add(self.qmp.is_some(), "qmp");
        add(self.qmp_nic.is_some(), "qmp-nic");
        add(self.max_queue_size.is_some(), "max-queue-size");
        add(self.trunk.is_some(), "trunk");
        add(self.native.is_some(), "native");
        add(self.port_security.is_some(), "port-security");
        add(self.flood_limit.is_some(), "flood-limit");
        add(self.mac_limit.is_some(), "mac-limit");
        add(self.socket_mode.is_some(), "socket-mode");
        add(self.socket_group.is_some(), "socket-group");
        add(self.max_mem_regions.is_some(), "max-mem-regions");
        add(self.packed.is_some(), "packed");
        add(self.mtu.is_some(), "mtu");
        add(self.local.is_some(), "local");
        add(self.remote.is_some(), "remote");
        add(self.vni.is_some(), "vni");
        add(self.dstport.is_some(), "dstport");
        k
    }

    /// The L2 options of every kind; `vlan` and `mac` already checked.
    fn l2(&self, vlan: Option<u16>, mac: Option<&str>) -> Result<PortL2, PortError> {
        let trunk = self
            .trunk
            .as_deref()
            .map(|t| trunk_set(t).map(|s| vlan_list(&s)))
            .transpose()?;
        let native = self.native.map(|n| check_vid("native", n)).transpose()?;
        if let (Some(_), Some(t)) = (vlan, &trunk) {
            return Err(PortError::BadValue {
                key: "trunk",
                value: t.clone(),
                expected: "vlan= makes an access port and trunk= a trunk port: give one \
                           (vlan=V alone, or trunk=LIST with native=V for untagged frames)",
            });
        }
        if let (Some(_), Some(n)) = (vlan, native) {
            return Err(PortError::BadValue {
                key: "native",
                value: n.to_string(),
                expected: "native= is the untagged VLAN of a trunk port and vlan= makes an \
                           access port: use vlan=V alone, or native=V (with trunk=LIST)",
            });
        }
        let port_security = self.port_security.unwrap_or(false);
        if port_security && mac.is_none() {
            return Err(PortError::BadValue {
                key: "port-security",
                value: "on".into(),
                expected: "port security binds the port to one address: add mac=M (the \
                           guest NIC's, or the far end's for tap and afpacket ports)",
            });
        }
        Ok(PortL2 {
            trunk,
            native,
            port_security,
            flood_limit: self
                .flood_limit
                .map(|n| {
                    check_u32(
                        "flood-limit",
                        n,
                        FLOOD_LIMIT_MAX,
                        "frames per second (0: no limit)",
                    )
                })
                .transpose()?
                .unwrap_or(0),
            mac_limit: self
                .mac_limit
                .map(|n| check_u32("mac-limit", n, MAC_LIMIT_MAX, "addresses (0: no limit)"))
                .transpose()?
                .unwrap_or(0),
            mtu: self.mtu.map(check_mtu).transpose()?,
        })
    }

    /// Validates the fields for the kind and builds the contract's [`PortSpec`].
    pub fn into_spec(self) -> Result<PortSpec, PortError> {
        let kind = Kind::parse(&self.kind)?;
        for key in self.present_keys() {
            if !kind.keys().contains(&key) {
                return Err(PortError::UnknownKey {
                    kind: kind.as_str(),
                    key: key.to_string(),
                    valid: kind.keys(),
                });
            }
        }
        let missing = |key| PortError::Missing {
            kind: kind.as_str(),
            key,
            example: kind.example(),
        };
        let vlan = self.vlan.map(check_vlan).transpose()?;
        let mac = self.mac.as_deref().map(check_mac).transpose()?;
        let l2 = self.l2(vlan, mac.as_deref())?;
        Ok(match kind {
            Kind::VhostUser => {
                let path = self.path.ok_or_else(|| missing("path"))?;
                check_socket_path(&path)?;
                let queues = match self.queues {
                    Some(q) => check_range("queues", q, 1, VHOST_QUEUES_MAX)?,
                    None => 1,
                };
                let qmp = check_qmp(&path, self.qmp, self.qmp_nic)?;
                let max_queue_size = self.max_queue_size.map(check_queue_size).transpose()?;
                let client = self.client.unwrap_or(false);
                let mut frontend = check_frontend(
                    client,
                    self.socket_mode.as_deref(),
                    self.socket_group,
                    self.max_mem_regions,
                )?;
                frontend.packed = self.packed.unwrap_or(false);
                PortSpec::VhostUser {
                    path,
                    queues,
                    client,
                    mac,
                    vlan,
                    offloads: self.offloads.unwrap_or(true),
                    qmp,
                    max_queue_size,
                    frontend,
                    l2,
                }
            }
            Kind::Tap => {
                let name = self.name.ok_or_else(|| missing("name"))?;
                check_ifname("name", &name)?;
                let queues = self
                    .queues
                    .map(|q| check_range("queues", q, 1, TAP_QUEUES_MAX))
                    .transpose()?;
                PortSpec::Tap {
                    name,
                    queues,
                    vlan,
                    mac,
                    l2,
                }
            }
            Kind::AfPacket => {
                let ifname = self.ifname.ok_or_else(|| missing("ifname"))?;
                check_ifname("ifname", &ifname)?;
                PortSpec::AfPacket {
                    ifname,
                    vlan,
                    mac,
                    l2,
                }
            }
            Kind::Vxlan => {
                let local = self.local.ok_or_else(|| missing("local"))?;
                let local = check_vtep("local", &local)?;
                let remote = self.remote.ok_or_else(|| missing("remote"))?;
                let remotes = check_remotes(&local, &remote)?;
                let vni = self.vni.ok_or_else(|| missing("vni"))?;
                let vni = check_u32(
                    "vni",
                    vni,
                    i64::from(switch::vxlan::VNI_MAX),
                    "(24-bit VXLAN network identifier)",
                )?;
                let dstport = match self.dstport {
                    Some(p) => check_range("dstport", p, 1, i64::from(u16::MAX))?,
                    None => switch::vxlan::DEFAULT_PORT,
                };
                let name = self.name.unwrap_or_else(|| format!("vxlan{vni}"));
                check_port_name(&name)?;
                PortSpec::Vxlan {
                    name,
                    local,
                    remotes,
                    vni,
                    dstport,
                    vlan,
                    mac,
                    l2,
                }
            }
        })
    }
}

/// Re-validates a spec that did not come from our parser (the ctl socket accepts JSON
/// from any local root process): same rules as `--port`. Returns the spec as our parser
/// writes it (MAC in lowercase, trunk list sorted and merged), which is what the daemon
/// stores and shows.
pub fn normalize_spec(spec: &PortSpec) -> Result<PortSpec, PortError> {
    to_raw(spec).into_spec()
}

fn to_raw(spec: &PortSpec) -> RawPort {
    let l2 = spec.l2();
    let common = RawPort {
        mac: spec.mac().map(str::to_string),
        vlan: spec.vlan().map(i64::from),
        trunk: l2.trunk.clone(),
        native: l2.native.map(i64::from),
        port_security: l2.port_security.then_some(true),
        flood_limit: (l2.flood_limit > 0).then_some(i64::from(l2.flood_limit)),
        mac_limit: (l2.mac_limit > 0).then_some(i64::from(l2.mac_limit)),
        mtu: l2.mtu.map(i64::from),
        ..RawPort::default()
    };
    match spec {
        PortSpec::VhostUser {
            path,
            queues,
            client,
            offloads,
            qmp,
            max_queue_size,
            frontend,
            ..
        } => RawPort {
            kind: "vhost-user".into(),
            path: Some(path.clone()),
            queues: Some(i64::from(*queues)),
            client: Some(*client),
            offloads: Some(*offloads),
            qmp: qmp.as_ref().map(|q| q.path.clone()),
            qmp_nic: qmp.as_ref().and_then(|q| q.nic.clone()),
            max_queue_size: max_queue_size.map(i64::from),
            socket_mode: frontend.socket_mode.map(|m| format!("{m:04o}")),
            socket_group: frontend.socket_group.clone(),
            max_mem_regions: frontend.max_mem_regions.map(i64::from),
            packed: frontend.packed.then_some(true),
            ..common
        },
        PortSpec::Tap { name, queues, .. } => RawPort {
            kind: "tap".into(),
            name: Some(name.clone()),
            queues: queues.map(i64::from),
            ..common
        },
        PortSpec::AfPacket { ifname, .. } => RawPort {
            kind: "afpacket".into(),
            ifname: Some(ifname.clone()),
            ..common
        },
        PortSpec::Vxlan {
            name,
            local,
            remotes,
            vni,
            dstport,
            ..
        } => RawPort {
            kind: "vxlan".into(),
            name: Some(name.clone()),
            local: Some(local.to_string()),
            remote: Some(
                remotes
                    .iter()
                    .map(IpAddr::to_string)
                    .collect::<Vec<_>>()
                    .join(";"),
            ),
            vni: Some(i64::from(*vni)),
            dstport: Some(i64::from(*dstport)),
            ..common
        },
    }
}

fn check_range(key: &'static str, v: i64, lo: i64, hi: i64) -> Result<u16, PortError> {
    if (lo..=hi).contains(&v) {
        if let Ok(v) = u16::try_from(v) {
            return Ok(v);
        }
    }
    Err(PortError::Range {
        key,
        value: v.to_string(),
        range: format!("{lo}..={hi}"),
    })
}

/// A split ring's size is a power of two up to 32768 (virtio 1.2 §2.7); QEMU's
/// `rx_queue_size`/`tx_queue_size` and DPDK's `queue_size` are in that set.
fn check_queue_size(v: i64) -> Result<u16, PortError> {
    let ok = (1..=MAX_QUEUE_SIZE).contains(&v) && (v as u64).is_power_of_two();
    match u16::try_from(v) {
        Ok(q) if ok => Ok(q),
        _ => Err(PortError::Range {
            key: "max-queue-size",
            value: v.to_string(),
            range: format!(
                "a power of two in 1..={MAX_QUEUE_SIZE} (the guest's ring size limit, \
                 e.g. 1024; default {MAX_QUEUE_SIZE})"
            ),
        }),
    }
}

/// The port's MTU: at least IPv4's 68 (RFC 791 §3.1), at most 9000 (jumbo frames).
fn check_mtu(v: i64) -> Result<u16, PortError> {
    let (lo, hi) = (switch::mtu::MIN_MTU, switch::mtu::MAX_MTU);
    check_range("mtu", v, i64::from(lo), i64::from(hi)).map_err(|_| PortError::Range {
        key: "mtu",
        value: v.to_string(),
        range: format!("{lo}..={hi} (bytes of IP packet; default 1500, jumbo 9000)"),
    })
}

/// The frontend-boundary keys of a vhost-user port. The socket keys shape the socket we
/// create, so they need server mode.
fn check_frontend(
    client: bool,
    mode: Option<&str>,
    group: Option<String>,
    regions: Option<i64>,
) -> Result<VhostFrontend, PortError> {
    let socket_mode = mode
        .map(|m| {
            let digits = m.strip_prefix("0o").unwrap_or(m);
            match u32::from_str_radix(digits, 8) {
                Ok(v) if v <= 0o777 && !digits.is_empty() => Ok(v),
                _ => Err(PortError::BadValue {
                    key: "socket-mode",
                    value: m.to_string(),
                    expected: "octal permission bits of the socket, at most 0777, e.g. 0660 \
                               (with socket-group=G to let a QEMU of that group in)",
                }),
            }
        })
        .transpose()?;
    if let Some(g) = &group {
        let ok = !g.is_empty()
            && g.len() <= 32
            && g.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(PortError::BadValue {
                key: "socket-group",
                value: g.clone(),
                expected: "a group name or numeric gid, e.g. kvm or 107",
            });
        }
    }
    if client && (socket_mode.is_some() || group.is_some()) {
        return Err(PortError::BadValue {
            key: if socket_mode.is_some() {
                "socket-mode"
            } else {
                "socket-group"
            },
            value: mode.map_or_else(|| group.clone().unwrap_or_default(), str::to_string),
            expected: "with `client` QEMU creates the socket: set its mode there, or drop `client`",
        });
    }
    let max_mem_regions = regions
        .map(|n| {
            check_range(
                "max-mem-regions",
                n,
                1,
                i64::from(vring_engine::options::MAX_MEM_REGIONS),
            )
            .map(u32::from)
        })
        .transpose()?;
    Ok(VhostFrontend {
        socket_mode,
        socket_group: group,
        max_mem_regions,
        packed: false,
    })
}

/// IEEE 802.1Q-2018 §9.6: VID 0 means "priority tag only" and 4095 is reserved.
fn check_vlan(v: i64) -> Result<u16, PortError> {
    check_vid("vlan", v)
}

fn check_vid(key: &'static str, v: i64) -> Result<u16, PortError> {
    check_range(key, v, 1, i64::from(switch::vlan::VID_MAX))
}

fn check_u32(key: &'static str, v: i64, hi: i64, unit: &str) -> Result<u32, PortError> {
    match u32::try_from(v) {
        Ok(n) if v <= hi => Ok(n),
        _ => Err(PortError::Range {
            key,
            value: v.to_string(),
            range: format!("0..={hi} {unit}"),
        }),
    }
}

/// Parses a trunk's VLAN list as OVS (`trunks=10,20`) and Linux bridges (`vid 20-30`)
/// write them: ids and ranges `A-B`, comma-separated, each id 1..=4094 (IEEE
/// 802.1Q-2018 §9.6).
pub fn trunk_set(list: &str) -> Result<VlanSet, PortError> {
    let bad = |expected: &'static str| PortError::BadValue {
        key: "trunk",
        value: list.to_string(),
        expected,
    };
    let mut set = VlanSet::empty();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (lo, hi) = item.split_once('-').unwrap_or((item, item));
        let id = |t: &str| -> Result<u16, PortError> {
            let n: i64 = t
                .parse()
                .map_err(|_| bad("give VLAN ids and ranges, e.g. trunk=10,20-30"))?;
            check_vid("trunk", n).map_err(|_| PortError::Range {
                key: "trunk",
                value: list.to_string(),
                range: "VLAN ids 1..=4094".into(),
            })
        };
        let (lo, hi) = (id(lo)?, id(hi)?);
        if lo > hi {
            return Err(bad("a range goes from low to high, e.g. 20-30"));
        }
        for v in lo..=hi {
            set.insert(v);
        }
    }
    if set.is_empty() {
        return Err(PortError::NoValue {
            key: "trunk",
            example: "10,20-30",
        });
    }
    Ok(set)
}

/// A VLAN set in the canonical `10,20-30` form (ascending, runs merged).
pub fn vlan_list(set: &VlanSet) -> String {
    fn flush(r: (u16, u16), out: &mut Vec<String>) {
        out.push(if r.0 == r.1 {
            r.0.to_string()
        } else {
            format!("{}-{}", r.0, r.1)
        })
    }
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(u16, u16)> = None;
    for v in set.iter() {
        run = match run {
            Some((a, b)) if b + 1 == v => Some((a, v)),
            Some(r) => {
                flush(r, &mut out);
                Some((v, v))
            }
            None => Some((v, v)),
        };
    }
    if let Some(r) = run {
        flush(r, &mut out);
    }
    out.join(",")
}

/// A guest NIC address must be a usable unicast source (IEEE 802-2014 §8.2: the I/G bit
/// marks group addresses; all-zero is never a valid source). Normalised to lowercase.
fn check_mac(s: &str) -> Result<String, PortError> {
    let mac: Mac = s
        .parse()
        .map_err(|e: switch::mac::ParseMacError| PortError::Mac {
            value: s.to_string(),
            why: e.to_string(),
        })?;
    if mac.is_multicast() {
        return Err(PortError::Mac {
            value: s.to_string(),
            why: "a NIC address must be unicast (the first octet must be even), e.g. \
                  52:54:00:12:34:56"
                .into(),
        });
    }
    if mac == Mac::ZERO {
        return Err(PortError::Mac {
            value: s.to_string(),
            why: "00:00:00:00:00:00 is not a usable address; pick e.g. 52:54:00:12:34:56".into(),
        });
    }
    Ok(mac.to_string())
}

fn check_socket_path(p: &str) -> Result<(), PortError> {
    if p.is_empty() {
        return Err(PortError::BadValue {
            key: "path",
            value: String::new(),
            expected: "the socket path must not be empty",
        });
    }
    if p.contains('\0') {
        return Err(PortError::BadValue {
            key: "path",
            value: p.escape_debug().to_string(),
            expected: "the socket path must not contain NUL bytes",
        });
    }
    if p.len() > SUN_PATH_MAX {
        return Err(PortError::BadValue {
            key: "path",
            value: p.to_string(),
            expected: "a unix socket path may be at most 107 bytes long; use a shorter \
                       directory",
        });
    }
    Ok(())
}

/// `qmp=PATH[,qmp-nic=ID]`: a unix socket path, not the port's own vhost-user socket, and
/// an id as QEMU writes them (`id_wellformed`: a letter, then letters, digits, `-`, `.`,
/// `_`).
fn check_qmp(
    vhost_path: &str,
    qmp: Option<String>,
    nic: Option<String>,
) -> Result<Option<QmpSpec>, PortError> {
    let Some(path) = qmp else {
        return match nic {
            Some(n) => Err(PortError::BadValue {
                key: "qmp-nic",
                value: n,
                expected: "qmp-nic names a NIC in the QEMU of qmp=PATH: add qmp=PATH (QEMU's \
                           -qmp unix:PATH,server=on,wait=off socket)",
            }),
            None => Ok(None),
        };
    };
    check_socket_path(&path).map_err(|e| match e {
        PortError::BadValue {
            value, expected, ..
        } => PortError::BadValue {
            key: "qmp",
            value,
            expected,
        },
        other => other,
    })?;
    if path == vhost_path {
        return Err(PortError::BadValue {
            key: "qmp",
            value: path,
            expected: "this is the vhost-user socket; give QEMU's QMP socket (-qmp \
                       unix:PATH,server=on,wait=off)",
        });
    }
    if let Some(n) = &nic {
        let mut chars = n.chars();
        let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            && n.len() <= QEMU_ID_MAX;
        if !well_formed {
            return Err(PortError::BadValue {
                key: "qmp-nic",
                value: n.escape_debug().to_string(),
                expected: "use the id= of QEMU's -device (or -netdev): a letter, then \
                           letters, digits, `-`, `.` or `_`, at most 128 bytes",
            });
        }
    }
    Ok(Some(QmpSpec { path, nic }))
}

/// A VTEP address: unicast, usable without a scope (IPv6 link-local addresses need an
/// interface the syntax has no room for) and not an IPv4-mapped IPv6 address (the IPv4
/// address is meant; received packets name their source in the socket's own family).
fn check_vtep(key: &'static str, s: &str) -> Result<IpAddr, PortError> {
    let bad = |expected| PortError::BadValue {
        key,
        value: s.to_string(),
        expected,
    };
    let ip: IpAddr = s
        .trim()
        .parse()
        .map_err(|_| bad("give an IPv4 or IPv6 address, e.g. 198.18.0.1 or 2001:db8::1"))?;
    let unusable = match ip {
        IpAddr::V4(a) => a.is_unspecified() || a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => {
            if a.to_ipv4_mapped().is_some() {
                return Err(bad("write the IPv4 address itself, not IPv4-mapped IPv6"));
            }
            if a.segments()[0] & 0xffc0 == 0xfe80 {
                return Err(bad(
                    "a link-local address needs an interface scope: use a global or \
                     unique-local address",
                ));
            }
            a.is_unspecified() || a.is_multicast()
        }
    };
    if unusable {
        return Err(bad(
            "a VTEP is a unicast address (multicast underlays are not supported: list \
             every remote, e.g. remote=198.18.0.2;198.18.0.3)",
        ));
    }
    Ok(ip)
}

/// `remote=A;B;...`: 1..=[`VXLAN_REMOTES_MAX`] distinct VTEPs of `local`'s family, none
/// of them `local` itself.
fn check_remotes(local: &IpAddr, list: &str) -> Result<Vec<IpAddr>, PortError> {
    let bad = |expected| PortError::BadValue {
        key: "remote",
        value: list.to_string(),
        expected,
    };
    let mut out: Vec<IpAddr> = Vec::new();
    for item in list.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        if out.len() == VXLAN_REMOTES_MAX {
            return Err(bad("at most 64 remote VTEPs per port"));
        }
        let ip = check_vtep("remote", item)?;
        if ip.is_ipv4() != local.is_ipv4() {
            return Err(bad(
                "every remote must be of the family of local= (all IPv4 or all IPv6)",
            ));
        }
        if ip == *local {
            return Err(bad("a remote cannot be the local address"));
        }
        if out.contains(&ip) {
            return Err(bad("each remote once"));
        }
        out.push(ip);
    }
    if out.is_empty() {
        return Err(PortError::NoValue {
            key: "remote",
            example: "198.18.0.2 (several: remote=198.18.0.2;198.18.0.3)",
        });
    }
    Ok(out)
}

/// A name for a port that is no interface (vxlan): short and plain, as interface names
/// are, so it reads well in `ctl` tables and metrics labels.
fn check_port_name(n: &str) -> Result<(), PortError> {
    let ok = !n.is_empty()
        && n.len() <= IFNAME_MAX
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        return Ok(());
    }
    Err(PortError::BadValue {
        key: "name",
        value: n.escape_debug().to_string(),
        expected: "port names are 1 to 15 letters, digits, `.`, `_` or `-`, e.g. vx42",
    })
}

fn check_ifname(key: &'static str, n: &str) -> Result<(), PortError> {
    let bad = |expected| PortError::BadValue {
        key,
        value: n.escape_debug().to_string(),
        expected,
    };
    if n.is_empty() || n.len() > IFNAME_MAX {
        return Err(bad("interface names are 1 to 15 bytes long"));
    }
    if n == "." || n == ".." || n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(bad(
            "interface names cannot be `.`/`..` or contain `/`, `:` or whitespace",
        ));
    }
    Ok(())
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, PortError> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(PortError::BadValue {
            key,
            value: v.to_string(),
            expected: "use on or off",
        }),
    }
}

fn parse_int(key: &'static str, v: &str) -> Result<i64, PortError> {
    v.parse().map_err(|_| PortError::BadValue {
        key,
        value: v.to_string(),
        expected: "expected a number",
    })
}

/// Splits `key=value,...` into items. A trunk's VLAN list has commas of its own
/// (`trunk=10,20-30`): an item without `=` made of digits and `-` right after a `trunk=`
/// item continues its value (no key is numeric, so nothing else can be meant).
fn items(s: &str) -> Vec<(&str, Option<String>)> {
    let mut out: Vec<(&str, Option<String>)> = Vec::new();
    for item in s.split(',').filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            let vlan_item = item.bytes().all(|b| b.is_ascii_digit() || b == b'-');
            if let Some(("trunk", Some(v))) = out.last_mut().map(|(k, v)| (*k, v.as_mut())) {
                if vlan_item && !v.is_empty() {
                    v.push(',');
                    v.push_str(item);
                    continue;
                }
            }
            out.push((item, None));
            continue;
        };
        out.push((key, Some(value.to_string())));
    }
    out
}

/// Parses `KIND:key=value,...` (the `--port` and `ctl add-port` syntax).
pub fn parse_port(s: &str) -> Result<PortSpec, PortError> {
    let (kind, rest) = match s.split_once(':') {
        Some((k, r)) => (k, r),
        None => (s, ""),
    };
    if kind.is_empty() {
        return Err(PortError::NoKind);
    }
    let k = Kind::parse(kind)?;
    let mut raw = RawPort {
        kind: kind.to_string(),
        ..RawPort::default()
    };
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in items(rest) {
        if seen.contains(&key) {
            return Err(PortError::DuplicateKey(key.to_string()));
        }
        seen.push(key);
        let value = value.as_deref();
        let need = |key: &'static str, example: &'static str| {
            value.ok_or(PortError::NoValue { key, example })
        };
        match key {
            "path" => raw.path = Some(need("path", "/run/vm1.sock")?.to_string()),
            "name" => raw.name = Some(need("name", "rs0")?.to_string()),
            "ifname" => raw.ifname = Some(need("ifname", "veth0")?.to_string()),
            "queues" => raw.queues = Some(parse_int("queues", need("queues", "2")?)?),
            "vlan" => raw.vlan = Some(parse_int("vlan", need("vlan", "10")?)?),
            "mac" => raw.mac = Some(need("mac", "52:54:00:12:34:56")?.to_string()),
            "offloads" => raw.offloads = Some(parse_bool("offloads", need("offloads", "on")?)?),
            "packed" => raw.packed = Some(parse_bool("packed", need("packed", "on")?)?),
            "qmp" => raw.qmp = Some(need("qmp", "/run/vm1.qmp")?.to_string()),
            "qmp-nic" => raw.qmp_nic = Some(need("qmp-nic", "net0")?.to_string()),
            "max-queue-size" => {
                raw.max_queue_size = Some(parse_int(
                    "max-queue-size",
                    need("max-queue-size", "1024")?,
                )?)
            }
            "trunk" => raw.trunk = Some(need("trunk", "10,20-30")?.to_string()),
            "native" => raw.native = Some(parse_int("native", need("native", "1")?)?),
            "port-security" => {
                raw.port_security = Some(parse_bool("port-security", need("port-security", "on")?)?)
            }
            "flood-limit" => {
                raw.flood_limit = Some(parse_int("flood-limit", need("flood-limit", "1000")?)?)
            }
            "mac-limit" => raw.mac_limit = Some(parse_int("mac-limit", need("mac-limit", "16")?)?),
            "socket-mode" => raw.socket_mode = Some(need("socket-mode", "0660")?.to_string()),
            "socket-group" => raw.socket_group = Some(need("socket-group", "kvm")?.to_string()),
            "max-mem-regions" => {
                raw.max_mem_regions = Some(parse_int(
                    "max-mem-regions",
                    need("max-mem-regions", "64")?,
                )?)
            }
            "mtu" => raw.mtu = Some(parse_int("mtu", need("mtu", "9000")?)?),
            "local" => raw.local = Some(need("local", "198.18.0.1")?.to_string()),
            "remote" => raw.remote = Some(need("remote", "198.18.0.2")?.to_string()),
            "vni" => raw.vni = Some(parse_int("vni", need("vni", "42")?)?),
            "dstport" => raw.dstport = Some(parse_int("dstport", need("dstport", "4789")?)?),
            // A bare `client` is the documented form; client=on|off is accepted too.
            "client" => raw.client = Some(value.map_or(Ok(true), |v| parse_bool("client", v))?),
            other => {
                return Err(PortError::UnknownKey {
                    kind: k.as_str(),
                    key: other.to_string(),
                    valid: k.keys(),
                })
            }
        }
    }
    raw.into_spec()
}

/// clap value parser for `--port` / `ctl add-port`.
pub fn parse_port_arg(s: &str) -> Result<PortSpec, String> {
    parse_port(s).map_err(|e| e.to_string())
}

/// Keys `set-port` takes.
const CHANGE_KEYS: &[&str] = &[
    "vlan",
    "trunk",
    "native",
    "mac",
    "port-security",
    "flood-limit",
    "mac-limit",
];

/// Parses a `set-port` change: `vlan=V|none`, `trunk=LIST|none`, `native=V|none`,
/// `mac=M`, `port-security=on|off`, `flood-limit=PPS`, `mac-limit=N`, comma-separated.
pub fn parse_change(s: &str) -> Result<PortChange, PortError> {
    let mut change = PortChange::default();
    let mut seen: Vec<&str> = Vec::new();
    for (key, value) in items(s) {
        if seen.contains(&key) {
            return Err(PortError::DuplicateKey(key.to_string()));
        }
        seen.push(key);
        let need = |key: &'static str, example: &'static str| match value.as_deref() {
            None | Some("") => Err(PortError::NoValue { key, example }),
            Some(v) => Ok(v),
        };
        match key {
            "vlan" => {
                change.vlan = Some(match need("vlan", "10 (or vlan=none)")? {
                    "none" => None,
                    v => Some(check_vlan(parse_int("vlan", v)?)?),
                })
            }
            "trunk" => {
                change.trunk = Some(match need("trunk", "10,20-30 (or trunk=none)")? {
                    "none" => None,
                    v => Some(vlan_list(&trunk_set(v)?)),
                })
            }
            "native" => {
                change.native = Some(match need("native", "1 (or native=none)")? {
                    "none" => None,
                    v => Some(check_vid("native", parse_int("native", v)?)?),
                })
            }
            "mac" => change.mac = Some(check_mac(need("mac", "52:54:00:12:34:56")?)?),
            "port-security" => {
                change.port_security =
                    Some(parse_bool("port-security", need("port-security", "on")?)?)
            }
            "flood-limit" => {
                let n = parse_int("flood-limit", need("flood-limit", "1000")?)?;
                change.flood_limit = Some(check_u32(
                    "flood-limit",
                    n,
                    FLOOD_LIMIT_MAX,
                    "frames per second (0: no limit)",
                )?)
            }
            "mac-limit" => {
                let n = parse_int("mac-limit", need("mac-limit", "16")?)?;
                change.mac_limit = Some(check_u32(
                    "mac-limit",
                    n,
                    MAC_LIMIT_MAX,
                    "addresses (0: no limit)",
                )?)
            }
            other => {
                return Err(PortError::UnknownKey {
                    kind: "set-port",
                    key: other.to_string(),
                    valid: CHANGE_KEYS,
                })
            }
        }
    }
    validate_change(&change)?;
    Ok(change)
}

/// Re-validates a change that did not come from our parser (ctl JSON): ranges, the
/// trunk list's form, and that an access VLAN is not combined with trunk settings.
pub fn validate_change(c: &PortChange) -> Result<(), PortError> {
    if c.is_empty() {
        return Err(PortError::NoChange);
    }
    if let Some(Some(v)) = c.vlan {
        check_vlan(i64::from(v))?;
        if c.trunk.is_some() || c.native.is_some() {
            return Err(PortError::BadValue {
                key: "vlan",
                value: v.to_string(),
                expected: "vlan= makes an access port, trunk= and native= configure a \
                           trunk: change one or the other",
            });
        }
    }
    if let Some(Some(t)) = &c.trunk {
        if vlan_list(&trunk_set(t)?) != *t {
            return Err(PortError::BadValue {
                key: "trunk",
                value: t.clone(),
                expected: "write the list ascending with ranges merged, e.g. 10,20-30",
            });
        }
    }
    if let Some(Some(n)) = c.native {
        check_vid("native", i64::from(n))?;
    }
    if let Some(m) = &c.mac {
        check_mac(m)?;
    }
    if let Some(n) = c.flood_limit {
        check_u32(
            "flood-limit",
            i64::from(n),
            FLOOD_LIMIT_MAX,
            "frames per second (0: no limit)",
        )?;
    }
    if let Some(n) = c.mac_limit {
        check_u32(
            "mac-limit",
            i64::from(n),
            MAC_LIMIT_MAX,
            "addresses (0: no limit)",
        )?;
    }
    Ok(())
}

/// The port `spec` with `change` applied, validated as a whole (port security still
/// needs a MAC, and so on). `vlan=V` clears the trunk settings and `trunk=`/`native=`
/// clear `vlan`, as OVS's `tag`/`trunks` and a bridge's pvid behave.
pub fn apply_change(spec: &PortSpec, c: &PortChange) -> Result<PortSpec, PortError> {
    validate_change(c)?;
    let mut raw = to_raw(spec);
    if let Some(v) = c.vlan {
        raw.vlan = v.map(i64::from);
        if v.is_some() {
            raw.trunk = None;
            raw.native = None;
        }
    }
    if let Some(t) = &c.trunk {
        raw.trunk = t.clone();
        raw.vlan = None;
    }
    if let Some(n) = c.native {
        raw.native = n.map(i64::from);
        raw.vlan = None;
    }
    if let Some(m) = &c.mac {
        if matches!(spec, PortSpec::VhostUser { .. }) {
            return Err(PortError::BadValue {
                key: "mac",
                value: m.clone(),
                expected: "a vhost-user port's mac= is the guest NIC's address, set when the \
                           port is added: del-port and add-port it with the new mac=",
            });
        }
        raw.mac = Some(m.clone());
    }
    if let Some(on) = c.port_security {
        raw.port_security = Some(on);
    }
    if let Some(n) = c.flood_limit {
        raw.flood_limit = Some(i64::from(n));
    }
    if let Some(n) = c.mac_limit {
        raw.mac_limit = Some(i64::from(n));
    }
    raw.into_spec()
}

/// clap value parser for `ctl set-port NAME CHANGE`.
pub fn parse_port_change(s: &str) -> Result<PortChange, String> {
    parse_change(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        parse_port(s).unwrap_err().to_string()
    }

    #[test]
    fn vhost_user_full() {
        let p = parse_port(
            "vhost-user:path=/run/vm1.sock,queues=4,client,mac=52:54:00:AA:bb:01,vlan=10,offloads=off",
        )
        .unwrap();
        assert_eq!(
            p,
            PortSpec::VhostUser {
                path: "/run/vm1.sock".into(),
                queues: 4,
                client: true,
                mac: Some("52:54:00:aa:bb:01".into()),
                vlan: Some(10),
                offloads: false,
                qmp: None,
                max_queue_size: None,
                frontend: VhostFrontend::default(),
                l2: PortL2::default(),
            }
        );
    }

    #[test]
    fn vhost_user_qmp() {
        let p = parse_port("vhost-user:path=/run/vm1.sock,qmp=/run/vm1.qmp,qmp-nic=net0").unwrap();
        let PortSpec::VhostUser { qmp, .. } = &p else {
            panic!("not vhost-user")
        };
        assert_eq!(
            qmp,
            &Some(QmpSpec {
                path: "/run/vm1.qmp".into(),
                nic: Some("net0".into())
            })
        );
        let p = parse_port("vhost-user:path=/run/vm1.sock,qmp=/run/vm1.qmp").unwrap();
        assert!(matches!(
            p,
            PortSpec::VhostUser {
                qmp: Some(QmpSpec { nic: None, .. }),
                ..
            }
        ));
        let e = err("vhost-user:path=/a,qmp-nic=net0");
        assert!(
            e.starts_with("qmp-nic=net0: ") && e.contains("add qmp=PATH"),
            "{e}"
        );
        let e = err("vhost-user:path=/a,qmp=/a");
        assert!(e.contains("vhost-user socket"), "{e}");
        let e = err("vhost-user:path=/a,qmp=");
        assert!(
            e.starts_with("qmp=: ") && e.contains("must not be empty"),
            "{e}"
        );
        let e = err("vhost-user:path=/a,qmp=/q,qmp-nic=0bad");
        assert!(
            e.starts_with("qmp-nic=0bad: ") && e.contains("a letter"),
            "{e}"
        );
        assert!(err("vhost-user:path=/a,qmp=/q,qmp-nic=a/b").contains("qmp-nic"));
        assert!(err("vhost-user:path=/a,qmp").contains("`qmp` needs a value"));
        assert!(err("tap:name=t,qmp=/q").contains("unknown key `qmp` for tap ports"));
    }

    #[test]
    fn vhost_user_defaults() {
        let p = parse_port("vhost-user:path=/tmp/a.sock").unwrap();
        assert_eq!(
            p,
            PortSpec::VhostUser {
                path: "/tmp/a.sock".into(),
                queues: 1,
                client: false,
                mac: None,
                vlan: None,
                offloads: true,
                qmp: None,
                max_queue_size: None,
                frontend: VhostFrontend::default(),
                l2: PortL2::default(),
            }
        );
    }

    #[test]
    fn tap_and_afpacket() {
        assert_eq!(
            parse_port("tap:name=rs0,queues=2").unwrap(),
            PortSpec::Tap {
                name: "rs0".into(),
                queues: Some(2),
                vlan: None,
                mac: None,
                l2: PortL2::default(),
            }
        );
        assert_eq!(
            parse_port("afpacket:ifname=veth0,vlan=4094").unwrap(),
            PortSpec::AfPacket {
                ifname: "veth0".into(),
                vlan: Some(4094),
                mac: None,
                l2: PortL2::default(),
            }
        );
    }

    #[test]
    fn queue_range_names_key_value_and_fix() {
        assert_eq!(
            err("vhost-user:path=/tmp/a,queues=0"),
            "queues=0: queues must be 1..=16"
        );
        assert_eq!(
            err("vhost-user:path=/tmp/a,queues=17"),
            "queues=17: queues must be 1..=16"
        );
        assert_eq!(
            err("tap:name=t,queues=257"),
            "queues=257: queues must be 1..=256"
        );
        assert!(err("vhost-user:path=/tmp/a,queues=two").contains("queues=two"));
        assert!(err("vhost-user:path=/tmp/a,queues=99999999999999999999").contains("number"));
    }

    #[test]
    fn max_queue_size() {
        let size = |s: &str| match parse_port(s).unwrap() {
            PortSpec::VhostUser { max_queue_size, .. } => max_queue_size,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            size("vhost-user:path=/a"),
            None,
            "default: vring-engine's 32768"
        );
        for n in [1u16, 2, 256, 1024, 4096, 32768] {
            assert_eq!(
                size(&format!("vhost-user:path=/a,max-queue-size={n}")),
                Some(n)
            );
        }
        let range = "must be a power of two in 1..=32768 (the guest's ring size limit, e.g. \
                     1024; default 32768)";
        for bad in ["0", "1000", "65536", "-1", "3"] {
            assert_eq!(
                err(&format!("vhost-user:path=/a,max-queue-size={bad}")),
                format!("max-queue-size={bad}: max-queue-size {range}")
            );
        }
        assert!(err("vhost-user:path=/a,max-queue-size=big").contains("expected a number"));
        assert!(err("vhost-user:path=/a,max-queue-size").contains("max-queue-size=1024"));
        assert!(err("tap:name=t,max-queue-size=1024")
            .contains("unknown key `max-queue-size` for tap ports"));
        let e = err("afpacket:ifname=v,max-queue-size=1024");
        assert!(e.contains("unknown key `max-queue-size`"), "{e}");
        // JSON specs from the ctl socket get the same check.
        let PortSpec::VhostUser {
            path,
            queues,
            client,
            mac,
            vlan,
            offloads,
            qmp,
            ..
        } = parse_port("vhost-user:path=/a").unwrap()
        else {
            unreachable!()
        };
        let bad = PortSpec::VhostUser {
            path,
            queues,
            client,
            mac,
            vlan,
            offloads,
            qmp,
            max_queue_size: Some(768),
            frontend: VhostFrontend::default(),
            l2: PortL2::default(),
        };
        assert!(normalize_spec(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("max-queue-size=768: "));
    }

    #[test]
    fn unknown_key_lists_valid_ones() {
        let e = err("tap:name=rs0,path=/x");
        assert_eq!(
            e,
            "unknown key `path` for tap ports; valid keys: name, queues, vlan, mac, trunk, \
             native, port-security, flood-limit, mac-limit, mtu"
        );
        assert!(err("afpacket:ifname=v,speed=10").contains(
            "valid keys: ifname, vlan, mac, trunk, native, port-security, flood-limit, mac-limit"
        ));
        assert!(err("vhost-user:path=/a,client=maybe").contains("use on or off"));
    }

    #[test]
    fn kinds_and_missing_keys() {
        assert!(err("vhostuser:path=/a").contains("unknown port kind `vhostuser`"));
        assert!(err(":path=/a").contains("missing port kind"));
        assert!(err("vhost-user").contains("missing `path=`"));
        assert!(err("tap:queues=2").contains("missing `name=`"));
        assert!(err("afpacket:").contains("missing `ifname=`"));
        assert!(err("vhost-user:path").contains("`path` needs a value"));
        assert!(err("vhost-user:path=/a,path=/b").contains("given twice"));
    }

    #[test]
    fn bad_macs() {
        assert!(err("vhost-user:path=/a,mac=52:54:00:12:34").contains("mac=52:54:00:12:34"));
        assert!(err("vhost-user:path=/a,mac=zz:54:00:12:34:56").contains("six hex octets"));
        assert!(err("vhost-user:path=/a,mac=01:00:5e:00:00:01").contains("unicast"));
        assert!(err("vhost-user:path=/a,mac=00:00:00:00:00:00").contains("not a usable"));
    }

    #[test]
    fn vlans_and_names() {
        assert_eq!(err("tap:name=t,vlan=0"), "vlan=0: vlan must be 1..=4094");
        assert_eq!(
            err("tap:name=t,vlan=4095"),
            "vlan=4095: vlan must be 1..=4094"
        );
        assert!(err("tap:name=0123456789abcdef").contains("1 to 15 bytes"));
        assert!(err("afpacket:ifname=a/b").contains("`/`"));
        let long = format!("vhost-user:path=/{}", "x".repeat(120));
        assert!(err(&long).contains("107 bytes"));
        assert!(err("vhost-user:path=").contains("must not be empty"));
    }

    #[test]
    fn validate_spec_rechecks_json_specs() {
        let bad = PortSpec::VhostUser {
            path: "/a".into(),
            queues: 0,
            client: false,
            mac: None,
            vlan: None,
            offloads: true,
            qmp: None,
            max_queue_size: None,
            frontend: VhostFrontend::default(),
            l2: PortL2::default(),
        };
        assert!(normalize_spec(&bad).is_err());
        let good = parse_port("tap:name=rs0").unwrap();
        assert!(normalize_spec(&good).is_ok());
        let json = r#"{"kind":"afpacket","ifname":"v","vlan":null,"mac":"02:00:00:00:00:AB",
                       "trunk":"30,10,11","port_security":true}"#;
        let spec: PortSpec = serde_json::from_str(json).unwrap();
        assert_eq!(
            normalize_spec(&spec).unwrap(),
            parse_port("afpacket:ifname=v,mac=02:00:00:00:00:ab,trunk=10-11,30,port-security=on")
                .unwrap()
        );
        let no_mac = r#"{"kind":"tap","name":"t","queues":null,"vlan":null,"port_security":true}"#;
        let spec: PortSpec = serde_json::from_str(no_mac).unwrap();
        assert!(normalize_spec(&spec)
            .unwrap_err()
            .to_string()
            .starts_with("port-security=on: "));
    }

    #[test]
    fn round_trip_through_raw() {
        for s in [
            "vhost-user:path=/run/a.sock,queues=3,client,mac=02:00:00:00:00:01,vlan=7,offloads=off",
            "vhost-user:path=/run/a.sock,qmp=/run/a.qmp,qmp-nic=nic0",
            "vhost-user:path=/run/a.sock,qmp=/run/a.qmp",
            "vhost-user:path=/run/a.sock,max-queue-size=1024",
            "tap:name=rs0,queues=4,vlan=3",
            "tap:name=rs1",
            "afpacket:ifname=veth9",
            "afpacket:ifname=veth9,mac=02:00:00:00:00:02,port-security=on,flood-limit=100",
            "tap:name=rs2,trunk=10,20-30,native=5,mac-limit=4",
            "vhost-user:path=/run/a.sock,mac=02:00:00:00:00:01,port-security=on,native=3",
            "vxlan:local=198.18.0.1,remote=198.18.0.2;198.18.0.3,vni=42",
            "vxlan:local=2001:db8::1,remote=2001:db8::2,vni=16777215,dstport=8472,name=vx6,vlan=3",
            "vxlan:local=198.18.0.1,remote=198.18.0.2,vni=1,trunk=10,20,native=5,mtu=1450",
        ] {
            let spec = parse_port(s).unwrap();
            assert_eq!(to_raw(&spec).into_spec().unwrap(), spec, "{s}");
            // The ctl socket's JSON (the L2 keys flattened beside the others).
            let json = serde_json::to_string(&spec).unwrap();
            assert_eq!(
                serde_json::from_str::<PortSpec>(&json).unwrap(),
                spec,
                "{json}"
            );
        }
    }

    /// Hostile input is normal input: byte-level mutations of valid specs never panic,
    /// and whatever is accepted is a spec that validates and round-trips.
    #[test]
    fn mutated_specs_never_panic() {
        let seeds = [
            "vhost-user:path=/run/a.sock,queues=3,client,mac=02:00:00:00:00:01,vlan=7,offloads=off",
            "vhost-user:path=/run/a.sock,max-queue-size=1024",
            "vhost-user:path=/run/a.sock,qmp=/run/a.qmp,qmp-nic=nic0",
            "tap:name=rs0,queues=4,vlan=3",
            "afpacket:ifname=veth9",
            "afpacket:ifname=v1,mac=02:00:00:00:00:02,port-security=on,flood-limit=100",
            "tap:name=t,trunk=10,20-30,native=5,mac-limit=4",
            "vxlan:local=198.18.0.1,remote=198.18.0.2;198.18.0.3,vni=42,vlan=9",
            "vxlan:local=2001:db8::1,remote=2001:db8::2,vni=7,dstport=8472,name=vx",
        ];
        let alphabet = b":,=0123456789abcdefxyz-/. \0\xff";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            // xorshift64: deterministic, so a failure reproduces.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let seed = seeds[(next() % seeds.len() as u64) as usize];
            let mut b = seed.as_bytes().to_vec();
            for _ in 0..1 + next() % 4 {
                let i = (next() % b.len() as u64) as usize;
                match next() % 3 {
                    0 => b[i] = alphabet[(next() % alphabet.len() as u64) as usize],
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, alphabet[(next() % alphabet.len() as u64) as usize]),
                }
                if b.is_empty() {
                    break;
                }
            }
            let text = String::from_utf8_lossy(&b);
            if let Ok(spec) = parse_port(&text) {
                normalize_spec(&spec).unwrap();
                assert_eq!(to_raw(&spec).into_spec().unwrap(), spec, "{text}");
            }
            if let Some((_, rest)) = text.split_once(':') {
                if let Ok(change) = parse_change(rest) {
                    validate_change(&change).unwrap();
                    let spec = parse_port("afpacket:ifname=v").unwrap();
                    if let Ok(new) = apply_change(&spec, &change) {
                        normalize_spec(&new).unwrap();
                    }
                }
            }
        }
    }

    #[test]
    fn changes() {
        assert_eq!(parse_change("vlan=10").unwrap().vlan, Some(Some(10)));
        assert_eq!(parse_change("vlan=none").unwrap().vlan, Some(None));
        assert!(parse_change("vlan=0")
            .unwrap_err()
            .to_string()
            .contains("1..=4094"));
        assert!(parse_change("vlan=").is_err());
        assert!(parse_change("")
            .unwrap_err()
            .to_string()
            .starts_with("nothing to change"));
        assert!(parse_change("mtu=9000")
            .unwrap_err()
            .to_string()
            .contains("valid keys: vlan, trunk, native, mac, port-security"));
        assert!(parse_change("vlan=1,vlan=2").is_err());
        let c = parse_change(
            "trunk=30,10-12,native=none,mac=02:00:00:00:00:AA,port-security=on,flood-limit=50,\
             mac-limit=0",
        )
        .unwrap();
        assert_eq!(
            c,
            PortChange {
                trunk: Some(Some("10-12,30".into())),
                native: Some(None),
                mac: Some("02:00:00:00:00:aa".into()),
                port_security: Some(true),
                flood_limit: Some(50),
                mac_limit: Some(0),
                ..PortChange::default()
            }
        );
        assert_eq!(parse_change("trunk=none").unwrap().trunk, Some(None));
        assert_eq!(parse_change("native=7").unwrap().native, Some(Some(7)));
        let e = parse_change("vlan=5,trunk=10").unwrap_err().to_string();
        assert!(e.starts_with("vlan=5: vlan= makes an access port"), "{e}");
        assert!(parse_change("vlan=5,native=1").is_err());
        assert!(
            parse_change("vlan=none,trunk=10").is_ok(),
            "vlan=none is no access VLAN"
        );
        assert_eq!(
            parse_change("flood-limit=-1").unwrap_err().to_string(),
            "flood-limit=-1: flood-limit must be 0..=10000000 frames per second (0: no limit)"
        );
        assert!(parse_change("mac-limit=65537").is_err());
        assert!(parse_change("port-security=maybe")
            .unwrap_err()
            .to_string()
            .contains("use on or off"));
        assert!(parse_change("mac=01:00:5e:00:00:01").is_err());
        assert!(parse_change("native=4095").is_err());
        // JSON changes are checked too: a hand-written trunk list must be canonical.
        let json = PortChange {
            trunk: Some(Some("20,10".into())),
            ..PortChange::default()
        };
        assert!(validate_change(&json)
            .unwrap_err()
            .to_string()
            .contains("ascending"));
        assert!(validate_change(&PortChange::default()).is_err());
    }

    #[test]
    fn vxlan_ports() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            parse_port("vxlan:local=198.18.0.1,remote=198.18.0.2;198.18.0.3,vni=4242").unwrap(),
            PortSpec::Vxlan {
                name: "vxlan4242".into(),
                local: ip("198.18.0.1"),
                remotes: vec![ip("198.18.0.2"), ip("198.18.0.3")],
                vni: 4242,
                dstport: 4789,
                vlan: None,
                mac: None,
                l2: PortL2::default(),
            }
        );
        let p = parse_port(
            "vxlan:local=2001:db8:1::1,remote=2001:db8:1::2,vni=0,dstport=8472,vlan=10,name=vx0",
        )
        .unwrap();
        assert_eq!(
            p,
            PortSpec::Vxlan {
                name: "vx0".into(),
                local: ip("2001:db8:1::1"),
                remotes: vec![ip("2001:db8:1::2")],
                vni: 0,
                dstport: 8472,
                vlan: Some(10),
                mac: None,
                l2: PortL2::default(),
            }
        );
        assert_eq!((p.name(), p.vlan()), ("vx0", Some(10)));
        let v4 = "vxlan:local=198.18.0.1,remote=198.18.0.2";
        assert_eq!(
            err("vxlan:remote=198.18.0.2,vni=1"),
            "missing `local=`: vxlan ports need it, e.g. \
             vxlan:local=198.18.0.1,remote=198.18.0.2,vni=42"
        );
        assert!(err("vxlan:local=198.18.0.1,vni=1").contains("missing `remote=`"));
        assert!(err(v4).contains("missing `vni=`"));
        assert_eq!(
            err(&format!("{v4},vni=16777216")),
            "vni=16777216: vni must be 0..=16777215 (24-bit VXLAN network identifier)"
        );
        assert!(err(&format!("{v4},vni=-1")).starts_with("vni=-1: "));
        assert!(err(&format!("{v4},vni=x")).contains("expected a number"));
        assert_eq!(
            err(&format!("{v4},vni=1,dstport=0")),
            "dstport=0: dstport must be 1..=65535"
        );
        assert!(err(&format!("{v4},vni=1,dstport=65536")).contains("1..=65535"));
        let e = err("vxlan:local=host.example,remote=198.18.0.2,vni=1");
        assert!(
            e.starts_with("local=host.example: give an IPv4 or IPv6 address"),
            "{e}"
        );
        for bad in ["0.0.0.0", "224.0.0.1", "255.255.255.255", "::", "ff02::1"] {
            let e = err(&format!("vxlan:local={bad},remote=198.18.0.2,vni=1"));
            assert!(
                e.starts_with(&format!("local={bad}: ")) && e.contains("unicast"),
                "{e}"
            );
        }
        assert!(err("vxlan:local=fe80::1,remote=fe80::2,vni=1").contains("link-local"));
        assert!(err("vxlan:local=::ffff:198.18.0.1,remote=::1,vni=1").contains("IPv4-mapped"));
        let e = err("vxlan:local=198.18.0.1,remote=239.1.1.1,vni=1");
        assert!(
            e.starts_with("remote=239.1.1.1: ") && e.contains("multicast underlays"),
            "{e}"
        );
        let e = err("vxlan:local=198.18.0.1,remote=198.18.0.2;2001:db8::2,vni=1");
        assert!(
            e.starts_with("remote=198.18.0.2;2001:db8::2: ") && e.contains("family"),
            "{e}"
        );
        assert!(err("vxlan:local=198.18.0.1,remote=198.18.0.1,vni=1").contains("local address"));
        assert!(
            err("vxlan:local=198.18.0.1,remote=198.18.0.2;198.18.0.2,vni=1")
                .contains("each remote once")
        );
        assert!(err("vxlan:local=198.18.0.1,remote=;,vni=1").contains("`remote` needs a value"));
        assert!(err("vxlan:local=198.18.0.1,remote,vni=1").contains("`remote` needs a value"));
        let many: Vec<String> = (2..=66).map(|i| format!("198.18.1.{i}")).collect();
        let e = err(&format!(
            "vxlan:local=198.18.0.1,remote={},vni=1",
            many.join(";")
        ));
        assert!(e.contains("at most 64 remote VTEPs"), "{e}");
        assert!(parse_port(&format!(
            "vxlan:local=198.18.0.1,remote={},vni=1",
            many[..64].join(";")
        ))
        .is_ok());
        assert!(err(&format!("{v4},vni=1,name=a/b")).starts_with("name=a/b: port names"));
        assert!(err(&format!("{v4},vni=1,name=0123456789abcdef")).contains("1 to 15"));
        let e = err(&format!("{v4},vni=1,queues=2"));
        assert!(
            e.starts_with("unknown key `queues` for vxlan ports; valid keys: local, remote, vni"),
            "{e}"
        );
        assert!(err("tap:name=t,vni=1").contains("unknown key `vni` for tap ports"));
        assert!(err(&format!("{v4},vni=1,vni=2")).contains("given twice"));
        // JSON specs from the ctl socket get the same checks.
        let json = r#"{"kind":"vxlan","name":"vx1","local":"198.18.0.1","remotes":[],
                       "vni":5,"dstport":4789,"vlan":null}"#;
        let spec: PortSpec = serde_json::from_str(json).unwrap();
        assert!(normalize_spec(&spec)
            .unwrap_err()
            .to_string()
            .contains("`remote` needs a value"));
        let json = r#"{"kind":"vxlan","name":"vx1","local":"198.18.0.1",
                       "remotes":["198.18.0.2"],"vni":16777216,"dstport":4789,"vlan":null}"#;
        let spec: PortSpec = serde_json::from_str(json).unwrap();
        assert!(normalize_spec(&spec)
            .unwrap_err()
            .to_string()
            .starts_with("vni=16777216: "));
        // set-port changes the L2 settings and keeps the tunnel.
        let vx = parse_port("vxlan:local=198.18.0.1,remote=198.18.0.2,vni=9,vlan=10").unwrap();
        let changed = apply_change(
            &vx,
            &parse_change("trunk=20-30,mac=02:00:00:00:00:05,port-security=on").unwrap(),
        )
        .unwrap();
        assert_eq!(
            changed,
            parse_port(
                "vxlan:local=198.18.0.1,remote=198.18.0.2,vni=9,trunk=20-30,\
                 mac=02:00:00:00:00:05,port-security=on"
            )
            .unwrap()
        );
    }

    #[test]
    fn l2_options_on_every_kind() {
        for kind in [
            "vhost-user:path=/a",
            "tap:name=t",
            "afpacket:ifname=v",
            "vxlan:local=198.18.0.1,remote=198.18.0.2,vni=7",
        ] {
            let spec = parse_port(&format!(
                "{kind},mac=02:00:00:00:00:01,port-security=on,flood-limit=100,mac-limit=2"
            ))
            .unwrap();
            assert_eq!(spec.mac(), Some("02:00:00:00:00:01"), "{kind}");
            assert_eq!(
                spec.l2(),
                &PortL2 {
                    trunk: None,
                    native: None,
                    port_security: true,
                    flood_limit: 100,
                    mac_limit: 2,
                    mtu: None,
                },
                "{kind}"
            );
            let jumbo = parse_port(&format!("{kind},mtu=9000")).unwrap();
            assert_eq!(jumbo.l2().mtu, Some(9000), "{kind}");
            assert_eq!(normalize_spec(&jumbo).unwrap(), jumbo, "{kind}");
            for bad in ["67", "9001", "-1", "jumbo"] {
                let e = err(&format!("{kind},mtu={bad}"));
                assert!(e.contains("mtu"), "{kind} mtu={bad}: {e}");
            }
            let e = err(&format!("{kind},port-security=on"));
            assert!(
                e.starts_with("port-security=on: ") && e.contains("add mac=M"),
                "{e}"
            );
            assert!(parse_port(&format!("{kind},port-security=off")).is_ok());
        }
        let off = parse_port("afpacket:ifname=v").unwrap();
        assert_eq!(off.l2(), &PortL2::default());
        assert_eq!(off.mac(), None);
        assert!(err("tap:name=t,mac=01:00:5e:00:00:01").contains("unicast"));
        assert_eq!(
            err("afpacket:ifname=v,mac-limit=65537"),
            "mac-limit=65537: mac-limit must be 0..=65536 addresses (0: no limit)"
        );
        assert!(err("afpacket:ifname=v,flood-limit=10000001").contains("0..=10000000"));
        assert!(err("afpacket:ifname=v,flood-limit=fast").contains("expected a number"));
        assert!(err("afpacket:ifname=v,port-security").contains("`port-security` needs a value"));
    }

    #[test]
    fn trunk_and_native() {
        let l2 = |s: &str| parse_port(s).unwrap().l2().clone();
        let t = l2("afpacket:ifname=v,trunk=30,10,20-25,21,native=5");
        assert_eq!(t.trunk.as_deref(), Some("10,20-25,30"), "sorted and merged");
        assert_eq!(t.native, Some(5));
        let t = l2("tap:name=t,native=7,trunk=100-102,103");
        assert_eq!(t.trunk.as_deref(), Some("100-103"));
        assert_eq!(
            l2("tap:name=t,native=7").trunk,
            None,
            "native alone: all VLANs"
        );
        // A numeric item continues the trunk list only right after it.
        assert!(err("tap:name=t,native=7,10").contains("unknown key `10`"));
        assert_eq!(
            err("afpacket:ifname=v,vlan=5,trunk=10"),
            "trunk=10: vlan= makes an access port and trunk= a trunk port: give one (vlan=V \
             alone, or trunk=LIST with native=V for untagged frames)"
        );
        assert!(err("afpacket:ifname=v,vlan=5,native=5").starts_with("native=5: "));
        assert_eq!(
            err("afpacket:ifname=v,trunk=0"),
            "trunk=0: trunk must be VLAN ids 1..=4094"
        );
        assert!(err("afpacket:ifname=v,trunk=10,4095").contains("1..=4094"));
        assert!(err("afpacket:ifname=v,trunk=30-20").contains("low to high"));
        assert!(err("afpacket:ifname=v,trunk=ten").contains("e.g. trunk=10,20-30"));
        assert!(err("afpacket:ifname=v,trunk=").contains("`trunk` needs a value"));
        assert_eq!(
            err("afpacket:ifname=v,native=0"),
            "native=0: native must be 1..=4094"
        );
        assert!(err("afpacket:ifname=v,trunk=10,trunk=20").contains("given twice"));
        let mut all = VlanSet::empty();
        for v in [1, 2, 3, 5, 4094] {
            all.insert(v);
        }
        assert_eq!(vlan_list(&all), "1-3,5,4094");
        assert_eq!(vlan_list(&VlanSet::all()), "1-4094");
    }

    #[test]
    fn changes_apply_to_specs_as_a_whole() {
        let apply = |spec: &str, change: &str| {
            apply_change(&parse_port(spec).unwrap(), &parse_change(change).unwrap())
        };
        let p = apply("afpacket:ifname=v,vlan=10", "trunk=20-21").unwrap();
        assert_eq!(p.vlan(), None, "trunk= clears the access VLAN");
        assert_eq!(p.l2().trunk.as_deref(), Some("20-21"));
        let p = apply("afpacket:ifname=v,trunk=20,native=3", "vlan=9").unwrap();
        assert_eq!(
            (p.vlan(), p.l2().trunk.clone(), p.l2().native),
            (Some(9), None, None)
        );
        let p = apply("afpacket:ifname=v,trunk=20,native=3", "native=none").unwrap();
        assert_eq!((p.l2().trunk.as_deref(), p.l2().native), (Some("20"), None));
        let p = apply("afpacket:ifname=v,trunk=20", "trunk=none").unwrap();
        assert_eq!(p.l2().trunk, None);
        let p = apply(
            "afpacket:ifname=v",
            "mac=02:00:00:00:00:01,port-security=on,mac-limit=2",
        )
        .unwrap();
        assert_eq!(p.mac(), Some("02:00:00:00:00:01"));
        assert!(p.l2().port_security && p.l2().mac_limit == 2);
        let e = apply("tap:name=t", "port-security=on")
            .unwrap_err()
            .to_string();
        assert!(e.contains("add mac=M"), "{e}");
        assert!(apply("tap:name=t,mac=02:00:00:00:00:01", "port-security=on").is_ok());
        let e = apply(
            "vhost-user:path=/a,mac=02:00:00:00:00:01",
            "mac=02:00:00:00:00:02",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("del-port and add-port"), "{e}");
        let p = apply(
            "vhost-user:path=/a,mac=02:00:00:00:00:01",
            "port-security=on",
        )
        .unwrap();
        assert!(p.l2().port_security);
        let p = apply("tap:name=t,flood-limit=10", "flood-limit=0").unwrap();
        assert_eq!(p.l2().flood_limit, 0);
    }

    #[test]
    fn vhost_frontend_keys_round_trip() {
        let spec = parse_port(
            "vhost-user:path=/tmp/a,socket-mode=660,socket-group=107,max-mem-regions=9,packed=on",
        )
        .unwrap();
        let PortSpec::VhostUser { frontend, .. } = &spec else {
            panic!("{spec:?}")
        };
        assert_eq!(
            frontend,
            &VhostFrontend {
                socket_mode: Some(0o660),
                socket_group: Some("107".into()),
                max_mem_regions: Some(9),
                packed: true,
            }
        );
        assert_eq!(normalize_spec(&spec).unwrap(), spec);
        assert!(parse_port("vhost-user:path=/tmp/a,socket-mode=").is_err());
        assert!(parse_port("tap:name=x,socket-mode=0660").is_err());
    }
}
