//! The runtime's parameters: `CNI_*` environment variables (CNI 1.1.0 SPEC.md,
//! "Parameters"; STATUS and GC take only `CNI_COMMAND` and `CNI_PATH`).

use std::path::PathBuf;

use crate::error::{code, CniError, Result};

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    /// CNI 1.1.0: can the plugin take ADDs now?
    Status,
    /// CNI 1.1.0: release what no valid attachment uses.
    Gc,
}

impl Command {
    fn parse(s: &str) -> Result<Command> {
        match s {
            "ADD" => Ok(Command::Add),
            "DEL" => Ok(Command::Del),
            "CHECK" => Ok(Command::Check),
            "VERSION" => Ok(Command::Version),
            "STATUS" => Ok(Command::Status),
            "GC" => Ok(Command::Gc),
            other => Err(CniError::new(
                code::INVALID_ENV,
                format!("unsupported CNI_COMMAND {other:?}"),
            )
            .with_details(
                "ringswitch-cni implements ADD, DEL, CHECK, VERSION, STATUS and GC of CNI 1.1.0",
            )),
        }
    }
}

/// The parameters of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    /// `CNI_NETNS`; may be absent for DEL.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    /// `CNI_ARGS` as key/value pairs.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`, split on ':'.
    pub path: Vec<PathBuf>,
}

impl Env {
    /// Reads the parameters through `var` (`std::env::var` in the binary).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Env> {
        let missing = |name: &str| {
            CniError::new(code::INVALID_ENV, format!("{name} is not set"))
                .with_details("the container runtime sets CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_PATH")
        };
        let command = Command::parse(&var("CNI_COMMAND").ok_or_else(|| missing("CNI_COMMAND"))?)?;
        let nonempty = |name: &str| var(name).filter(|v| !v.is_empty());
        if command == Command::Version {
            return Ok(Env::network_only(command, Vec::new()));
        }
        let path: Vec<PathBuf> = nonempty("CNI_PATH")
            .ok_or_else(|| missing("CNI_PATH"))?
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect();
        // STATUS and GC concern the network, not one attachment.
        if matches!(command, Command::Status | Command::Gc) {
            return Ok(Env::network_only(command, path));
        }
        let container_id = nonempty("CNI_CONTAINERID").ok_or_else(|| missing("CNI_CONTAINERID"))?;
        check_container_id(&container_id)?;
        let ifname = nonempty("CNI_IFNAME").ok_or_else(|| missing("CNI_IFNAME"))?;
        check_ifname(&ifname)?;
        let netns = nonempty("CNI_NETNS").map(PathBuf::from);
        if netns.is_none() && command != Command::Del {
            return Err(missing("CNI_NETNS"));
        }
        let args = parse_args(&var("CNI_ARGS").unwrap_or_default())?;
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
            args,
            path,
        })
    }

    /// The parameters of a command that names no attachment (VERSION, STATUS, GC).
    fn network_only(command: Command, path: Vec<PathBuf>) -> Env {
        Env {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: Vec::new(),
            path,
        }
    }

    /// The value of `key` in `CNI_ARGS`.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `CNI_ARGS`: "FOO=BAR;ABC=123".
fn parse_args(s: &str) -> Result<Vec<(String, String)>> {
    s.split(';')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_ARGS: {kv:?} is not KEY=VALUE"),
            )),
        })
        .collect()
}

/// CNI 1.0.0 SPEC.md, "Parameters": a container id is alphanumeric plus `_`, `.`, `-`,
/// starting alphanumeric.
fn check_container_id(id: &str) -> Result<()> {
    let mut chars = id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_CONTAINERID {id:?}: must be alphanumeric, `_`, `.` or `-`"),
        ))
    }
}

/// CNI 1.0.0 SPEC.md, "Parameters": Linux interface name rules (IFNAMSIZ 16 with NUL).
pub fn check_ifname(n: &str) -> Result<()> {
    let ok = !n.is_empty()
        && n.len() < 16
        && n != "."
        && n != ".."
        && !n.chars().any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(())
    } else {
        Err(CniError::new(
            code::INVALID_ENV,
            format!(
                "CNI_IFNAME {:?}: 1 to 15 bytes, not `.`/`..`, no `/`, `:` or whitespace",
                n.escape_debug().to_string()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Env> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_vars(|k| m.get(k).cloned())
    }

    const ADD: &[(&str, &str)] = &[
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc-1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni::/opt/cni/bin"),
        ("CNI_ARGS", "IgnoreUnknown=1;MAC=02:00:00:00:00:01"),
    ];

    #[test]
    fn add_parameters() {
        let e = env(ADD).unwrap();
        assert_eq!(e.command, Command::Add);
        assert_eq!(
            e.netns.as_deref(),
            Some(std::path::Path::new("/run/netns/x"))
        );
        assert_eq!(
            e.path,
            vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")]
        );
        assert_eq!(e.arg("MAC"), Some("02:00:00:00:00:01"));
        assert_eq!(e.arg("FOO"), None);
    }

    #[test]
    fn status_and_gc_need_only_the_command_and_path() {
        for c in ["STATUS", "GC"] {
            let e = env(&[("CNI_COMMAND", c), ("CNI_PATH", "/usr/lib/cni")]).unwrap();
            assert_eq!(e.path, vec![PathBuf::from("/usr/lib/cni")], "{c}");
            assert!(e.container_id.is_empty() && e.netns.is_none(), "{c}");
            assert_eq!(
                env(&[("CNI_COMMAND", c)]).unwrap_err().code,
                code::INVALID_ENV,
                "{c} without CNI_PATH"
            );
        }
    }

    #[test]
    fn missing_and_bad_variables_are_code_4() {
        let without = |name: &str| -> Vec<(&str, &str)> {
            ADD.iter().copied().filter(|(k, _)| *k != name).collect()
        };
        for name in [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_PATH",
        ] {
            let e = env(&without(name)).unwrap_err();
            assert_eq!(e.code, code::INVALID_ENV, "{name}");
            assert!(e.msg.contains(name), "{e}");
        }
        let with = |k: &'static str, v: &'static str| -> Vec<(&'static str, &'static str)> {
            let mut p = without(k);
            p.push((k, v));
            p
        };
        for (k, v) in [
            ("CNI_COMMAND", "INIT"),
            ("CNI_IFNAME", "a-very-long-name0"),
            ("CNI_IFNAME", "et/h0"),
            ("CNI_IFNAME", ".."),
            ("CNI_CONTAINERID", "-x"),
            ("CNI_ARGS", "novalue"),
        ] {
            assert_eq!(
                env(&with(k, v)).unwrap_err().code,
                code::INVALID_ENV,
                "{k}={v}"
            );
        }
        // DEL may come without a namespace (it is gone); VERSION needs nothing else.
        let mut del = with("CNI_COMMAND", "DEL");
        del.retain(|(k, _)| *k != "CNI_NETNS");
        assert_eq!(env(&del).unwrap().netns, None);
        assert_eq!(
            env(&[("CNI_COMMAND", "VERSION")]).unwrap().command,
            Command::Version
        );
    }
}
