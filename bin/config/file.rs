//! The TOML config file. Keys are the `run` flags without `--`, and each `[[port]]`
//! table takes the `--port` keys plus `kind`. Unknown keys are errors (a typo must not
//! silently fall back to a default), see examples/ringswitch.toml.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::port::RawPort;
use crate::cli::LogFormat;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub workers: Option<i64>,
    pub poll_us: Option<i64>,
    pub ctl: Option<PathBuf>,
    pub metrics: Option<String>,
    pub metrics_allow_remote: Option<bool>,
    pub log_format: Option<LogFormat>,
    pub mcast_snooping: Option<bool>,
    pub mcast_querier: Option<bool>,
    pub mcast_querier_ip: Option<std::net::Ipv4Addr>,
    pub pin_guest_memory: Option<bool>,
    #[serde(default)]
    pub port: Vec<RawPort>,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

impl FileConfig {
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, FileError> {
        toml::from_str(text).map_err(|e| FileError::Parse {
            path: path.to_path_buf(),
            // toml's message carries line, column and the offending snippet; keep it
            // but drop the trailing newline so our one-line prefix stays readable.
            message: e.to_string().trim_end().to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<FileConfig, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<FileConfig, String> {
        FileConfig::parse(s, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn full_file() {
        let c = parse(
            r#"
            workers = 2
            poll-us = 20
            ctl = "/tmp/ctl.sock"
            metrics = "127.0.0.1:9101"
            log-format = "json"

            [[port]]
            kind = "vhost-user"
            path = "/run/vm1.sock"
            queues = 2
            mac = "52:54:00:00:00:01"
            qmp = "/run/vm1.qmp"
            qmp-nic = "net0"

            [[port]]
            kind = "tap"
            name = "rs0"
            "#,
        )
        .unwrap();
        assert_eq!(c.workers, Some(2));
        assert_eq!(c.log_format, Some(LogFormat::Json));
        assert_eq!(c.port.len(), 2);
        assert_eq!(c.port[1].name.as_deref(), Some("rs0"));
        assert_eq!(c.port[0].qmp.as_deref(), Some("/run/vm1.qmp"));
        assert_eq!(c.port[0].qmp_nic.as_deref(), Some("net0"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_key_named() {
        let e = parse("worker = 2").unwrap_err();
        assert!(e.contains("unknown field `worker`"), "{e}");
        assert!(e.contains("workers"), "lists the valid keys: {e}");
        let e = parse("[[port]]\nkind = \"tap\"\nnmae = \"x\"").unwrap_err();
        assert!(e.contains("unknown field `nmae`"), "{e}");
        let e = parse("log-format = \"xml\"").unwrap_err();
        assert!(e.contains("xml"), "{e}");
        let e = parse("[[port]]\nname = \"x\"").unwrap_err();
        assert!(e.contains("kind"), "{e}");
    }

    /// A vxlan port's remotes: a `;`-separated string as in `--port`, or a TOML array.
    #[test]
    fn vxlan_ports_take_a_remote_string_or_array() {
        let c = parse(
            r#"
            [[port]]
            kind = "vxlan"
            local = "198.18.0.1"
            remote = ["198.18.0.2", "198.18.0.3"]
            vni = 42
            vlan = 10

            [[port]]
            kind = "vxlan"
            local = "2001:db8::1"
            remote = "2001:db8::2;2001:db8::3"
            vni = 43
            dstport = 8472
            "#,
        )
        .unwrap();
        let specs: Vec<_> = c.port.into_iter().map(|p| p.into_spec().unwrap()).collect();
        let cli = [
            "vxlan:local=198.18.0.1,remote=198.18.0.2;198.18.0.3,vni=42,vlan=10",
            "vxlan:local=2001:db8::1,remote=2001:db8::2;2001:db8::3,vni=43,dstport=8472",
        ]
        .map(|s| super::super::port::parse_port(s).unwrap());
        assert_eq!(specs, cli);
        let e = parse("[[port]]\nkind = \"vxlan\"\nremote = 5").unwrap_err();
        assert!(e.contains("remote"), "{e}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let e = FileConfig::load(Path::new("/nonexistent/rs.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/rs.toml"), "{e}");
    }
}
