//! The soak test's QEMU guests: a TCG guest per vhost-user port, booted from the
//! `cargo xtask guest-image` kernel and initramfs with one more archive appended that
//! holds the `soak-echo` responder (xtask/src/bin/soak-echo.rs) and the libraries `ldd`
//! names for it. The kernel unpacks concatenated newc archives in order
//! (Documentation/driver-api/early-userspace/buffer-format.rst), so the shared e2e image
//! stays as it is. The guest's /init (guest/init.sh) runs `soak-echo MAC` as its `rs.cmd`.
//!
//! The QEMU options are those the e2e harness (tests/common/qemu.rs, which xtask cannot
//! link) uses: `-accel tcg`, memory-backend-memfd share=on, `vectors=0`, QEMU reconnecting
//! to the daemon's socket (`reconnect=1`) so a daemon restart is survived; plus room for
//! memory hot-plug (`slots`, `maxmem`, `memhp_default_state=online_movable` so the guest
//! onlines a new DIMM by itself and can offline it again for the ACPI eject). No
//! `-no-reboot`: with it QEMU 7.2 turns a QMP `system_reset` into a shutdown.
//!
//! Faults (each waits until the guest answers again or fails the cycle):
//! - kill: SIGKILL QEMU (no goodbye to the backend) and boot a new one;
//! - reset: QMP `system_reset` (the device resets under the backend, the guest reboots);
//! - NIC replug: `device_del` (ACPI PCI eject), `netdev_del`, then `chardev-add` +
//!   `netdev_add` + `device_add` on the same socket (the sequence of
//!   tests/e2e_lifecycle.rs);
//! - memory hot-plug: `object-add` memory-backend-memfd share=on + `device_add` pc-dimm,
//!   the backend must map it (`ctl ports` guest_memory_bytes) and the guest online it
//!   (its MemTotal, reported by soak-echo, grows by the DIMM), then `device_del` (the guest
//!   offlines and ejects it) + `object-del`, and the backend must unmap it and the guest's
//!   MemTotal be back (tests/e2e_memhotplug.rs).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::bench::proc::{self, pause, Proc};
use crate::guest::cpio::{Archive, Node};

/// Boot memory of a guest, and the hot-plugged DIMM.
pub const MEM_MB: u64 = 256;
pub const DIMM_MB: u64 = 128;
/// A TCG boot on a loaded 2-core host.
const BOOT: Duration = Duration::from_secs(180);
const STEP: Duration = Duration::from_secs(60);

/// Kernel and the soak initramfs.
pub struct Image {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// Builds `soak-echo`, the e2e guest image (cached under target/guest), and writes the
/// image with `soak-echo` appended to `dir/soak-initramfs.cpio`.
pub fn image(dir: &Path) -> Result<Image> {
    crate::cargo(&["build", "-p", "xtask", "--bin", "soak-echo"])?;
    let echo = crate::soak::target_dir().join("debug").join("soak-echo");
    let root = crate::workspace_root();
    let base = crate::guest::build_image(&root.join("target").join("guest"), false)?;
    let mut bytes = std::fs::read(&base.initramfs)
        .with_context(|| format!("reading {}", base.initramfs.display()))?;
    let mut a = Archive::new();
    a.add(
        "usr/bin/soak-echo",
        Node::File {
            mode: 0o755,
            data: std::fs::read(&echo).with_context(|| format!("reading {}", echo.display()))?,
        },
    );
    let ldd = proc::output(Command::new("ldd").arg(&echo))?;
    for lib in crate::guest::ldd_paths(&ldd) {
        let data = std::fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
        a.add(&lib.to_string_lossy(), Node::File { mode: 0o755, data });
    }
    // newc archives are 4-byte aligned; the next one must start aligned too.
    while bytes.len() % 4 != 0 {
        bytes.push(0);
    }
    a.write_to(&mut bytes)?;
    let initramfs = dir.join("soak-initramfs.cpio");
    std::fs::write(&initramfs, bytes)?;
    Ok(Image {
        kernel: base.kernel,
        initramfs,
    })
}

/// What a guest's `soak-echo` reported in one boot (its last stats line).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BootStats {
    pub rx: u64,
    pub echoed: u64,
    pub broadcast: u64,
    pub foreign: u64,
}

