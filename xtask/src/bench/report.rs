//! BENCHMARKS.md and the plots, generated from [`Results`] only (so `--report-only` can
//! redo them without measuring). The intro is hand-written (bench/intro.md); the rest is
//! tables, target verdicts, plots and what was not measured and why. The exact commands
//! stay in results.json (BENCHMARKS.md says where), so the report shows results only.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::Result;

use super::plot::{self, fmt_value, Bar};
use super::results::{Conditions, Results};
use super::stats::{ratio, Summary};

const INTRO: &str = include_str!("intro.md");

/// `cmd ARGS`' trimmed stdout, or "" when it fails.
pub(super) fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// "model name @ MHz" of the first CPU in /proc/cpuinfo.
fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    match (field("model name"), field("cpu MHz")) {
        (Some(m), Some(mhz)) => format!("{m} @ {mhz} MHz"),
        (Some(m), None) => m,
        _ => String::new(),
    }
}

/// (steal, total) jiffies of all CPUs from /proc/stat's first line.
fn cpu_stat() -> Option<[u64; 2]> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    (v.len() == 8).then(|| [v[7], v.iter().sum()])
}

/// Steal share between two /proc/stat readings.
fn steal_share(before: [u64; 2], after: [u64; 2]) -> Option<f64> {
    let total = after[1].checked_sub(before[1])?;
    let steal = after[0].checked_sub(before[0])?;
    (total > 0).then(|| steal as f64 / total as f64)
}

