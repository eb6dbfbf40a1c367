//! Bounded cargo-fuzz runs of every target in fuzz/ (libFuzzer needs nightly flags;
//! RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them).

use anyhow::Result;
use std::process::Command;

/// Installs cargo-fuzz when missing, then runs each target for `secs` seconds.
pub fn run_all(secs: u64) -> Result<()> {
    let root = crate::workspace_root();
    let fuzz_dir = root.join("fuzz");
    if !fuzz_dir.join("Cargo.toml").exists() {
        return Ok(());
    }
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        crate::cargo(&["install", "cargo-fuzz", "--locked"])?;
    }
    let out = Command::new("cargo")
        .args(["fuzz", "list"])
        .current_dir(&root)
        .env("RUSTC_BOOTSTRAP", "1")
        .output()?;
    let targets = String::from_utf8_lossy(&out.stdout).to_string();
    for t in targets.lines().map(str::trim).filter(|t| !t.is_empty()) {
        crate::run(
            Command::new("cargo")
                .args(["fuzz", "run", t, "--", &format!("-max_total_time={secs}")])
                .current_dir(&root)
                .env("RUSTC_BOOTSTRAP", "1"),
        )?;
    }
    Ok(())
}
