//! Switch-only mode: two namespaces on veths, joined by a Linux bridge or by ringswitch's
//! AF_PACKET ports on the very same veths. iperf3 TCP (Gbit/s), iperf3 UDP with 64-byte
//! frames (received packets/s), and the round-trip time of a small UDP request/response
//! (our `udp-rr` tool: p50/p99).
//!
//! 64-byte frames: 14 (Ethernet) + 20 (IPv4) + 8 (UDP) + 18 bytes of payload = 60 bytes
//! plus the 4-byte FCS a wire would add; iperf3 `-l 18`.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::daemon::{Daemon, Delta};
use super::netns::{Topology, ADDR_B, PORT_A, PORT_B};
use super::proc::{pause, Proc};
use super::udplat::RrResult;
use super::Ctx;

const ECHO_PORT: u16 = 7777;
/// The echo server pinned to [`PINNED_CPU`], for the pinned request/response figure.
const PINNED_ECHO_PORT: u16 = 7778;
/// The core both request/response endpoints are pinned to in the pinned figure.
const PINNED_CPU: &str = "1";

/// The switch joining the two veths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joiner {
    Bridge,
    Ringswitch,
    /// ringswitch with a busy-poll window after each batch: trades CPU for latency.
    RingswitchPoll,
}

/// `--poll-us` of [`Joiner::RingswitchPoll`].
pub const POLL_US: &str = "50";

impl Joiner {
    pub fn name(self) -> &'static str {
        match self {
            Joiner::Bridge => "linux-bridge",
            Joiner::Ringswitch => "ringswitch",
            Joiner::RingswitchPoll => "ringswitch-poll50",
        }
    }
}

/// Figures of one run of one joiner.
#[derive(Debug, Default)]
pub struct RunFigures {
    pub tcp_gbit: Option<Result<f64>>,
    pub udp_pps: Option<Result<f64>>,
    pub rr: Option<Result<RrResult>>,
    /// The same with client and echo server pinned to one core.
    pub rr_pinned: Option<Result<RrResult>>,
    /// Whole-machine busy CPU cores per Gbit/s during the TCP test.
    pub tcp_cpu_per_gbit: Option<Result<f64>>,
    /// ringswitch's counters over the UDP test.
    pub udp_delta: Option<Delta>,
    pub commands: Vec<String>,
}

/// Servers in namespace B that live as long as the topology.
pub struct Servers {
    _iperf: Proc,
    _echo: Proc,
    _echo_pinned: Proc,
    pub commands: Vec<String>,
}

impl Servers {
    pub fn start(ctx: &Ctx, topo: &Topology) -> Result<Servers> {
        let iperf = iperf_server(&topo.b, ADDR_B)?;
        let echo_on = |port: u16, pinned: bool| -> Result<Proc> {
            let addr = format!("{ADDR_B}:{port}");
            let c = ctx.xtask_in(&topo.b, &["udp-echo", &addr]);
            let c = if pinned { pinned_to(PINNED_CPU, c) } else { c };
            let mut echo = Proc::spawn("udp-echo", c)?;
            echo.wait_until("udp-echo", Duration::from_secs(10), |p| {
                p.lines()
                    .lock()
                    .map(|l| l.iter().any(|(_, s)| s.contains("listening")))
                    .unwrap_or(false)
            })?;
            Ok(echo)
        };
        let echo = echo_on(ECHO_PORT, false)?;
        let echo_pinned = echo_on(PINNED_ECHO_PORT, true)?;
        Ok(Servers {
            commands: vec![
                iperf.cmdline.clone(),
                echo.cmdline.clone(),
                echo_pinned.cmdline.clone(),
            ],
            _iperf: iperf,
            _echo: echo,
            _echo_pinned: echo_pinned,
        })
    }
}

/// An iperf3 server in namespace `ns` bound to `addr`, once it listens.
pub fn iperf_server(ns: &str, addr: &str) -> Result<Proc> {
    let mut iperf = Proc::spawn(
        "iperf3-server",
        Topology::exec(ns, &["iperf3", "-s", "-B", addr, "--forceflush"]),
    )?;
    iperf.wait_until("iperf3 server", Duration::from_secs(10), |p| {
        p.lines()
            .lock()
            .map(|l| l.iter().any(|(_, s)| s.contains("Server listening")))
            .unwrap_or(false)
    })?;
    Ok(iperf)
}

fn iperf_json(ctx: &Ctx, topo: &Topology, extra: &[&str]) -> Result<(Value, String)> {
    iperf_client(ctx, &topo.a, ADDR_B, extra)
}

/// One iperf3 client run of `ctx.secs` from namespace `ns` to the server at `server`
/// with `extra` options: its JSON report and command line.
pub fn iperf_client(ctx: &Ctx, ns: &str, server: &str, extra: &[&str]) -> Result<(Value, String)> {
    let secs = ctx.secs.to_string();
    let mut args = vec!["iperf3", "-c", server, "-t", &secs, "-J"];
    args.extend_from_slice(extra);
    let mut p = Proc::spawn("iperf3", Topology::exec(ns, &args))?;
    let st = p.wait_exit(Duration::from_secs(ctx.secs + 20))?;
    let text: String = p
        .lines()
        .lock()
        .map(|l| json_report(l.iter().map(|(_, s)| s.as_str())))
        .unwrap_or_default();
    let v: Value = serde_json::from_str(&text)
        .with_context(|| format!("iperf3 printed no JSON ({st}): {}", p.tail(5)))?;
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        bail!("iperf3: {e}");
    }
    Ok((v, p.cmdline.clone()))
}

