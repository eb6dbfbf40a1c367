//! Per-test scope: unique names, and a global per-test timeout that still cleans up.
//!
//! `TestScope::start(name, limit)` must be the first line of every e2e test. Children
//! (`Process`, `Guest`) and namespaces (`Netns`) created on the test's thread register
//! with it. When the limit passes, a watchdog thread SIGKILLs the registered children:
//! every harness wait then fails at once (its output reached EOF), the test panics, and
//! the Drop guards delete namespaces and files as on any failure. If the test is stuck
//! somewhere the harness cannot reach, the watchdog deletes the namespaces itself after a
//! grace period and exits the test binary, so CI never hangs on one test.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a timed-out test may take to unwind after its children were killed.
const GRACE: Duration = Duration::from_secs(30);

/// Names unique within this machine for this run: the pid plus a process-wide counter,
/// e.g. `rs-4711-3-boot`. Stale namespaces of dead test processes are recognised by it.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "rs-{}-{}-{tag}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Default)]
struct Registry {
    pids: BTreeSet<u32>,
    netns: BTreeSet<String>,
    done: bool,
}

#[derive(Default)]
struct Shared {
    reg: Mutex<Registry>,
    cv: Condvar,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Shared>>> = const { RefCell::new(None) };
}

fn with_current(f: impl FnOnce(&mut Registry)) {
    CURRENT.with(|c| {
        if let Some(s) = &*c.borrow() {
            f(&mut s.reg.lock().unwrap_or_else(|e| e.into_inner()));
        }
    });
}

pub(crate) fn register_pid(pid: u32) {
    with_current(|r| {
        r.pids.insert(pid);
    });
}

pub(crate) fn unregister_pid(pid: u32) {
    with_current(|r| {
        r.pids.remove(&pid);
    });
}

pub(crate) fn register_netns(name: &str) {
    with_current(|r| {
        r.netns.insert(name.to_string());
    });
}

pub(crate) fn unregister_netns(name: &str) {
    with_current(|r| {
        r.netns.remove(name);
    });
}

/// Guard of one test; see the module documentation.
pub struct TestScope {
    shared: Arc<Shared>,
    name: String,
}

impl TestScope {
    pub fn start(name: &str, limit: Duration) -> TestScope {
        let shared = Arc::new(Shared::default());
        CURRENT.with(|c| *c.borrow_mut() = Some(shared.clone()));
        let (s, n) = (shared.clone(), name.to_string());
        std::thread::spawn(move || watchdog(&s, &n, limit));
        TestScope {
            shared,
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestScope {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = None);
        self.shared
            .reg
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .done = true;
        self.shared.cv.notify_all();
    }
}

fn watchdog(s: &Shared, name: &str, limit: Duration) {
    let reg = s.reg.lock().unwrap_or_else(|e| e.into_inner());
    let (mut reg, res) =
        s.cv.wait_timeout_while(reg, limit, |r| !r.done)
            .unwrap_or_else(|e| e.into_inner());
    if !res.timed_out() {
        return;
    }
    eprintln!(
        "e2e: test {name} exceeded its limit of {limit:?}: killing pids {:?}",
        reg.pids
    );
    for &pid in &reg.pids {
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) has no memory effects; the pid is one of our own children,
            // registered at spawn and removed once reaped, so it cannot be a reused pid.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    reg =
        s.cv.wait_timeout_while(reg, GRACE, |r| !r.done)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    if !reg.done {
        for ns in &reg.netns {
            super::netns::delete(ns);
        }
        eprintln!("e2e: test {name} did not unwind within {GRACE:?}; exiting the test binary");
        std::process::exit(124);
    }
}
