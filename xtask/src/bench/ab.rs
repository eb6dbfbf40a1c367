//! `cargo xtask bench ab`: two ringswitch builds measured in one run, interleaved.
//!
//! Why: a change's effect on speed is smaller than this machine's drift (bimodal speed,
//! steal, other tenants), so "before" and "after" measured an hour apart say little. Each
//! round runs the ordinary bench once per build, alternating which build goes first
//! (ABBA), and every figure is taken as a ratio against the peer measured in the same
//! bench run (testpmd's vhost, the Linux bridge). The result is bench-results/ab.json;
//! BENCHMARKS.md shows it as its "Before and after" section.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::process::Command;

use super::report;
use super::results::{Conditions, Results};
use super::stats::Summary;

const USAGE: &str = "\
usage: cargo xtask bench ab --baseline PATH [--baseline-label TEXT] [--candidate PATH]
                            [--rounds N] [--secs S] [--only LIST]

  --baseline        the ringswitch binary to compare against (e.g. built from an older commit)
  --baseline-label  what it was built from (default: its path)
  --candidate       default: target/release/ringswitch, built first
  --rounds          rounds of one run per build (default 3)
  --only            phases, as for the bench (default vhost,switch)";

/// (row name, ringswitch figure, peer figure, true when a lower value is better).
const RATIOS: &[(&str, &str, &str, bool)] = &[
    (
        "vhost 64 B, equal cores (× testpmd)",
        "vhost/equal/64/ringswitch",
        "vhost/equal/64/testpmd",
        false,
    ),
    (
        "vhost 1500 B, equal cores (× testpmd)",
        "vhost/equal/1500/ringswitch",
        "vhost/equal/1500/testpmd",
        false,
    ),
    (
        "vhost 64 B, oversubscribed (× testpmd)",
        "vhost/oversub/64/ringswitch",
        "vhost/oversub/64/testpmd",
        false,
    ),
    (
        "vhost 1500 B, oversubscribed (× testpmd)",
        "vhost/oversub/1500/ringswitch",
        "vhost/oversub/1500/testpmd",
        false,
    ),
    (
        "switch-only TCP (× bridge)",
        "switch/tcp/ringswitch",
        "switch/tcp/linux-bridge",
        false,
    ),
    (
        "switch-only UDP 64 B (× bridge)",
        "switch/udp64/ringswitch",
        "switch/udp64/linux-bridge",
        false,
    ),
    (
        "switch-only request/response p50 (× bridge, lower is better)",
        "switch/rr_p50/ringswitch",
        "switch/rr_p50/linux-bridge",
        true,
    ),
    (
        "switch-only request/response p99 (× bridge, lower is better)",
        "switch/rr_p99/ringswitch",
        "switch/rr_p99/linux-bridge",
        true,
    ),
    (
        "switch-only request/response p50, pinned endpoints (× bridge, lower is better)",
        "switch/rr_pinned_p50/ringswitch",
        "switch/rr_pinned_p50/linux-bridge",
        true,
    ),
];

/// bench-results/ab.json.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ab {
    pub conditions: Conditions,
    pub baseline: String,
    pub candidate: String,
    pub rows: Vec<AbRow>,
    /// What the table alone does not say (written by hand into ab.json when needed).
    #[serde(default)]
    pub note: Option<String>,
}

/// One ratio, per round, for both builds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AbRow {
    pub name: String,
    pub lower_is_better: bool,
    pub baseline: Vec<f64>,
    pub candidate: Vec<f64>,
}

/// `args` with the values of `--baseline` and `--candidate` replaced by placeholders.
fn shown_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide = None;
    for a in args {
        match hide.take() {
            Some(h) => out.push(h),
            None => {
                hide = match a.as_str() {
                    "--baseline" => Some("<baseline build>".to_string()),
                    "--candidate" => Some("<candidate build>".to_string()),
                    _ => None,
                };
                out.push(a.clone());
            }
        }
    }
    out
}