/// iperf3's `-J` report out of its captured stdout and stderr lines: from the line `{`
/// to the line `}` (the top-level object's braces stand alone), so that a warning on
/// stderr ("UDP block size … exceeds TCP MSS") does not spoil it.
fn json_report<'a>(lines: impl Iterator<Item = &'a str>) -> String {
    let lines: Vec<&str> = lines.collect();
    let start = lines.iter().position(|l| *l == "{").unwrap_or(0);
    let end = lines
        .iter()
        .rposition(|l| *l == "}")
        .map_or(lines.len(), |e| e + 1)
        .max(start);
    lines[start..end].join("\n")
}

/// TCP throughput in Gbit/s as the receiver saw it.
fn tcp(ctx: &Ctx, topo: &Topology) -> Result<(f64, String)> {
    let (v, cmd) = iperf_json(ctx, topo, &[])?;
    tcp_received_gbit(&v).map(|g| (g, cmd))
}

/// The receiver's TCP rate in an iperf3 JSON report, Gbit/s.
pub fn tcp_received_gbit(v: &Value) -> Result<f64> {
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3 JSON without end.sum_received.bits_per_second")?;
    Ok(bps / 1e9)
}

/// Received packets per second of 64-byte UDP frames sent as fast as iperf3 can.
fn udp64(ctx: &Ctx, topo: &Topology) -> Result<(f64, String)> {
    let (v, cmd) = iperf_json(ctx, topo, &["-u", "-b", "0", "-l", "18"])?;
    udp_received_pps(&v).map(|pps| (pps, cmd))
}

/// Packets per second that arrived (sent less lost) in an iperf3 UDP JSON report.
pub fn udp_received_pps(v: &Value) -> Result<f64> {
    let s = &v["end"]["sum"];
    let packets = s["packets"].as_f64().context("no end.sum.packets")?;
    let lost = s["lost_packets"].as_f64().unwrap_or(0.0);
    let secs = s["seconds"].as_f64().context("no end.sum.seconds")?;
    if secs <= 0.0 {
        bail!("iperf3 reported a zero-length test");
    }
    Ok((packets - lost).max(0.0) / secs)
}

/// `c` run under `taskset -c cpu`.
fn pinned_to(cpu: &str, c: Command) -> Command {
    let mut t = Command::new("taskset");
    t.args(["-c", cpu]).arg(c.get_program()).args(c.get_args());
    t
}

/// Busy and total jiffies of the whole machine (the `cpu` line of /proc/stat; idle and
/// iowait are not busy).
fn cpu_jiffies() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("/proc/stat without a cpu line")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok((total - idle.min(total), total))
}

/// Busy cores between two [`cpu_jiffies`] readings `secs` apart (USER_HZ = 100).
fn busy_cores(a: (u64, u64), b: (u64, u64), secs: f64) -> f64 {
    (b.0.saturating_sub(a.0)) as f64 / 100.0 / secs.max(1e-9)
}

fn rr(ctx: &Ctx, topo: &Topology, pinned: bool) -> Result<(RrResult, String)> {
    let port = if pinned { PINNED_ECHO_PORT } else { ECHO_PORT };
    let addr = format!("{ADDR_B}:{port}");
    let count = ctx.rr_count.to_string();
    let c = ctx.xtask_in(&topo.a, &["udp-rr", &addr, "--count", &count]);
    let c = if pinned { pinned_to(PINNED_CPU, c) } else { c };
    let mut p = Proc::spawn("udp-rr", c)?;
    let st = p.wait_exit(Duration::from_secs(120))?;
    let last = p
        .lines()
        .lock()
        .ok()
        .and_then(|l| l.iter().rev().find(|(_, s)| s.starts_with('{')).cloned());
    let Some((_, line)) = last else {
        bail!("udp-rr printed no result ({st}): {}", p.tail(5));
    };
    let r: RrResult = serde_json::from_str(&line)?;
    if r.received == 0 {
        bail!("no UDP answer crossed the switch");
    }
    Ok((r, p.cmdline.clone()))
}

