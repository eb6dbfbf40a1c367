//! `Netns`: a network namespace owned by one test, deleted (with every process still in
//! it) in Drop. Veth pairs are created inside test namespaces only, never in the root
//! namespace, so a failing test cannot leave interfaces or addresses on the host.

use super::error::{io, HarnessError, Result};
use super::process::Process;
use super::scope;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::Once;
use std::time::{Duration, Instant};

pub struct Netns {
    name: String,
}

/// Runs `cmd`, failing with its output unless it exits 0; returns stdout.
pub fn check(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().map_err(io(format!("running {cmd:?}")))?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            cmd: format!("{cmd:?}"),
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Identity (device, inode) of a network namespace file.
fn ns_id(path: &str) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Kills what still runs in namespace `name` and deletes it; errors are ignored (this
/// is cleanup, and the namespace may already be gone).
pub fn delete(name: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: kill(2) has no memory effects; these pids live in our own test
                // namespace, which nothing outside the test uses.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = Command::new("ip").args(["netns", "del", name]).output();
}

/// Deletes namespaces `rs-<pid>-…` whose test process no longer exists (a test binary
/// killed with SIGKILL cannot run its Drop guards).
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let pid = name
            .strip_prefix("rs-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                delete(name);
            }
        }
    }
}

impl Netns {
    /// Creates a namespace named `rs-<pid>-<n>-<tag>` with `lo` up.
    pub fn new(tag: &str) -> Result<Netns> {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale);
        let name = scope::unique(tag);
        check(Command::new("ip").args(["netns", "add", &name]))?;
        scope::register_netns(&name);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command that runs `program` inside the namespace (`ip netns exec` execs it, so
    /// the spawned pid is the program's own).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs `program args` in the namespace; fails unless it exits 0; returns stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        check(self.command(program).args(args))
    }

    /// Runs a shell snippet in the namespace; fails unless it exits 0.
    pub fn sh(&self, script: &str) -> Result<String> {
        self.exec("sh", &["-c", script])
    }

    /// `ip -n <ns> ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        check(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Spawns a long-running child in the namespace under a `Process` guard. Returns once
    /// the child is inside the namespace (or has exited), so that a Drop of this `Netns`
    /// right after cannot miss it while `ip netns exec` is still switching namespaces.
    pub fn spawn(&self, name: &str, program: &str, args: &[&str]) -> Result<Process> {
        let mut c = self.command(program);
        c.args(args);
        let mut p = Process::spawn(name, c)?;
        let want = ns_id(&format!("/run/netns/{}", self.name))
            .map_err(io(format!("stat of namespace {}", self.name)))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ns_id(&format!("/proc/{}/ns/net", p.pid())).ok() == Some(want)
                || p.try_status()?.is_some()
            {
                return Ok(p);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: name.into(),
                    pattern: format!("<entered namespace {}>", self.name),
                    timeout: Duration::from_secs(10),
                    tail: p.output().tail(20),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Creates veth `name` here and its peer `peer_name` in `peer` (interface names are
    /// per namespace, so short fixed names are fine), both up.
    pub fn veth(&self, name: &str, peer: &Netns, peer_name: &str) -> Result<()> {
        self.ip(&[
            "link", "add", name, "type", "veth", "peer", "name", peer_name, "netns", &peer.name,
        ])?;
        self.ip(&["link", "set", name, "up"])?;
        peer.ip(&["link", "set", peer_name, "up"])?;
        Ok(())
    }

    /// Adds an address (only 198.18.0.0/15 or 2001:db8::/32 in tests) to `dev`; IPv6
    /// without duplicate address detection so it is usable at once.
    pub fn addr(&self, dev: &str, cidr: &str) -> Result<()> {
        if cidr.contains(':') {
            self.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"])?;
        } else {
            self.ip(&["addr", "add", cidr, "dev", dev])?;
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
        scope::unregister_netns(&self.name);
    }
}