/// Per guest, for the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GuestSummary {
    pub id: u8,
    pub mac: String,
    pub qemu_starts: usize,
    pub boots: usize,
    pub rx: u64,
    pub echoed: u64,
    pub broadcast: u64,
    /// Unicast for another MAC that reached the guest (misdelivered; must be 0).
    pub foreign: u64,
    pub dimms_plugged: usize,
    pub foreign_samples: Vec<String>,
}

pub struct Guest {
    pub k: usize,
    /// Endpoint id (its MAC is frame::mac(id)).
    pub id: u8,
    pub mac: String,
    pub sock: PathBuf,
    qmp: PathBuf,
    kernel: PathBuf,
    initramfs: PathBuf,
    proc: Option<Proc>,
    /// Stats of every boot seen, by boot_id, from QEMU processes gone and the current one.
    boots: BTreeMap<String, BootStats>,
    samples: Vec<String>,
    starts: usize,
    plugs: usize,
}

impl Guest {
    pub fn new(k: usize, id: u8, mac: String, sock: PathBuf, dir: &Path, img: &Image) -> Guest {
        Guest {
            k,
            id,
            mac,
            sock,
            qmp: dir.join(format!("g{k}.qmp")),
            kernel: img.kernel.clone(),
            initramfs: img.initramfs.clone(),
            proc: None,
            boots: BTreeMap::new(),
            samples: vec![],
            starts: 0,
            plugs: 0,
        }
    }

    fn cmdline(&self) -> String {
        use base64::Engine as _;
        let cmd = format!("exec /usr/bin/soak-echo {}", self.mac);
        // As tests/common/qemu.rs, minus `panic=-1`: a panicking guest must stay down (and
        // fail the cycle), not reboot into a working one.
        format!(
            "console=ttyS0 loglevel=4 no_timer_check rs.nics=1 rs.wait=30 rs.stay=1 \
             memhp_default_state=online_movable rs.cmd={}",
            base64::engine::general_purpose::STANDARD.encode(cmd)
        )
    }

