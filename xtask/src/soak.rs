//! `cargo xtask soak`: the fault and soak test (issue 20). ringswitch switches between
//! veth endpoints (afpacket ports), a tap port, dpdk-testpmd virtio-user peers and QEMU
//! guests (vhost-user ports) while, cycle after cycle, seeded random faults hit it: a
//! testpmd peer SIGKILLed and restarted, the daemon SIGKILLed and restarted from its
//! config file, a veth deleted and re-made (`ctl del-port`/`add-port`), the tap deleted
//! and re-added; and per guest: QEMU SIGKILLed and booted again, a QMP `system_reset`,
//! the NIC hot-unplugged and plugged again on the same socket, a DIMM hot-plugged and
//! unplugged under traffic (the port's memory table grows and shrinks; soak/guest.rs).
//!
//! Every frame carries its sender, its intended destination and a sequence number
//! (soak/frame.rs); every endpoint checks every frame it receives (soak/endpoint.rs).
//! testpmd peers run `macswap` and so echo the frames sent to them back to their sender,
//! which checks them too (testpmd itself checks nothing). A guest runs `soak-echo`
//! (xtask/src/bin/soak-echo.rs), the same macswap echo as a small program in its
//! initramfs: the simplest real option, since a sender in the guest would need the
//! orchestrator's fault windows and generations to mark its frames, while an echo keeps
//! every check with the senders (right peer: the echo's source MAC must be the MAC the
//! frame was sent to; sequence; generations) and reuses their code. soak-echo also counts
//! unicast for other MACs that reaches the guest (its port has `mac=`, so every such
//! frame is misdelivered). After each cycle: the daemon and every guest are alive unless
//! we killed them, traffic reaches every endpoint again (every testpmd peer and guest
//! echoes), no frame reached an endpoint it was not addressed to, none arrived twice or
//! out of order (one worker: one path per sender and receiver), and the daemon's fds,
//! guest-memory (memfd) mappings and RSS are back within a tolerance of the first
//! cycle's. A summary is printed and written as JSON.

mod endpoint;
mod frame;
mod guest;
mod topo;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::bench::daemon::Daemon;
use crate::bench::proc::{self, pause, Proc};
use endpoint::{fmt_mac, Shared, Spec};
use guest::{Guest, GuestSummary};
use topo::Topology;

const USAGE: &str = "\
usage: cargo xtask soak [--minutes M | --cycles N] [--seed S] [--rate FPS] [--veths N]
                        [--testpmd N] [--guests N] [--faults KINDS] [--traffic-secs S]
                        [--ringswitch PATH] [--out FILE]

  --minutes M       run fault cycles for M minutes
  --cycles N        run N fault cycles (default 5)
  --seed S          seed of the fault choices (default: from the clock; always printed)
  --rate FPS        frames per second each endpoint sends (default 1000)
  --veths N         veth endpoints (afpacket ports), 2..=8 (default 3)
  --testpmd N       testpmd virtio-user peers on vhost-user ports, 0..=2 (default 1)
  --guests N        QEMU (TCG) guests on vhost-user ports, 0..=2 (default 1); each guest
                    fault costs up to a boot (20-40 s)
  --faults KINDS    only these fault kinds, comma-separated (to chase one failure):
                    kill-testpmd, kill-daemon, readd-veth, readd-tap, kill-guest,
                    reset-guest, replug-nic, memplug (default: all that apply)
  --traffic-secs S  traffic between the faults of two cycles (default 3)
  --ringswitch PATH the daemon binary (default: build target/debug/ringswitch)
  --out FILE        summary JSON (default bench-results/soak.json)";

/// Extra fds a cycle may leave (the daemon keeps one eventfd per past disconnect slot,
/// README \"A gone frontend's resources\").
const FD_SLACK: usize = 4;
/// RSS growth allowed over the baseline: the larger of this and a quarter of it.
const RSS_SLACK_KIB: u64 = 32 * 1024;
/// How long resources may take to come back after the faults of a cycle.
const SETTLE: Duration = Duration::from_secs(15);

