//! The benchmark's results: every figure with all its runs, the exact commands behind it,
//! or the reason it was not measured. Written as bench-results/results.json, from which
//! BENCHMARKS.md and the plots are generated (`cargo xtask bench --report-only` redoes
//! that without measuring).

use serde::{Deserialize, Serialize};

use super::stats::Summary;

/// One reported figure (e.g. "ringswitch, 64 B, equal cores" in Mpps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// Stable key, e.g. `vhost/equal/64/ringswitch`.
    pub key: String,
    pub label: String,
    pub unit: String,
    /// One value per run, in run order.
    pub runs: Vec<f64>,
    /// Exact commands of the first run (later runs repeat them with fresh prefixes).
    pub commands: Vec<String>,
    /// Why the figure is missing or partial ("not measured yet: …").
    pub note: Option<String>,
}

impl Figure {
    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.runs)
    }
}

/// Conditions the figures were measured under.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Conditions {
    pub started_utc: String,
    pub finished_utc: String,
    pub git_commit: String,
    pub kernel: String,
    pub cores: usize,
    pub load_before: String,
    pub load_after: String,
    /// The CPU's model name and clock as /proc/cpuinfo gives them: runs on different
    /// hosts differ in absolute level (not recorded before 2026-12).
    #[serde(default)]
    pub cpu: String,
    /// /proc/stat's aggregate (steal, total) jiffies when the run started: only to
    /// compute `steal_share` at the end, not part of the results.
    #[serde(skip)]
    pub stat_before: Option<[u64; 2]>,
    /// Share of the CPU time the hypervisor gave to others during the run (steal).
    #[serde(default)]
    pub steal_share: Option<f64>,
    pub runs: usize,
    pub secs: u64,
    pub args: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub conditions: Conditions,
    pub figures: Vec<Figure>,
    /// Top of the hot-path profile (`perf report --stdio`), when `--profile` ran.
    pub profile: Option<String>,
}

impl Results {
    fn figure_mut(&mut self, key: &str, label: &str, unit: &str) -> &mut Figure {
        if let Some(i) = self.figures.iter().position(|f| f.key == key) {
            return &mut self.figures[i];
        }
        self.figures.push(Figure {
            key: key.to_string(),
            label: label.to_string(),
            unit: unit.to_string(),
            runs: vec![],
            commands: vec![],
            note: None,
        });
        let last = self.figures.len() - 1;
        &mut self.figures[last]
    }

    /// Adds one run's value (commands are kept from the first run only).
    pub fn add(&mut self, key: &str, label: &str, unit: &str, value: f64, commands: &[String]) {
        let f = self.figure_mut(key, label, unit);
        f.runs.push(value);
        if f.commands.is_empty() {
            f.commands = commands.to_vec();
        }
    }

    /// Records why a figure (or one of its runs) could not be measured.
    pub fn fail(&mut self, key: &str, label: &str, unit: &str, reason: &str, commands: &[String]) {
        let f = self.figure_mut(key, label, unit);
        if f.commands.is_empty() {
            f.commands = commands.to_vec();
        }
        let reason = reason.lines().next().unwrap_or(reason).to_string();
        match &mut f.note {
            Some(n) if n.contains(&reason) => {}
            Some(n) => {
                n.push_str("; ");
                n.push_str(&reason);
            }
            None => f.note = Some(format!("not measured: {reason}")),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.key == key)
    }

    pub fn summary(&self, key: &str) -> Option<Summary> {
        self.get(key).and_then(Figure::summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_accumulate_and_notes_dedupe() {
        let mut r = Results::default();
        r.add("k", "L", "Mpps", 1.0, &["cmd1".into()]);
        r.add("k", "L", "Mpps", 3.0, &["cmd2".into()]);
        r.fail("k", "L", "Mpps", "boom\ndetail", &[]);
        r.fail("k", "L", "Mpps", "boom", &[]);
        let f = r.get("k").unwrap();
        assert_eq!(f.runs, vec![1.0, 3.0]);
        assert_eq!(f.commands, vec!["cmd1".to_string()]);
        assert_eq!(f.note.as_deref(), Some("not measured: boom"));
        assert_eq!(r.summary("k").unwrap().median, 2.0);
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Results>(&json).unwrap(), r);
    }
}
