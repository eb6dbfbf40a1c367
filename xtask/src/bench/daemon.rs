//! The ringswitch daemon under test: started as `ringswitch run`, read through its control
//! socket (`ringswitch ctl --ctl PATH stats --json` speaks the same JSON line).
//!
//! The structs mirror the parts of bin/control.rs `StatsReport` that the benchmark uses;
//! serde ignores the fields we do not read, so the daemon may grow its report freely.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::proc::{cpu_seconds, Proc};

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PortCounters {
    pub name: String,
    pub rx_packets: u64,
    pub tx_packets: u64,
    #[serde(default)]
    pub drops: Vec<(String, u64)>,
    #[serde(default)]
    pub fallback_writes: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct WorkerCounters {
    pub worker: u16,
    pub packets: u64,
    pub io_uring_enters: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StatsReport {
    pub ports: Vec<PortCounters>,
    pub workers: Vec<WorkerCounters>,
}

#[derive(Deserialize)]
struct StatsResponse {
    stats: StatsReport,
}

/// A counter snapshot with the time and the daemon's CPU time when it was taken.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub cpu_s: f64,
    pub stats: StatsReport,
}

/// What happened between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Delta {
    pub secs: f64,
    /// CPU cores the daemon used on average (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Frames ringswitch received from its ports.
    pub rx: u64,
    /// Frames ringswitch delivered to its ports.
    pub tx: u64,
    /// Frames delivered into guest RX rings (vhost-user ports): one payload copy each.
    pub tx_to_guests: u64,
    /// Frames received from guests (vhost-user ports).
    pub rx_from_guests: u64,
    pub fallback_writes: u64,
    pub worker_packets: u64,
    pub io_uring_enters: u64,
    pub drops: u64,
}

impl Delta {
    pub fn between(a: &Snapshot, b: &Snapshot, is_guest: impl Fn(&str) -> bool) -> Delta {
        let mut d = Delta {
            secs: b.at.duration_since(a.at).as_secs_f64(),
            ..Default::default()
        };
        if d.secs > 0.0 {
            d.cpu_cores = (b.cpu_s - a.cpu_s).max(0.0) / d.secs;
        }
        for pb in &b.stats.ports {
            let pa = a
                .stats
                .ports
                .iter()
                .find(|p| p.name == pb.name)
                .cloned()
                .unwrap_or_default();
            let rx = pb.rx_packets.saturating_sub(pa.rx_packets);
            let tx = pb.tx_packets.saturating_sub(pa.tx_packets);
            d.rx += rx;
            d.tx += tx;
            if is_guest(&pb.name) {
                d.rx_from_guests += rx;
                d.tx_to_guests += tx;
            }
            d.fallback_writes += pb.fallback_writes.saturating_sub(pa.fallback_writes);
            let drops = |p: &PortCounters| p.drops.iter().map(|(_, n)| n).sum::<u64>();
            d.drops += drops(pb).saturating_sub(drops(&pa));
        }
        for wb in &b.stats.workers {
            let wa = a
                .stats
                .workers
                .iter()
                .find(|w| w.worker == wb.worker)
                .cloned()
                .unwrap_or_default();
            d.worker_packets += wb.packets.saturating_sub(wa.packets);
            d.io_uring_enters += wb.io_uring_enters.saturating_sub(wa.io_uring_enters);
        }
        d
    }

    /// Frames delivered per second, in millions.
    pub fn tx_mpps(&self) -> f64 {
        if self.secs > 0.0 {
            self.tx as f64 / self.secs / 1e6
        } else {
            f64::NAN
        }
    }
}

/// A running `ringswitch run`; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Daemon {
    pub proc: Proc,
    pub ctl: PathBuf,
}

