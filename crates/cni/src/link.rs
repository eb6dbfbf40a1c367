//! The veth pair and the container's addresses, made with iproute2's `ip` (one command
//! per step, JSON output read back with `ip -j`). Commands for the container run from a
//! thread that entered its network namespace (setns(2)), so `ip` inherits it.

use std::fs::File;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use crate::error::{code, CniError, Result};
use crate::result::Cidr;

/// iproute2's `ip`: runtimes may run plugins with a minimal PATH.
fn ip_program() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("ip")
}

/// Starts `ip ARGS` and waits for it; only failing to run it at all is an error here.
fn run_ip(args: &[&str]) -> Result<std::process::Output> {
    Command::new(ip_program()).args(args).output().map_err(|e| {
        CniError::new(code::IO_FAILURE, "cannot run `ip` (iproute2)").with_details(e.to_string())
    })
}

/// Runs `ip ARGS`; non-zero exit is a LINK_FAILED error quoting its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = run_ip(args)?;
    if !out.status.success() {
        return Err(
            CniError::new(code::LINK_FAILED, format!("ip {} failed", args.join(" ")))
                .with_details(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A container's network namespace, opened once.
pub struct Netns {
    file: File,
}

impl Netns {
    /// Opens `path`; a missing namespace is "container unknown" (code 3).
    pub fn open(path: &Path) -> Result<Netns> {
        File::open(path).map(|file| Netns { file }).map_err(|e| {
            let c = if e.kind() == std::io::ErrorKind::NotFound {
                code::UNKNOWN_CONTAINER
            } else {
                code::IO_FAILURE
            };
            CniError::new(c, format!("network namespace {}: {e}", path.display()))
        })
    }

    /// Runs `f` on a thread inside the namespace (the caller's thread stays where it is).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let file = &self.file;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    CniError::new(code::IO_FAILURE, "cannot enter the network namespace")
                        .with_details(e.to_string())
                })?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(CniError::new(code::IO_FAILURE, "namespace thread panicked")))
        })
    }
}

/// Creates veth `host` here and its peer `ifname` directly inside `netns_path` (so a
/// name clash with an interface of the host is impossible), with `mtu` on both ends and
/// `mac` on the peer.
pub fn create_veth(
    host: &str,
    ifname: &str,
    netns_path: &Path,
    mtu: Option<u32>,
    mac: Option<&str>,
) -> Result<()> {
    let mtu = mtu.map(|m| m.to_string());
    let ns = netns_path.to_string_lossy();
    let mut args = vec!["link", "add", host];
    if let Some(m) = &mtu {
        args.extend(["mtu", m]);
    }
    args.extend(["type", "veth", "peer", "name", ifname]);
    if let Some(m) = &mtu {
        args.extend(["mtu", m]);
    }
    if let Some(m) = mac {
        args.extend(["address", m]);
    }
    args.extend(["netns", &ns]);
    ip(&args).map(|_| ())
}

/// Sets link `name`'s alias (IFLA_IFALIAS).
pub fn set_alias(name: &str, alias: &str) -> Result<()> {
    ip(&["link", "set", "dev", name, "alias", alias]).map(|_| ())
}

/// (name, alias) of every link of the current namespace that has an alias.
pub fn aliases() -> Result<Vec<(String, String)>> {
    #[derive(Deserialize)]
    struct Link {
        #[serde(default)]
        ifname: String,
        #[serde(default)]
        ifalias: Option<String>,
    }
    let out = ip(&["-j", "link", "show"])?;
    let links: Vec<Link> = serde_json::from_str(&out).map_err(|e| {
        CniError::new(code::DECODE_FAILURE, "unreadable `ip -j link show`")
            .with_details(e.to_string())
    })?;
    Ok(links
        .into_iter()
        .filter_map(|l| Some((l.ifname, l.ifalias?)))
        .collect())
}

/// Deletes link `name` (a veth takes its peer with it); Ok(false) if there was none.
pub fn delete(name: &str) -> Result<bool> {
    if info(name)?.is_none() {
        return Ok(false);
    }
    ip(&["link", "del", "dev", name]).map(|_| true)
}

/// What `ip -j addr show dev NAME` says about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub mac: String,
    pub up: bool,
    pub addrs: Vec<Cidr>,
}

/// The link `name` in the current namespace, or None if it does not exist.
pub fn info(name: &str) -> Result<Option<LinkInfo>> {
    let out = run_ip(&["-j", "addr", "show", "dev", name])?;
    if !out.status.success() {
        // "Device "x" does not exist."
        return Ok(None);
    }
    parse_info(&out.stdout)
}

fn parse_info(json: &[u8]) -> Result<Option<LinkInfo>> {
    #[derive(Deserialize)]
    struct Link {
        #[serde(default)]
        address: String,
        #[serde(default)]
        flags: Vec<String>,
        #[serde(default)]
        addr_info: Vec<Addr>,
    }
    #[derive(Deserialize)]
    struct Addr {
        local: String,
        prefixlen: u8,
    }
    let links: Vec<Link> = serde_json::from_slice(json).map_err(|e| {
        CniError::new(code::DECODE_FAILURE, "unexpected `ip -j addr` output")
            .with_details(e.to_string())
    })?;
    let Some(l) = links.into_iter().next() else {
        return Ok(None);
    };
    let addrs = l
        .addr_info
        .iter()
        .filter_map(|a| Cidr::parse(&format!("{}/{}", a.local, a.prefixlen)).ok())
        .collect();
    Ok(Some(LinkInfo {
        mac: l.address,
        up: l.flags.iter().any(|f| f == "UP"),
        addrs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json() {
        let j =
            br#"[{"ifindex":2,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],
            "mtu":1400,"address":"02:aa:00:00:00:01","addr_info":[
            {"family":"inet","local":"198.18.0.2","prefixlen":24,"scope":"global"},
            {"family":"inet6","local":"fe80::aa:ff:fe00:1","prefixlen":64,"scope":"link"}]}]"#;
        let i = parse_info(j).unwrap().unwrap();
        assert!(i.up);
        assert_eq!(i.mac, "02:aa:00:00:00:01");
        assert_eq!(i.addrs.len(), 2);
        assert_eq!(i.addrs[0], Cidr::parse("198.18.0.2/24").unwrap());
        assert_eq!(parse_info(b"[]").unwrap(), None);
        assert_eq!(parse_info(b"<").unwrap_err().code, code::DECODE_FAILURE);
    }
}
