//! Child processes of the benchmark (ringswitch, dpdk-testpmd, iperf3, our UDP tool):
//! each in its own process group, its output captured line by line with arrival times,
//! and the whole group killed when the guard drops — on success, on error and on Ctrl-C.
//!
//! Why process groups: `ip netns exec` and shells may leave grandchildren; killing the
//! group takes them too. Why `PR_SET_PDEATHSIG`: if xtask itself is SIGKILLed, busy-polling
//! testpmd processes would otherwise keep two cores at 100 % forever.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT/SIGTERM into a flag that every wait of the benchmark checks, so that a
/// Ctrl-C unwinds through the guards (children killed, namespaces deleted).
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Fails once SIGINT/SIGTERM arrived.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps `d` in small steps, failing early on Ctrl-C.
pub fn pause(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Lines a child printed (stdout and stderr interleaved), with the time each arrived.
pub type Lines = Arc<Mutex<Vec<(Instant, String)>>>;

/// Shell-like rendering of a command line, for "the exact commands" in BENCHMARKS.md.
pub fn render(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    parts.join(" ")
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,:@+%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// A running child; dropping it kills its process group.
pub struct Proc {
    pub name: String,
    pub cmdline: String,
    child: Child,
    lines: Lines,
    exited: Option<ExitStatus>,
}

fn reader(src: impl Read + Send + 'static, lines: Lines) {
    std::thread::spawn(move || {
        for line in BufReader::new(src).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut l) = lines.lock() {
                l.push((Instant::now(), line));
            }
        }
    });
}

impl Proc {
    /// Starts `cmd` in a new process group with stdout/stderr captured.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Proc> {
        let cmdline = render(&cmd);
        eprintln!("bench: $ {cmdline}");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // prctl(2), which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmdline}"))?;
        let lines: Lines = Arc::default();
        if let Some(o) = child.stdout.take() {
            reader(o, lines.clone());
        }
        if let Some(e) = child.stderr.take() {
            reader(e, lines.clone());
        }
        Ok(Proc {
            name: name.to_string(),
            cmdline,
            child,
            lines,
            exited: None,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn lines(&self) -> Lines {
        self.lines.clone()
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let l = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        let start = l.len().saturating_sub(n);
        l[start..]
            .iter()
            .map(|(_, s)| format!("    {}: {s}", self.name))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Some(status) once the child has exited.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait()?;
        }
        Ok(self.exited)
    }

    /// Fails with the child's last output if it has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(st) = self.try_status()? {
            bail!("{} exited ({st}):\n{}", self.name, self.tail(30));
        }
        Ok(())
    }

    /// Waits until `ready()` holds, failing if the child exits, on Ctrl-C or at `timeout`.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&Proc) -> bool,
    ) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if ready(self) {
                return Ok(());
            }
            self.ensure_running()
                .with_context(|| format!("waiting for {what}"))?;
            if Instant::now() >= end {
                bail!(
                    "{}: no {what} after {timeout:?}:\n{}",
                    self.name,
                    self.tail(30)
                );
            }
            pause(Duration::from_millis(50))?;
        }
    }

    /// Waits for the child to exit by itself (bounded), returning its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status()? {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return Ok(st);
            }
            if Instant::now() >= end {
                bail!("{} still running after {timeout:?}", self.name);
            }
            pause(Duration::from_millis(50))?;
        }
    }

    /// SIGTERM to the group, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.try_status().ok().flatten().is_some() {
            return;
        }
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the process group we created for this child.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        let end = Instant::now() + grace;
        while Instant::now() < end {
            if self.try_status().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; also reaps grandchildren that ignored SIGTERM.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        if self.exited.is_none() {
            self.exited = self.child.wait().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
    }
}

/// Runs a short command to completion and returns its stdout (fails with stderr).
/// Deliberately does not check for Ctrl-C: cleanup (deleting namespaces) runs through
/// here after the interruption.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {}", render(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            render(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// CPU time (user + system, all threads) a process has used, from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line; the command name (field 2)
/// may contain spaces and parentheses, so fields are counted after its last ')'.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11.
    let ut: u64 = f.get(11)?.parse().ok()?;
    let st: u64 = f.get(12)?.parse().ok()?;
    Some(ut + st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_odd_command_names() {
        let s = "1234 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 170 30 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(s), Some(200));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn render_quotes_what_a_shell_would_split() {
        let mut c = Command::new("dpdk-testpmd");
        c.args([
            "--vdev",
            "net_vhost0,iface=/tmp/a b.sock",
            "--lcores",
            "0@(0,1)",
        ]);
        assert_eq!(
            render(&c),
            "dpdk-testpmd --vdev 'net_vhost0,iface=/tmp/a b.sock' --lcores '0@(0,1)'"
        );
    }

    #[test]
    fn own_cpu_time_is_readable() {
        assert!(cpu_seconds(std::process::id()).is_some());
    }

    #[test]
    fn captured_lines_and_group_kill() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo hello; sleep 30 & wait"]);
        let mut p = Proc::spawn("sh", c).unwrap();
        p.wait_until("hello", Duration::from_secs(5), |p| {
            p.lines().lock().unwrap().iter().any(|(_, l)| l == "hello")
        })
        .unwrap();
        p.stop(Duration::from_secs(1));
        assert!(p.try_status().unwrap().is_some());
    }
}
