//! `cargo xtask bench`: ringswitch side by side with DPDK testpmd (vhost datapath) and the
//! Linux bridge (switch-only mode), per-packet costs, scaling and the criterion
//! micro-benchmarks; writes bench-results/results.json, SVG plots and BENCHMARKS.md.
//!
//! Not part of `cargo xtask test`: it needs quiet cores to mean anything, and minutes.
//! Every figure is the median of `--runs` runs (default 3) with min/max; ringswitch and its
//! peer are interleaved within each run because the machine is bimodal (see
//! docs/design/bench.md).

mod ab;
pub(crate) mod daemon;
mod dirtylog;
mod isolation;
mod micro;
mod netns;
mod packed;
mod plot;
pub(crate) mod proc;
mod qsize;
mod report;
mod results;
mod stats;
mod switchonly;
mod testpmd;
mod udplat;
mod vhost;
mod vxlan;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use results::Results;
use vhost::{Case, Frontend, Placement, Switch};

const USAGE: &str = "\
usage: cargo xtask bench [--quick] [--runs N] [--secs S] [--only LIST] [--profile]
                         [--ringswitch PATH] [--report-only] [--results-to FILE]
       cargo xtask bench ab --baseline PATH ...   (two builds, interleaved: see bench/ab.rs)
       cargo xtask bench udp-echo ADDR:PORT
       cargo xtask bench udp-rr ADDR:PORT [--count N] [--size BYTES]

  --quick        1 run of 2 s per figure (smoke test of the command)
  --runs N       runs per figure (default 3; medians need >= 3)
  --secs S       measurement window per run in seconds (default 4)
  --only LIST    comma-separated phases (default: all): vhost, scaling, switch, micro,
                 qsize (virtio-user queue_size 256 vs 1024), isolation (a pair alone vs
                 beside a hostile frontend), dirtylog (guest -> guest with LOG_ALL dirty
                 logging on vs off, criterion), vxlan (two hosts over VXLAN: ringswitch
                 on both ends vs Linux vxlan + bridge on both ends, iperf3 TCP and UDP), packed (split vs
                 packed virtqueues, and against testpmd's vhost on packed rings; not in
                 the default run)
  --profile      perf record ringswitch during the 64-byte vhost run; top symbols into
                 BENCHMARKS.md
  --ringswitch   use this binary instead of building target/release/ringswitch
  --report-only  regenerate BENCHMARKS.md and plots from bench-results/results.json
  --results-to   write the results to FILE only (no BENCHMARKS.md, no plots)";

/// What every phase needs.
pub struct Ctx {
    pub ringswitch: PathBuf,
    pub xtask: PathBuf,
    pub tmp: PathBuf,
    pub secs: u64,
    pub warmup: Duration,
    pub runs: usize,
    pub rr_count: u64,
}

impl Ctx {
    /// Our own tool (`xtask bench ARGS`) inside namespace `ns`.
    pub fn xtask_in(&self, ns: &str, args: &[&str]) -> Command {
        switchonly::tool_in(&self.xtask, ns, args)
    }
}

struct Options {
    runs: usize,
    secs: u64,
    phases: Vec<String>,
    profile: bool,
    ringswitch: Option<PathBuf>,
    report_only: bool,
    results_to: Option<PathBuf>,
}

/// Every phase, in run order.
const PHASES: [&str; 8] = [
    "vhost",
    "scaling",
    "switch",
    "micro",
    "qsize",
    "isolation",
    "dirtylog",
    "vxlan",
];

/// Phases only run when named in `--only` (their own run, `--results-to
/// bench-results/<phase>.json`, shown beside the main run's sections).
const EXTRA_PHASES: [&str; 1] = ["packed"];

fn parse_options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        runs: 3,
        secs: 4,
        phases: PHASES.map(String::from).to_vec(),
        profile: false,
        ringswitch: None,
        report_only: false,
        results_to: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--quick" => {
                o.runs = 1;
                o.secs = 2;
            }
            "--runs" => o.runs = val()?.parse().context("--runs")?,
            "--secs" => o.secs = val()?.parse().context("--secs")?,
            "--only" => o.phases = val()?.split(',').map(String::from).collect(),
            "--profile" => o.profile = true,
            "--ringswitch" => o.ringswitch = Some(PathBuf::from(val()?)),
            "--report-only" => o.report_only = true,
            "--results-to" => o.results_to = Some(PathBuf::from(val()?)),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown option {a}\n{USAGE}"),
        }
    }
    if o.runs == 0 || o.secs == 0 {
        bail!("--runs and --secs must be at least 1");
    }
    for p in &o.phases {
        if !PHASES.contains(&p.as_str()) && !EXTRA_PHASES.contains(&p.as_str()) {
            bail!("unknown phase {p:?} in --only\n{USAGE}");
        }
    }
    Ok(o)
}