    fn qemu_command(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        c.args(["-name", &format!("soak-g{}", self.k)])
            .args([
                "-accel",
                "tcg",
                "-cpu",
                "max",
                "-nodefaults",
                "-no-user-config",
            ])
            .args(["-display", "none", "-smp", "1"])
            .args(["-m", &format!("{MEM_MB}M,slots=2,maxmem=1024M")])
            .args([
                "-object",
                &format!("memory-backend-memfd,id=mem,size={MEM_MB}M,share=on"),
                "-numa",
                "node,memdev=mem",
            ])
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initramfs)
            .args(["-append", &self.cmdline()])
            .args([
                "-chardev",
                "stdio,id=ser0,signal=off",
                "-serial",
                "chardev:ser0",
            ])
            .args([
                "-chardev",
                &format!("socket,id=vu0,path={},reconnect=1", self.sock.display()),
                "-netdev",
                "vhost-user,id=net0,chardev=vu0",
                "-device",
                &format!(
                    "virtio-net-pci,netdev=net0,id=nic0,mac={},vectors=0",
                    self.mac
                ),
            ])
            .args([
                "-qmp",
                &format!("unix:{},server=on,wait=off", self.qmp.display()),
            ]);
        c
    }

    /// Boots a new QEMU and waits until `soak-echo` has its interface.
    pub fn start(&mut self) -> Result<()> {
        self.starts += 1;
        let p = Proc::spawn(&format!("guest{}", self.k), self.qemu_command())?;
        self.proc = Some(p);
        self.wait_after(0, "SOAK-ECHO up", "boot", BOOT).map(|_| ())
    }

    /// SIGKILLs QEMU and reaps it, keeping what its boots reported.
    pub fn kill(&mut self) -> Result<()> {
        self.scan();
        if let Some(mut p) = self.proc.take() {
            crate::soak::sigkill(&mut p)?;
        }
        Ok(())
    }

    /// Fails if QEMU exited or the guest kernel panicked.
    pub fn ensure_running(&mut self) -> Result<()> {
        let p = self.proc.as_mut().context("no QEMU")?;
        p.ensure_running()?;
        let bad = p
            .lines()
            .lock()
            .map(|l| {
                l.iter()
                    .find(|(_, s)| {
                        s.contains("Kernel panic")
                            || s.contains("RS-ERROR")
                            || s.contains("RS-RESULT name=cmd")
                    })
                    .map(|(_, s)| s.clone())
            })
            .unwrap_or(None);
        if let Some(line) = bad {
            bail!("guest{}: {line}\n{}", self.k, p.tail(30));
        }
        Ok(())
    }

    /// Lines QEMU printed so far (the current process).
    fn mark(&self) -> usize {
        self.proc
            .as_ref()
            .and_then(|p| p.lines().lock().ok().map(|l| l.len()))
            .unwrap_or(0)
    }

    /// The index of the first line at or after `from` that contains `pat`.
    fn find_after(&self, from: usize, pat: &str) -> Option<usize> {
        let p = self.proc.as_ref()?;
        let l = p.lines();
        let l = l.lock().ok()?;
        l.iter()
            .enumerate()
            .skip(from)
            .find(|(_, (_, s))| s.contains(pat))
            .map(|(i, _)| i)
    }

    /// Waits for a line containing `pat` at or after line `from`; returns the index after.
    fn wait_after(
        &mut self,
        from: usize,
        pat: &str,
        what: &str,
        timeout: Duration,
    ) -> Result<usize> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(i) = self.find_after(from, pat) {
                return Ok(i + 1);
            }
            self.ensure_running()
                .with_context(|| format!("guest{} {what}", self.k))?;
            if Instant::now() >= end {
                bail!(
                    "guest{}: no {pat:?} after {what} within {timeout:?}\n{}",
                    self.k,
                    self.proc.as_ref().map(|p| p.tail(30)).unwrap_or_default()
                );
            }
            pause(Duration::from_millis(100))?;
        }
    }

    /// Reads the stats lines of the current QEMU process into `boots`.
    pub fn scan(&mut self) {
        let Some(p) = &self.proc else { return };
        let Ok(lines) = p.lines().lock().map(|l| l.clone()) else {
            return;
        };
        for (_, l) in &lines {
            if let Some(rest) = l.split("SOAK-ECHO stats ").nth(1) {
                let kv: BTreeMap<&str, &str> = rest
                    .split_whitespace()
                    .filter_map(|w| w.split_once('='))
                    .collect();
                let n = |k: &str| kv.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
                if let Some(boot) = kv.get("boot") {
                    self.boots.insert(
                        boot.to_string(),
                        BootStats {
                            rx: n("rx"),
                            echoed: n("echoed"),
                            broadcast: n("broadcast"),
                            foreign: n("foreign"),
                        },
                    );
                }
            } else if l.contains("SOAK-ECHO foreign") && self.samples.len() < 20 {
                let s = format!("guest{}: {}", self.k, l.trim());
                if !self.samples.contains(&s) {
                    self.samples.push(s);
                }
            }
        }
    }

    /// Misdelivered frames the guest saw so far (all boots).
    pub fn foreign(&mut self) -> u64 {
        self.scan();
        self.boots.values().map(|b| b.foreign).sum()
    }

    pub fn summary(&mut self) -> GuestSummary {
        self.scan();
        let sum = |f: fn(&BootStats) -> u64| self.boots.values().map(f).sum();
        GuestSummary {
            id: self.id,
            mac: self.mac.clone(),
            qemu_starts: self.starts,
            boots: self.boots.len(),
            rx: sum(|b| b.rx),
            echoed: sum(|b| b.echoed),
            broadcast: sum(|b| b.broadcast),
            foreign: sum(|b| b.foreign),
            dimms_plugged: self.plugs,
            foreign_samples: self.samples.clone(),
        }
    }

    fn qmp(&self) -> Result<Qmp> {
        Qmp::connect(&self.qmp, Duration::from_secs(10))
    }

    /// QMP `system_reset`: waits for the guest to boot again.
    pub fn reset(&mut self) -> Result<()> {
        let from = self.mark();
        self.qmp()?.execute("system_reset", json!({}))?;
        let booted = self.wait_after(from, "RS-READY", "system_reset", BOOT)?;
        self.wait_after(booted, "SOAK-ECHO up", "system_reset", BOOT)
            .map(|_| ())
    }

    /// NIC hot-unplug and plug on the same socket.
    pub fn replug_nic(&mut self) -> Result<()> {
        let from = self.mark();
        let mut q = self.qmp()?;
        q.execute("device_del", json!({"id": "nic0"}))?;
        q.wait_event("DEVICE_DELETED", STEP, |d| d["device"] == "nic0")?;
        q.execute("netdev_del", json!({"id": "net0"}))?;
        let addr = json!({"type": "unix", "data": {"path": self.sock.display().to_string()}});
        q.execute(
            "chardev-add",
            json!({"id": "vu0", "backend": {"type": "socket",
                "data": {"addr": addr, "server": false, "reconnect": 1}}}),
        )?;
        q.execute(
            "netdev_add",
            json!({"type": "vhost-user", "id": "net0", "chardev": "vu0"}),
        )?;
        q.execute(
            "device_add",
            json!({"driver": "virtio-net-pci", "id": "nic0", "netdev": "net0",
                "mac": self.mac, "vectors": 0}),
        )?;
        self.wait_after(from, "SOAK-ECHO up", "NIC replug", STEP)
            .map(|_| ())
    }

    /// Plugs a DIMM, checks the backend maps it, pauses `hold` under traffic, unplugs
    /// it and checks the backend unmaps it. `mapped()` reads guest_memory_bytes.
    pub fn memplug(&mut self, hold: Duration, mapped: impl Fn() -> Result<u64>) -> Result<()> {
        let base = MEM_MB << 20;
        let dimm = DIMM_MB << 20;
        let from = self.mark();
        let (_, mem_before) = self.wait_mem_kib(from, "memory hot-plug", |_| true)?;
        self.plugs += 1;
        let (mem, dev) = (
            format!("hpmem{}", self.plugs),
            format!("dimm{}", self.plugs),
        );
        let mut q = self.qmp()?;
        q.execute(
            "object-add",
            json!({"qom-type": "memory-backend-memfd", "id": mem, "size": dimm, "share": true}),
        )?;
        q.execute(
            "device_add",
            json!({"driver": "pc-dimm", "id": dev, "memdev": mem}),
        )?;
        wait_value(&mapped, base + dimm, STEP).context("the backend never mapped the DIMM")?;
        let (from, _) = self.wait_mem_kib(from, "the DIMM onlined", |kib| {
            kib >= mem_before + (DIMM_MB << 10)
        })?;
        pause(hold)?;
        q.execute("device_del", json!({"id": dev}))?;
        q.wait_event("DEVICE_DELETED", STEP, |d| d["device"] == dev.as_str())
            .context("the guest did not eject the DIMM")?;
        q.execute("object-del", json!({"id": mem}))?;
        wait_value(&mapped, base, STEP).context("the backend kept the DIMM mapped")?;
        self.wait_mem_kib(from, "the DIMM unplugged", |kib| kib == mem_before)
            .map(|_| ())
    }

    /// Waits for a soak-echo stats line at or after line `from` whose MemTotal satisfies
    /// `ok`; returns the index after it and the MemTotal.
    fn wait_mem_kib(
        &mut self,
        from: usize,
        what: &str,
        ok: impl Fn(u64) -> bool,
    ) -> Result<(usize, u64)> {
        let end = Instant::now() + STEP;
        let mut at = from;
        loop {
            while let Some(i) = self.find_after(at, "SOAK-ECHO stats ") {
                at = i + 1;
                let kib = self
                    .line(i)
                    .and_then(|l| {
                        l.split_whitespace()
                            .find_map(|w| w.strip_prefix("mem_kib="))
                            .and_then(|v| v.parse().ok())
                    })
                    .unwrap_or(0);
                if kib > 0 && ok(kib) {
                    return Ok((at, kib));
                }
            }
            self.ensure_running()?;
            if Instant::now() >= end {
                bail!("guest{}: MemTotal never right for {what}", self.k);
            }
            pause(Duration::from_millis(100))?;
        }
    }

    fn line(&self, i: usize) -> Option<String> {
        let p = self.proc.as_ref()?;
        let l = p.lines();
        let l = l.lock().ok()?;
        l.get(i).map(|(_, s)| s.clone())
    }
}

