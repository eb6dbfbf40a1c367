//! `Guest`: one QEMU guest (TCG) booted from the `cargo xtask guest-image` kernel and
//! initramfs, with its NICs on vhost-user sockets.
//!
//! - ttyS0 (QEMU's stdout) is the kernel console and the /init's result channel:
//!   `RS-READY`, `RS-IFACE`, `RS-RESULT name=… ok=…`, `RS-DONE`.
//! - ttyS1 is a unix-socket chardev that QEMU listens on: the command console. Requests
//!   are `RS-CMD <id> <base64 script>`, replies base64-framed between `RS-OUT-BEGIN <id>`
//!   and `RS-OUT-END <id> rc=<rc>`, so no output can be mistaken for the framing and no
//!   tty echo or prompt gets in the way (the guest puts ttyS1 in raw mode).
//!
//! Required QEMU options (measured, see docs/environment.md): memfd guest memory with
//! share=on (the backend maps it), and `vectors=0` on virtio-net-pci because QEMU 7.2
//! under TCG crashes once a vhost-user NIC starts with MSI-X; with INTx the backend's call
//! eventfds are still read by QEMU, so the backend's notification path is exercised.

use super::error::{io, HarnessError, Result};
use super::image::{guest_image, GuestImage};
use super::process::Process;
use super::TempDir;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::output::OutputBuf;

/// Who listens on a vhost-user socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketMode {
    /// The backend listens, QEMU connects once at start (QEMU fails if it is absent).
    Client,
    /// As `Client`, and QEMU reconnects every second after the backend went away.
    ClientReconnect,
    /// QEMU listens, the backend connects (ringswitch `client` ports). QEMU 7.2 still
    /// blocks at start-up until the first connection (vhost-user netdevs need it,
    /// `wait=off` notwithstanding), so start the backend after `Guest::start`.
    Server,
}

/// One virtio-net-pci NIC on a vhost-user socket.
#[derive(Clone, Debug)]
pub struct NicSpec {
    pub socket: PathBuf,
    pub mac: String,
    /// Queue pairs; > 1 enables mq=on and `ethtool -L combined N` in the guest.
    pub queues: u16,
    pub mode: SocketMode,
    /// Extra `-device virtio-net-pci` properties, e.g. "packed=on", "host_mtu=9000".
    pub device_opts: Vec<String>,
}

impl NicSpec {
    pub fn new(socket: impl Into<PathBuf>, mac: &str) -> NicSpec {
        NicSpec {
            socket: socket.into(),
            mac: mac.into(),
            queues: 1,
            mode: SocketMode::Client,
            device_opts: Vec::new(),
        }
    }
}

/// What to boot. Lists `ip`/`ip6` have one entry per NIC ("" for none).
#[derive(Clone, Debug)]
pub struct GuestSpec {
    pub name: String,
    pub nics: Vec<NicSpec>,
    pub vcpus: u32,
    pub mem_mb: u32,
    pub ip: Vec<String>,
    pub ip6: Vec<String>,
    /// MAC set inside the guest per NIC ("" keeps the one QEMU gave it), e.g. to make a
    /// guest send from a MAC its vhost-user backend was not told about.
    pub mac: Vec<String>,
    /// MTU per NIC ("" for the default).
    pub mtu: Vec<String>,
    /// /init scenario steps: `ping:ADDR`, `ping6:ADDR`, `iperf3-server`,
    /// `iperf3:ADDR[/SECS]`, `sleep:SECS`.
    pub run: Vec<String>,
    /// A shell script /init runs after the steps (passed base64-encoded).
    pub cmd: Option<String>,
    /// Keep the guest up after `RS-DONE` (for `Guest::run` and for peers still pinging).
    pub stay: bool,
    /// Seconds a step waits for its peer to answer (`rs.wait`).
    pub wait_secs: u32,
    /// Extra kernel command-line parameters.
    pub cmdline: Vec<String>,
    /// Extra QEMU arguments.
    pub qemu_args: Vec<String>,
    /// Serve QMP on this unix socket (`-qmp unix:PATH,server=on,wait=off`), for a
    /// ringswitch port with `qmp=PATH`. NIC `i` is `-device …,id=nic<i>` on
    /// `-netdev …,id=net<i>`, so `qmp-nic=nic<i>` and `qmp-nic=net<i>` both name it.
    pub qmp: Option<PathBuf>,
    /// Memory hot-plug room: `(slots, maxmem MiB)` makes `-m SIZE,slots=S,maxmem=M`, so
    /// QMP can add `pc-dimm`s (ACPI memory hot-plug of the `pc` machine).
    pub maxmem: Option<(u32, u32)>,
}

