//! Isolation: does a hostile guest on one port take the rate of another pair of ports?
//!
//! The equal-cores vhost case (ringswitch `--workers 1` alone on core 0, one flowgen
//! testpmd with the pair's two virtio-user ports on core 1) with a third vhost-user port
//! on the same switch, measured three ways, interleaved within each run (rotated):
//!
//! - *alone*: nothing on the third port;
//! - *benign*: the datapath crate's `hostile_frontend --benign` on it, pinned to core 1: it
//!   connects and spins without posting anything — the control for the CPU time the
//!   hostile process takes from the frontends' core;
//! - *hostile*: `hostile_frontend` on it, pinned to core 1, flooding worst-case chains
//!   (queue-size indirect tables and chains, zero-length descriptors, bad virtio-net
//!   headers, broadcast frames) with a kick after each.
//!
//! The hostile's broadcast frames reach the pair's sinks and testpmd counts them too, so
//! the hostile figure is the sink's rate minus twice the frames the switch took from the
//! hostile port (each flooded at most to both pair ports): a lower bound of the pair's own
//! rate. The hostile port's drop counters (`ctl stats`) are recorded per reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;

use super::daemon::Snapshot;
use super::proc::Proc;
use super::results::Results;
use super::vhost::{self, Case, Frontend, Placement, Switch, THIRD_SOCK};
use super::Ctx;

/// The three conditions, in the order of the first run.
pub const MODES: [&str; 3] = ["alone", "benign", "hostile"];
/// Frame length of the pair's traffic.
pub const LEN: u32 = 64;

pub fn key(mode: &str) -> String {
    format!("isolation/{LEN}/{mode}")
}

/// Builds `hostile_frontend` (the datapath crate's example) and returns its path.
fn build_hostile(root: &Path) -> Result<PathBuf> {
    crate::cargo(&[
        "build",
        "--release",
        "-p",
        "ringswitch-datapath",
        "--example",
        "hostile_frontend",
    ])?;
    Ok(super::target_dir(root)
        .join("release")
        .join("examples")
        .join("hostile_frontend"))
}

pub fn phase(ctx: &Ctx, root: &Path, r: &mut Results) -> Result<()> {
    let bin = build_hostile(root)?;
    for run in 0..ctx.runs {
        let mut order = MODES;
        order.rotate_left(run % MODES.len());
        for mode in order {
            let key = key(mode);
            let label = format!("pair, {LEN} B, equal cores, third port {mode}");
            eprintln!("bench: isolation {mode} (run {}/{})", run + 1, ctx.runs);
            let case = Case {
                frontend: Frontend::Pair,
                switch: Switch::Ringswitch { workers: 1 },
                placement: Placement::Equal,
                frame_len: LEN,
                queues: 1,
                queue_size: None,
                packed: false,
                third_port: true,
            };
            let start = |sock: &Path| -> Result<Proc> {
                let mut c = Command::new("taskset");
                c.args(["-c", "1"]).arg(&bin).arg(sock);
                if mode == "benign" {
                    c.arg("--benign");
                }
                let mut p = Proc::spawn(&format!("hostile_frontend ({mode})"), c)?;
                let lines = p.lines();
                p.wait_until(
                    "hostile_frontend connected",
                    std::time::Duration::from_secs(20),
                    move |_| {
                        lines
                            .lock()
                            .map(|l| l.iter().any(|(_, s)| s.contains(" (queue size ")))
                            .unwrap_or(false)
                    },
                )?;
                Ok(p)
            };
            let third: Option<vhost::ThirdPortProc> = match mode {
                "alone" => None,
                _ => Some(&start),
            };
            match vhost::run_once_with(ctx, case, false, third) {
                Ok(o) => record(r, mode, &key, &label, &o),
                Err(e) => {
                    super::proc::check_interrupted()?;
                    eprintln!("bench:   failed: {e:#}");
                    r.fail(&key, &label, "Mpps", &format!("{e:#}"), &[]);
                }
            }
        }
    }
    Ok(())
}

fn record(r: &mut Results, mode: &str, key: &str, label: &str, o: &vhost::Outcome) {
    let cmds = &o.commands;
    let Some((a, b)) = o.snaps.as_ref() else {
        r.fail(key, label, "Mpps", "no ringswitch counters", cmds);
        return;
    };
    let h = HostileDelta::between(a, b);
    let secs = o.secs.max(1e-9);
    let taken_mpps = h.rx as f64 / secs / 1e6;
    let pair = (o.mpps - 2.0 * taken_mpps).max(0.0);
    eprintln!(
        "bench:   pair {pair:.3} Mpps (sink {:.3}, {taken_mpps:.3} Mpps taken from the third port, \
         {} drops counted there)",
        o.mpps,
        h.drops.iter().map(|(_, n)| n).sum::<u64>()
    );
    r.add(key, label, "Mpps", pair, cmds);
    if mode != "hostile" {
        return;
    }
    r.add(
        &format!("isolation/{LEN}/hostile_taken"),
        "frames the switch took from the hostile port",
        "Mpps",
        taken_mpps,
        cmds,
    );
    for (why, n) in h.drops {
        r.add(
            &format!("isolation/hostile_drops/{why}"),
            &why,
            "drops/s",
            n as f64 / secs,
            cmds,
        );
    }
}

/// The third port's counters over the window.
#[derive(Debug, Default, PartialEq)]
struct HostileDelta {
    rx: u64,
    drops: Vec<(String, u64)>,
}

