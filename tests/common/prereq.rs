//! The one way a test may depend on something outside the repository (a tool, root, a
//! kernel feature): [`skip_without`]. Without `CI=true` a missing prerequisite skips the
//! test with a `SKIPPED:` line; under `CI=true` it fails the test, so a CI run never
//! passes by skipping.
//!
//! Dependency-free so that every crate's tests can include this file:
//! `#[path = "<relative path to>/tests/common/prereq.rs"] mod prereq;`.
#![allow(dead_code)]

/// Whether `CI=true` is set: missing prerequisites are failures.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether a test needing `what` skips because it is missing (`available` false). Under
/// `CI=true` it panics instead, naming `what` and `hint` (how to provide it).
pub fn skip_without(what: &str, available: bool, hint: &str) -> bool {
    if available {
        return false;
    }
    if in_ci() {
        panic!("missing prerequisite under CI=true: {what} ({hint})");
    }
    eprintln!("SKIPPED: missing prerequisite: {what} ({hint})");
    true
}

/// True when the effective user id is 0 (the `Uid:` line of /proc/self/status: real,
/// effective, saved, filesystem).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