struct Options {
    minutes: Option<f64>,
    cycles: usize,
    seed: Option<u64>,
    rate: u32,
    veths: usize,
    testpmd: usize,
    guests: usize,
    /// Fault kinds allowed (`--faults`), by name without the target index; None: all.
    faults: Option<Vec<String>>,
    traffic: Duration,
    ringswitch: Option<PathBuf>,
    out: PathBuf,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        minutes: None,
        cycles: 5,
        seed: None,
        rate: 1000,
        veths: 3,
        testpmd: 1,
        guests: 1,
        faults: None,
        traffic: Duration::from_secs(3),
        ringswitch: None,
        out: crate::workspace_root().join("bench-results/soak.json"),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--minutes" => o.minutes = Some(val()?.parse().context("--minutes")?),
            "--cycles" => o.cycles = val()?.parse().context("--cycles")?,
            "--seed" => o.seed = Some(val()?.parse().context("--seed")?),
            "--rate" => o.rate = val()?.parse().context("--rate")?,
            "--veths" => o.veths = val()?.parse().context("--veths")?,
            "--testpmd" => o.testpmd = val()?.parse().context("--testpmd")?,
            "--guests" => o.guests = val()?.parse().context("--guests")?,
            "--faults" => {
                o.faults = Some(val()?.split(',').map(|k| k.trim().to_string()).collect())
            }
            "--traffic-secs" => {
                o.traffic = Duration::from_secs_f64(val()?.parse().context("--traffic-secs")?)
            }
            "--ringswitch" => o.ringswitch = Some(PathBuf::from(val()?)),
            "--out" => o.out = PathBuf::from(val()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown option {a}\n{USAGE}"),
        }
    }
    if !(2..=8).contains(&o.veths) || o.testpmd > 2 || o.guests > 2 || o.rate == 0 {
        bail!("--veths must be 2..=8, --testpmd and --guests 0..=2, --rate at least 1\n{USAGE}");
    }
    if let Some(f) = &o.faults {
        let all = fault_kinds(o.testpmd, o.guests);
        let kinds: Vec<String> = all.iter().map(|k| k.kind().to_string()).collect();
        if let Some(bad) = f.iter().find(|k| !kinds.contains(k)) {
            bail!(
                "--faults: no fault kind {bad:?} here (kinds: {})",
                kinds.join(", ")
            );
        }
    }
    Ok(o)
}

/// xorshift64*: reproducible fault choices from the printed seed.
struct Rng(u64);

impl Rng {
    /// The state from a seed: splitmix64 of it (never 0, which xorshift never leaves), so
    /// that every seed gives its own sequence (`seed | 1` made 4 and 5 the same run).
    fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// SIGKILL testpmd peer k and start it again.
    Testpmd(usize),
    /// SIGKILL the daemon, start it from its config file (and the testpmd peers again).
    Daemon,
    /// `ctl del-port` veth i, delete and re-make the veth, `ctl add-port` it.
    Veth(usize),
    /// `ctl del-port` the tap (the daemon deletes it) and `ctl add-port` it again.
    Tap,
    /// SIGKILL guest g's QEMU and boot it again.
    GuestKill(usize),
    /// QMP `system_reset` of guest g.
    GuestReset(usize),
    /// Hot-unplug guest g's NIC and plug a new one on the same socket.
    NicReplug(usize),
    /// Hot-plug a DIMM into guest g under traffic, then unplug it.
    MemHotplug(usize),
}

impl Fault {
    /// The kind, without the target (what `--faults` names).
    fn kind(self) -> &'static str {
        match self {
            Fault::Testpmd(_) => "kill-testpmd",
            Fault::Daemon => "kill-daemon",
            Fault::Veth(_) => "readd-veth",
            Fault::Tap => "readd-tap",
            Fault::GuestKill(_) => "kill-guest",
            Fault::GuestReset(_) => "reset-guest",
            Fault::NicReplug(_) => "replug-nic",
            Fault::MemHotplug(_) => "memplug",
        }
    }

    fn name(self) -> String {
        match self {
            Fault::Testpmd(k) => format!("kill-testpmd{k}"),
            Fault::Daemon => "kill-daemon".into(),
            Fault::Veth(i) => format!("readd-veth{i}"),
            Fault::Tap => "readd-tap".into(),
            Fault::GuestKill(g) => format!("kill-guest{g}"),
            Fault::GuestReset(g) => format!("reset-guest{g}"),
            Fault::NicReplug(g) => format!("replug-nic-guest{g}"),
            Fault::MemHotplug(g) => format!("memplug-guest{g}"),
        }
    }
}

/// The daemon's resources at one point.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Resources {
    fds: usize,
    eventfds: usize,
    memfd_maps: usize,
    rss_kib: u64,
}

fn resources(pid: u32) -> Result<Resources> {
    let mut r = Resources::default();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        r.fds += 1;
        if std::fs::read_link(e?.path())
            .map(|t| t.as_os_str() == "anon_inode:[eventfd]")
            .unwrap_or(false)
        {
            r.eventfds += 1;
        }
    }
    r.memfd_maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?
        .lines()
        .filter(|l| l.contains("/memfd:"))
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    r.rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS")?;
    Ok(r)
}

fn within(base: &Resources, now: &Resources) -> bool {
    let rss_slack = RSS_SLACK_KIB.max(base.rss_kib / 4);
    now.fds <= base.fds + FD_SLACK
        && now.memfd_maps == base.memfd_maps
        && now.rss_kib <= base.rss_kib + rss_slack
}

#[derive(Debug, Clone, Default, Serialize)]
struct Totals {
    sent: u64,
    checked: u64,
    delivered: u64,
    echoed: u64,
    broadcast: u64,
    flooded: u64,
    excused: u64,
    misdelivered: u64,
    late: u64,
    lost: u64,
    /// Of `misdelivered`: unicast for another MAC that reached a guest (soak-echo's count).
    guest_foreign: u64,
}

