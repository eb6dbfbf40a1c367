//! Shared end-to-end test harness: `mod common;` from each `tests/e2e_*.rs`.
//!
//! - [`TestScope`]: first line of every test; unique names and a per-test time limit
//!   that kills the test's children and still cleans up.
//! - [`Guest`]/[`GuestSpec`]: QEMU guests from `cargo xtask guest-image`.
//! - [`Netns`]: namespaces with veth pairs, deleted in Drop.
//! - [`Process`]: ringswitch/testpmd children, stopped in Drop.
//! - [`Testpmd`]: DPDK testpmd as an independent vhost-user backend.
//!
//! Each test binary uses a different subset, hence the dead_code allowance.
#![allow(dead_code, unused_imports)]

pub mod error;
pub mod image;
pub mod netns;
pub mod output;
pub mod prereq;
pub mod process;
pub mod qemu;
pub mod scope;
pub mod testpmd;

pub use error::{HarnessError, Result};
pub use netns::Netns;
pub use prereq::{is_root, skip_without};
pub use process::Process;
pub use qemu::{CmdOutput, Guest, GuestSpec, NicSpec, SocketMode, StepResult};
pub use scope::{unique, TestScope};
pub use testpmd::{Testpmd, VhostPort};

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory `/tmp/rs-<pid>-<n>-<tag>` (short: unix socket paths must stay under 108
/// bytes), removed with its contents in Drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        let path = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&path)
            .map_err(error::io(format!("creating {}", path.display())))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// True when `qemu-system-x86_64` runs (TCG needs nothing else; there is no /dev/kvm
/// requirement). The only reason an e2e guest test may skip.
pub fn qemu_available() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// [`skip_without`] for QEMU: true (skip) when it is missing outside CI; fails under CI=true.
pub fn skip_without_qemu() -> bool {
    skip_without(
        "qemu-system-x86_64",
        qemu_available(),
        "cargo xtask test installs it",
    )
}

/// A locally administered unicast MAC 02:72:73:00:00:<n> ("rs").
pub fn mac(n: u8) -> String {
    format!("02:72:73:00:00:{n:02x}")
}

/// A command for the ringswitch binary built with this test (Cargo's
/// `CARGO_BIN_EXE_<name>`); spawn it with `Process::spawn` or `Netns::command`-style
/// wrapping so it is stopped in Drop.
pub fn ringswitch_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringswitch"))
}

/// Waits until `path` exists (a socket a child creates), failing after `timeout`.
pub fn wait_path(path: &Path, timeout: std::time::Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while !path.exists() {
        if std::time::Instant::now() >= deadline {
            return Err(HarnessError::Invalid {
                what: path.display().to_string(),
                detail: format!("did not appear within {timeout:?}"),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}

/// Serialises the heavy parts of e2e tests (several TCG guests, a busy-polling testpmd)
/// within one test binary: on 2 cores, two such tests at once oversubscribe the machine
/// and both get slower than running one after the other. Hold the guard for the test.
pub fn heavy_slot() -> std::sync::MutexGuard<'static, ()> {
    static SLOT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SLOT.lock().unwrap_or_else(|e| e.into_inner())
}