impl Daemon {
    /// Starts the daemon (optionally inside a namespace, pinned with `taskset`) and waits
    /// until its control socket answers.
    pub fn start(
        bin: &Path,
        netns: Option<&str>,
        taskset: Option<&str>,
        ports: &[String],
        workers: usize,
        extra: &[&str],
        ctl: PathBuf,
    ) -> Result<Daemon> {
        let _ = std::fs::remove_file(&ctl);
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                c
            }
            None => Command::new("env"),
        };
        if let Some(cpus) = taskset {
            cmd.args(["taskset", "-c", cpus]);
        }
        cmd.arg(bin).arg("run");
        for p in ports {
            cmd.arg("--port").arg(p);
        }
        cmd.arg("--workers").arg(workers.to_string());
        cmd.args(extra);
        cmd.arg("--ctl").arg(&ctl);
        cmd.env("RUST_LOG", "warn");
        let mut proc = Proc::spawn("ringswitch", cmd)?;
        let ctl2 = ctl.clone();
        proc.wait_until("control socket", Duration::from_secs(20), move |_| {
            stats(&ctl2).is_ok()
        })?;
        Ok(Daemon { proc, ctl })
    }

    /// PID of the ringswitch process (the one that `ip netns exec`/`taskset` exec'ed into).
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn snapshot(&mut self) -> Result<Snapshot> {
        self.proc.ensure_running()?;
        let at = Instant::now();
        let cpu_s = cpu_seconds(self.pid()).unwrap_or(f64::NAN);
        let stats = stats(&self.ctl)?;
        Ok(Snapshot { at, cpu_s, stats })
    }

    /// The shell command that shows the same counters by hand.
    pub fn ctl_command(&self, bin: &Path) -> String {
        format!(
            "{} ctl --ctl {} stats --json",
            bin.display(),
            self.ctl.display()
        )
    }
}

/// One `stats` request on the control socket.
pub fn stats(ctl: &Path) -> Result<StatsReport> {
    let mut s =
        UnixStream::connect(ctl).with_context(|| format!("connecting {}", ctl.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"{\"cmd\":\"stats\"}\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    parse_stats(&line)
}

fn parse_stats(line: &str) -> Result<StatsReport> {
    let v: serde_json::Value = serde_json::from_str(line).context("ctl answer is not JSON")?;
    if v.get("result").and_then(|r| r.as_str()) != Some("stats") {
        bail!("ctl answered {}", line.trim());
    }
    Ok(serde_json::from_value::<StatsResponse>(v)?.stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"result":"stats","stats":{"uptime_s":1.5,"ports":[
        {"name":"/tmp/a.sock","rx_packets":100,"rx_bytes":6400,"tx_packets":0,"tx_bytes":0,
         "drops":[["queue_full",3]],"fallback_writes":0,"queues":[]},
        {"name":"veth0","rx_packets":0,"rx_bytes":0,"tx_packets":97,"tx_bytes":0,
         "drops":[],"fallback_writes":97,"queues":[]}],
        "workers":[{"worker":0,"packets":97,"io_uring_enters":10,"syscalls_per_packet":0.1}],
        "fdb_entries":1,"mdb_entries":0}}"#;

    #[test]
    fn parses_the_ctl_stats_line() {
        let s = parse_stats(&LINE.replace('\n', "")).unwrap();
        assert_eq!(s.ports.len(), 2);
        assert_eq!(s.ports[1].fallback_writes, 97);
        assert_eq!(s.workers[0].io_uring_enters, 10);
        assert!(parse_stats(r#"{"result":"error","message":"x"}"#).is_err());
    }

    #[test]
    fn deltas() {
        let t0 = Instant::now();
        let a = Snapshot {
            at: t0,
            cpu_s: 1.0,
            stats: StatsReport::default(),
        };
        let b = Snapshot {
            at: t0 + Duration::from_secs(2),
            cpu_s: 2.0,
            stats: parse_stats(&LINE.replace('\n', "")).unwrap(),
        };
        let d = Delta::between(&a, &b, |n| n.ends_with(".sock"));
        assert_eq!(
            (d.rx, d.tx, d.rx_from_guests, d.tx_to_guests),
            (100, 97, 100, 0)
        );
        assert_eq!((d.fallback_writes, d.drops), (97, 3));
        assert_eq!((d.worker_packets, d.io_uring_enters), (97, 10));
        assert!((d.cpu_cores - 0.5).abs() < 1e-9);
        assert!((d.tx_mpps() - 97.0 / 2.0 / 1e6).abs() < 1e-12);
    }
}