fn totals(sh: &Shared, guest_foreign: u64) -> Totals {
    let mut t = Totals::default();
    for c in &sh.counters {
        t.sent += c.sent.load(SeqCst);
        t.checked += c.checked.load(SeqCst);
        t.delivered += c.delivered.load(SeqCst);
        t.echoed += c.echoed.load(SeqCst);
        t.broadcast += c.broadcast.load(SeqCst);
        t.flooded += c.flooded.load(SeqCst);
        t.excused += c.excused.load(SeqCst);
        t.misdelivered += c.misdelivered.load(SeqCst);
        t.late += c.late.load(SeqCst);
        t.lost += c.lost.load(SeqCst);
    }
    t.guest_foreign = guest_foreign;
    t.misdelivered += guest_foreign;
    t
}

/// Per endpoint id: frames delivered to it (veths, tap) or echoed by it (testpmd peers).
fn flow_marks(sh: &Shared) -> Vec<u64> {
    sh.counters
        .iter()
        .map(|c| c.delivered.load(SeqCst) + c.echoed_by.load(SeqCst))
        .collect()
}

#[derive(Debug, Clone, Serialize)]
struct CycleRecord {
    cycle: usize,
    faults: Vec<String>,
    checked: u64,
    misdelivered: u64,
    /// Duplicated or reordered frames (one worker, one path per pair: must be 0).
    late: u64,
    resources: Resources,
    ok: bool,
    /// Why the cycle failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Summary {
    seed: u64,
    command: String,
    git: String,
    endpoints: String,
    qemu_guest: String,
    cycles: usize,
    cycles_ok: usize,
    seconds: f64,
    faults: Vec<(String, usize)>,
    crashes: usize,
    totals: Totals,
    baseline: Resources,
    max_drift: Drift,
    misdelivery_samples: Vec<String>,
    guests: Vec<GuestSummary>,
    per_cycle: Vec<CycleRecord>,
    passed: bool,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Drift {
    fds: i64,
    eventfds: i64,
    memfd_maps: i64,
    rss_kib: i64,
}

fn diff(a: usize, b: usize) -> i64 {
    i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX)
}

/// Everything a fault acts on.
struct World {
    bin: PathBuf,
    tmp: PathBuf,
    topo: Topology,
    config: PathBuf,
    ctl: PathBuf,
    daemon: Option<Daemon>,
    testpmd: Vec<Option<Proc>>,
    testpmd_starts: usize,
    guests: Vec<Guest>,
    veths: usize,
    sh: Arc<Shared>,
}

impl World {
    fn tap_id(&self) -> usize {
        self.veths
    }

    fn testpmd_id(&self, k: usize) -> usize {
        self.veths + 1 + k
    }

    fn sock(&self, k: usize) -> PathBuf {
        self.tmp.join(format!("t{k}.sock"))
    }

    /// Misdelivered frames the guests saw, all boots so far.
    fn guest_foreign(&mut self) -> u64 {
        self.guests.iter_mut().map(|g| g.foreign()).sum()
    }

    fn totals(&mut self) -> Totals {
        let f = self.guest_foreign();
        totals(&self.sh, f)
    }

    fn start_daemon(&mut self) -> Result<()> {
        let cfg = self.config.display().to_string();
        let d = Daemon::start(
            &self.bin,
            Some(&self.topo.sw),
            None,
            &[],
            1,
            &["--config", &cfg],
            self.ctl.clone(),
        )?;
        self.daemon = Some(d);
        Ok(())
    }

    fn daemon_alive(&mut self) -> Result<()> {
        match self.daemon.as_mut() {
            Some(d) => d.proc.ensure_running(),
            None => bail!("no daemon"),
        }
    }

    fn daemon_pid(&self) -> Result<u32> {
        self.daemon.as_ref().map(|d| d.pid()).context("no daemon")
    }

    fn start_testpmd(&mut self, k: usize) -> Result<()> {
        self.testpmd_starts += 1;
        let prefix = format!("rssoak{}-{k}-{}", std::process::id(), self.testpmd_starts);
        let id = u8::try_from(self.testpmd_id(k))?;
        let mut c = Command::new("nice");
        c.args([
            "-n",
            "19",
            "stdbuf",
            "-oL",
            "dpdk-testpmd",
            "--no-huge",
            "-m",
            "256",
        ])
        .args(["--no-pci", "--no-telemetry", "--file-prefix", &prefix])
        .args(["--lcores", "0@(0,1),1@(0,1)", "--vdev"])
        .arg(format!(
            "net_virtio_user0,path={},mac={}",
            self.sock(k).display(),
            fmt_mac(frame::mac(id))
        ))
        .args(["--", "--total-num-mbufs=8192", "--stats-period", "1"])
        .args(["--forward-mode=macswap", "--port-topology=loop"])
        .args(["--auto-start", "--nb-cores=1"]);
        let mut p = Proc::spawn(&format!("testpmd{k}"), c)?;
        p.wait_until("forwarding", Duration::from_secs(30), |p| {
            p.lines()
                .lock()
                .map(|l| {
                    l.iter()
                        .any(|(_, s)| s.contains("NIC statistics for port 0"))
                })
                .unwrap_or(false)
        })?;
        self.testpmd[k] = Some(p);
        Ok(())
    }

