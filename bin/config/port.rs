//! Port specifications: the `--port KIND:key=value,...` syntax, the TOML `[[port]]`
//! table and specs arriving on the ctl socket all go through [`RawPort::into_spec`], so
//! every path gives the same error for the same mistake.
//!
//! The syntax is a public interface (scripts outside the project use it): add keys, never
//! rename or repurpose one.

use serde::Deserialize;
use switch::Mac;

use crate::control::{PortChange, PortSpec, QmpSpec};

/// Queue pairs a vhost-user port may offer (the contract in `control.rs`).
pub const VHOST_QUEUES_MAX: i64 = 16;
/// Linux `MAX_TAP_QUEUES` (drivers/net/tun.c).
pub const TAP_QUEUES_MAX: i64 = 256;
/// `sun_path` is 108 bytes including the terminating NUL (unix(7)).
pub const SUN_PATH_MAX: usize = 107;
/// `IFNAMSIZ` is 16 including the terminating NUL (netdevice(7)).
pub const IFNAME_MAX: usize = 15;

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
];
/// The largest split ring (virtio 1.2 §2.7), vring-engine's default.
pub const MAX_QUEUE_SIZE: i64 = vring_engine::MAX_QUEUE_SIZE as i64;
/// QEMU's `id_wellformed()` (util/id.c) limits ids to this alphabet; QEMU ids have no
/// length limit, ours keep log lines and QMP requests small.
const QEMU_ID_MAX: usize = 128;
const TAP_KEYS: &[&str] = &["name", "queues", "vlan"];
const AFPACKET_KEYS: &[&str] = &["ifname", "vlan"];

/// The port kinds and the keys each accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    VhostUser,
    Tap,
    AfPacket,
}

impl Kind {
    fn parse(s: &str) -> Result<Kind, PortError> {
        match s {
            "vhost-user" => Ok(Kind::VhostUser),
            "tap" => Ok(Kind::Tap),
            "afpacket" => Ok(Kind::AfPacket),
            other => Err(PortError::UnknownKind(other.to_string())),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::VhostUser => "vhost-user",
            Kind::Tap => "tap",
            Kind::AfPacket => "afpacket",
        }
    }

    fn keys(self) -> &'static [&'static str] {
        match self {
            Kind::VhostUser => VHOST_KEYS,
            Kind::Tap => TAP_KEYS,
            Kind::AfPacket => AFPACKET_KEYS,
        }
    }

    fn example(self) -> &'static str {
        match self {
            Kind::VhostUser => "vhost-user:path=/run/vm1.sock",
            Kind::Tap => "tap:name=rs0",
            Kind::AfPacket => "afpacket:ifname=veth0",
        }
    }
}

/// Why a port spec was rejected. Each message names the key, the value and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("unknown port kind `{0}`: use vhost-user, tap or afpacket")]
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
        k
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
        Ok(match kind {
            Kind::VhostUser => {
                let path = self.path.ok_or_else(|| missing("path"))?;
                check_socket_path(&path)?;
                let queues = match self.queues {
                    Some(q) => check_range("queues", q, 1, VHOST_QUEUES_MAX)?,
                    None => 1,
                };
                let mac = self.mac.map(|m| check_mac(&m)).transpose()?;
                let qmp = check_qmp(&path, self.qmp, self.qmp_nic)?;
                let max_queue_size = self.max_queue_size.map(check_queue_size).transpose()?;
                PortSpec::VhostUser {
                    path,
                    queues,
                    client: self.client.unwrap_or(false),
                    mac,
                    vlan,
                    offloads: self.offloads.unwrap_or(true),
                    qmp,
                    max_queue_size,
                }
            }
            Kind::Tap => {
                let name = self.name.ok_or_else(|| missing("name"))?;
                check_ifname("name", &name)?;
                let queues = self
                    .queues
                    .map(|q| check_range("queues", q, 1, TAP_QUEUES_MAX))
                    .transpose()?;
                PortSpec::Tap { name, queues, vlan }
            }
            Kind::AfPacket => {
                let ifname = self.ifname.ok_or_else(|| missing("ifname"))?;
                check_ifname("ifname", &ifname)?;
                PortSpec::AfPacket { ifname, vlan }
            }
        })
    }
}

/// Re-validates a spec that did not come from our parser (the ctl socket accepts JSON
/// from any local root process): same rules as `--port`.
pub fn validate_spec(spec: &PortSpec) -> Result<(), PortError> {
    to_raw(spec).into_spec().map(|_| ())
}

