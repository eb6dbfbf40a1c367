//! `Process`: a child (ringswitch, dpdk-testpmd, QEMU) whose stdout and stderr are captured
//! line by line, and which is stopped in Drop whatever happens to the test.

use super::error::{io, HarnessError, Result};
use super::output::OutputBuf;
use super::scope;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Process {
    name: String,
    child: Child,
    out: OutputBuf,
    status: Option<ExitStatus>,
}

impl Process {
    /// Spawns `cmd` with stdin from /dev/null and both output streams captured.
    /// The child gets SIGKILL if the spawning thread dies (PR_SET_PDEATHSIG), so even a
    /// test binary killed by CI leaves no QEMU or testpmd behind.
    pub fn spawn(name: &str, mut cmd: Command) -> Result<Process> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(io(format!("spawning {name}: {cmd:?}")))?;
        scope::register_pid(child.id());
        let out = OutputBuf::new(name);
        if let Some(o) = child.stdout.take() {
            out.attach(o);
        }
        if let Some(e) = child.stderr.take() {
            out.attach(e);
        }
        Ok(Process {
            name: name.into(),
            child,
            out,
            status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Captured stdout + stderr.
    pub fn output(&self) -> &OutputBuf {
        &self.out
    }

    /// Waits for the first output line containing `pattern`; fails early if the process
    /// closed its output (exited).
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> Result<String> {
        self.out.wait_for(pattern, timeout)
    }

    /// The exit status if the process has exited (reaps it).
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .map_err(io(format!("waiting for {}", self.name)))?;
            if self.status.is_some() {
                scope::unregister_pid(self.child.id());
            }
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status()? {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: self.name.clone(),
                    pattern: "<exit>".into(),
                    timeout,
                    tail: self.out.tail(40),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status. Idempotent.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.try_status()? {
            return Ok(s);
        }
        self.signal(libc::SIGTERM);
        if let Ok(s) = self.wait_exit(grace) {
            return Ok(s);
        }
        scope::unregister_pid(self.child.id());
        self.signal(libc::SIGKILL);
        let s = self
            .child
            .wait()
            .map_err(io(format!("waiting for {}", self.name)))?;
        self.status = Some(s);
        Ok(s)
    }

    /// Sends `sig` unless the process was already reaped (then its pid may be reused).
    pub fn signal(&self, sig: i32) {
        if self.status.is_some() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) has no memory effects; the child is not reaped yet, so the
            // pid still names it.
            unsafe { libc::kill(pid, sig) };
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.stop(Duration::from_secs(3));
        if std::thread::panicking() {
            eprintln!(
                "---- output of {} (last 60 lines) ----\n{}\n---- end of {} ----",
                self.name,
                self.out.tail(60),
                self.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_stops() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo hello; echo err >&2; exec sleep 600"]);
        let mut p = Process::spawn("sh", c).unwrap();
        p.wait_for("hello", Duration::from_secs(10)).unwrap();
        p.wait_for("err", Duration::from_secs(10)).unwrap();
        let st = p.stop(Duration::from_secs(5)).unwrap();
        assert!(!st.success());
        assert!(matches!(
            p.wait_for("never printed", Duration::from_secs(3600)),
            Err(HarnessError::Exited { .. })
        ));
    }
}
