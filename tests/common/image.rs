//! Locating the guest kernel and initramfs built by `cargo xtask guest-image`.
//!
//! The harness runs that xtask itself (once per test binary) so `cargo test` alone works:
//! the xtask is cached and returns in about a second when nothing changed. It is built in
//! its own target directory, because the `cargo test` that runs us may hold the lock of
//! the normal one. RINGSWITCH_GUEST_KERNEL + RINGSWITCH_GUEST_INITRAMFS override this.

use super::error::{HarnessError, Result};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

#[derive(Clone, Debug)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// The workspace root (tests are compiled from the root package).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Parses the `kernel=` and `initramfs=` lines that `cargo xtask guest-image` prints.
pub fn parse_xtask_output(stdout: &str) -> Option<GuestImage> {
    let get = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|p| PathBuf::from(p.trim()))
    };
    Some(GuestImage {
        kernel: get("kernel=")?,
        initramfs: get("initramfs=")?,
    })
}

fn build() -> Result<GuestImage, String> {
    if let (Ok(k), Ok(i)) = (
        std::env::var("RINGSWITCH_GUEST_KERNEL"),
        std::env::var("RINGSWITCH_GUEST_INITRAMFS"),
    ) {
        return Ok(GuestImage {
            kernel: k.into(),
            initramfs: i.into(),
        });
    }
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["run", "-q", "-p", "xtask", "--target-dir"])
        .arg(root.join("target").join("e2e-xtask"))
        .args(["--", "guest-image"])
        .current_dir(&root)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .map_err(|e| format!("running cargo xtask guest-image: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "cargo xtask guest-image failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    parse_xtask_output(&stdout)
        .ok_or_else(|| format!("cargo xtask guest-image printed no image paths:\n{stdout}"))
}

/// The guest image, built or reused once per test binary.
pub fn guest_image() -> Result<GuestImage> {
    static IMAGE: OnceLock<Result<GuestImage, String>> = OnceLock::new();
    IMAGE
        .get_or_init(build)
        .clone()
        .map_err(|detail| HarnessError::Invalid {
            what: "guest image".into(),
            detail,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xtask_output_is_parsed() {
        let img = parse_xtask_output("noise\nkernel=/k/vmlinuz\ninitramfs=/i.cpio\n").unwrap();
        assert_eq!(img.kernel, PathBuf::from("/k/vmlinuz"));
        assert_eq!(img.initramfs, PathBuf::from("/i.cpio"));
        assert!(parse_xtask_output("kernel=/k\n").is_none());
    }
}
