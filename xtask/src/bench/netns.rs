//! The switch-only topology: two "containers" (namespaces A and B) whose veths end in a
//! third namespace SW, where either a Linux bridge or ringswitch (AF_PACKET ports) joins
//! them — the same veths for both, so only the switch differs.
//!
//! Everything lives in namespaces named `rsb<pid>-…` that this process creates; the root
//! namespace is never touched. A guard deletes them (and with them the veths) on drop,
//! also after an error or Ctrl-C; namespaces of a dead earlier run are swept at start.

use std::process::Command;

use anyhow::Result;

use super::proc::output;

pub const ADDR_A: &str = "198.18.0.1";
pub const ADDR_B: &str = "198.18.0.2";
/// Interface names inside SW (namespaced, so they cannot clash with the host's).
pub const PORT_A: &str = "ha";
pub const PORT_B: &str = "hb";

pub(super) fn ip(args: &[&str]) -> Result<()> {
    output(Command::new("ip").args(args)).map(|_| ())
}

/// Namespaces this process created (loopback up); dropped = deleted, last first, and
/// with them every veth end inside.
#[derive(Default)]
pub struct Created(Vec<String>);

impl Created {
    /// Creates namespace `name` (after sweeping those of dead earlier runs, once).
    pub fn add(&mut self, name: &str) -> Result<()> {
        if self.0.is_empty() {
            sweep_stale();
        }
        ip(&["netns", "add", name])?;
        self.0.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for ns in self.0.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                eprintln!("bench: cleanup: {e}");
            }
        }
    }
}

/// The three namespaces; dropped = deleted.
pub struct Topology {
    pub sw: String,
    pub a: String,
    pub b: String,
    _created: Created,
    bridge: bool,
}

impl Topology {
    pub fn create() -> Result<Topology> {
        let pid = std::process::id();
        let mut created = Created::default();
        let (sw, a, b) = (
            format!("rsb{pid}-sw"),
            format!("rsb{pid}-a"),
            format!("rsb{pid}-b"),
        );
        for ns in [&sw, &a, &b] {
            created.add(ns)?;
        }
        let t = Topology {
            sw,
            a,
            b,
            _created: created,
            bridge: false,
        };
        for (ns, host, inner, addr) in [
            (t.a.clone(), PORT_A, "va", ADDR_A),
            (t.b.clone(), PORT_B, "vb", ADDR_B),
        ] {
            ip(&[
                "-n", &t.sw, "link", "add", host, "type", "veth", "peer", "name", inner, "netns",
                &ns,
            ])?;
            ip(&["-n", &t.sw, "link", "set", host, "addrgenmode", "none"])?;
            ip(&["-n", &t.sw, "link", "set", host, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                inner,
            ])?;
            ip(&["-n", &ns, "link", "set", inner, "up"])?;
        }
        Ok(t)
    }

    /// Joins the two veths with a Linux bridge (STP off: ports forward at once).
    pub fn bridge_up(&mut self) -> Result<()> {
        ip(&[
            "-n",
            &self.sw,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
        ])?;
        self.bridge = true;
        ip(&["-n", &self.sw, "link", "set", "br0", "addrgenmode", "none"])?;
        for p in [PORT_A, PORT_B] {
            ip(&["-n", &self.sw, "link", "set", p, "master", "br0"])?;
        }
        ip(&["-n", &self.sw, "link", "set", "br0", "up"])
    }

    /// Removes the bridge (the veths stay, for ringswitch's AF_PACKET ports).
    pub fn bridge_down(&mut self) -> Result<()> {
        if self.bridge {
            self.bridge = false;
            ip(&["-n", &self.sw, "link", "del", "br0"])?;
        }
        Ok(())
    }

    /// The bridge commands, for BENCHMARKS.md.
    pub fn bridge_commands(&self) -> String {
        format!(
            "ip -n {sw} link add br0 type bridge stp_state 0 && ip -n {sw} link set {a} master br0 \
             && ip -n {sw} link set {b} master br0 && ip -n {sw} link set br0 up",
            sw = self.sw,
            a = PORT_A,
            b = PORT_B
        )
    }

    /// `ip netns exec NS` + `args`.
    pub fn exec(ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }
}

/// Deletes `rsb<pid>-*` namespaces whose pid no longer runs (a killed earlier run).
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
    name.strip_prefix("rsb")?.split('-').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn stale_names() {
        assert_eq!(super::stale_pid("rsb123-sw"), Some(123));
        assert_eq!(super::stale_pid("rs-123-sw"), None);
        assert_eq!(super::stale_pid("rsbx-sw"), None);
    }
}
