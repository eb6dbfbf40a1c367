//! The vhost datapath benchmark: testpmd `net_virtio_user` txonly → switch → testpmd
//! `net_virtio_user` rxonly, where the switch is ringswitch (two vhost-user ports) or
//! testpmd itself (two `net_vhost` ports in io forwarding).
//!
//! The figure is the rate the rxonly sink received, as testpmd itself reports it (Rx-pps,
//! measured with its own clock per statistics period), averaged over the measurement
//! window: the same meter for both switches. For ringswitch, its own counters are read
//! at the start and end of the same window (packets, io_uring_enter calls, copies into
//! guest rings, CPU time) to give the per-packet costs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::daemon::{Daemon, Delta};
use super::proc::{pause, Proc};
use super::testpmd::{self, Cpus};
use super::Ctx;

/// Which switch sits between the two virtio-user frontends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    Ringswitch { workers: usize },
    Testpmd,
}

/// Where the processes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The switch alone on core 0 (one testpmd forwarding core, or ringswitch pinned
    /// there), both frontends on core 1: equal core budgets for the two switches.
    Equal,
    /// Every process may run on both cores: busy-pollers compete with each other.
    Shared,
}

impl Placement {
    fn switch_cpus(self) -> Cpus {
        match self {
            Placement::Equal => Cpus::Core(0),
            Placement::Shared => Cpus::Shared,
        }
    }
    fn frontend_cpus(self) -> Cpus {
        match self {
            Placement::Equal => Cpus::Core(1),
            Placement::Shared => Cpus::Shared,
        }
    }
}

/// How the traffic is generated and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// One testpmd with both virtio-user ports in flowgen: both directions, one loop.
    Pair,
    /// testpmd txonly on port A and a second testpmd rxonly on port B.
    Split,
}

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub frontend: Frontend,
    pub switch: Switch,
    pub placement: Placement,
    pub frame_len: u32,
    pub queues: u16,
    /// virtio-user's ring size (`queue_size=`), when not its default of 256.
    pub queue_size: Option<u16>,
    /// Packed virtqueues (virtio 1.2 §2.8): virtio-user `packed_vq=1`, ringswitch ports
    /// `packed=on` (testpmd's vhost takes whichever the frontend negotiates).
    pub packed: bool,
    /// A third vhost-user port on the switch (ringswitch only), for a process started
    /// with [`run_once_with`] — the isolation scenario's hostile frontend.
    pub third_port: bool,
}

/// One measured run.
pub struct Outcome {
    pub mpps: f64,
    pub commands: Vec<String>,
    /// ringswitch's counters over the window (None for testpmd).
    pub delta: Option<Delta>,
    /// `perf report` text when profiling was asked for this run.
    pub profile: Option<String>,
    /// CPU cores the switch process used over the window (both switches).
    pub cpu_cores: f64,
    /// System calls the switch process made over the window (`perf stat -e
    /// raw_syscalls:sys_enter`), when perf works here.
    pub syscalls: Option<u64>,
    /// System calls of the traffic-generating testpmd (Pair frontends only): a switch
    /// that does not suppress notifications makes its busy-polling peers kick it.
    pub frontend_syscalls: Option<u64>,
    /// Seconds of the window.
    pub secs: f64,
    /// ringswitch's counters at both ends of the window (None for testpmd).
    pub snaps: Option<(super::daemon::Snapshot, super::daemon::Snapshot)>,
}

/// The third port's socket of a [`Case`] with `third_port`, as the daemon names the
/// port in `ctl stats`: `<dir>/c.sock`.
pub const THIRD_SOCK: &str = "c.sock";

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "rsb{}-{tag}{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes a DPDK process's runtime directory when dropped.
struct EalDir(String);

impl Drop for EalDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.0));
    }
}

fn wait_sockets(p: &mut Proc, socks: &[&Path]) -> Result<()> {
    p.wait_until("vhost-user sockets", Duration::from_secs(20), |_| {
        socks.iter().all(|s| s.exists())
    })
}

fn wait_first_stats(p: &mut Proc) -> Result<()> {
    let lines = p.lines();
    p.wait_until(
        "first statistics block",
        Duration::from_secs(20),
        move |_| {
            let l = lines.lock().map(|l| l.clone()).unwrap_or_default();
            !testpmd::parse_samples(l.iter().map(|(_, s)| s.as_str())).is_empty()
        },
    )
}

/// Runs one case once.
pub fn run_once(ctx: &Ctx, case: Case, profile: bool) -> Result<Outcome> {
    run_once_with(ctx, case, profile, None)
}

