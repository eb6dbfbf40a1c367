//! The soak test's namespaces and interfaces: the daemon's namespace SW, one namespace
//! per veth endpoint (`rss<pid>-e<i>`, holding `ve<i>`, whose other end `sv<i>` is an
//! afpacket port in SW). The tap port is made by the daemon itself in SW.
//!
//! Only namespaces this process creates are touched; a guard deletes them on drop (also
//! after an error or Ctrl-C), and those of a dead earlier run are swept at start.

use std::process::Command;

use anyhow::Result;

use super::endpoint::fmt_mac;
use super::frame;
use crate::bench::proc::output;

fn ip(args: &[&str]) -> Result<()> {
    output(Command::new("ip").args(args)).map(|_| ())
}

pub struct Topology {
    pub sw: String,
    /// Endpoint namespaces, by veth index.
    pub eps: Vec<String>,
    created: Vec<String>,
}

/// The afpacket port (in SW) of veth `i`.
pub fn host_if(i: usize) -> String {
    format!("sv{i}")
}

/// The endpoint's end of veth `i` (in its own namespace).
pub fn inner_if(i: usize) -> String {
    format!("ve{i}")
}

impl Topology {
    pub fn create(veths: usize) -> Result<Topology> {
        sweep_stale();
        let pid = std::process::id();
        let mut t = Topology {
            sw: format!("rss{pid}-sw"),
            eps: (0..veths).map(|i| format!("rss{pid}-e{i}")).collect(),
            created: vec![],
        };
        for ns in std::iter::once(t.sw.clone()).chain(t.eps.clone()) {
            ip(&["netns", "add", &ns])?;
            t.created.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        for i in 0..veths {
            t.make_veth(i)?;
        }
        Ok(t)
    }

    /// Creates veth `i` (again): host end up in SW, inner end with the endpoint's MAC.
    /// No IPv6 link-local addresses, so the host stacks stay quiet on the wire.
    pub fn make_veth(&self, i: usize) -> Result<()> {
        let (host, inner, ns) = (host_if(i), inner_if(i), &self.eps[i]);
        ip(&[
            "-n", &self.sw, "link", "add", &host, "type", "veth", "peer", "name", &inner, "netns",
            ns,
        ])?;
        ip(&["-n", &self.sw, "link", "set", &host, "addrgenmode", "none"])?;
        ip(&["-n", &self.sw, "link", "set", &host, "up"])?;
        let id = u8::try_from(i)?;
        let mac = fmt_mac(frame::mac(id));
        ip(&["-n", ns, "link", "set", &inner, "address", &mac])?;
        ip(&["-n", ns, "link", "set", &inner, "addrgenmode", "none"])?;
        ip(&["-n", ns, "link", "set", &inner, "up"])
    }

    /// Deletes veth `i` (both ends).
    pub fn delete_veth(&self, i: usize) -> Result<()> {
        ip(&["-n", &self.sw, "link", "del", &host_if(i)])
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("soak: cleanup: {e}");
            }
        }
    }
}

/// Deletes `rss<pid>-*` namespaces whose pid no longer runs (a killed earlier run).
fn sweep_stale() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = stale_pid(&name) {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = ip(&["netns", "del", &name]);
            }
        }
    }
}

fn stale_pid(name: &str) -> Option<u32> {
    name.strip_prefix("rss")?.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stale_names() {
        assert_eq!(super::stale_pid("rss123-sw"), Some(123));
        assert_eq!(super::stale_pid("rsb123-sw"), None);
        assert_eq!(super::stale_pid("rssx-e0"), None);
    }
}
