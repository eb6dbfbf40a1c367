//! The network configuration on stdin (CNI 1.0.0 SPEC.md, "Section 1: Network
//! configuration format") and the ringswitch port it asks for.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{code, CniError, Result};
use crate::result::{CniResult, Dns};

/// The CNI spec versions this plugin speaks. 1.1.0 (STATUS, GC) is not among them: GC
/// would need the plugin to know every attachment of the network.
pub const SUPPORTED_VERSIONS: &[&str] = &["1.0.0", "1.1.0"];

/// The daemon's default control socket (`ringswitch run --ctl`).
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/ringswitch/ctl.sock";

/// The parts of the configuration this plugin reads; every other key is ignored (the
/// runtime adds its own, and the IPAM plugin reads the same text).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin: String,
    #[serde(default)]
    pub ipam: Option<Ipam>,
    #[serde(default)]
    pub dns: Option<Dns>,
    /// MTU of both ends of the veth pair.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// The daemon's control socket.
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// Options of the afpacket port, forwarded to the daemon as `key=value`.
    #[serde(default)]
    pub port: Map<String, Value>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// The result of the previous ADD (CHECK, DEL).
    #[serde(default)]
    pub prev_result: Option<Value>,
    /// GC (CNI 1.1.0): the attachments the runtime still uses; everything else of this
    /// network is released.
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Ipam {
    #[serde(rename = "type")]
    pub plugin: String,
}

/// `runtimeConfig` (capability arguments, CONVENTIONS.md): the `mac` capability.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RuntimeConfig {
    #[serde(default)]
    pub mac: Option<String>,
}

impl NetConf {
    /// Parses stdin: not JSON is code 6, JSON of the wrong shape code 7, an unsupported
    /// `cniVersion` code 1.
    pub fn parse(stdin: &[u8]) -> Result<NetConf> {
        let v: Value = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(code::DECODE_FAILURE, "network configuration is not JSON")
                .with_details(e.to_string())
        })?;
        let conf: NetConf = serde_json::from_value(v).map_err(|e| {
            CniError::new(code::INVALID_CONFIG, "invalid network configuration")
                .with_details(e.to_string())
        })?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("incompatible CNI version {:?}", conf.cni_version),
            )
            .with_details(format!("ringswitch-cni supports {SUPPORTED_VERSIONS:?}")));
        }
        if let Some(m) = conf.mtu {
            if !(68..=65535).contains(&m) {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!("mtu {m}: must be 68..=65535"),
                ));
            }
        }
        Ok(conf)
    }

    pub fn control_socket(&self) -> PathBuf {
        self.control_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET))
    }

    /// The `ipam.type` to delegate to (required: this plugin assigns no addresses).
    pub fn ipam_plugin(&self) -> Result<&str> {
        match &self.ipam {
            Some(i) if valid_plugin_name(&i.plugin) => Ok(&i.plugin),
            Some(i) => Err(CniError::new(
                code::INVALID_CONFIG,
                format!("ipam.type {:?} is not a plugin name", i.plugin),
            )),
            None => Err(CniError::new(
                code::INVALID_CONFIG,
                "missing \"ipam\": give an IPAM plugin, e.g. {\"type\": \"host-local\", ...}",
            )),
        }
    }

    /// The container interface's MAC: `runtimeConfig.mac`, then `CNI_ARGS` `MAC=`, then
    /// `port.mac`; None lets the kernel choose. Validated here because it is also set on
    /// the interface.
    pub fn container_mac(&self, cni_args_mac: Option<&str>) -> Result<Option<String>> {
        let from_port = match self.port.get("mac") {
            None => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(other) => {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!("port.mac {other}: give a string like \"02:00:00:00:00:01\""),
                ))
            }
        };
        match self
            .runtime_config
            .mac
            .as_deref()
            .or(cni_args_mac)
            .or(from_port)
        {
            Some(m) => check_mac(m).map(Some),
            None => Ok(None),
        }
    }

    /// The port as `ringswitch ctl add-port` takes it: `afpacket:ifname=HOST[,key=value]…`
    /// with `port`'s options (the daemon validates them, so options it learns later pass
    /// through unchanged) and `mac=` the container's MAC when one was asked for.
    pub fn port_spec(&self, host_ifname: &str, mac: Option<&str>) -> Result<String> {
        let mut spec = format!("afpacket:ifname={host_ifname}");
        // Sorted, whatever map serde_json was built with: the same config, the same spec.
        let mut options: Vec<(&String, &Value)> = self.port.iter().collect();
        options.sort_by(|a, b| a.0.cmp(b.0));
        for (key, value) in options {
            if key == "mac" {
                continue;
            }
            let key_ok = key.starts_with(|c: char| c.is_ascii_lowercase())
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
            if !key_ok || key == "ifname" {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!("port option {key:?}: not an afpacket port option"),
                )
                .with_details("ifname is the plugin's; options are lowercase words like vlan"));
            }
            let text = option_text(key, value)?;
            spec.push(',');
            spec.push_str(key);
            spec.push('=');
            spec.push_str(&text);
        }
        if let Some(m) = mac {
            spec.push_str(",mac=");
            spec.push_str(m);
        }
        Ok(spec)
    }

    /// `prevResult` as a result, for CHECK.
    pub fn prev_result(&self) -> Result<Option<CniResult>> {
        self.prev_result
            .clone()
            .map(|v| {
                serde_json::from_value(v).map_err(|e| {
                    CniError::new(code::DECODE_FAILURE, "prevResult is not a CNI result")
                        .with_details(e.to_string())
                })
            })
            .transpose()
    }
}