fn wait_value(f: &impl Fn() -> Result<u64>, want: u64, timeout: Duration) -> Result<()> {
    let end = Instant::now() + timeout;
    loop {
        let v = f()?;
        if v == want {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!("{v} bytes of guest memory mapped, expected {want}");
        }
        pause(Duration::from_millis(100))?;
    }
}

/// A QMP client (docs/interop/qmp-spec): one command at a time, events kept for
/// [`wait_event`](Qmp::wait_event). tests/common/qemu.rs has the same for the tests.
struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
    events: Vec<Value>,
}

impl Qmp {
    fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let end = Instant::now() + timeout;
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= end => {
                    return Err(e).with_context(|| format!("connecting {}", path.display()))
                }
                Err(_) => pause(Duration::from_millis(50))?,
            }
        };
        s.set_read_timeout(Some(STEP))?;
        let w = s.try_clone()?;
        let mut q = Qmp {
            r: BufReader::new(s),
            w,
            events: vec![],
        };
        q.line()?;
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn line(&mut self) -> Result<Value> {
        let mut l = String::new();
        if self.r.read_line(&mut l).context("reading QMP")? == 0 {
            bail!("QEMU closed the QMP socket");
        }
        serde_json::from_str(&l).with_context(|| format!("bad QMP line {l:?}"))
    }

    fn execute(&mut self, cmd: &str, args: Value) -> Result<Value> {
        writeln!(self.w, "{}", json!({"execute": cmd, "arguments": args}))?;
        loop {
            let v = self.line()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {cmd}: {e}");
            }
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }

    fn wait_event(
        &mut self,
        name: &str,
        timeout: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> Result<()> {
        let hit = |v: &Value| v["event"] == name && ok(&v["data"]);
        if let Some(i) = self.events.iter().position(hit) {
            self.events.remove(i);
            return Ok(());
        }
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no QMP {name} event within {timeout:?}");
            }
            self.r.get_ref().set_read_timeout(Some(left))?;
            let v = self.line()?;
            if hit(&v) {
                return Ok(());
            }
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest() -> Guest {
        let img = Image {
            kernel: "/k".into(),
            initramfs: "/i".into(),
        };
        Guest::new(
            0,
            5,
            "02:53:4b:00:00:06".into(),
            "/tmp/g0.sock".into(),
            Path::new("/tmp/d"),
            &img,
        )
    }

    #[test]
    fn qemu_has_the_required_options() {
        let g = guest();
        let a = proc::render(&g.qemu_command());
        for want in [
            "-accel tcg",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-m 256M,slots=2,maxmem=1024M",
            "socket,id=vu0,path=/tmp/g0.sock,reconnect=1",
            "mac=02:53:4b:00:00:06,vectors=0",
            "-qmp unix:/tmp/d/g0.qmp,server=on,wait=off",
        ] {
            assert!(a.contains(want), "{want} missing: {a}");
        }
        assert!(!a.contains("-no-reboot"), "{a}");
        let c = g.cmdline();
        assert!(
            c.contains("memhp_default_state=online_movable rs.cmd="),
            "{c}"
        );
        assert!(!c.contains("panic=-1"), "{c}");
    }

    #[test]
    fn stats_of_every_boot_are_summed() {
        let mut g = guest();
        g.boots.insert(
            "a".into(),
            BootStats {
                rx: 10,
                echoed: 8,
                broadcast: 2,
                foreign: 0,
            },
        );
        g.boots.insert(
            "b".into(),
            BootStats {
                rx: 5,
                echoed: 4,
                broadcast: 0,
                foreign: 1,
            },
        );
        let s = g.summary();
        assert_eq!((s.boots, s.rx, s.echoed, s.foreign), (2, 15, 12, 1));
    }
}