/// Starts a process on the third port's socket once the traffic runs.
pub type ThirdPortProc<'a> = &'a dyn Fn(&Path) -> Result<Proc>;

/// [`run_once`], with `third` started on the third port (`case.third_port`) after the
/// frontends' traffic is up and before the warm-up: it runs through the window and must
/// still be running at its end.
pub fn run_once_with(
    ctx: &Ctx,
    case: Case,
    profile: bool,
    third: Option<ThirdPortProc>,
) -> Result<Outcome> {
    let dir = ctx.tmp.join(unique("vh"));
    std::fs::create_dir_all(&dir)?;
    let _dir_guard = RemoveDir(dir.clone());
    let (s0, s1) = (dir.join("a.sock"), dir.join("b.sock"));
    let s2 = dir.join(THIRD_SOCK);
    let mut commands = vec![];
    if case.third_port && case.switch == Switch::Testpmd {
        bail!("a third port is only set up on ringswitch");
    }

    // The switch first: it listens on both sockets.
    let mut _eal = vec![];
    let (mut daemon, mut tpmd) = (None, None);
    match case.switch {
        Switch::Ringswitch { workers } => {
            let socks: &[&PathBuf] = if case.third_port {
                &[&s0, &s1, &s2]
            } else {
                &[&s0, &s1]
            };
            let ports: Vec<String> = socks
                .iter()
                .map(|s| {
                    let packed = if case.packed { ",packed=on" } else { "" };
                    format!(
                        "vhost-user:path={},queues={}{packed}",
                        s.display(),
                        case.queues
                    )
                })
                .collect();
            let taskset = case.placement.switch_cpus().taskset();
            let d = Daemon::start(
                &ctx.ringswitch,
                None,
                Some(&taskset),
                &ports,
                workers,
                &[],
                dir.join("ctl.sock"),
            )?;
            commands.push(d.proc.cmdline.clone());
            daemon = Some(d);
        }
        Switch::Testpmd => {
            let prefix = unique("sw");
            _eal.push(EalDir(prefix.clone()));
            let mut p = Proc::spawn(
                "testpmd-vhost",
                testpmd::vhost_switch(
                    &prefix,
                    case.placement.switch_cpus(),
                    [&s0, &s1],
                    case.queues,
                ),
            )?;
            commands.push(p.cmdline.clone());
            wait_sockets(&mut p, &[&s0, &s1])?;
            tpmd = Some(p);
        }
    }
    if let Some(d) = daemon.as_mut() {
        wait_sockets(&mut d.proc, &[&s0, &s1])?;
    }

    // Traffic: one flowgen process with both frontends (Pair), or the brief's txonly →
    // rxonly as two processes (Split; see testpmd::frontend_pair for why only the
    // oversubscribed runs use it).
    let mut procs: Vec<Proc> = vec![];
    match case.frontend {
        Frontend::Pair => {
            let prefix = unique("fe");
            _eal.push(EalDir(prefix.clone()));
            let mut p = Proc::spawn(
                "testpmd-frontends",
                testpmd::frontend_pair(
                    &prefix,
                    case.placement.frontend_cpus(),
                    [&s0, &s1],
                    case.queues,
                    case.frame_len,
                    case.queue_size,
                    case.packed,
                ),
            )?;
            commands.push(p.cmdline.clone());
            wait_first_stats(&mut p)?;
            procs.push(p);
        }
        Frontend::Split => {
            let rx_prefix = unique("rx");
            _eal.push(EalDir(rx_prefix.clone()));
            let mut rx = Proc::spawn(
                "testpmd-rx",
                testpmd::frontend(
                    &rx_prefix,
                    case.placement.frontend_cpus(),
                    &s1,
                    case.queues,
                    None,
                ),
            )?;
            commands.push(rx.cmdline.clone());
            wait_first_stats(&mut rx)?;
            let tx_prefix = unique("tx");
            _eal.push(EalDir(tx_prefix.clone()));
            let mut tx = Proc::spawn(
                "testpmd-tx",
                testpmd::frontend(
                    &tx_prefix,
                    case.placement.frontend_cpus(),
                    &s0,
                    case.queues,
                    Some(case.frame_len),
                ),
            )?;
            commands.push(tx.cmdline.clone());
            wait_first_stats(&mut tx)?;
            procs.push(rx);
            procs.push(tx);
        }
    }
    let mut third_proc = match (third, case.third_port) {
        (Some(f), true) => {
            let p = f(&s2)?;
            commands.push(p.cmdline.clone());
            Some(p)
        }
        (Some(_), false) => bail!("a third-port process needs case.third_port"),
        (None, _) => None,
    };
    pause(ctx.warmup)?;

    // Measurement window.
    let rx_lines = procs[0].lines();
    let n1 = rx_lines.lock().map(|l| l.len()).unwrap_or(0);
    let snap0 = daemon.as_mut().map(|d| d.snapshot()).transpose()?;
    let switch_pid = match (daemon.as_ref(), tpmd.as_ref()) {
        (Some(d), _) => d.pid(),
        (None, Some(p)) => p.pid(),
        (None, None) => bail!("no switch process"),
    };
    // Profiling is an extra: without perf (package linux-perf) the run still counts.
    let perf = match (profile, daemon.as_ref()) {
        (true, Some(d)) => start_perf(d.pid(), ctx.secs, &dir)
            .map_err(|e| eprintln!("bench:   no profile: {e:#}"))
            .ok(),
        _ => None,
    };
    let counting = start_syscall_count(switch_pid, ctx.secs).ok();
    let counting_fe = match case.frontend {
        Frontend::Pair => start_syscall_count(procs[0].pid(), ctx.secs).ok(),
        Frontend::Split => None,
    };
    let cpu0 = super::proc::cpu_seconds(switch_pid);
    let t1 = Instant::now();
    pause(Duration::from_secs(ctx.secs))?;
    let snap1 = daemon.as_mut().map(|d| d.snapshot()).transpose()?;
    let cpu1 = super::proc::cpu_seconds(switch_pid);
    let secs = t1.elapsed().as_secs_f64();
    let cpu_cores = match (cpu0, cpu1) {
        (Some(a), Some(b)) => (b - a).max(0.0) / secs,
        _ => f64::NAN,
    };
    let syscalls = counting.and_then(|p| finish_syscall_count(p).ok());
    let frontend_syscalls = counting_fe.and_then(|p| finish_syscall_count(p).ok());
    // The sink's last period may still be printing: wait for enough blocks (bounded;
    // a starved statistics thread prints late when everything is oversubscribed).
    let ports_counted: u16 = match case.frontend {
        Frontend::Pair => 2,
        Frontend::Split => 1,
    };
    let want = ctx.secs.max(1) as usize * usize::from(ports_counted);
    let deadline = t1 + Duration::from_secs(ctx.secs * 3 + 5);
    let samples = loop {
        let l = rx_lines
            .lock()
            .map(|l| l[n1..].to_vec())
            .unwrap_or_default();
        let s: Vec<_> = testpmd::parse_samples(l.iter().map(|(_, s)| s.as_str()))
            .into_iter()
            .filter(|s| s.port < ports_counted)
            .collect();
        if s.len() >= want || Instant::now() >= deadline {
            break s;
        }
        procs[0].ensure_running()?;
        pause(Duration::from_millis(100))?;
    };
    for p in procs.iter_mut() {
        p.ensure_running()?;
    }
    if let Some(p) = tpmd.as_mut() {
        p.ensure_running()?;
    }
    if let Some(p) = third_proc.as_mut() {
        p.ensure_running()
            .with_context(|| format!("the third port's process:\n{}", p.tail(10)))?;
    }
    let profile = perf.and_then(|p| {
        finish_perf(p, &dir)
            .map_err(|e| eprintln!("bench:   no profile: {e:#}"))
            .ok()
    });
    if samples.is_empty() {
        bail!(
            "the receiving testpmd printed no statistics in the window:\n{}",
            procs[0].tail(20)
        );
    }
    let mpps = received_mpps(&samples, ports_counted);
    let delta = match (&snap0, &snap1) {
        (Some(a), Some(b)) => Some(Delta::between(a, b, |n| n.ends_with(".sock"))),
        _ => None,
    };
    let snaps = snap0.zip(snap1);
    if let (Some(d), Some(dm)) = (daemon.as_ref(), delta.as_ref()) {
        commands.push(d.ctl_command(&ctx.ringswitch));
        eprintln!(
            "bench:   sink {mpps:.3} Mpps; ringswitch delivered {:.3} Mpps, cpu {:.2} cores, \
             {} io_uring_enter for {} worker packets, {} drops",
            dm.tx_mpps(),
            dm.cpu_cores,
            dm.io_uring_enters,
            dm.worker_packets,
            dm.drops
        );
    } else {
        eprintln!("bench:   sink {mpps:.3} Mpps");
    }
    // Stop the traffic first so the switch is not torn down under load.
    drop(third_proc);
    while let Some(p) = procs.pop() {
        drop(p);
    }
    Ok(Outcome {
        mpps,
        commands,
        delta,
        profile,
        cpu_cores,
        syscalls,
        frontend_syscalls,
        secs,
        snaps,
    })
}

