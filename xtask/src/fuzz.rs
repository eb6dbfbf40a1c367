//! Bounded cargo-fuzz runs of every target in fuzz/ (libFuzzer needs nightly flags;
//! RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them).
//!
//! Every step that could quietly test nothing is an error: fuzz/ missing, `cargo fuzz
//! list` failing or listing no target, a target that does not build, a target without a
//! committed seed corpus (fuzz/corpus/TARGET, a few meaningful inputs so each run starts
//! past the parsers' first checks), and of course a crash. Runs read a temporary copy of
//! the seed corpus, so the new inputs libFuzzer saves never land in the repository.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// Installs cargo-fuzz when missing, builds every target, then runs each for `secs`
/// seconds from its seed corpus.
pub fn run_all(secs: u64) -> Result<()> {
    let root = crate::workspace_root();
    let fuzz_dir = root.join("fuzz");
    if !fuzz_dir.join("Cargo.toml").exists() {
        bail!("fuzz/Cargo.toml is missing: there is nothing to fuzz");
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
        .output()
        .context("running `cargo fuzz list`")?;
    if !out.status.success() {
        bail!(
            "`cargo fuzz list` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    let targets: Vec<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` lists no target");
    }
    for t in &targets {
        let seeds = fuzz_dir.join("corpus").join(t);
        let n = std::fs::read_dir(&seeds).map_or(0, |d| d.count());
        if n == 0 {
            bail!("fuzz target {t} has no seed corpus in {}", seeds.display());
        }
    }
    // One build of every target first: a target that does not compile fails here,
    // before minutes of fuzzing the others.
    crate::run(
        Command::new("cargo")
            .args(["fuzz", "build"])
            .current_dir(&root)
            .env("RUSTC_BOOTSTRAP", "1"),
    )?;
    let tmp = std::env::temp_dir().join(format!("ringswitch-fuzz-{}", std::process::id()));
    for t in &targets {
        let work = tmp.join(t);
        copy_dir(&fuzz_dir.join("corpus").join(t), &work)?;
        let result = crate::run(
            Command::new("cargo")
                .args(["fuzz", "run", t])
                .arg(&work)
                .args(["--", &format!("-max_total_time={secs}")])
                .current_dir(&root)
                .env("RUSTC_BOOTSTRAP", "1"),
        );
        let _ = std::fs::remove_dir_all(&work);
        result.with_context(|| {
            format!("fuzz target {t} failed (its crash input is in fuzz/artifacts/{t})")
        })?;
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}