    fn kill_testpmd(&mut self, k: usize) -> Result<()> {
        if let Some(mut p) = self.testpmd[k].take() {
            sigkill(&mut p)?;
        }
        remove_dpdk_runtime_dirs();
        Ok(())
    }

    fn ctl(&self, args: &[&str]) -> Result<()> {
        let mut c = Command::new(&self.bin);
        c.arg("ctl").arg("--ctl").arg(&self.ctl).args(args);
        proc::output(&mut c).map(|_| ())
    }

    fn apply(&mut self, f: Fault) -> Result<()> {
        self.sh.fault_begin();
        let mut remade = vec![];
        let mut daemon = false;
        match f {
            Fault::Testpmd(k) => {
                self.kill_testpmd(k)?;
                self.start_testpmd(k)?;
                remade.push(self.testpmd_id(k));
            }
            Fault::Daemon => {
                self.daemon_alive()?;
                if let Some(mut d) = self.daemon.take() {
                    sigkill(&mut d.proc)?;
                }
                for k in 0..self.testpmd.len() {
                    self.kill_testpmd(k)?;
                }
                self.start_daemon()?;
                self.sh.reopen[self.tap_id()].fetch_add(1, SeqCst);
                for k in 0..self.testpmd.len() {
                    self.start_testpmd(k)?;
                    remade.push(self.testpmd_id(k));
                }
                remade.push(self.tap_id());
                // The guests stay up: QEMU reconnects (reconnect=1).
                remade.extend(self.guests.iter().map(|g| usize::from(g.id)));
                daemon = true;
            }
            Fault::GuestKill(g) => {
                self.guests[g].kill()?;
                self.guests[g].start()?;
                remade.push(usize::from(self.guests[g].id));
            }
            Fault::GuestReset(g) => {
                self.guests[g].reset()?;
                remade.push(usize::from(self.guests[g].id));
            }
            Fault::NicReplug(g) => {
                self.guests[g].replug_nic()?;
                remade.push(usize::from(self.guests[g].id));
            }
            Fault::MemHotplug(g) => {
                let (bin, ctl) = (self.bin.clone(), self.ctl.clone());
                let sock = self.guests[g].sock.clone();
                // A second of traffic with the DIMM in the port's memory table.
                self.guests[g].memplug(Duration::from_secs(1), move || {
                    guest_memory(&bin, &ctl, &sock)
                })?;
            }
            Fault::Veth(i) => {
                let port = topo::host_if(i);
                self.ctl(&["del-port", &port])?;
                self.topo.delete_veth(i)?;
                self.topo.make_veth(i)?;
                self.ctl(&["add-port", &format!("afpacket:ifname={port}")])?;
                self.sh.reopen[i].fetch_add(1, SeqCst);
                remade.push(i);
            }
            Fault::Tap => {
                self.ctl(&["del-port", TAP])?;
                self.ctl(&["add-port", &format!("tap:name={TAP}")])?;
                self.sh.reopen[self.tap_id()].fetch_add(1, SeqCst);
                remade.push(self.tap_id());
            }
        }
        self.sh.fault_end(daemon, &remade);
        Ok(())
    }
}

const TAP: &str = "rst0";