/// One option value as `--port` text: strings as they are, numbers in decimal, booleans
/// on/off, lists joined with `,` (as they are written on the command line).
fn option_text(key: &str, v: &Value) -> Result<String> {
    let bad = || {
        CniError::new(
            code::INVALID_CONFIG,
            format!("port.{key} = {v}: give a string, number, boolean or list of them"),
        )
    };
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => if *b { "on" } else { "off" }.to_string(),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>>>()?
            .join(","),
        _ => return Err(bad()),
    };
    if text.is_empty()
        || text
            .chars()
            .any(|c| c == '=' || c.is_control() || c.is_whitespace())
    {
        return Err(bad().with_details("values are non-empty and have no `=` or whitespace"));
    }
    Ok(text)
}

/// A CNI plugin is an executable's file name: no path separators, not hidden.
fn valid_plugin_name(n: &str) -> bool {
    !n.is_empty() && !n.starts_with('.') && !n.contains('/')
}

/// A unicast Ethernet address (IEEE 802-2014 §8.2: I/G bit clear, not all zero),
/// normalised to lowercase.
pub fn check_mac(s: &str) -> Result<String> {
    let bytes: Vec<Option<u8>> = s
        .split(':')
        .map(|b| {
            (b.len() == 2)
                .then(|| u8::from_str_radix(b, 16).ok())
                .flatten()
        })
        .collect();
    let bad = |why: &str| CniError::new(code::INVALID_CONFIG, format!("mac {s:?}: {why}"));
    if bytes.len() != 6 || bytes.iter().any(Option::is_none) {
        return Err(bad("write six hex bytes, e.g. 02:00:00:00:00:01"));
    }
    let b: Vec<u8> = bytes.into_iter().flatten().collect();
    if b[0] & 1 != 0 || b.iter().all(|&x| x == 0) {
        return Err(bad("a NIC address must be unicast and not zero"));
    }
    Ok(s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> Result<NetConf> {
        NetConf::parse(json.as_bytes())
    }

    const OK: &str = r#"{"cniVersion":"1.0.0","name":"rsnet","type":"ringswitch-cni",
        "controlSocket":"/tmp/ctl.sock","mtu":1400,
        "port":{"vlan":10,"port-security":true,"trunk":[10,"20-30"]},
        "ipam":{"type":"host-local","subnet":"198.18.0.0/24"},
        "runtimeConfig":{"mac":"02:AA:00:00:00:01"},"somethingElse":[1,2]}"#;

    #[test]
    fn parses_the_keys_it_uses_and_ignores_others() {
        let c = conf(OK).unwrap();
        assert_eq!(c.name, "rsnet");
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.control_socket(), PathBuf::from("/tmp/ctl.sock"));
        assert_eq!(c.ipam_plugin().unwrap(), "host-local");
        assert_eq!(
            c.container_mac(Some("02:00:00:00:00:09"))
                .unwrap()
                .as_deref(),
            Some("02:aa:00:00:00:01"),
            "runtimeConfig wins over CNI_ARGS"
        );
        assert_eq!(
            c.port_spec("rs0123", Some("02:aa:00:00:00:01")).unwrap(),
            "afpacket:ifname=rs0123,port-security=on,trunk=10,20-30,vlan=10,mac=02:aa:00:00:00:01"
        );
        let c =
            conf(r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"type":"x"}}"#).unwrap();
        assert_eq!(c.control_socket(), PathBuf::from(DEFAULT_CONTROL_SOCKET));
        assert_eq!(c.container_mac(None).unwrap(), None);
        assert_eq!(c.port_spec("h", None).unwrap(), "afpacket:ifname=h");
    }

    #[test]
    fn config_errors_have_the_spec_codes() {
        let code_of = |j: &str| conf(j).unwrap_err().code;
        assert_eq!(code_of("{not json"), code::DECODE_FAILURE);
        assert_eq!(
            code_of(r#"{"cniVersion":"1.0.0","name":"n"}"#),
            code::INVALID_CONFIG
        );
        assert_eq!(
            code_of(r#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":"big"}"#),
            code::INVALID_CONFIG
        );
        assert_eq!(
            code_of(r#"{"cniVersion":"1.0.0","name":"n","type":"t","mtu":9}"#),
            code::INVALID_CONFIG
        );
        assert_eq!(
            code_of(r#"{"cniVersion":"0.3.1","name":"n","type":"t"}"#),
            code::INCOMPATIBLE_VERSION
        );
        let c = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"t"}"#).unwrap();
        assert_eq!(c.ipam_plugin().unwrap_err().code, code::INVALID_CONFIG);
        let c =
            conf(r#"{"cniVersion":"1.0.0","name":"n","type":"t","ipam":{"type":"../x"}}"#).unwrap();
        assert_eq!(c.ipam_plugin().unwrap_err().code, code::INVALID_CONFIG);
    }

    #[test]
    fn port_options_are_checked_only_for_shape() {
        let spec = |port: &str| {
            conf(&format!(
                r#"{{"cniVersion":"1.0.0","name":"n","type":"t","port":{port}}}"#
            ))
            .unwrap()
            .port_spec("h", None)
        };
        assert_eq!(
            spec(r#"{"future-key":"x"}"#).unwrap(),
            "afpacket:ifname=h,future-key=x"
        );
        for bad in [
            r#"{"ifname":"eth9"}"#,
            r#"{"Vlan":1}"#,
            r#"{"vlan":{"a":1}}"#,
            r#"{"vlan":""}"#,
            r#"{"vlan":"1,ifname=x"}"#,
            r#"{"vlan":"1 2"}"#,
            r#"{"vlan":null}"#,
        ] {
            assert_eq!(spec(bad).unwrap_err().code, code::INVALID_CONFIG, "{bad}");
        }
    }

    #[test]
    fn macs() {
        assert_eq!(check_mac("02:00:00:0A:0b:01").unwrap(), "02:00:00:0a:0b:01");
        for bad in [
            "01:00:00:00:00:01",
            "00:00:00:00:00:00",
            "02:00:00:00:00",
            "2:0:0:0:0:1",
            "zz:00:00:00:00:01",
        ] {
            assert!(check_mac(bad).is_err(), "{bad}");
        }
        let c = conf(r#"{"cniVersion":"1.0.0","name":"n","type":"t","port":{"mac":7}}"#).unwrap();
        assert_eq!(
            c.container_mac(None).unwrap_err().code,
            code::INVALID_CONFIG
        );
    }
}