/// Entry point of `cargo xtask bench …`.
pub fn run(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("udp-echo") => return udplat::echo(&args[1..]),
        Some("udp-rr") => return udplat::rr(&args[1..]),
        Some("ab") => return ab::run(&args[1..]),
        _ => {}
    }
    let o = parse_options(args)?;
    let root = crate::workspace_root();
    let out_dir = root.join("bench-results");
    if o.report_only {
        let text = std::fs::read_to_string(out_dir.join("results.json"))
            .context("no bench-results/results.json: run `cargo xtask bench` first")?;
        let r: Results = serde_json::from_str(&text)?;
        return report::write_all(&r, &root, &out_dir);
    }
    proc::install_signal_handlers();
    // Everything the benchmarks run comes from Debian packages, installed when missing.
    crate::deps::ensure(crate::deps::TEST_PACKAGES)?;
    // perf (system-call counts, --profile) is optional: without it those figures are
    // reported as not measured.
    if let Err(e) = crate::deps::ensure(&["linux-perf"]) {
        eprintln!(
            "bench: linux-perf not installed ({e}); syscall counts and --profile are skipped"
        );
    }
    for tool in ["dpdk-testpmd", "iperf3", "ip", "stdbuf", "taskset"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            bail!("{tool} is missing even after installing the test packages");
        }
    }
    let ringswitch = match &o.ringswitch {
        Some(p) => p.clone(),
        None => build_ringswitch(&root)?,
    };
    let tmp = std::env::temp_dir().join(format!("rsbench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let _tmp_guard = RemoveOnDrop(tmp.clone());
    let ctx = Ctx {
        ringswitch,
        xtask: std::env::current_exe().context("path of the xtask binary")?,
        tmp,
        secs: o.secs,
        warmup: Duration::from_millis(if o.secs <= 2 { 500 } else { 1000 }),
        runs: o.runs,
        rr_count: if o.secs <= 2 { 2_000 } else { 10_000 },
    };
    let mut r = Results {
        conditions: report::conditions_now(&root, &o.phases, args, o.runs, o.secs),
        ..Default::default()
    };
    let want = |p: &str| o.phases.iter().any(|x| x == p);
    if want("vhost") {
        phase("vhost", &mut r, |r| vhost_phase(&ctx, r, o.profile))?;
    }
    if want("scaling") {
        phase("scaling", &mut r, |r| scaling_phase(&ctx, r))?;
    }
    if want("switch") {
        phase("switch", &mut r, |r| switch_phase(&ctx, r))?;
    }
    if want("micro") {
        phase("micro", &mut r, |r| micro_phase(&root, o.secs, r))?;
    }
    if want("qsize") {
        phase("qsize", &mut r, |r| qsize::phase(&ctx, r))?;
    }
    if want("isolation") {
        phase("isolation", &mut r, |r| isolation::phase(&ctx, &root, r))?;
    }
    if want("dirtylog") {
        phase("dirtylog", &mut r, |r| dirtylog::phase(&root, o.secs, r))?;
    }
    if want("vxlan") {
        phase("vxlan", &mut r, |r| vxlan::phase(&ctx, r))?;
    }
    if want("packed") {
        phase("packed", &mut r, |r| packed::phase(&ctx, r))?;
    }
    report::finish_conditions(&mut r.conditions);
    if let Some(to) = &o.results_to {
        std::fs::write(to, serde_json::to_string_pretty(&r)? + "\n")?;
        return Ok(());
    }
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(
        out_dir.join("results.json"),
        serde_json::to_string_pretty(&r)? + "\n",
    )?;
    report::write_all(&r, &root, &out_dir)?;
    eprintln!("bench: wrote BENCHMARKS.md and bench-results/");
    Ok(())
}

/// Runs a phase; a failure is recorded and the next phase still runs, except Ctrl-C.
fn phase(name: &str, r: &mut Results, f: impl FnOnce(&mut Results) -> Result<()>) -> Result<()> {
    eprintln!("bench: == {name} ==");
    if let Err(e) = f(r) {
        proc::check_interrupted()?;
        eprintln!("bench: phase {name} failed: {e:#}");
        r.fail(
            &format!("{name}/phase"),
            &format!("{name} phase"),
            "",
            &format!("{e:#}"),
            &[],
        );
    }
    Ok(())
}

fn build_ringswitch(root: &Path) -> Result<PathBuf> {
    crate::cargo(&["build", "--release", "-p", "ringswitch"])?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        root.join(target)
    };
    Ok(target.join("release").join("ringswitch"))
}

