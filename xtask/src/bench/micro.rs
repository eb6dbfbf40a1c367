//! The criterion micro-benchmarks of the switch crate (`--bench forward`, `--bench
//! offload`), run with short timings and read back from
//! `<target>/criterion/<group>/<function>/new/{benchmark,sample}.json`.
//!
//! Each criterion sample is one timed batch of iterations; its rate is
//! throughput-per-iteration × iterations / time. We report the median of the samples with
//! min/max — the same "median with spread" shape as every other figure.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Deserialize)]
struct Benchmark {
    group_id: String,
    function_id: Option<String>,
    value_str: Option<String>,
    throughput: Option<Throughput>,
}

#[derive(Deserialize)]
enum Throughput {
    Elements(u64),
    Bytes(u64),
    BytesDecimal(u64),
}

#[derive(Deserialize)]
struct Sample {
    iters: Vec<f64>,
    times: Vec<f64>,
}

/// One criterion benchmark as rates per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct MicroFigure {
    /// `group/function[/value]`.
    pub id: String,
    pub unit: &'static str,
    pub rates: Vec<f64>,
}

/// Unit and scale for a group: decisions/parses in M/s, checksum in GB/s, GSO in Gbit/s.
fn unit_for(group: &str, t: &Throughput) -> (&'static str, f64, u64) {
    match t {
        Throughput::Elements(n) => ("M/s", 1e-6, *n),
        Throughput::Bytes(n) | Throughput::BytesDecimal(n) if group.starts_with("gso") => {
            ("Gbit/s", 8e-9, *n)
        }
        Throughput::Bytes(n) | Throughput::BytesDecimal(n) => ("GB/s", 1e-9, *n),
    }
}

/// Reads every benchmark under `<criterion_dir>` whose group starts with one of `groups`.
pub fn collect(criterion_dir: &Path, groups: &[&str]) -> Result<Vec<MicroFigure>> {
    let mut out = vec![];
    let mut dirs = vec![];
    find_new_dirs(criterion_dir, &mut dirs);
    dirs.sort();
    for d in dirs {
        let b: Benchmark = match read_json(&d.join("benchmark.json")) {
            Ok(b) => b,
            Err(_) => continue,
        };
        if !groups.iter().any(|g| b.group_id.starts_with(g)) {
            continue;
        }
        let Some(t) = b.throughput.as_ref() else {
            continue;
        };
        let s: Sample = read_json(&d.join("sample.json"))?;
        let (unit, scale, per_iter) = unit_for(&b.group_id, t);
        let rates = s
            .iters
            .iter()
            .zip(&s.times)
            .filter(|(_, t)| **t > 0.0)
            .map(|(i, t)| per_iter as f64 * i / (t * 1e-9) * scale)
            .collect();
        let mut id = b.group_id.clone();
        for part in [&b.function_id, &b.value_str].into_iter().flatten() {
            id.push('/');
            id.push_str(part);
        }
        out.push(MicroFigure { id, unit, rates });
    }
    Ok(out)
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> Result<T> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

fn find_new_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") {
                out.push(p);
            } else if p.file_name().is_some_and(|n| n != "report" && n != "base") {
                find_new_dirs(&p, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_criterion_tree() {
        let root = std::env::temp_dir().join(format!("xtask-micro-{}", std::process::id()));
        let d = root.join("decide_64B/100000_macs/new");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("benchmark.json"),
            r#"{"group_id":"decide_64B","function_id":"100000_macs","value_str":null,
                "throughput":{"Elements":4096},"full_id":"x","directory_name":"x","title":"x"}"#,
        )
        .unwrap();
        // 4096 elements × 10 iterations in 1 ms = 40.96 M/s; 20 in 1 ms = 81.92 M/s.
        std::fs::write(
            d.join("sample.json"),
            r#"{"sampling_mode":"Linear","iters":[10.0,20.0],"times":[1000000.0,1000000.0]}"#,
        )
        .unwrap();
        let c = root.join("checksum/1500B/new");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("benchmark.json"),
            r#"{"group_id":"checksum","function_id":"1500B","value_str":null,
                "throughput":{"Bytes":1500}}"#,
        )
        .unwrap();
        std::fs::write(
            c.join("sample.json"),
            r#"{"iters":[1000.0],"times":[150.0]}"#,
        )
        .unwrap();
        let f = collect(&root, &["decide", "checksum"]).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].id, "checksum/1500B");
        assert_eq!(f[0].unit, "GB/s");
        assert!((f[0].rates[0] - 10_000.0).abs() < 1e-6);
        assert_eq!(f[1].id, "decide_64B/100000_macs");
        assert!((f[1].rates[0] - 40.96).abs() < 1e-9);
        assert!((f[1].rates[1] - 81.92).abs() < 1e-9);
    }
}
