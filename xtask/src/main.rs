//! `cargo xtask <command>`: the project's own automation.
//!
//! - `test`: installs the Debian packages the tests need (idempotent), then runs fmt,
//!   clippy, every test of the workspace, the loom model of the FDB seqlock and bounded
//!   fuzz runs, then a short fault and soak run (`soak --cycles 8 --guests 1`). `.ci/run`
//!   calls exactly this.
//! - `fuzz [SECONDS]`: only the bounded fuzz runs.
//! - `bench`: benchmarks against DPDK testpmd and the Linux bridge (not part of `test`).
//! - `soak [--minutes M | --cycles N]`: the fault and soak test (soak.rs).

mod bench;
mod deps;
mod fuzz;
mod guest;
mod soak;

use anyhow::{bail, Context, Result};
use std::process::Command;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("deps") => deps::ensure(deps::TEST_PACKAGES),
        Some("guest-image") => guest::build(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("soak") => soak::run(&args[1..]),
        Some("fuzz") => {
            let secs = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(30);
            fuzz::run_all(secs)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 test          install test dependencies, then fmt, clippy, all tests, fuzz, soak\n  \
                 deps          only install the Debian packages the tests need\n  \
                 fuzz [SECS]   bounded run of every fuzz target (default 30 s each)\n  \
                 guest-image [--force]  build (or reuse) the cached e2e test guest under target/guest\n  \
                 bench [--quick] [--only vhost,scaling,switch,micro]  ringswitch vs testpmd and the\n                \
                 Linux bridge: writes BENCHMARKS.md and bench-results/ (see `bench --help`)\n  \
                 soak [--minutes M | --cycles N]  fault and soak test: faults under checked\n                \
                 traffic (see `soak --help`)"
            );
            bail!("unknown or missing command")
        }
    }
}

fn test() -> Result<()> {
    deps::ensure(deps::TEST_PACKAGES)?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&["test", "--workspace", "--all-targets"])?;
    cargo(&["test", "--workspace", "--doc"])?;
    loom()?;
    fuzz::run_all(fuzz_seconds())?;
    soak_short()
}

/// The CI-length soak run: 8 fault cycles with one QEMU guest (each of the 8 fault kinds
/// once, the four guest ones included; about three minutes, two of them guest boots), its
/// summary under the target directory so the committed bench-results/soak.json stays
/// the long run's.
fn soak_short() -> Result<()> {
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("soak-ci.json");
    soak::run(&[
        "--cycles".into(),
        "8".into(),
        "--guests".into(),
        "1".into(),
        "--out".into(),
        out.display().to_string(),
    ])
}

/// The loom model of the FDB seqlock (crates/switch/src/fdb.rs, `loom_tests`): built with
/// `--cfg loom` in a target directory of its own (other RUSTFLAGS would rebuild the
/// normal one), bounded to 3 preemptions per execution (well under a minute).
fn loom() -> Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("loom");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo)
        .args([
            "test",
            "-p",
            "ringswitch-switch",
            "--release",
            "--lib",
            "loom",
        ])
        .env("RUSTFLAGS", "--cfg loom")
        .env("LOOM_MAX_PREEMPTIONS", "3")
        .env("CARGO_TARGET_DIR", target)
        .current_dir(workspace_root()))
}

/// Seconds per fuzz target inside `xtask test` (RINGSWITCH_FUZZ_SECS overrides).
fn fuzz_seconds() -> u64 {
    std::env::var("RINGSWITCH_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30)
}

/// Runs `cargo ARGS` in the workspace root and fails with the command line on error.
pub(crate) fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    run(Command::new(cargo).args(args).current_dir(workspace_root()))
}

pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub(crate) fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(|| ".".into())
}