pub fn conditions_now(
    root: &Path,
    phases: &[String],
    args: &[String],
    runs: usize,
    secs: u64,
) -> Conditions {
    let root = root.to_string_lossy().into_owned();
    Conditions {
        started_utc: sh("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]),
        finished_utc: String::new(),
        git_commit: sh("git", &["-C", &root, "describe", "--always", "--dirty"]),
        kernel: sh("uname", &["-r"]),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before: loadavg(),
        load_after: String::new(),
        cpu: cpu_model(),
        stat_before: cpu_stat(),
        steal_share: None,
        runs,
        secs,
        args: format!("{} (phases: {})", args.join(" "), phases.join(",")),
    }
}

pub fn finish_conditions(c: &mut Conditions) {
    c.finished_utc = sh("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]);
    c.load_after = loadavg();
    c.steal_share = c
        .stat_before
        .zip(cpu_stat())
        .and_then(|(a, b)| steal_share(a, b));
}

pub(super) fn cell(s: Option<Summary>) -> String {
    match s {
        Some(s) if s.n > 1 => format!(
            "{} ({}–{})",
            fmt_value(s.median),
            fmt_value(s.min),
            fmt_value(s.max)
        ),
        Some(s) => fmt_value(s.median),
        None => "—".into(),
    }
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{r:.2}×"))
}

/// Verdict of `measured >= want` (or `<=` when `at_most`).
fn verdict(measured: Option<f64>, want: f64, at_most: bool) -> &'static str {
    match measured {
        None => "not measured",
        Some(m) if (at_most && m <= want) || (!at_most && m >= want) => "met",
        Some(_) => "**missed**",
    }
}

/// Best median among figures whose key starts with `prefix`.
fn best(r: &Results, prefix: &str) -> Option<(String, Summary)> {
    r.figures
        .iter()
        .filter(|f| f.key.starts_with(prefix))
        .filter_map(|f| f.summary().map(|s| (f.label.clone(), s)))
        .max_by(|a, b| a.1.median.total_cmp(&b.1.median))
}

pub fn render(r: &Results) -> String {
    let mut md = String::new();
    let c = &r.conditions;
    md.push_str(INTRO);
    let _ = writeln!(md, "\n## Conditions of the committed numbers\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    let _ = writeln!(md, "| measured | {} → {} |", c.started_utc, c.finished_utc);
    let _ = writeln!(md, "| commit | `{}` |", c.git_commit);
    let _ = writeln!(md, "| kernel, cores | {}, {} |", c.kernel, c.cores);
    let _ = writeln!(
        md,
        "| load average before / after | {} / {} |",
        c.load_before, c.load_after
    );
    if !c.cpu.is_empty() {
        let _ = writeln!(md, "| CPU | {} |", c.cpu);
    }
    if let Some(st) = c.steal_share {
        let _ = writeln!(
            md,
            "| CPU time taken by the hypervisor (steal) | {:.1} % |",
            st * 100.0
        );
    }
    let _ = writeln!(md, "| runs × window | {} × {} s |", c.runs, c.secs);
    let _ = writeln!(md, "| arguments | `{}` |", c.args);

    // Targets.
    let _ = writeln!(
        md,
        "\n## Targets\n\n| target | measured (median) | verdict |\n|---|---|---|"
    );
    let vr = |len: u32, p: &str| {
        ratio(
            r.summary(&format!("vhost/{p}/{len}/ringswitch")),
            r.summary(&format!("vhost/{p}/{len}/testpmd")),
        )
    };
    // The targets of issue 21 (64 B at DPDK's rate, switch-only at or above the bridge).
    for (len, want) in [(1500u32, 1.2), (64, 1.0)] {
        let m = vr(len, "equal");
        let _ = writeln!(
            md,
            "| vhost {len} B, equal cores: ≥ {want:.1}× testpmd | {} | {} |",
            ratio_cell(m),
            verdict(m, want, false)
        );
    }
    for len in [64u32, 1500] {
        let m = ratio(
            r.summary(&format!("vhost/oversub/{len}/ringswitch")),
            r.summary(&format!("vhost/oversub/{len}/testpmd")),
        );
        let _ = writeln!(
            md,
            "| vhost {len} B, oversubscribed: ≥ 30× testpmd | {} | {} |",
            ratio_cell(m),
            verdict(m, 30.0, false)
        );
    }
    for (k, what, at_most) in [
        ("tcp", "switch-only TCP: ≥ 1.0× Linux bridge", false),
        ("udp64", "switch-only UDP 64 B: ≥ 1.0× Linux bridge", false),
        (
            "rr_p50",
            "switch-only request/response p50: ≤ 1.0× Linux bridge",
            true,
        ),
        (
            "rr_p99",
            "switch-only request/response p99: ≤ 1.0× Linux bridge",
            true,
        ),
        (
            "rr_pinned_p50",
            "switch-only request/response p50, pinned endpoints: ≤ 1.0× Linux bridge",
            true,
        ),
        (
            "rr_pinned_p99",
            "switch-only request/response p99, pinned endpoints: ≤ 1.0× Linux bridge",
            true,
        ),
    ] {
        let m = ratio(
            r.summary(&format!("switch/{k}/ringswitch")),
            r.summary(&format!("switch/{k}/linux-bridge")),
        );
        let _ = writeln!(
            md,
            "| {what} | {} | {} |",
            ratio_cell(m),
            verdict(m, 1.0, at_most)
        );
    }
    for (len, want) in [(64u32, 1.0), (1500, 1.0)] {
        let m = r
            .summary(&format!("costs/{len}/copies_pp/ringswitch"))
            .map(|s| s.median);
        let _ = writeln!(
            md,
            "| guest→guest payload copies per packet = 1 ({len} B) | {} | {} |",
            m.map_or("—".into(), fmt_value),
            match m {
                None => "not measured",
                Some(v) if (v - want).abs() < 0.01 => "met",
                Some(_) => "**missed**",
            }
        );
    }
    let g2v = r
        .summary("costs/guest_to_veth/copies_pp/ringswitch")
        .map(|s| s.median);
    let _ = writeln!(
        md,
        "| guest→veth payload copies in our process = 0 | {} copies | {} |",
        g2v.map_or("—".into(), fmt_value),
        match g2v {
            Some(c) if c < 0.01 => "met",
            None => "not measured",
            _ => "**missed**",
        }
    );
    let sys = r
        .summary("costs/64/syscalls_pp/ringswitch")
        .map(|s| s.median);
    let _ = writeln!(
        md,
        "| system calls per packet at load < 0.05 (64 B, equal cores) | {} | {} |",
        sys.map_or("—".into(), |v| format!("{v:.3}")),
        verdict(sys, 0.05, true)
    );
    for (prefix, what, want, unit) in [
        (
            "micro/decide_64B/100000",
            "forwarding decisions, 100k MACs",
            30.0,
            "M/s",
        ),
        ("micro/checksum", "checksum (best size)", 10.0, "GB/s"),
        ("micro/gso", "software GSO (best variant)", 20.0, "Gbit/s"),
    ] {
        let b = best(r, prefix);
        let _ = writeln!(
            md,
            "| {what}: ≥ {want} {unit} per core | {} | {} |",
            b.as_ref().map_or("—".into(), |(l, s)| format!(
                "{} {unit} ({l})",
                fmt_value(s.median)
            )),
            verdict(b.map(|(_, s)| s.median), want, false)
        );
    }

    // 1. vhost.
    let _ = writeln!(
        md,
        "\n## 1. vhost datapath (Mpps received by the sink)\n\n\
         testpmd `net_virtio_user` frontends ↔ switch ↔ frontends. *Equal cores*: the switch \
         alone on core 0 (ringswitch `--workers 1` under `taskset -c 0`, or testpmd with one \
         forwarding lcore there), both frontends in one testpmd process on core 1 (flowgen: \
         each port sends to the other and counts what it receives, both directions summed). \
         *Oversubscribed*: testpmd txonly → switch → testpmd rxonly as three processes, all \
         free to run on both cores.\n\n\
         | frames | placement | ringswitch | testpmd vhost | ratio |\n|---|---|---|---|---|"
    );
    let sets = plot_sets(r);
    let has = |name: &str| sets.iter().any(|s| s.0 == name && !s.3.is_empty());
    for (p, pl) in [("equal", "equal cores"), ("oversub", "oversubscribed")] {
        for len in [64u32, 1500] {
            let a = r.summary(&format!("vhost/{p}/{len}/ringswitch"));
            let b = r.summary(&format!("vhost/{p}/{len}/testpmd"));
            let _ = writeln!(
                md,
                "| {len} B | {pl} | {} | {} | {} |",
                cell(a),
                cell(b),
                ratio_cell(ratio(a, b))
            );
        }
    }
    plot_ref(&mut md, "vhost.svg", has("vhost.svg"));

    // 2. switch-only.
    let _ = writeln!(
        md,
        "\n## 2. Switch-only mode (veth ↔ veth between two namespaces)\n\n\
         The same veths joined by a Linux bridge or by ringswitch (`afpacket` ports, \
         `--workers 1`, default settings — which poll 50 µs after a batch only while the worker is busy; and with `--poll-us 50`, a busy-poll window after every batch). \
         Latency: our `udp-rr` tool, one 18-byte request in flight, with the endpoints free \
         to run anywhere and with client and echo server both pinned to core 1 (`taskset -c 1`). \
         CPU per Gbit/s: the whole machine's busy time (/proc/stat) during the TCP test over its \
         rate, so the bridge's softirq work and ringswitch's worker are both in it.\n\n\
         | test | Linux bridge | ringswitch | ratio | ringswitch --poll-us 50 | ratio |\n\
         |---|---|---|---|---|---|"
    );
    for (k, what) in [
        ("tcp", "iperf3 TCP, Gbit/s"),
        ("udp64", "iperf3 UDP 64 B frames, kpps received"),
        ("rr_p50", "UDP request/response p50, µs"),
        ("rr_p99", "UDP request/response p99, µs"),
        (
            "rr_pinned_p50",
            "UDP request/response p50, both endpoints on core 1, µs",
        ),
        (
            "rr_pinned_p99",
            "UDP request/response p99, both endpoints on core 1, µs",
        ),
        (
            "tcp_cpu_per_gbit",
            "CPU during TCP (whole machine), cores per Gbit/s",
        ),
    ] {
        let a = r.summary(&format!("switch/{k}/linux-bridge"));
        let b = r.summary(&format!("switch/{k}/ringswitch"));
        let c = r.summary(&format!("switch/{k}/ringswitch-poll50"));
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {} | {} | {} |",
            cell(a),
            cell(b),
            ratio_cell(ratio(b, a)),
            cell(c),
            ratio_cell(ratio(c, a))
        );
    }
    let _ = writeln!(
        md,
        "\n(ratio = ringswitch / bridge; for latency lower is better.)"
    );
    for p in ["switch-tcp.svg", "switch-udp.svg", "switch-latency.svg"] {
        plot_ref(&mut md, p, has(p));
    }

    // 3. costs.
    let _ = writeln!(
        md,
        "\n## 3. Per-packet costs\n\n\
         ringswitch's counters (`ctl stats --json`) at both ends of the window, CPU time \
         from /proc, system calls by `perf stat -e raw_syscalls:sys_enter`. Copies per \
         guest→guest packet = frames written into a destination RX ring / frames taken from \
         source TX rings.\n\n\
         | figure | 64 B | 1500 B | unit |\n|---|---|---|---|"
    );
    // `costs/64/<what>` and `costs/1500/<what>` share a row; other costs have one value.
    for f in r.figures.iter().filter(|f| f.key.starts_with("costs/")) {
        let rest = f.key.trim_start_matches("costs/");
        if let Some(what) = rest.strip_prefix("64/") {
            let big = r.summary(&format!("costs/1500/{what}"));
            let label = f.label.replace(", 64 B", "");
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} |",
                cell(f.summary()),
                cell(big),
                f.unit
            );
        } else if !rest.starts_with("1500/") {
            let _ = writeln!(md, "| {} | {} | | {} |", f.label, cell(f.summary()), f.unit);
        }
    }

    // 4. scaling.
    let _ = writeln!(
        md,
        "\n## 4. Scaling (64 B, Mpps, frontends in one flowgen process, all on both cores)\n\n\
         With 2 cores the frontends compete with the workers, so this shows whether more \
         workers/queues help or hurt here, not how far they scale on a big machine.\n\n\
         | configuration | Mpps |\n|---|---|"
    );
    for f in r.figures.iter().filter(|f| f.key.starts_with("scaling/")) {
        let _ = writeln!(md, "| {} | {} |", f.label, cell(f.summary()));
    }
    plot_ref(&mut md, "scaling.svg", has("scaling.svg"));

    // 5. micro.
    let _ = writeln!(
        md,
        "\n## 5. Micro-benchmarks (criterion, one core; median of the samples, min–max)\n\n\
         | benchmark | value | unit |\n|---|---|---|"
    );
    for f in r
        .figures
        .iter()
        .filter(|f| f.key.starts_with("micro/") && !f.key.ends_with("/phase"))
    {
        let _ = writeln!(md, "| {} | {} | {} |", f.label, cell(f.summary()), f.unit);
    }

    if let Some(p) = &r.profile {
        let _ = writeln!(
            md,
            "\n## Hot-path profile (ringswitch, 64 B, equal cores; `perf report --no-children`)\n\n```\n{}\n```",
            without_thread_boilerplate(p)
        );
    }

    let notes: Vec<_> = r.figures.iter().filter(|f| f.note.is_some()).collect();
    if !notes.is_empty() {
        let _ = writeln!(md, "\n## Not measured (or only partly), and why\n");
        for f in notes {
            let _ = writeln!(
                md,
                "- `{}` ({} of the runs succeeded): {}",
                f.key,
                f.runs.len(),
                f.note.as_deref().unwrap_or("").replace('\n', " ")
            );
        }
    }

    // The commands stay in the JSON: with their machine-local paths and per-run prefixes
    // they were most of this file and are no result.
    if r.figures.iter().any(|f| !f.commands.is_empty()) {
        let _ = writeln!(
            md,
            "\n## Exact commands\n\nThe exact commands of the first run of every figure are \
             in the `commands` field of each figure in \
             [bench-results/results.json](bench-results/results.json)."
        );
    }
    md
}