/// Brings `j` up on the topology, runs the three tests, takes it down again.
pub fn run_once(ctx: &Ctx, topo: &mut Topology, j: Joiner, want_tcp: bool) -> Result<RunFigures> {
    let mut out = RunFigures::default();
    let mut daemon = None;
    match j {
        Joiner::Bridge => {
            topo.bridge_up()?;
            out.commands.push(topo.bridge_commands());
        }
        Joiner::Ringswitch | Joiner::RingswitchPoll => {
            let ports = [PORT_A, PORT_B].map(|p| format!("afpacket:ifname={p}"));
            let extra: &[&str] = if j == Joiner::RingswitchPoll {
                &["--poll-us", POLL_US]
            } else {
                &[]
            };
            let d = Daemon::start(
                &ctx.ringswitch,
                Some(&topo.sw),
                None,
                &ports,
                1,
                extra,
                ctx.tmp.join(format!("ctl-so-{}.sock", std::process::id())),
            )?;
            out.commands.push(d.proc.cmdline.clone());
            daemon = Some(d);
        }
    }
    pause(Duration::from_millis(300))?;
    // Latency first: it also warms ARP caches and the FDB.
    out.rr = Some(rr(ctx, topo, false).map(|(r, c)| {
        out.commands.push(c);
        r
    }));
    out.rr_pinned = Some(rr(ctx, topo, true).map(|(r, c)| {
        out.commands.push(c);
        r
    }));
    if want_tcp {
        let t0 = (cpu_jiffies(), std::time::Instant::now());
        let r = tcp(ctx, topo);
        let t1 = cpu_jiffies();
        if let (Ok((g, _)), Ok(a), Ok(b)) = (&r, t0.0, t1) {
            let cores = busy_cores(a, b, t0.1.elapsed().as_secs_f64());
            if *g > 0.0 {
                out.tcp_cpu_per_gbit = Some(Ok(cores / g));
            }
        }
        out.tcp_gbit = Some(r.map(|(g, c)| {
            out.commands.push(c);
            g
        }));
    }
    let snap0 = daemon.as_mut().map(|d| d.snapshot()).transpose()?;
    out.udp_pps = Some(udp64(ctx, topo).map(|(p, c)| {
        out.commands.push(c);
        p
    }));
    if let (Some(d), Some(a)) = (daemon.as_mut(), snap0) {
        let b = d.snapshot()?;
        out.udp_delta = Some(Delta::between(&a, &b, |_| false));
        out.commands.push(d.ctl_command(&ctx.ringswitch));
    }
    match j {
        Joiner::Bridge => topo.bridge_down()?,
        Joiner::Ringswitch | Joiner::RingswitchPoll => drop(daemon),
    }
    Ok(out)
}

/// Guest → veth: a virtio-user txonly frontend on a vhost-user port, ringswitch floods
/// its frames to an AF_PACKET port on a veth. Shows the zero-copy path's counters
/// (guest frames written to the veth, copies into guest rings).
pub fn guest_to_veth(ctx: &Ctx, topo: &Topology) -> Result<(Delta, Vec<String>)> {
    use super::testpmd::{self, Cpus};
    let dir = ctx.tmp.join(format!("g2v-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sock = dir.join("g.sock");
    let ports = [
        format!("vhost-user:path={}", sock.display()),
        format!("afpacket:ifname={PORT_A}"),
    ];
    let mut d = Daemon::start(
        &ctx.ringswitch,
        Some(&topo.sw),
        None,
        &ports,
        1,
        &[],
        dir.join("ctl.sock"),
    )?;
    let mut commands = vec![d.proc.cmdline.clone()];
    d.proc
        .wait_until("vhost-user socket", Duration::from_secs(20), |_| {
            sock.exists()
        })?;
    let prefix = format!("rsb{}-g2v", std::process::id());
    let mut tx = Proc::spawn(
        "testpmd-tx",
        testpmd::frontend(&prefix, Cpus::Shared, &sock, 1, Some(64)),
    )?;
    commands.push(tx.cmdline.clone());
    tx.wait_until("traffic", Duration::from_secs(20), |p| {
        p.lines()
            .lock()
            .map(|l| l.iter().any(|(_, s)| s.contains("Tx-pps")))
            .unwrap_or(false)
    })?;
    pause(ctx.warmup)?;
    let a = d.snapshot()?;
    pause(Duration::from_secs(ctx.secs))?;
    let b = d.snapshot()?;
    tx.ensure_running()?;
    drop(tx);
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&prefix));
    commands.push(d.ctl_command(&ctx.ringswitch));
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((Delta::between(&a, &b, |n| n.ends_with(".sock")), commands))
}

use std::path::Path;

/// `Command` for our own tool inside a namespace.
pub fn tool_in(xtask: &Path, ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .arg(xtask)
        .arg("bench")
        .args(args);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_report_skips_stderr_lines_around_it() {
        let lines = [
            "warning: UDP block size 1472 exceeds TCP MSS 1448",
            "{",
            "\t\"a\": 1",
            "}",
        ];
        let v: Value = serde_json::from_str(&json_report(lines.into_iter())).unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(json_report(["not json"].into_iter()), "not json");
    }

    #[test]
    fn udp_pps_from_iperf3_json() {
        let v: Value = serde_json::from_str(
            r#"{"end":{"sum":{"seconds":2.0,"packets":1000,"lost_packets":100}}}"#,
        )
        .unwrap();
        assert_eq!(udp_received_pps(&v).unwrap(), 450.0);
        let v: Value = serde_json::from_str(r#"{"end":{"sum":{"seconds":0}}}"#).unwrap();
        assert!(udp_received_pps(&v).is_err());
    }
}