impl GuestSpec {
    pub fn new(name: &str) -> GuestSpec {
        GuestSpec {
            name: name.into(),
            nics: Vec::new(),
            vcpus: 1,
            mem_mb: 256,
            ip: Vec::new(),
            ip6: Vec::new(),
            mac: Vec::new(),
            mtu: Vec::new(),
            run: Vec::new(),
            cmd: None,
            stay: true,
            wait_secs: 30,
            cmdline: Vec::new(),
            qemu_args: Vec::new(),
            qmp: None,
            maxmem: None,
        }
    }

    /// The kernel command line /init reads (see xtask/src/guest/init.sh).
    pub fn kernel_cmdline(&self) -> Result<String> {
        let invalid = |detail: String| HarnessError::Invalid {
            what: format!("guest {}", self.name),
            detail,
        };
        // no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check
        // times out and panics ("IO-APIC + timer doesn't work!"), seen here with four
        // guests booting at once on 2 cores.
        let mut p = vec![
            "console=ttyS0".to_string(),
            "loglevel=4".into(),
            "panic=-1".into(),
            "no_timer_check".into(),
            format!("rs.nics={}", self.nics.len()),
            format!("rs.wait={}", self.wait_secs),
        ];
        let mut list = |key: &str, items: &[String]| -> Result<()> {
            if items.iter().any(|i| i.contains([' ', ','])) {
                return Err(invalid(format!("{key} items may not contain ' ' or ','")));
            }
            if items.iter().any(|i| !i.is_empty()) {
                p.push(format!("rs.{key}={}", items.join(",")));
            }
            Ok(())
        };
        list("ip", &self.ip)?;
        list("ip6", &self.ip6)?;
        list("mac", &self.mac)?;
        list("mtu", &self.mtu)?;
        let queues: Vec<String> = self.nics.iter().map(|n| n.queues.to_string()).collect();
        if self.nics.iter().any(|n| n.queues > 1) {
            list("queues", &queues)?;
        }
        list("run", &self.run)?;
        if let Some(cmd) = &self.cmd {
            p.push(format!(
                "rs.cmd={}",
                base64::engine::general_purpose::STANDARD.encode(cmd)
            ));
        }
        if self.stay {
            p.push("rs.stay=1".into());
        }
        p.extend(self.cmdline.iter().cloned());
        let line = p.join(" ");
        // x86 COMMAND_LINE_SIZE; longer lines are cut silently by the kernel.
        if line.len() >= 2048 {
            return Err(invalid(format!(
                "kernel command line is {} bytes (max 2047): use Guest::run for long scripts",
                line.len()
            )));
        }
        Ok(line)
    }