/// Mpps received over the window: per port the mean of testpmd's per-period Rx-pps,
/// summed over the counted ports.
fn received_mpps(samples: &[testpmd::PortSample], ports: u16) -> f64 {
    (0..ports)
        .map(|p| {
            let v: Vec<f64> = samples
                .iter()
                .filter(|s| s.port == p)
                .map(|s| s.rx_pps as f64)
                .collect();
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        })
        .sum::<f64>()
        / 1e6
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `perf stat` counting the switch's system calls over the window.
fn start_syscall_count(pid: u32, secs: u64) -> Result<Proc> {
    let mut c = std::process::Command::new("perf");
    c.args([
        "stat",
        "-x,",
        "-e",
        "raw_syscalls:sys_enter",
        "-p",
        &pid.to_string(),
    ])
    .args(["--", "sleep", &secs.to_string()]);
    Proc::spawn("perf-stat", c)
}

fn finish_syscall_count(mut p: Proc) -> Result<u64> {
    p.wait_exit(Duration::from_secs(30))?;
    let lines = p.lines();
    let l = lines.lock().map(|l| l.clone()).unwrap_or_default();
    l.iter()
        .find_map(|(_, s)| parse_perf_stat_count(s))
        .with_context(|| format!("perf stat printed no count:\n{}", p.tail(5)))
}

/// The count of a `perf stat -x,` line like `123456,,raw_syscalls:sys_enter,...`.
fn parse_perf_stat_count(line: &str) -> Option<u64> {
    let mut f = line.split(',');
    let n = f.next()?.trim().parse().ok()?;
    f.any(|x| x.contains("sys_enter")).then_some(n)
}

struct Perf {
    proc: Proc,
}

fn start_perf(pid: u32, secs: u64, dir: &Path) -> Result<Perf> {
    let mut c = std::process::Command::new("perf");
    // DWARF unwinding: the release build has debug info but no frame pointers.
    c.args([
        "record",
        "-q",
        "--call-graph",
        "dwarf,16384",
        "-F",
        "499",
        "-o",
    ])
    .arg(dir.join("perf.data"))
    .args(["-p", &pid.to_string(), "--", "sleep", &secs.to_string()]);
    Ok(Perf {
        proc: Proc::spawn("perf", c)?,
    })
}

fn finish_perf(mut p: Perf, dir: &Path) -> Result<String> {
    p.proc
        .wait_exit(Duration::from_secs(60))
        .context("perf record did not finish")?;
    let report = |extra: &[&str]| {
        super::proc::output(
            std::process::Command::new("perf")
                .args(["report", "--stdio", "--no-children", "-i"])
                .arg(dir.join("perf.data"))
                .args(extra),
        )
    };
    let keep = |out: String, n: usize| {
        out.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty() && l.trim() != "|")
            .take(n)
            .map(|l| {
                l.trim_end_matches([' ', '-'])
                    .chars()
                    .take(160)
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let flat = keep(
        report(&["--percent-limit", "1", "--sort", "symbol", "-g", "none"])?,
        40,
    );
    // Callers of the biggest symbols: what to change, not only where time goes.
    let callers = report(&["--percent-limit", "5", "--sort", "symbol", "-G"])
        .map(|o| keep(o, 90))
        .unwrap_or_else(|e| format!("(no call graph: {e:#})"));
    Ok(format!(
        "{flat}\n\nCall chains of the symbols above 5 % (perf report -G):\n{callers}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use testpmd::PortSample;

    #[test]
    fn perf_stat_lines() {
        assert_eq!(
            parse_perf_stat_count("123456,,raw_syscalls:sys_enter,5000000,100.00,,"),
            Some(123456)
        );
        assert_eq!(
            parse_perf_stat_count("<not counted>,,raw_syscalls:sys_enter"),
            None
        );
        assert_eq!(parse_perf_stat_count("12,,cycles,"), None);
    }

    #[test]
    fn received_rate_sums_ports_of_mean_periods() {
        let s = |port, rx_pps| PortSample {
            port,
            rx_pps,
            ..Default::default()
        };
        let v = [
            s(0, 1_000_000),
            s(1, 500_000),
            s(0, 3_000_000),
            s(1, 500_000),
        ];
        assert!((received_mpps(&v, 2) - 2.5).abs() < 1e-9);
        assert!((received_mpps(&v, 1) - 2.0).abs() < 1e-9);
        assert_eq!(received_mpps(&[], 1), 0.0);
    }
}