/// `guest_memory_bytes` of the vhost-user port on `sock` (`ctl ports`).
fn guest_memory(bin: &Path, ctl: &Path, sock: &Path) -> Result<u64> {
    let mut c = Command::new(bin);
    c.arg("ctl").arg("--ctl").arg(ctl).args(["ports", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&proc::output(&mut c)?)?;
    let name = sock.display().to_string();
    Ok(v["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name.as_str()))
        .and_then(|p| p["guest_memory_bytes"].as_u64())
        .unwrap_or(0))
}

/// SIGKILL to the child's process group, then reap it.
pub(crate) fn sigkill(p: &mut Proc) -> Result<()> {
    if p.try_status()?.is_none() {
        let pgid = libc::pid_t::try_from(p.pid())?;
        // SAFETY: kill(2) on the process group we created for this child.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
    p.wait_exit(Duration::from_secs(10))?;
    Ok(())
}

/// testpmd's EAL runtime directories of our (dead) processes.
fn remove_dpdk_runtime_dirs() {
    let me = format!("rssoak{}-", std::process::id());
    let Ok(dir) = std::fs::read_dir("/var/run/dpdk") else {
        return;
    };
    for e in dir.flatten() {
        if e.file_name().to_string_lossy().starts_with(&me) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn config_text(veths: usize, socks: &[PathBuf], macs: &[String]) -> String {
    let mut s = String::from("# written by cargo xtask soak\n");
    for i in 0..veths {
        s += &format!(
            "[[port]]\nkind = \"afpacket\"\nifname = \"{}\"\n",
            topo::host_if(i)
        );
    }
    s += &format!("[[port]]\nkind = \"tap\"\nname = \"{TAP}\"\n");
    for (p, m) in socks.iter().zip(macs) {
        // mac=: the port takes unicast for the peer's MAC only, so testpmd (promiscuous
        // by default) never echoes a frame meant for someone else under a stolen source.
        s += &format!(
            "[[port]]\nkind = \"vhost-user\"\npath = \"{}\"\nmac = \"{m}\"\n",
            p.display()
        );
    }
    s
}

/// The cargo target directory (CARGO_TARGET_DIR or the workspace's target/).
pub(crate) fn target_dir() -> PathBuf {
    let root = crate::workspace_root();
    let t = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    if t.is_absolute() {
        t
    } else {
        root.join(t)
    }
}

fn build_ringswitch() -> Result<PathBuf> {
    crate::cargo(&["build", "-p", "ringswitch"])?;
    Ok(target_dir().join("debug").join("ringswitch"))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        remove_dpdk_runtime_dirs();
    }
}

/// Entry point of `cargo xtask soak …`.
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    proc::install_signal_handlers();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("soak needs root (network namespaces, AF_PACKET, taps)");
    }
    for tool in ["ip", "nice", "stdbuf"]
        .into_iter()
        .chain((o.testpmd > 0).then_some("dpdk-testpmd"))
        .chain((o.guests > 0).then_some("qemu-system-x86_64"))
    {
        if !have(tool) {
            bail!("{tool} is missing: `cargo xtask deps` installs the test packages");
        }
    }
    let seed = o.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    eprintln!("soak: seed {seed} (repeat with --seed {seed})");
    let mut rng = Rng::new(seed);
    let bin = match &o.ringswitch {
        Some(p) => p.clone(),
        None => build_ringswitch()?,
    };
    let tmp = std::env::temp_dir().join(format!("rssoak-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let _tmp_guard = RemoveOnDrop(tmp.clone());
    let image = if o.guests > 0 {
        Some(guest::image(&tmp)?)
    } else {
        None
    };
    let topo = Topology::create(o.veths)?;
    let n = o.veths + 1 + o.testpmd + o.guests;
    let sh = Arc::new(Shared::new(n, o.rate));
    // vhost-user ports: the testpmd peers', then the guests'.
    let socks: Vec<PathBuf> = (0..o.testpmd)
        .map(|k| tmp.join(format!("t{k}.sock")))
        .chain((0..o.guests).map(|g| tmp.join(format!("g{g}.sock"))))
        .collect();
    let macs: Vec<String> = (0..o.testpmd + o.guests)
        .map(|k| u8::try_from(o.veths + 1 + k).map(|id| fmt_mac(frame::mac(id))))
        .collect::<Result<_, _>>()?;
    let mut guests = vec![];
    if let Some(img) = &image {
        for g in 0..o.guests {
            let i = o.testpmd + g;
            let id = u8::try_from(o.veths + 1 + i)?;
            guests.push(Guest::new(
                g,
                id,
                macs[i].clone(),
                socks[i].clone(),
                &tmp,
                img,
            ));
        }
    }
    let config = tmp.join("ringswitch.toml");
    std::fs::write(&config, config_text(o.veths, &socks, &macs))?;
    let mut w = World {
        bin,
        tmp: tmp.clone(),
        config,
        ctl: tmp.join("ctl.sock"),
        daemon: None,
        testpmd: (0..o.testpmd).map(|_| None).collect(),
        testpmd_starts: 0,
        guests,
        veths: o.veths,
        sh: sh.clone(),
        topo,
    };
    w.start_daemon()?;
    for k in 0..o.testpmd {
        w.start_testpmd(k)?;
    }
    for g in w.guests.iter_mut() {
        g.start()?;
    }
    let threads = spawn_endpoints(&w, &o)?;
    let result = soak(&mut w, &o, &mut rng, seed, args);
    sh.run.store(false, SeqCst);
    for t in threads {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("soak: endpoint thread: {e}"),
            Err(_) => eprintln!("soak: endpoint thread panicked"),
        }
    }
    let summary = result?;
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&summary)? + "\n")?;
    print_summary(&summary, &o.out);
    if !summary.passed {
        bail!("soak failed (seed {seed}): see {}", o.out.display());
    }
    Ok(())
}

fn spawn_endpoints(
    w: &World,
    o: &Options,
) -> Result<Vec<std::thread::JoinHandle<std::io::Result<()>>>> {
    let n = o.veths + 1 + o.testpmd + o.guests;
    // testpmd peers and guests echo.
    let echo_peers: Vec<u8> = (o.veths + 1..n)
        .map(u8::try_from)
        .collect::<Result<_, _>>()?;
    let mut v = vec![];
    for id in 0..=o.veths {
        let (netns, ifname) = if id < o.veths {
            (w.topo.eps[id].clone(), topo::inner_if(id))
        } else {
            (w.topo.sw.clone(), TAP.to_string())
        };
        let spec = Spec {
            id: u8::try_from(id)?,
            netns,
            ifname,
            peers: (0..n)
                .filter(|&p| p != id)
                .map(u8::try_from)
                .collect::<Result<_, _>>()?,
            echo_peers: echo_peers.clone(),
        };
        let sh = w.sh.clone();
        v.push(
            std::thread::Builder::new()
                .name(format!("soak-ep{id}"))
                .spawn(move || endpoint::run(spec, sh))?,
        );
    }
    Ok(v)
}

/// The fault kinds, in the order the cycles take them first (targets chosen later).
fn fault_kinds(testpmd: usize, guests: usize) -> Vec<Fault> {
    let mut kinds = vec![Fault::Daemon, Fault::Veth(0), Fault::Tap];
    if testpmd > 0 {
        kinds.insert(0, Fault::Testpmd(0));
    }
    if guests > 0 {
        // Interleaved with the others: the guest faults cost a boot or an ACPI eject,
        // the others a second or two.
        for (i, f) in [
            Fault::GuestKill(0),
            Fault::GuestReset(0),
            Fault::NicReplug(0),
            Fault::MemHotplug(0),
        ]
        .into_iter()
        .enumerate()
        {
            kinds.insert((2 * i + 1).min(kinds.len()), f);
        }
    }
    kinds
}

/// The cycles: cycle 0 is traffic only and sets the baseline.
fn soak(w: &mut World, o: &Options, rng: &mut Rng, seed: u64, args: &[String]) -> Result<Summary> {
    let start = Instant::now();
    let kinds: Vec<Fault> = fault_kinds(o.testpmd, o.guests)
        .into_iter()
        .filter(|k| {
            o.faults
                .as_ref()
                .is_none_or(|f| f.iter().any(|n| n == k.kind()))
        })
        .collect();
    let mut per_cycle = vec![];
    let mut fault_counts: Vec<(String, usize)> = vec![];
    let mut baseline = Resources::default();
    let mut max = Drift::default();
    let mut crashes = 0;
    let mut cycle = 0;
    loop {
        proc::check_interrupted()?;
        let done = match o.minutes {
            Some(m) => cycle > 0 && start.elapsed().as_secs_f64() >= m * 60.0,
            None => cycle > o.cycles,
        };
        if done {
            break;
        }
        // Faults: one kind in turn (so a short run sees each), maybe a second at random;
        // the targets (which veth, which testpmd) at random.
        let mut faults = vec![];
        if cycle > 0 {
            faults.push(kinds[(cycle - 1) % kinds.len()]);
            if rng.below(2) == 1 {
                faults.push(kinds[rng.below(kinds.len())]);
            }
            for f in faults.iter_mut() {
                match f {
                    Fault::Veth(i) => *i = rng.below(o.veths),
                    Fault::Testpmd(k) => *k = rng.below(o.testpmd),
                    Fault::GuestKill(g)
                    | Fault::GuestReset(g)
                    | Fault::NicReplug(g)
                    | Fault::MemHotplug(g) => *g = rng.below(o.guests),
                    _ => {}
                }
            }
        }
        let before = w.totals();
        let mut ok = true;
        let mut error = None;
        for &f in &faults {
            if let Err(e) = w.daemon_alive() {
                crashes += 1;
                eprintln!("soak: the daemon died by itself: {e:#}");
                ok = false;
                break;
            }
            proc::check_interrupted()?;
            let t = Instant::now();
            if let Err(e) = w.apply(f) {
                // The fault did not complete (a guest that does not come back, a DIMM
                // never mapped or never unmapped): the cycle fails, the summary is kept.
                proc::check_interrupted()?;
                eprintln!("soak: cycle {cycle}: fault {}: {e:#}", f.name());
                error = Some(format!("fault {}: {e:#}", f.name()));
                ok = false;
                break;
            }
            eprintln!(
                "soak: cycle {cycle}: {} done in {:.1} s",
                f.name(),
                t.elapsed().as_secs_f64()
            );
            match fault_counts.iter_mut().find(|(n, _)| *n == f.name()) {
                Some((_, c)) => *c += 1,
                None => fault_counts.push((f.name(), 1)),
            }
        }
        let mark = flow_marks(&w.sh);
        pause(o.traffic)?;
        // Frames must flow again: every checking endpoint gets unicast from its peers,
        // and every testpmd peer echoes frames back.
        let settle_end = Instant::now() + SETTLE;
        let flowing = |w: &World| {
            flow_marks(&w.sh)
                .iter()
                .zip(&mark)
                .all(|(now, then)| now > then)
        };
        while !flowing(w) && Instant::now() < settle_end {
            pause(Duration::from_millis(200))?;
        }
        if !flowing(w) {
            let now = flow_marks(&w.sh);
            let stuck: Vec<usize> = (0..now.len()).filter(|&i| now[i] <= mark[i]).collect();
            eprintln!(
                "soak: cycle {cycle}: no traffic got through after the faults (endpoints {stuck:?})"
            );
            ok = false;
            error.get_or_insert(format!("no traffic to or from endpoints {stuck:?}"));
        }
        for g in w.guests.iter_mut() {
            if let Err(e) = g.ensure_running() {
                eprintln!("soak: cycle {cycle}: {e:#}");
                ok = false;
                error.get_or_insert(format!("{e:#}"));
            }
        }
        if let Err(e) = w.daemon_alive() {
            crashes += 1;
            eprintln!("soak: the daemon died by itself: {e:#}");
            let now = w.totals();
            let mut r = record(cycle, &faults, &before, &now, Resources::default(), false);
            r.error = Some(format!("the daemon died by itself: {e:#}"));
            per_cycle.push(r);
            break;
        }
        let pid = w.daemon_pid()?;
        let mut res = resources(pid)?;
        if cycle == 0 {
            baseline = res;
        } else {
            let end = Instant::now() + SETTLE;
            while !within(&baseline, &res) && Instant::now() < end {
                pause(Duration::from_millis(250))?;
                res = resources(pid)?;
            }
            if !within(&baseline, &res) {
                eprintln!("soak: cycle {cycle}: resources {res:?} vs baseline {baseline:?}");
                ok = false;
                error.get_or_insert(format!("resources {res:?} vs baseline {baseline:?}"));
            }
        }
        max.fds = max.fds.max(diff(res.fds, baseline.fds));
        max.eventfds = max.eventfds.max(diff(res.eventfds, baseline.eventfds));
        max.memfd_maps = max
            .memfd_maps
            .max(diff(res.memfd_maps, baseline.memfd_maps));
        max.rss_kib = max.rss_kib.max(
            i64::try_from(res.rss_kib).unwrap_or(0) - i64::try_from(baseline.rss_kib).unwrap_or(0),
        );
        let now = w.totals();
        let mut r = record(cycle, &faults, &before, &now, res, ok);
        r.error = error;
        if r.misdelivered > 0 || r.late > 0 {
            eprintln!(
                "soak: cycle {cycle}: {} misdelivered, {} duplicated or reordered",
                r.misdelivered, r.late
            );
            // What the daemon knows now and said lately, for the diagnosis.
            let mut c = Command::new(&w.bin);
            c.arg("ctl").arg("--ctl").arg(&w.ctl).arg("fdb");
            match proc::output(&mut c) {
                Ok(fdb) => eprintln!("soak: ctl fdb:\n{fdb}"),
                Err(e) => eprintln!("soak: ctl fdb: {e:#}"),
            }
            let mut c = Command::new(&w.bin);
            c.arg("ctl")
                .arg("--ctl")
                .arg(&w.ctl)
                .args(["stats", "--json"]);
            match proc::output(&mut c) {
                Ok(st) => eprintln!("soak: ctl stats:\n{st}"),
                Err(e) => eprintln!("soak: ctl stats: {e:#}"),
            }
            if let Some(d) = &w.daemon {
                eprintln!("soak: daemon output:\n{}", d.proc.tail(20));
            }
        }
        eprintln!(
            "soak: cycle {cycle} [{}] {} frames checked, {} misdelivered, fds {} ({:+}), \
             memfd maps {}, rss {} KiB ({:+}){}",
            r.faults.join(" "),
            r.checked,
            r.misdelivered,
            res.fds,
            diff(res.fds, baseline.fds),
            res.memfd_maps,
            res.rss_kib,
            i64::try_from(res.rss_kib).unwrap_or(0) - i64::try_from(baseline.rss_kib).unwrap_or(0),
            if r.ok { "" } else { "  FAILED" }
        );
        let failed = !r.ok;
        per_cycle.push(r);
        cycle += 1;
        if failed {
            break;
        }
    }
    let t = w.totals();
    let guests: Vec<GuestSummary> = w.guests.iter_mut().map(|g| g.summary()).collect();
    let mut samples = w.sh.samples.lock().map(|s| s.clone()).unwrap_or_default();
    samples.extend(guests.iter().flat_map(|g| g.foreign_samples.clone()));
    let cycles_ok = per_cycle.iter().filter(|c| c.ok && c.cycle > 0).count();
    let all_ok = per_cycle.iter().all(|c| c.ok);
    Ok(Summary {
        seed,
        command: format!("cargo xtask soak {}", args.join(" ")),
        git: git_describe(),
        endpoints: format!(
            "{} veth (afpacket ports), 1 tap, {} testpmd virtio-user (vhost-user ports, \
             macswap), {} QEMU guest (vhost-user ports, soak-echo)",
            o.veths, o.testpmd, o.guests
        ),
        qemu_guest: if o.guests > 0 {
            format!(
                "{} TCG guest(s), {} MiB memfd share=on, a {} MiB pc-dimm per memory hot-plug; \
                 soak-echo echoes (macswap) and counts foreign unicast",
                o.guests,
                guest::MEM_MB,
                guest::DIMM_MB
            )
        } else {
            "none (--guests 0)".into()
        },
        cycles: per_cycle.len().saturating_sub(1),
        cycles_ok,
        seconds: start.elapsed().as_secs_f64(),
        faults: fault_counts,
        crashes,
        passed: all_ok && crashes == 0 && t.misdelivered == 0 && t.late == 0 && t.delivered > 0,
        totals: t,
        baseline,
        max_drift: max,
        misdelivery_samples: samples,
        guests,
        per_cycle,
    })
}

fn record(
    cycle: usize,
    faults: &[Fault],
    before: &Totals,
    t: &Totals,
    resources: Resources,
    ok: bool,
) -> CycleRecord {
    let misdelivered = t.misdelivered - before.misdelivered;
    let late = t.late - before.late;
    CycleRecord {
        cycle,
        faults: faults.iter().map(|f| f.name()).collect(),
        checked: t.checked - before.checked,
        misdelivered,
        late,
        resources,
        ok: ok && misdelivered == 0 && late == 0,
        error: None,
    }
}

fn git_describe() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(crate::workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn print_summary(s: &Summary, out: &Path) {
    let t = &s.totals;
    println!(
        "soak: {} — seed {}, {} fault cycles ({} ok) in {:.0} s, faults {:?}\n\
         soak: frames sent {}, checked {} (delivered {}, echoed {}, broadcast {}, flooded {}, \
         excused {}), misdelivered {}, late {}, lost {}\n\
         soak: crashes {}, max drift: fds {:+}, eventfds {:+}, memfd maps {:+}, rss {:+} KiB \
         (baseline {} fds, {} memfd maps, {} KiB)\n\
         soak: wrote {}",
        if s.passed { "PASSED" } else { "FAILED" },
        s.seed,
        s.cycles,
        s.cycles_ok,
        s.seconds,
        s.faults,
        t.sent,
        t.checked,
        t.delivered,
        t.echoed,
        t.broadcast,
        t.flooded,
        t.excused,
        t.misdelivered,
        t.late,
        t.lost,
        s.crashes,
        s.max_drift.fds,
        s.max_drift.eventfds,
        s.max_drift.memfd_maps,
        s.max_drift.rss_kib,
        s.baseline.fds,
        s.baseline.memfd_maps,
        s.baseline.rss_kib,
        out.display()
    );
    for g in &s.guests {
        println!(
            "soak: guest {} ({}): {} QEMU starts, {} boots, {} DIMMs plugged; soak-echo got {} \
             frames, echoed {}, broadcast {}, foreign unicast {}",
            g.id,
            g.mac,
            g.qemu_starts,
            g.boots,
            g.dimms_plugged,
            g.rx,
            g.echoed,
            g.broadcast,
            g.foreign
        );
    }
    for m in &s.misdelivery_samples {
        println!("soak: misdelivered: {m}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_limits() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse(&a(&["--cycles", "3", "--seed", "42", "--testpmd", "0"])).unwrap();
        assert_eq!((o.cycles, o.seed, o.testpmd), (3, Some(42), 0));
        assert!(parse(&a(&["--veths", "1"])).is_err());
        assert!(parse(&a(&["--bogus"])).is_err());
    }

    #[test]
    fn every_fault_kind_comes_in_turn() {
        let names = |k: Vec<Fault>| k.into_iter().map(Fault::name).collect::<Vec<_>>();
        assert_eq!(
            names(fault_kinds(1, 1)),
            [
                "kill-testpmd0",
                "kill-guest0",
                "kill-daemon",
                "reset-guest0",
                "readd-veth0",
                "replug-nic-guest0",
                "readd-tap",
                "memplug-guest0"
            ]
        );
        assert_eq!(
            names(fault_kinds(0, 0)),
            ["kill-daemon", "readd-veth0", "readd-tap"]
        );
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(parse(&a(&["--guests", "3"])).is_err());
        let o = parse(&a(&["--faults", "readd-tap,memplug"])).unwrap();
        assert_eq!(o.faults, Some(vec!["readd-tap".into(), "memplug".into()]));
        assert!(parse(&a(&["--guests", "0", "--faults", "memplug"])).is_err());
        assert!(parse(&a(&["--faults", "bogus"])).is_err());
    }

    #[test]
    fn seeded_choices_repeat() {
        let mut a = Rng(7);
        let mut b = Rng(7);
        let va: Vec<usize> = (0..20).map(|_| a.below(5)).collect();
        let vb: Vec<usize> = (0..20).map(|_| b.below(5)).collect();
        assert_eq!(va, vb);
        assert!(va.iter().all(|&x| x < 5));
        assert!(va.iter().any(|&x| x != va[0]));
        let seq = |s| {
            let mut r = Rng::new(s);
            (0..20).map(|_| r.below(8)).collect::<Vec<_>>()
        };
        assert_eq!(seq(4), seq(4));
        assert_ne!(seq(4), seq(5));
        assert_ne!(seq(0), seq(1));
    }

    #[test]
    fn resource_tolerance() {
        let base = Resources {
            fds: 20,
            eventfds: 5,
            memfd_maps: 2,
            rss_kib: 10_000,
        };
        assert!(within(&base, &base));
        assert!(!within(&base, &Resources { fds: 25, ..base }));
        assert!(!within(
            &base,
            &Resources {
                memfd_maps: 3,
                ..base
            }
        ));
        assert!(!within(
            &base,
            &Resources {
                rss_kib: 10_000 + 40_000,
                ..base
            }
        ));
        assert!(within(
            &base,
            &Resources {
                rss_kib: 10_000 + 30_000,
                ..base
            }
        ));
    }

    #[test]
    fn config_has_every_port() {
        let c = config_text(
            2,
            &[PathBuf::from("/tmp/t0.sock")],
            &["02:53:4b:00:00:04".into()],
        );
        assert!(c.contains("ifname = \"sv0\"") && c.contains("ifname = \"sv1\""));
        assert!(c.contains("name = \"rst0\""));
        assert!(c.contains("path = \"/tmp/t0.sock\"\nmac = \"02:53:4b:00:00:04\""));
    }
}
