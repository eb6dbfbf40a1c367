//! Captured output of a child process (QEMU serial console, testpmd, ringswitch), filled
//! by reader threads and searched by waiters with a deadline.
//!
//! Why lines and a condvar: waiters need "the first line that matches, or an error as soon
//! as the child can no longer print it" — the moment every writer hits EOF (the child
//! died, or the watchdog killed it) a waiter fails at once instead of at its timeout.

use super::error::{HarnessError, Result};
use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    lines: Vec<String>,
    /// Readers still attached; 0 after all of them reached EOF.
    open: usize,
    attached: usize,
}

/// Shared, append-only line buffer.
#[derive(Clone, Default)]
pub struct OutputBuf {
    inner: Arc<(Mutex<State>, Condvar)>,
    what: Arc<str>,
}

impl OutputBuf {
    /// `what` names the child in error messages.
    pub fn new(what: &str) -> Self {
        OutputBuf {
            inner: Arc::default(),
            what: what.into(),
        }
    }

    /// Starts a thread that appends every line of `r` (CR stripped, invalid UTF-8
    /// replaced) until EOF.
    pub fn attach(&self, r: impl Read + Send + 'static) {
        {
            let mut st = self.lock();
            st.open += 1;
            st.attached += 1;
        }
        let me = self.clone();
        std::thread::spawn(move || {
            let mut r = BufReader::new(r);
            let mut line = Vec::new();
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let s = String::from_utf8_lossy(&line);
                        me.push(s.trim_end_matches(['\n', '\r']).replace('\r', ""));
                    }
                }
            }
            let (m, cv) = &*me.inner;
            m.lock().unwrap_or_else(|e| e.into_inner()).open -= 1;
            cv.notify_all();
        });
    }

    /// Appends one line (also used for harness annotations).
    pub fn push(&self, line: String) {
        let (m, cv) = &*self.inner;
        m.lock().unwrap_or_else(|e| e.into_inner()).lines.push(line);
        cv.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        self.lock().lines.join("\n")
    }

    /// The last `n` lines, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let st = self.lock();
        let from = st.lines.len().saturating_sub(n);
        st.lines[from..].join("\n")
    }

    /// True once every attached reader reached EOF.
    pub fn closed(&self) -> bool {
        let st = self.lock();
        st.attached > 0 && st.open == 0
    }

    /// Waits for the first line (from the beginning) for which `pred` is true.
    /// `pattern` only describes the predicate in errors.
    pub fn wait_line(
        &self,
        pattern: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inner;
        let mut st = m.lock().unwrap_or_else(|e| e.into_inner());
        let mut checked = 0;
        loop {
            if let Some(l) = st.lines[checked..].iter().find(|l| pred(l)) {
                return Ok(l.clone());
            }
            checked = st.lines.len();
            if st.attached > 0 && st.open == 0 {
                drop(st);
                return Err(HarnessError::Exited {
                    what: self.what.to_string(),
                    pattern: pattern.into(),
                    tail: self.tail(40),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                drop(st);
                return Err(HarnessError::Timeout {
                    what: self.what.to_string(),
                    pattern: pattern.into(),
                    timeout,
                    tail: self.tail(40),
                });
            }
            st = cv
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits for the first line containing `pattern`.
    pub fn wait_for(&self, pattern: &str, timeout: Duration) -> Result<String> {
        self.wait_line(pattern, timeout, |l| l.contains(pattern))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_lines_across_reads_and_fails_fast_on_eof() {
        let buf = OutputBuf::new("sample");
        buf.attach(&b"boot\r\nRS-READY nics=1\r\npartial"[..]);
        let l = buf.wait_for("RS-READY", Duration::from_secs(5)).unwrap();
        assert_eq!(l, "RS-READY nics=1");
        // EOF reached: a missing pattern is reported as Exited, not after the timeout.
        match buf.wait_for("RS-DONE", Duration::from_secs(3600)) {
            Err(HarnessError::Exited { tail, .. }) => assert!(tail.ends_with("partial")),
            other => panic!("expected Exited, got {other:?}"),
        }
    }

    #[test]
    fn times_out_while_writer_is_open() {
        let buf = OutputBuf::new("sample");
        let (r, _w) = std::os::unix::net::UnixStream::pair().unwrap();
        buf.attach(r);
        assert!(matches!(
            buf.wait_for("never", Duration::from_millis(50)),
            Err(HarnessError::Timeout { .. })
        ));
    }
}