    /// The full QEMU argument list.
    pub fn qemu_args(&self, image: &GuestImage, console: &Path) -> Result<Vec<String>> {
        let mut a: Vec<String> = [
            "-name",
            &self.name,
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut push = |args: &[&str]| a.extend(args.iter().map(|s| s.to_string()));
        let mem = match self.maxmem {
            Some((slots, max)) => format!("{}M,slots={slots},maxmem={max}M", self.mem_mb),
            None => format!("{}M", self.mem_mb),
        };
        push(&["-smp", &self.vcpus.to_string(), "-m", &mem]);
        push(&[
            "-object",
            &format!("memory-backend-memfd,id=mem,size={}M,share=on", self.mem_mb),
            "-numa",
            "node,memdev=mem",
        ]);
        push(&["-kernel", &image.kernel.to_string_lossy()]);
        push(&["-initrd", &image.initramfs.to_string_lossy()]);
        push(&["-append", &self.kernel_cmdline()?]);
        push(&[
            "-chardev",
            "stdio,id=ser0,signal=off",
            "-serial",
            "chardev:ser0",
        ]);
        push(&[
            "-chardev",
            &format!(
                "socket,id=ser1,path={},server=on,wait=off",
                console.display()
            ),
            "-serial",
            "chardev:ser1",
        ]);
        for (i, nic) in self.nics.iter().enumerate() {
            let mode = match nic.mode {
                SocketMode::Client => "",
                SocketMode::ClientReconnect => ",reconnect=1",
                SocketMode::Server => ",server=on,wait=off",
            };
            push(&[
                "-chardev",
                &format!("socket,id=vu{i},path={}{mode}", nic.socket.display()),
            ]);
            let mut netdev = format!("vhost-user,id=net{i},chardev=vu{i}");
            let mut dev = format!(
                "virtio-net-pci,netdev=net{i},id=nic{i},mac={},vectors=0",
                nic.mac
            );
            if nic.queues > 1 {
                netdev.push_str(&format!(",queues={}", nic.queues));
                dev.push_str(",mq=on");
            }
            for o in &nic.device_opts {
                dev.push(',');
                dev.push_str(o);
            }
            push(&["-netdev", &netdev, "-device", &dev]);
        }
        if let Some(q) = &self.qmp {
            a.push("-qmp".into());
            a.push(format!("unix:{},server=on,wait=off", q.display()));
        }
        a.extend(self.qemu_args.iter().cloned());
        Ok(a)
    }
}

/// One `RS-RESULT` line: `name`, `ok` and every other `key=value`.
#[derive(Clone, Debug, PartialEq)]
pub struct StepResult {
    pub name: String,
    pub ok: bool,
    pub fields: BTreeMap<String, String>,
}

impl StepResult {
    pub fn parse(line: &str) -> Option<StepResult> {
        let rest = line.trim().strip_prefix("RS-RESULT ")?;
        let fields: BTreeMap<String, String> = rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(StepResult {
            name: fields.get("name")?.clone(),
            ok: fields.get("ok")? == "1",
            fields,
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

/// Output of a command run through the console.
#[derive(Clone, Debug)]
pub struct CmdOutput {
    pub rc: i32,
    /// stdout and stderr, interleaved.
    pub output: String,
}

pub struct Guest {
    name: String,
    // Field order = drop order: QEMU first, then the directory with its sockets.
    qemu: Process,
    console: Mutex<UnixStream>,
    console_out: OutputBuf,
    next_id: AtomicU32,
    _dir: TempDir,
}

impl Guest {
    /// Spawns QEMU and connects to its command console. Does not wait for the boot.
    pub fn start(spec: GuestSpec) -> Result<Guest> {
        let image = guest_image()?;
        let dir = TempDir::new(&spec.name)?;
        let console_path = dir.path().join("console.sock");
        let args = spec.qemu_args(&image, &console_path)?;
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(&args);
        let mut qemu = Process::spawn(&format!("qemu-{}", spec.name), cmd)?;
        // QEMU creates the listening console socket before the guest runs; connect now so
        // nothing the guest writes there is lost.
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(&console_path) {
                Ok(s) => break s,
                Err(e) => {
                    if qemu.try_status()?.is_some() || Instant::now() >= deadline {
                        return Err(HarnessError::Exited {
                            what: format!("qemu-{} (console {e})", spec.name),
                            pattern: "console socket".into(),
                            tail: qemu.output().tail(40),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        let console_out = OutputBuf::new(&format!("console of {}", spec.name));
        console_out.attach(stream.try_clone().map_err(io("cloning console socket"))?);
        Ok(Guest {
            name: spec.name,
            qemu,
            console: Mutex::new(stream),
            console_out,
            next_id: AtomicU32::new(1),
            _dir: dir,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.qemu.pid()
    }

    /// SIGKILLs QEMU: the guest vanishes without a goodbye (no vhost-user GET_VRING_BASE,
    /// no reset). Drop reaps it.
    pub fn kill(&self) {
        self.qemu.signal(libc::SIGKILL);
    }

    /// The serial console (ttyS0) and QEMU's own messages.
    pub fn serial(&self) -> &OutputBuf {
        self.qemu.output()
    }

    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> Result<String> {
        self.qemu.wait_for(pattern, timeout)
    }

    /// Waits for `RS-READY` (modules loaded, interfaces configured).
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        self.wait_for("RS-READY", timeout).map(|_| ())
    }

    /// Waits for the `RS-RESULT` of step `name` (exact name: `ping` is not `ping6`).
    pub fn result(&self, name: &str, timeout: Duration) -> Result<StepResult> {
        let prefix = format!("RS-RESULT name={name} ");
        let line = self
            .serial()
            .wait_line(&prefix, timeout, |l| l.starts_with(&prefix))?;
        StepResult::parse(&line).ok_or_else(|| HarnessError::Invalid {
            what: self.name.clone(),
            detail: format!("unparsable result line {line:?}"),
        })
    }

    /// [`run`](Self::run), asserting exit code 0 (the failure shows the output and the
    /// serial console's tail); returns the output.
    pub fn run_ok(&self, script: &str, timeout: Duration) -> String {
        let out = self.run(script, timeout).unwrap();
        assert_eq!(
            out.rc,
            0,
            "{} `{script}`: {}\n{}",
            self.name(),
            out.output,
            self.serial().tail(20)
        );
        out.output
    }

    /// Pings `addr` (ping6 for an IPv6 address) until it answers, at most `tries` times
    /// 0.2 s apart, then asserts 3 more answers without loss.
    pub fn ping_ok(&self, addr: &str, tries: u32, timeout: Duration) {
        let p = if addr.contains(':') { "ping6" } else { "ping" };
        let out = self.run_ok(
            &format!(
                "i=0; until {p} -c 1 -W 1 {addr} >/dev/null 2>&1; do i=$((i+1)); \
                 [ $i -ge {tries} ] && {{ echo unreachable; exit 1; }}; sleep 0.2; done; \
                 {p} -c 3 -i 0.2 -W 2 {addr}"
            ),
            timeout,
        );
        assert!(out.contains(" 0% packet loss"), "{}: {out}", self.name());
    }

    /// Runs `script` with the guest's sh through the command console and returns its
    /// exit code and output. Waits for the console to be ready first (part of `timeout`).
    pub fn run(&self, script: &str, timeout: Duration) -> Result<CmdOutput> {
        let deadline = Instant::now() + timeout;
        self.console_out.wait_for("RS-CONSOLE-READY", timeout)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let b64 = base64::engine::general_purpose::STANDARD.encode(script);
        {
            let mut s = self.console.lock().unwrap_or_else(|e| e.into_inner());
            s.write_all(format!("RS-CMD {id} {b64}\n").as_bytes())
                .map_err(io(format!("writing to the console of {}", self.name)))?;
        }
        let end = format!("RS-OUT-END {id} rc=");
        let left = deadline.saturating_duration_since(Instant::now());
        let end_line = self
            .console_out
            .wait_line(&end, left, |l| l.starts_with(&end))?;
        let rc = end_line[end.len()..].trim().parse().unwrap_or(-1);
        let text = self.console_out.text();
        let begin = format!("RS-OUT-BEGIN {id}");
        let body: String = text
            .lines()
            .skip_while(|l| *l != begin)
            .skip(1)
            .take_while(|l| !l.starts_with(&end))
            .collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body.trim())
            .map_err(|e| HarnessError::Invalid {
                what: format!("console of {}", self.name),
                detail: format!("bad base64 in reply {id}: {e}"),
            })?;
        Ok(CmdOutput {
            rc,
            output: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// Powers the guest off from inside and waits for QEMU to exit.
    pub fn shutdown(mut self, timeout: Duration) -> Result<ExitStatus> {
        self.console_out.wait_for("RS-CONSOLE-READY", timeout)?;
        {
            let mut s = self.console.lock().unwrap_or_else(|e| e.into_inner());
            let b64 = base64::engine::general_purpose::STANDARD.encode("poweroff -f");
            s.write_all(format!("RS-CMD 0 {b64}\n").as_bytes())
                .map_err(io(format!("writing to the console of {}", self.name)))?;
        }
        self.qemu.wait_exit(timeout)
    }
}

impl Guest {
    /// Starts a QEMU that waits for the incoming migration (`-incoming URI`) of a guest
    /// booted from the same spec (same memory, same devices; the NIC on another socket).
    /// Once migrated, the guest's command console continues on this QEMU's console
    /// socket, and it is ready at once (the guest announced it before migrating).
    pub fn start_incoming(mut spec: GuestSpec, uri: &str) -> Result<Guest> {
        spec.qemu_args
            .extend(["-incoming".to_string(), uri.to_string()]);
        let g = Guest::start(spec)?;
        g.console_out.push("RS-CONSOLE-READY (migrated)".into());
        Ok(g)
    }
}

/// A QMP client (QEMU Machine Protocol, docs/interop/qmp-spec) on a guest's `-qmp`
/// socket: one command at a time; asynchronous events are kept for
/// [`wait_event`](Qmp::wait_event).
pub struct Qmp {
    what: String,
    r: std::io::BufReader<UnixStream>,
    w: UnixStream,
    /// Events read while waiting for a command's reply, oldest first.
    events: Vec<serde_json::Value>,
}

impl Qmp {
    /// Connects (waiting up to `timeout` for QEMU to create the socket), reads the
    /// greeting and leaves capabilities negotiation.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let what = format!("QMP {}", path.display());
        let deadline = Instant::now() + timeout;
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(io(what)(e)),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(io(what.clone()))?;
        let w = s.try_clone().map_err(io(what.clone()))?;
        let mut q = Qmp {
            what,
            r: std::io::BufReader::new(s),
            w,
            events: Vec::new(),
        };
        q.line()?; // {"QMP": {...}}
        q.execute("qmp_capabilities", serde_json::json!({}))?;
        Ok(q)
    }

    fn line(&mut self) -> Result<serde_json::Value> {
        use std::io::BufRead;
        let mut l = String::new();
        let n = self
            .r
            .read_line(&mut l)
            .map_err(io(format!("reading {}", self.what)))?;
        if n == 0 {
            return Err(HarnessError::Invalid {
                what: self.what.clone(),
                detail: "QEMU closed the QMP socket".into(),
            });
        }
        serde_json::from_str(&l).map_err(|e| HarnessError::Invalid {
            what: self.what.clone(),
            detail: format!("bad QMP line {l:?}: {e}"),
        })
    }

    /// Runs `cmd` with `args`; returns its `return` value (an `error` reply is an Err).
    pub fn execute(&mut self, cmd: &str, args: serde_json::Value) -> Result<serde_json::Value> {
        let req = serde_json::json!({"execute": cmd, "arguments": args});
        writeln!(self.w, "{req}").map_err(io(format!("writing {}", self.what)))?;
        loop {
            let v = self.line()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(HarnessError::Invalid {
                    what: format!("{} {cmd}", self.what),
                    detail: e.to_string(),
                });
            }
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }

    /// Waits up to `timeout` for event `name` whose `data` satisfies `matches` (also
    /// one that arrived during an earlier command); returns its `data`.
    pub fn wait_event(
        &mut self,
        name: &str,
        timeout: Duration,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let hit = |v: &serde_json::Value| {
            v["event"] == name && matches(v.get("data").unwrap_or(&serde_json::Value::Null))
        };
        if let Some(i) = self.events.iter().position(hit) {
            return Ok(self.events.remove(i)["data"].clone());
        }
        let deadline = Instant::now() + timeout;
        let result = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(HarnessError::Invalid {
                    what: self.what.clone(),
                    detail: format!("no {name} event within {timeout:?}"),
                });
            }
            self.r
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(io(self.what.clone()))?;
            match self.line() {
                Ok(v) if hit(&v) => break Ok(v["data"].clone()),
                Ok(v) if v.get("event").is_some() => self.events.push(v),
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        };
        self.r
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(io(self.what.clone()))?;
        result
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // QEMU exits at once on SIGTERM; the Process guard escalates to SIGKILL.
        let _ = self.qemu.stop(Duration::from_secs(3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_parsed() {
        let r = StepResult::parse(
            "RS-RESULT name=ping ok=1 target=198.18.0.2 sent=5 recv=5 loss=0 rtt_ms=2.1",
        )
        .unwrap();
        assert_eq!(r.name, "ping");
        assert!(r.ok);
        assert_eq!(r.get("rtt_ms"), Some("2.1"));
        assert!(!StepResult::parse("RS-RESULT name=x ok=0").unwrap().ok);
        assert!(StepResult::parse("RS-RESULT ok=1").is_none());
        assert!(StepResult::parse("RS-READY nics=1").is_none());
    }

    #[test]
    fn qemu_args_have_the_required_options() {
        let mut spec = GuestSpec::new("a");
        let mut nic = NicSpec::new("/tmp/x.sock", "02:00:00:00:00:01");
        nic.queues = 2;
        spec.nics.push(nic);
        spec.ip.push("198.18.0.1/24".into());
        spec.run.push("ping6:2001:db8::2".into());
        let image = GuestImage {
            kernel: "/k".into(),
            initramfs: "/i".into(),
        };
        let a = spec
            .qemu_args(&image, Path::new("/tmp/c.sock"))
            .unwrap()
            .join(" ");
        assert!(
            a.contains("memory-backend-memfd,id=mem,size=256M,share=on"),
            "{a}"
        );
        assert!(a.contains("-numa node,memdev=mem"), "{a}");
        assert!(a.contains("vhost-user,id=net0,chardev=vu0,queues=2"), "{a}");
        assert!(a.contains("mac=02:00:00:00:00:01,vectors=0,mq=on"), "{a}");
        assert!(a.contains("netdev=net0,id=nic0,"), "{a}");
        assert!(!a.contains("-qmp"), "{a}");
        spec.qmp = Some("/tmp/q.sock".into());
        let a = spec
            .qemu_args(&image, Path::new("/tmp/c.sock"))
            .unwrap()
            .join(" ");
        assert!(
            a.contains("-qmp unix:/tmp/q.sock,server=on,wait=off"),
            "{a}"
        );
        assert!(a.contains("rs.queues=2"), "{a}");
        assert!(a.contains("-m 256M "), "{a}");
        spec.maxmem = Some((4, 2048));
        let a = spec
            .qemu_args(&image, Path::new("/tmp/c.sock"))
            .unwrap()
            .join(" ");
        assert!(a.contains("-m 256M,slots=4,maxmem=2048M "), "{a}");
        assert!(a.contains("rs.run=ping6:2001:db8::2"), "{a}");
        spec.run.push("bad step".into());
        assert!(spec.kernel_cmdline().is_err());
    }

    #[test]
    fn oversized_cmdline_is_refused() {
        let mut spec = GuestSpec::new("a");
        spec.cmd = Some("x".repeat(2000));
        assert!(matches!(
            spec.kernel_cmdline(),
            Err(HarnessError::Invalid { .. })
        ));
    }
}
