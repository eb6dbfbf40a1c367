//! Bounded cargo-fuzz runs of every target in fuzz/ (libFuzzer needs nightly flags;
//! RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them).
//!
//! Every target is built first (a target that does not build fails the run before any
//! fuzzing), then each runs for `secs` seconds from its committed seed corpus
//! `fuzz/seeds/<target>/`, copied to a scratch directory so that the inputs libFuzzer
//! adds are not written into the repository (fuzz/corpus/, cargo-fuzz's default corpus
//! for manual runs, is git-ignored). Total time: about `secs` × number of targets
//! plus the build. A crash (libFuzzer exits non-zero and leaves the input in
//! `fuzz/artifacts/<target>/`) fails the run.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Installs cargo-fuzz when missing, builds every target, then runs each for `secs` seconds.
pub fn run_all(secs: u64) -> Result<()> {
    let root = crate::workspace_root();
    let fuzz_dir = root.join("fuzz");
    if !fuzz_dir.join("Cargo.toml").exists() {
        bail!(
            "{} is missing: the fuzz crate is part of the repository",
            fuzz_dir.join("Cargo.toml").display()
        );
    }
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        crate::cargo(&["install", "cargo-fuzz", "--locked"])?;
    }
    let targets = list(&root)?;
    let target_dir = target_dir();
    let mut build = fuzz_cmd(&root, "build", &target_dir);
    crate::run(&mut build).context("a fuzz target does not build")?;
    eprintln!(
        "xtask: fuzzing {} targets for {secs} s each (about {} s in all)",
        targets.len(),
        secs * targets.len() as u64
    );
    for t in &targets {
        let seeds = fuzz_dir.join("seeds").join(t);
        if !seeds.is_dir() {
            bail!("fuzz target {t} has no seed corpus at {}", seeds.display());
        }
        let scratch = scratch_copy(&seeds, t)?;
        let mut run = fuzz_cmd(&root, "run", &target_dir);
        run.arg(t)
            .arg(&scratch)
            .arg("--")
            .arg(format!("-max_total_time={secs}"))
            .arg("-print_final_stats=1");
        let res = crate::run(&mut run);
        let _ = std::fs::remove_dir_all(&scratch);
        res.with_context(|| {
            format!("fuzz target {t} failed (crash input under fuzz/artifacts/{t}/)")
        })?;
    }
    Ok(())
}

/// The targets `cargo fuzz list` names; an error when it fails or names none.
fn list(root: &Path) -> Result<Vec<String>> {
    let out = Command::new("cargo")
        .args(["fuzz", "list"])
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1")
        .output()
        .context("could not run `cargo fuzz list`")?;
    if !out.status.success() {
        bail!(
            "`cargo fuzz list` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let targets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect();
    if targets.is_empty() {
        bail!("`cargo fuzz list` names no fuzz target");
    }
    Ok(targets)
}

/// `$CARGO_TARGET_DIR/fuzz` when set (so fuzz builds land beside the workspace's), else
/// cargo-fuzz's default (fuzz/target).
fn target_dir() -> Option<PathBuf> {
    std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("fuzz"))
}

fn fuzz_cmd(root: &Path, sub: &str, target_dir: &Option<PathBuf>) -> Command {
    let mut c = Command::new("cargo");
    c.args(["fuzz", sub])
        .current_dir(root)
        .env("RUSTC_BOOTSTRAP", "1");
    // Machines running this are shared: one compiler job unless told otherwise.
    if std::env::var_os("CARGO_BUILD_JOBS").is_none() {
        c.env("CARGO_BUILD_JOBS", "1");
    }
    if let Some(d) = target_dir {
        c.arg("--target-dir").arg(d);
    }
    c
}

/// Copies the seed corpus of `target` into a fresh temporary directory.
fn scratch_copy(seeds: &Path, target: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ringswitch-fuzz-{}-{target}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for e in std::fs::read_dir(seeds).with_context(|| format!("reading {}", seeds.display()))? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), dir.join(e.file_name()))?;
        }
    }
    Ok(dir)
}