pub fn run(args: &[String]) -> Result<()> {
    let mut baseline = None;
    let mut label = None;
    let mut candidate = None;
    let mut rounds = 3usize;
    let mut secs = 4u64;
    let mut only = "vhost,switch".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--baseline" => baseline = Some(PathBuf::from(val()?)),
            "--baseline-label" => label = Some(val()?.clone()),
            "--candidate" => candidate = Some(PathBuf::from(val()?)),
            "--rounds" => rounds = val()?.parse().context("--rounds")?,
            "--secs" => secs = val()?.parse().context("--secs")?,
            "--only" => only = val()?.clone(),
            _ => bail!("unknown option {a:?}\n{USAGE}"),
        }
    }
    let Some(baseline) = baseline else {
        bail!("--baseline is required\n{USAGE}");
    };
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let root = crate::workspace_root();
    let candidate = match candidate {
        Some(c) => c,
        None => super::build_ringswitch(&root)?,
    };
    for b in [&baseline, &candidate] {
        if !b.is_file() {
            bail!("{} is not a file", b.display());
        }
    }
    let me = std::env::current_exe().context("path of the xtask binary")?;
    let tmp = std::env::temp_dir().join(format!("rsbench-ab-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let _guard = super::RemoveOnDrop(tmp.clone());
    let mut conditions = report::conditions_now(&root, &[only.clone()], args, rounds, secs);
    // The two builds' paths are local to the machine that ran it: shown as placeholders.
    let shown: Vec<String> = shown_args(args);
    conditions.args = format!("`cargo xtask bench ab {}`, ABBA order", shown.join(" "));
    let mut per_build: [Vec<Results>; 2] = [vec![], vec![]];
    for round in 0..rounds {
        // ABBA: the build measured second in one round goes first in the next.
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for b in order {
            let bin = if b == 0 { &baseline } else { &candidate };
            let out = tmp.join(format!("r{round}-{b}.json"));
            eprintln!(
                "bench ab: round {}/{rounds}, {}",
                round + 1,
                if b == 0 { "baseline" } else { "candidate" }
            );
            let status = Command::new(&me)
                .args([
                    "bench",
                    "--runs",
                    "1",
                    "--secs",
                    &secs.to_string(),
                    "--only",
                ])
                .arg(&only)
                .arg("--ringswitch")
                .arg(bin)
                .arg("--results-to")
                .arg(&out)
                .status()
                .context("running the bench")?;
            if !status.success() {
                bail!("bench run failed ({status}) for {}", bin.display());
            }
            let text = std::fs::read_to_string(&out)?;
            per_build[b].push(serde_json::from_str(&text)?);
        }
    }
    report::finish_conditions(&mut conditions);
    let ab = Ab {
        conditions,
        baseline: label.unwrap_or_else(|| baseline.display().to_string()),
        candidate: report::sh(
            "git",
            &[
                "-C",
                &root.to_string_lossy(),
                "describe",
                "--always",
                "--dirty",
            ],
        ),
        rows: rows(&per_build[0], &per_build[1]),
        note: None,
    };
    let out_dir = root.join("bench-results");
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(
        out_dir.join("ab.json"),
        serde_json::to_string_pretty(&ab)? + "\n",
    )?;
    print!("{}", render(&ab));
    eprintln!("bench ab: wrote bench-results/ab.json (BENCHMARKS.md shows it after the next `cargo xtask bench --report-only`)");
    Ok(())
}

/// Per round, each ratio of ringswitch to its peer in that same bench run.
fn rows(base: &[Results], cand: &[Results]) -> Vec<AbRow> {
    let ratios = |rs: &[Results], a: &str, b: &str| -> Vec<f64> {
        rs.iter()
            .filter_map(|r| {
                let x = r.get(a)?.runs.first().copied()?;
                let y = r.get(b)?.runs.first().copied()?;
                (y > 0.0).then(|| x / y)
            })
            .collect()
    };
    RATIOS
        .iter()
        .map(|&(name, a, b, lower)| AbRow {
            name: name.to_string(),
            lower_is_better: lower,
            baseline: ratios(base, a, b),
            candidate: ratios(cand, a, b),
        })
        .filter(|r| !r.baseline.is_empty() || !r.candidate.is_empty())
        .collect()
}

fn cell(v: &[f64]) -> String {
    match Summary::of(v) {
        Some(s) if s.n > 1 => format!("{:.2} ({:.2}–{:.2})", s.median, s.min, s.max),
        Some(s) => format!("{:.2}", s.median),
        None => "—".to_string(),
    }
}

/// The markdown section BENCHMARKS.md shows.
pub fn render(ab: &Ab) -> String {
    let c = &ab.conditions;
    let mut s = format!(
        "Baseline `{}` against candidate `{}`, {} interleaved rounds of {} s windows \
         ({}), {} → {}; CPU: {}; steal {}.\nEach cell: ratio to the peer measured in \
         the same bench run, median (min–max) over rounds.\n\n\
         | figure | baseline | candidate | candidate / baseline |\n|---|---|---|---|\n",
        ab.baseline,
        ab.candidate,
        c.runs,
        c.secs,
        c.args,
        c.started_utc,
        c.finished_utc,
        if c.cpu.is_empty() { "?" } else { &c.cpu },
        c.steal_share
            .map_or("not recorded".to_string(), |x| format!(
                "{:.1} %",
                x * 100.0
            )),
    );
    for r in &ab.rows {
        let change = match (Summary::of(&r.baseline), Summary::of(&r.candidate)) {
            (Some(b), Some(n)) if b.median > 0.0 => format!("{:.2}", n.median / b.median),
            _ => "—".to_string(),
        };
        s += &format!(
            "| {} | {} | {} | {} |\n",
            r.name,
            cell(&r.baseline),
            cell(&r.candidate),
            change
        );
    }
    if let Some(n) = &ab.note {
        s += &format!("\n{n}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_paths_are_not_shown() {
        let a: Vec<String> = [
            "--baseline",
            "/x/old",
            "--only",
            "vhost",
            "--candidate",
            "/y",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            shown_args(&a),
            [
                "--baseline",
                "<baseline build>",
                "--only",
                "vhost",
                "--candidate",
                "<candidate build>"
            ]
        );
    }

    fn results(pairs: &[(&str, f64)]) -> Results {
        let mut r = Results::default();
        for &(k, v) in pairs {
            r.add(k, k, "", v, &[]);
        }
        r
    }

    #[test]
    fn ratios_are_taken_within_each_run() {
        let base = [
            results(&[
                ("vhost/equal/64/ringswitch", 6.0),
                ("vhost/equal/64/testpmd", 10.0),
            ]),
            results(&[
                ("vhost/equal/64/ringswitch", 3.0),
                ("vhost/equal/64/testpmd", 6.0),
            ]),
        ];
        let cand = [results(&[
            ("vhost/equal/64/ringswitch", 7.0),
            ("vhost/equal/64/testpmd", 7.0),
        ])];
        let rows = rows(&base, &cand);
        assert_eq!(rows.len(), 1, "figures absent from every run are left out");
        assert_eq!(rows[0].baseline, vec![0.6, 0.5]);
        assert_eq!(rows[0].candidate, vec![1.0]);
        let md = render(&Ab {
            rows,
            ..Default::default()
        });
        assert!(md.contains("| 0.55 (0.50–0.60) | 1.00 | 1.82 |"), "{md}");
    }
}