impl HostileDelta {
    fn between(a: &Snapshot, b: &Snapshot) -> HostileDelta {
        let suffix = format!("/{THIRD_SOCK}");
        let find = |s: &Snapshot| {
            s.stats
                .ports
                .iter()
                .find(|p| p.name.ends_with(&suffix))
                .cloned()
                .unwrap_or_default()
        };
        let (pa, pb) = (find(a), find(b));
        let drops = pb
            .drops
            .iter()
            .map(|(why, n)| {
                let before = pa
                    .drops
                    .iter()
                    .find(|(w, _)| w == why)
                    .map_or(0, |(_, m)| *m);
                (why.clone(), n.saturating_sub(before))
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        HostileDelta {
            rx: pb.rx_packets.saturating_sub(pa.rx_packets),
            drops,
        }
    }
}

/// The report section, when the phase ran.
pub fn render(r: &Results) -> Option<String> {
    use super::plot::fmt_value;
    use super::stats::ratio;
    use std::fmt::Write as _;
    let s = |m: &str| r.summary(&key(m));
    if MODES.iter().all(|m| s(m).is_none()) {
        return None;
    }
    let cell = |m: &str| s(m).map_or("—".into(), |x| super::report::cell(Some(x)));
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## 8. Isolation from a hostile guest ({LEN} B pair, Mpps)\n\n\
         The equal-cores case with a third vhost-user port: empty (*alone*), with \
         `hostile_frontend --benign` on core 1 (connects, spins, posts nothing: the \
         control for its CPU time), or with `hostile_frontend` on core 1 flooding \
         queue-size indirect tables and chains, zero-length descriptors, bad virtio-net \
         headers and broadcast frames, a kick after each (crates/datapath/examples). The \
         three are interleaved in each run. *hostile* is the sink's rate minus twice the \
         frames taken from the hostile port (its broadcasts reach the pair's sinks): a \
         lower bound of the pair's own rate.\n\n\
         | alone | benign | hostile | hostile / alone | hostile / benign | ≥ 0.8 × benign |\n\
         |---|---|---|---|---|---|"
    );
    let vs = |m: &str| ratio(s("hostile"), s(m));
    let rc = |x: Option<f64>| x.map_or("—".into(), |x| format!("{x:.2}×"));
    let _ = writeln!(
        md,
        "| {} | {} | {} | {} | {} | {} |",
        cell("alone"),
        cell("benign"),
        cell("hostile"),
        rc(vs("alone")),
        rc(vs("benign")),
        match vs("benign") {
            None => "not measured",
            Some(x) if x >= 0.8 => "met",
            Some(_) => "**missed**",
        }
    );
    let drops: Vec<_> = r
        .figures
        .iter()
        .filter(|f| f.key.starts_with("isolation/hostile_drops/"))
        .filter_map(|f| f.summary().map(|x| (f.label.clone(), x.median)))
        .collect();
    if let Some(t) = r.summary(&format!("isolation/{LEN}/hostile_taken")) {
        let _ = write!(
            md,
            "\nFrames taken from the hostile port: {} Mpps.",
            fmt_value(t.median)
        );
    }
    if !drops.is_empty() {
        let list: Vec<String> = drops
            .iter()
            .map(|(why, n)| format!("`{why}` {}", fmt_value(*n)))
            .collect();
        let _ = write!(
            md,
            " Its drops per second by reason (`ctl stats`, median): {}.",
            list.join(", ")
        );
    }
    md.push('\n');
    Some(md)
}

#[cfg(test)]
mod tests {
    use super::super::daemon::{PortCounters, StatsReport};
    use super::*;
    use std::time::Instant;

    fn snap(rx: u64, drops: &[(&str, u64)]) -> Snapshot {
        let port = |name: &str, rx, drops: &[(&str, u64)]| PortCounters {
            name: name.into(),
            rx_packets: rx,
            drops: drops.iter().map(|(w, n)| (w.to_string(), *n)).collect(),
            ..Default::default()
        };
        Snapshot {
            at: Instant::now(),
            cpu_s: 0.0,
            stats: StatsReport {
                ports: vec![
                    port("/t/a.sock", 1000 + rx, &[("queue_full", 9)]),
                    port("/t/c.sock", rx, drops),
                ],
                workers: vec![],
            },
        }
    }

    #[test]
    fn the_third_ports_counters_only() {
        let a = snap(10, &[("chain_too_long", 5)]);
        let b = snap(30, &[("chain_too_long", 8), ("bad_vnet_hdr", 4)]);
        assert_eq!(
            HostileDelta::between(&a, &b),
            HostileDelta {
                rx: 20,
                drops: vec![("chain_too_long".into(), 3), ("bad_vnet_hdr".into(), 4)],
            }
        );
    }

    #[test]
    fn section_with_ratios_and_drops() {
        let mut r = Results::default();
        assert!(render(&r).is_none());
        for v in [2.0, 2.2] {
            r.add(&key("alone"), "", "Mpps", v, &[]);
            r.add(&key("benign"), "", "Mpps", v / 2.0, &[]);
            r.add(&key("hostile"), "", "Mpps", v * 0.45, &[]);
        }
        r.add(
            "isolation/hostile_drops/zero_length",
            "zero_length",
            "drops/s",
            5e5,
            &[],
        );
        let md = render(&r).unwrap();
        assert!(md.contains("| 0.45× | 0.90× | met |"), "{md}");
        assert!(md.contains("`zero_length` 500000"), "{md}");
    }
}
