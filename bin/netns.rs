//! Network namespaces and veths for the demo (and for users' quick experiments): created
//! with iproute2, entered per thread with setns(2), deleted by a guard even on panic or
//! Ctrl-C. Only 198.18.0.0/15 and 2001:db8::/32 addresses, only inside our namespaces.

use std::fs::File;
use std::os::fd::AsFd;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};

/// Runs `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running `ip` (iproute2 is needed to create namespaces and veths)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Namespaces created by us; deleted (with their veths) on drop.
#[derive(Default)]
pub struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    pub fn add(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.names.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }

    /// Deletes every namespace (and so its veths), newest first.
    pub fn delete_all(&mut self) {
        for n in self.names.drain(..).rev() {
            if let Err(e) = ip(&["netns", "del", &n]) {
                tracing::warn!("cleanup: {e}");
            }
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.delete_all();
    }
}

/// Moves the calling thread into namespace `name` (only this thread).
pub fn enter(name: &str) -> Result<()> {
    let f = File::open(format!("/run/netns/{name}"))
        .with_context(|| format!("opening network namespace {name}"))?;
    setns(f.as_fd(), CloneFlags::CLONE_NEWNET).with_context(|| format!("entering namespace {name}"))
}

/// Runs `f` on a new thread inside namespace `name`.
pub fn spawn_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::thread::JoinHandle<Result<T>> {
    let name = name.to_string();
    std::thread::spawn(move || {
        enter(&name)?;
        f()
    })
}