/// Drops the frames every call chain shares (thread start, std's spawn wrappers,
/// vhost-user-backend's event loop) so the chains show what differs.
fn without_thread_boilerplate(profile: &str) -> String {
    const SHARED: [&str; 11] = [
        "start_thread",
        "thread_start",
        "alloc::boxed::Box<dyn core::ops::function::FnOnce",
        "core::ops::function::FnOnce::call_once",
        "spawn_unchecked",
        "catch_unwind",
        "AssertUnwindSafe",
        "__rust_begin_short_backtrace",
        "VhostUserHandler<T>::new",
        "VringEpollHandler<T>::run",
        "clone3",
    ];
    profile
        .lines()
        .filter(|l| !SHARED.iter().any(|s| l.contains(s)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sections 7–9 (each only when its phase ran), each ending in a blank line.
pub fn extra_sections(r: &Results) -> String {
    [
        super::qsize::render(r),
        super::isolation::render(r),
        super::dirtylog::render(r),
    ]
    .into_iter()
    .flatten()
    .map(|s| s + "\n")
    .collect()
}

/// The conditions of a run whose sections are shown beside the main run's.
fn separate_run_line(c: &super::results::Conditions, what: &str, file: &str) -> String {
    let steal = c
        .steal_share
        .map(|s| format!("{:.1} %", s * 100.0))
        .unwrap_or_else(|| "not measured".into());
    format!(
        "\n{what} (bench-results/{file}): {} → {}, \
         commit `{}`, {}, steal {steal}, {} rounds of {} s.\n",
        c.started_utc, c.finished_utc, c.git_commit, c.cpu, c.runs, c.secs
    )
}

fn plot_ref(md: &mut String, name: &str, present: bool) {
    if present {
        let _ = writeln!(md, "\n![{name}](bench-results/{name})");
    }
}

/// Writes BENCHMARKS.md at `root` and the SVG plots into `out_dir`.
pub fn write_all(r: &Results, root: &Path, out_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(out_dir)?;
    let mut md = render(r);
    // The latest interleaved comparison of two builds (`cargo xtask bench ab`), if any.
    if let Some(ab) = std::fs::read_to_string(out_dir.join("ab.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<super::ab::Ab>(&t).ok())
    {
        let section = format!(
            "## 6. Before and after (`cargo xtask bench ab`)\n\n{}\n",
            super::ab::render(&ab)
        );
        match md.find("## Exact commands") {
            Some(at) => md.insert_str(at, &section),
            None => md.push_str(&section),
        }
    }
    // 7.–9.: ring size, isolation and dirty logging, after §6 (only what was measured):
    // from this run, or else from a run of their own (`--only qsize,isolation,dirtylog
    // --results-to bench-results/extra.json`), named with its conditions.
    let mut extra = extra_sections(r);
    if extra.is_empty() {
        if let Some(x) = std::fs::read_to_string(out_dir.join("extra.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Results>(&t).ok())
        {
            let body = extra_sections(&x);
            if !body.is_empty() {
                extra = format!(
                    "{}{body}",
                    separate_run_line(
                        &x.conditions,
                        "Sections 7–9 come from a run of their own",
                        "extra.json"
                    )
                );
            }
        }
    }
    // 10.: packed virtqueues, from this run or a run of its own (`--only packed
    // --results-to bench-results/packed.json`).
    let packed = super::packed::render(r).or_else(|| {
        let x: Results = std::fs::read_to_string(out_dir.join("packed.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())?;
        let body = super::packed::render(&x)?;
        Some(format!(
            "{}{body}",
            separate_run_line(
                &x.conditions,
                "Section 10 comes from a run of its own",
                "packed.json"
            )
        ))
    });
    if let Some(p) = packed {
        extra.push_str(&p);
        extra.push('\n');
    }
    match md.find("## Exact commands") {
        Some(at) => md.insert_str(at, extra.trim_start()),
        None => md.push_str(&extra),
    }
    // 11.: VXLAN between two hosts, from this run or else from a run of its own
    // (`--only vxlan --results-to bench-results/vxlan.json`), named with its conditions.
    let vx = super::vxlan::render(r).or_else(|| {
        let x = std::fs::read_to_string(out_dir.join("vxlan.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Results>(&t).ok())?;
        let c = &x.conditions;
        super::vxlan::render(&x).map(|body| {
            format!(
                "{body}\nFrom a run of its own (bench-results/vxlan.json): {} → {}, commit `{}`, \
                 {}, {} runs of {} s.\n",
                c.started_utc, c.finished_utc, c.git_commit, c.cpu, c.runs, c.secs
            )
        })
    });
    if let Some(vx) = vx {
        let section = format!("{}\n", vx.trim_start());
        match md.find("## Exact commands") {
            Some(at) => md.insert_str(at, &section),
            None => md.push_str(&section),
        }
    }
    std::fs::write(root.join("BENCHMARKS.md"), md)?;
    for (name, title, unit, bars) in plot_sets(r) {
        if !bars.is_empty() {
            plot::bars(&out_dir.join(name), title, unit, &bars)?;
        }
    }
    Ok(())
}

fn plot_sets(r: &Results) -> Vec<(&'static str, &'static str, &'static str, Vec<Bar>)> {
    let bar = |key: &str, category: String, series: &str| {
        r.summary(key).map(|s| Bar {
            category,
            series: series.to_string(),
            s,
        })
    };
    let mut vhost = vec![];
    for p in ["equal", "oversub"] {
        for len in [64u32, 1500] {
            for series in ["ringswitch", "testpmd"] {
                vhost.extend(bar(
                    &format!("vhost/{p}/{len}/{series}"),
                    format!("{len} B {p}"),
                    series,
                ));
            }
        }
    }
    let sw = |ks: &[&str]| {
        let mut v = vec![];
        for k in ks {
            for series in ["linux-bridge", "ringswitch", "ringswitch-poll50"] {
                v.extend(bar(
                    &format!("switch/{k}/{series}"),
                    k.replace("rr_", ""),
                    series,
                ));
            }
        }
        v
    };
    let scaling = r
        .figures
        .iter()
        .filter(|f| f.key.starts_with("scaling/"))
        .filter_map(|f| {
            bar(
                &f.key,
                f.key.trim_start_matches("scaling/").replace('/', " "),
                "ringswitch",
            )
        })
        .collect();
    vec![
        ("vhost.svg", "vhost datapath", "Mpps", vhost),
        ("switch-tcp.svg", "iperf3 TCP", "Gbit/s", sw(&["tcp"])),
        (
            "switch-udp.svg",
            "UDP 64 B received",
            "kpps",
            sw(&["udp64"]),
        ),
        (
            "switch-latency.svg",
            "UDP request/response",
            "µs",
            sw(&["rr_p50", "rr_p99"]),
        ),
        ("scaling.svg", "ringswitch scaling, 64 B", "Mpps", scaling),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_share_and_host_lines() {
        assert_eq!(steal_share([10, 1000], [60, 2000]), Some(0.05));
        assert_eq!(steal_share([10, 1000], [10, 1000]), None, "no time passed");
        assert_eq!(
            steal_share([10, 1000], [5, 2000]),
            None,
            "counter went back"
        );
        assert!(cpu_stat().is_some_and(|[steal, total]| steal <= total));
        let mut r = Results::default();
        r.conditions.cpu = "Some CPU @ 2300.000 MHz".into();
        r.conditions.steal_share = Some(0.125);
        let md = render(&r);
        assert!(md.contains("| CPU | Some CPU @ 2300.000 MHz |"));
        assert!(md.contains("(steal) | 12.5 % |"));
        // Results written before these fields existed still load.
        let old = serde_json::to_value(Results::default()).unwrap();
        let mut c = old["conditions"].as_object().unwrap().clone();
        c.remove("cpu");
        c.remove("stat_before");
        c.remove("steal_share");
        let back: Conditions = serde_json::from_value(serde_json::Value::Object(c)).unwrap();
        assert!(back.cpu.is_empty() && back.steal_share.is_none());
    }

    fn sample() -> Results {
        let mut r = Results::default();
        for v in [1.0, 1.2, 0.8] {
            r.add(
                "vhost/equal/64/ringswitch",
                "rs",
                "Mpps",
                v,
                &["rs run".into()],
            );
            r.add(
                "vhost/equal/64/testpmd",
                "tp",
                "Mpps",
                v * 2.0,
                &["tp".into()],
            );
            r.add("switch/tcp/linux-bridge", "br", "Gbit/s", 10.0 * v, &[]);
            r.add("switch/tcp/ringswitch", "rs", "Gbit/s", 9.0 * v, &[]);
        }
        r.fail(
            "vhost/oversub/64/ringswitch",
            "rs",
            "Mpps",
            "daemon crashed",
            &[],
        );
        r
    }

    #[test]
    fn report_has_ratios_verdicts_and_reasons() {
        let md = render(&sample());
        assert!(
            md.contains("| 64 B | equal cores | 1.00 (0.800–1.20) | 2.00 (1.60–2.40) | 0.50× |"),
            "{md}"
        );
        assert!(md.contains("| vhost 64 B, equal cores: ≥ 1.0× testpmd | 0.50× | **missed** |"));
        assert!(md.contains("| switch-only TCP: ≥ 1.0× Linux bridge | 0.90× | **missed** |"));
        assert!(md.contains("not measured: daemon crashed"));
        assert!(!md.contains("rs run"), "commands stay in results.json");
        assert!(md.contains("`commands` field of each figure in"));
        assert!(!render(&Results::default()).contains("## Exact commands"));
        assert!(md.starts_with("# Benchmarks"));
    }

    #[test]
    fn profile_chains_lose_shared_frames() {
        let p = "  10%  [.] deliver\n    ---start_thread\n       std::panicking::catch_unwind (inlined)\n       process_tx";
        assert_eq!(
            without_thread_boilerplate(p),
            "  10%  [.] deliver\n       process_tx"
        );
    }

    #[test]
    fn vxlan_section_from_this_run_or_its_own() {
        let dir = std::env::temp_dir().join(format!("xtask-report-vx-{}", std::process::id()));
        let out = dir.join("bench-results");
        write_all(&sample(), &dir, &out).unwrap();
        let md = std::fs::read_to_string(dir.join("BENCHMARKS.md")).unwrap();
        assert!(!md.contains("## 11. VXLAN"), "not measured: no section");
        let mut own = Results::default();
        own.conditions.git_commit = "abc123".into();
        own.add("vxlan/tcp/linux-vxlan-bridge", "", "Gbit/s", 2.0, &[]);
        own.add("vxlan/tcp/ringswitch", "", "Gbit/s", 3.0, &[]);
        std::fs::write(out.join("vxlan.json"), serde_json::to_string(&own).unwrap()).unwrap();
        write_all(&sample(), &dir, &out).unwrap();
        let md = std::fs::read_to_string(dir.join("BENCHMARKS.md")).unwrap();
        let at = md.find("## 11. VXLAN").expect("section from vxlan.json");
        assert!(at < md.find("## Exact commands").unwrap(), "{md}");
        assert!(
            md.contains("| iperf3 TCP, Gbit/s | 2.00 | 3.00 | 1.50× |"),
            "{md}"
        );
        assert!(md.contains("commit `abc123`"), "{md}");
        let mut both = sample();
        both.add("vxlan/tcp/ringswitch", "", "Gbit/s", 5.0, &[]);
        write_all(&both, &dir, &out).unwrap();
        let md = std::fs::read_to_string(dir.join("BENCHMARKS.md")).unwrap();
        assert!(
            md.contains("| — | 5.00 |") && !md.contains("abc123"),
            "this run's first"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writes_file_and_plots() {
        let dir = std::env::temp_dir().join(format!("xtask-report-{}", std::process::id()));
        write_all(&sample(), &dir, &dir.join("bench-results")).unwrap();
        assert!(dir.join("BENCHMARKS.md").exists());
        assert!(dir.join("bench-results/vhost.svg").exists());
        assert!(dir.join("bench-results/switch-tcp.svg").exists());
        assert!(!dir.join("bench-results/scaling.svg").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