fn to_raw(spec: &PortSpec) -> RawPort {
    match spec {
        PortSpec::VhostUser {
            path,
            queues,
            client,
            mac,
            vlan,
            offloads,
            qmp,
            max_queue_size,
        } => RawPort {
            kind: "vhost-user".into(),
            path: Some(path.clone()),
            queues: Some(i64::from(*queues)),
            client: Some(*client),
            mac: mac.clone(),
            vlan: vlan.map(i64::from),
            offloads: Some(*offloads),
            qmp: qmp.as_ref().map(|q| q.path.clone()),
            qmp_nic: qmp.as_ref().and_then(|q| q.nic.clone()),
            max_queue_size: max_queue_size.map(i64::from),
            ..RawPort::default()
        },
        PortSpec::Tap { name, queues, vlan } => RawPort {
            kind: "tap".into(),
            name: Some(name.clone()),
            queues: queues.map(i64::from),
            vlan: vlan.map(i64::from),
            ..RawPort::default()
        },
        PortSpec::AfPacket { ifname, vlan } => RawPort {
            kind: "afpacket".into(),
            ifname: Some(ifname.clone()),
            vlan: vlan.map(i64::from),
            ..RawPort::default()
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

/// IEEE 802.1Q-2018 §9.6: VID 0 means "priority tag only" and 4095 is reserved.
fn check_vlan(v: i64) -> Result<u16, PortError> {
    check_range("vlan", v, 1, i64::from(switch::vlan::VID_MAX))
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
    for item in rest.split(',').filter(|i| !i.is_empty()) {
        let (key, value) = match item.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (item, None),
        };
        if seen.contains(&key) {
            return Err(PortError::DuplicateKey(key.to_string()));
        }
        seen.push(key);
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
            "qmp" => raw.qmp = Some(need("qmp", "/run/vm1.qmp")?.to_string()),
            "qmp-nic" => raw.qmp_nic = Some(need("qmp-nic", "net0")?.to_string()),
            "max-queue-size" => {
                raw.max_queue_size = Some(parse_int(
                    "max-queue-size",
                    need("max-queue-size", "1024")?,
                )?)
            }
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

/// Parses a `set-port` change: `vlan=V` or `vlan=none`.
pub fn parse_change(s: &str) -> Result<PortChange, PortError> {
    let mut change = PortChange { vlan: None };
    for item in s.split(',').filter(|i| !i.is_empty()) {
        let (key, value) = item.split_once('=').unwrap_or((item, ""));
        match key {
            "vlan" => {
                if change.vlan.is_some() {
                    return Err(PortError::DuplicateKey("vlan".into()));
                }
                change.vlan = Some(match value {
                    "" => {
                        return Err(PortError::NoValue {
                            key: "vlan",
                            example: "10 (or vlan=none)",
                        })
                    }
                    "none" => None,
                    v => Some(check_vlan(parse_int("vlan", v)?)?),
                });
            }
            other => {
                return Err(PortError::UnknownKey {
                    kind: "set-port",
                    key: other.to_string(),
                    valid: &["vlan"],
                })
            }
        }
    }
    if change.vlan.is_none() {
        return Err(PortError::NoValue {
            key: "vlan",
            example: "10 (or vlan=none)",
        });
    }
    Ok(change)
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
                vlan: None
            }
        );
        assert_eq!(
            parse_port("afpacket:ifname=veth0,vlan=4094").unwrap(),
            PortSpec::AfPacket {
                ifname: "veth0".into(),
                vlan: Some(4094)
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
        };
        assert!(validate_spec(&bad)
            .unwrap_err()
            .to_string()
            .starts_with("max-queue-size=768: "));
    }

    #[test]
    fn unknown_key_lists_valid_ones() {
        let e = err("tap:name=rs0,path=/x");
        assert_eq!(
            e,
            "unknown key `path` for tap ports; valid keys: name, queues, vlan"
        );
        assert!(err("afpacket:ifname=v,speed=10").contains("valid keys: ifname, vlan"));
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
        };
        assert!(validate_spec(&bad).is_err());
        let good = parse_port("tap:name=rs0").unwrap();
        assert!(validate_spec(&good).is_ok());
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
        ] {
            let spec = parse_port(s).unwrap();
            assert_eq!(to_raw(&spec).into_spec().unwrap(), spec, "{s}");
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
                validate_spec(&spec).unwrap();
                assert_eq!(to_raw(&spec).into_spec().unwrap(), spec, "{text}");
            }
            let _ = parse_change(&text);
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
        assert!(parse_change("").is_err());
        assert!(parse_change("mtu=9000")
            .unwrap_err()
            .to_string()
            .contains("valid keys: vlan"));
        assert!(parse_change("vlan=1,vlan=2").is_err());
    }
}