fn target_dir(root: &Path) -> PathBuf {
    let t = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    if t.is_absolute() {
        t
    } else {
        root.join(t)
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn impl_name(s: Switch) -> &'static str {
    match s {
        Switch::Ringswitch { .. } => "ringswitch",
        Switch::Testpmd => "testpmd",
    }
}

fn vhost_phase(ctx: &Ctx, r: &mut Results, profile: bool) -> Result<()> {
    let mut profiled = false;
    for (placement, pname) in [(Placement::Equal, "equal"), (Placement::Shared, "oversub")] {
        for len in [64u32, 1500] {
            for run in 0..ctx.runs {
                let mut order = [Switch::Ringswitch { workers: 1 }, Switch::Testpmd];
                if run % 2 == 1 {
                    order.reverse();
                }
                for sw in order {
                    let name = impl_name(sw);
                    let case = Case {
                        frontend: match placement {
                            Placement::Equal => Frontend::Pair,
                            Placement::Shared => Frontend::Split,
                        },
                        switch: sw,
                        placement,
                        frame_len: len,
                        queues: 1,
                        queue_size: None,
                        packed: false,
                        third_port: false,
                    };
                    let key = format!("vhost/{pname}/{len}/{name}");
                    let label = format!("{name}, {len} B, {pname}");
                    eprintln!("bench: {label} (run {}/{})", run + 1, ctx.runs);
                    let do_profile = profile
                        && !profiled
                        && len == 64
                        && placement == Placement::Equal
                        && name == "ringswitch";
                    match vhost::run_once(ctx, case, do_profile) {
                        Ok(o) => {
                            r.add(&key, &label, "Mpps", o.mpps, &o.commands);
                            if let Some(p) = o.profile.as_ref() {
                                profiled = true;
                                r.profile = Some(format!("{}\n\n{p}", o.commands.join("\n")));
                            }
                            record_vhost_costs(r, pname, len, name, &o);
                        }
                        Err(e) => {
                            proc::check_interrupted()?;
                            eprintln!("bench:   failed: {e:#}");
                            r.fail(&key, &label, "Mpps", &format!("{e:#}"), &[]);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn record_vhost_costs(r: &mut Results, pname: &str, len: u32, name: &str, o: &vhost::Outcome) {
    if pname != "equal" {
        return;
    }
    let cmds = &o.commands;
    let packets = o.mpps * 1e6 * o.secs;
    if let Some(n) = o.syscalls {
        if packets > 0.0 {
            r.add(
                &format!("costs/{len}/syscalls_pp/{name}"),
                &format!("{name}: system calls per packet, {len} B (perf stat)"),
                "syscalls/pkt",
                n as f64 / packets,
                cmds,
            );
        }
    }
    if let Some(n) = o.frontend_syscalls {
        if packets > 0.0 {
            r.add(
                &format!("costs/{len}/frontend_syscalls_pp/{name}"),
                &format!("testpmd frontends with {name}: their system calls per packet, {len} B"),
                "syscalls/pkt",
                n as f64 / packets,
                cmds,
            );
        }
    }
    if o.mpps > 0.0 && o.cpu_cores.is_finite() {
        r.add(
            &format!("costs/{len}/cpu_per_mpps/{name}"),
            &format!("{name}: CPU cores per Mpps, {len} B"),
            "cores/Mpps",
            o.cpu_cores / o.mpps,
            cmds,
        );
    }
    let Some(d) = o.delta else { return };
    let label = format!("ringswitch: io_uring_enter per worker packet, {len} B");
    let key = format!("costs/{len}/uring_enters_pp/ringswitch");
    if d.worker_packets > 0 {
        r.add(
            &key,
            &label,
            "enters/pkt",
            d.io_uring_enters as f64 / d.worker_packets as f64,
            cmds,
        );
    } else {
        r.fail(
            &key,
            &label,
            "enters/pkt",
            "guest→guest frames are forwarded on vhost-user-backend threads; the io_uring workers counted no packets",
            cmds,
        );
    }
    if d.rx_from_guests > 0 {
        r.add(
            &format!("costs/{len}/copies_pp/ringswitch"),
            &format!("ringswitch: payload copies per guest→guest packet, {len} B"),
            "copies/pkt",
            d.tx_to_guests as f64 / d.rx_from_guests as f64,
            cmds,
        );
    }
}

fn scaling_phase(ctx: &Ctx, r: &mut Results) -> Result<()> {
    // `--workers 2` with one queue pair is also the first point of the queue series.
    let configs: [(&str, usize, u16); 4] = [
        ("workers/1", 1, 1),
        ("workers/2", 2, 1),
        ("queues/2", 2, 2),
        ("queues/4", 2, 4),
    ];
    for run in 0..ctx.runs {
        for (key, workers, queues) in configs {
            let key = format!("scaling/{key}");
            let label = format!("ringswitch --workers {workers}, {queues} queue pair(s), 64 B");
            eprintln!("bench: {label} (run {}/{})", run + 1, ctx.runs);
            let case = Case {
                frontend: Frontend::Pair,
                switch: Switch::Ringswitch { workers },
                placement: Placement::Shared,
                frame_len: 64,
                queues,
                queue_size: None,
                packed: false,
                third_port: false,
            };
            match vhost::run_once(ctx, case, false) {
                Ok(o) => r.add(&key, &label, "Mpps", o.mpps, &o.commands),
                Err(e) => {
                    proc::check_interrupted()?;
                    eprintln!("bench:   failed: {e:#}");
                    r.fail(&key, &label, "Mpps", &format!("{e:#}"), &[]);
                }
            }
        }
    }
    Ok(())
}

fn switch_phase(ctx: &Ctx, r: &mut Results) -> Result<()> {
    use switchonly::Joiner;
    let mut topo = netns::Topology::create()?;
    let servers = switchonly::Servers::start(ctx, &topo)?;
    for run in 0..ctx.runs {
        let mut order = [Joiner::Bridge, Joiner::Ringswitch, Joiner::RingswitchPoll];
        order.rotate_left(run % 3);
        for j in order {
            let n = j.name();
            eprintln!("bench: switch-only {n} (run {}/{})", run + 1, ctx.runs);
            let f = match switchonly::run_once(ctx, &mut topo, j, true) {
                Ok(f) => f,
                Err(e) => {
                    proc::check_interrupted()?;
                    eprintln!("bench:   failed: {e:#}");
                    let _ = topo.bridge_down();
                    for (k, u) in [("tcp", "Gbit/s"), ("udp64", "kpps"), ("rr_p50", "µs")] {
                        r.fail(&format!("switch/{k}/{n}"), n, u, &format!("{e:#}"), &[]);
                    }
                    continue;
                }
            };
            let mut cmds = servers.commands.clone();
            cmds.extend(f.commands.iter().cloned());
            let mut put = |k: &str, label: String, unit: &str, v: Option<Result<f64>>| match v {
                Some(Ok(v)) => r.add(&format!("switch/{k}/{n}"), &label, unit, v, &cmds),
                Some(Err(e)) => r.fail(
                    &format!("switch/{k}/{n}"),
                    &label,
                    unit,
                    &format!("{e:#}"),
                    &cmds,
                ),
                None => {}
            };
            put("tcp", format!("{n}: iperf3 TCP"), "Gbit/s", f.tcp_gbit);
            put(
                "udp64",
                format!("{n}: iperf3 UDP 64-byte frames received"),
                "kpps",
                f.udp_pps.map(|r| r.map(|p| p / 1e3)),
            );
            put(
                "tcp_cpu_per_gbit",
                format!("{n}: busy cores (whole machine) per Gbit/s of TCP"),
                "cores/(Gbit/s)",
                f.tcp_cpu_per_gbit,
            );
            for (rr, key, how) in [(f.rr, "rr", ""), (f.rr_pinned, "rr_pinned", ", pinned")] {
                let (p50, p99) = match rr {
                    Some(Ok(rr)) => (Some(Ok(rr.p50_us)), Some(Ok(rr.p99_us))),
                    Some(Err(e)) => {
                        let msg = format!("{e:#}");
                        (Some(Err(anyhow::anyhow!("{msg}"))), Some(Err(e)))
                    }
                    None => (None, None),
                };
                put(
                    &format!("{key}_p50"),
                    format!("{n}: UDP request/response p50{how}"),
                    "µs",
                    p50,
                );
                put(
                    &format!("{key}_p99"),
                    format!("{n}: UDP request/response p99{how}"),
                    "µs",
                    p99,
                );
            }
            if let (Some(d), Joiner::Ringswitch) = (f.udp_delta, j) {
                if d.worker_packets > 0 {
                    r.add(
                        "costs/afpacket/uring_enters_pp/ringswitch",
                        "ringswitch: io_uring_enter per worker packet, veth↔veth (UDP 64 B)",
                        "enters/pkt",
                        d.io_uring_enters as f64 / d.worker_packets as f64,
                        &cmds,
                    );
                }
                let mpps = d.tx_mpps();
                if mpps > 0.0 && d.cpu_cores.is_finite() {
                    r.add(
                        "costs/afpacket/cpu_per_mpps/ringswitch",
                        "ringswitch: CPU cores per Mpps, veth↔veth (UDP 64 B)",
                        "cores/Mpps",
                        d.cpu_cores / mpps,
                        &cmds,
                    );
                }
            }
        }
        // Guest → veth: the zero-copy path's counters.
        let key = "costs/guest_to_veth/copies_pp/ringswitch";
        let label = "ringswitch: payload copies per guest→veth packet (in our process)";
        match switchonly::guest_to_veth(ctx, &topo) {
            Ok((d, cmds)) if d.rx_from_guests > 0 && d.tx > 0 => {
                // Copies in our process: frames written into guest RX rings (none here:
                // the only destination is the veth) per frame taken from the guest.
                r.add(
                    key,
                    label,
                    "copies/pkt",
                    d.tx_to_guests as f64 / d.rx_from_guests as f64,
                    &cmds,
                );
            }
            Ok((d, cmds)) if d.rx_from_guests > 0 => {
                let why = format!(
                    "guest→veth is not forwarded yet: {} frames taken from the guest, 0 delivered \
                     to the veth, {} counted drops",
                    d.rx_from_guests, d.drops
                );
                r.fail(key, label, "copies/pkt", &why, &cmds);
            }
            Ok((d, cmds)) => r.fail(
                key,
                label,
                "copies/pkt",
                &format!("no frame from the guest reached ringswitch ({d:?})"),
                &cmds,
            ),
            Err(e) => {
                proc::check_interrupted()?;
                r.fail(key, label, "copies/pkt", &format!("{e:#}"), &[]);
            }
        }
    }
    drop(servers);
    Ok(())
}

/// Runs criterion bench `bench` of `package` with these warm-up and measurement times
/// (seconds); returns the command line, for the results file.
pub(crate) fn run_criterion(package: &str, bench: &str, warm: &str, meas: &str) -> Result<String> {
    let args = [
        "bench",
        "-p",
        package,
        "--bench",
        bench,
        "--",
        "--warm-up-time",
        warm,
        "--measurement-time",
        meas,
        "--noplot",
    ];
    crate::cargo(&args)?;
    Ok(format!("cargo {}", args.join(" ")))
}

fn micro_phase(root: &Path, secs: u64, r: &mut Results) -> Result<()> {
    let (warm, meas) = if secs <= 2 { ("0.5", "1") } else { ("1", "2") };
    let mut cmds = vec![];
    for bench in ["forward", "offload"] {
        cmds.push(run_criterion("ringswitch-switch", bench, warm, meas)?);
    }
    let dir = target_dir(root).join("criterion");
    let figs = micro::collect(&dir, &["decide", "parse", "checksum", "gso"])?;
    if figs.is_empty() {
        bail!("no criterion results under {}", dir.display());
    }
    for f in figs {
        r.figures.retain(|x| x.key != format!("micro/{}", f.id));
        for v in &f.rates {
            r.add(&format!("micro/{}", f.id), &f.id, f.unit, *v, &cmds);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let a = |v: &[&str]| parse_options(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let o = a(&[]).unwrap();
        assert_eq!((o.runs, o.secs, o.phases.len()), (3, 4, 8));
        assert_eq!(a(&["--only", "vxlan"]).unwrap().phases, ["vxlan"]);
        assert_eq!(a(&["--only", "dirtylog"]).unwrap().phases, ["dirtylog"]);
        let o = a(&["--only", "qsize,isolation"]).unwrap();
        assert_eq!(o.phases.len(), 2);
        let o = a(&["--quick", "--only", "switch,micro"]).unwrap();
        assert_eq!((o.runs, o.secs), (1, 2));
        assert_eq!(o.phases, vec!["switch".to_string(), "micro".to_string()]);
        assert!(a(&["--only", "nope"]).is_err());
        assert!(a(&["--runs"]).is_err());
        assert!(a(&["--runs", "0"]).is_err());
        assert!(a(&["--bogus"]).is_err());
    }
}
