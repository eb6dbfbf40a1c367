//! Fuzz the QMP client (bin/qmp.rs) with a hostile QEMU: the line reader, the greeting
//! and capabilities handshake, NIC resolution, events and `query-rx-filter` replies
//! (`filter_from_query`), through `qmp::watch`, the function the daemon runs per port.
//!
//! bin/ has no library target, so the module is compiled into this target with `#[path]`,
//! exactly as it is (its tests excluded).
//!
//! Per input: a fake QEMU listens on a socket, writes the input as its side of the
//! session and closes; the watcher runs one session against it and must return (the
//! sink reports "gone" after the first session error) within a bound, applying only
//! filters that respect the table limits.
#![no_main]
#![allow(dead_code, unused_imports)]

#[path = "../../bin/cli.rs"]
mod cli;
#[path = "shared/bin_config.rs"]
mod config;
#[path = "../../bin/control.rs"]
mod control;
#[path = "../../bin/qmp.rs"]
mod qmp;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use parking_lot::Mutex;
use switch::RxFilter;

/// A watcher still running after this is hung.
const BOUND: Duration = Duration::from_secs(20);

struct Sink {
    counters: Arc<qmp::QmpCounters>,
    started: Instant,
    applied: Mutex<Vec<RxFilter>>,
}

impl qmp::FilterSink for Sink {
    fn alive(&self) -> bool {
        assert!(
            self.started.elapsed() < BOUND,
            "QMP watcher did not finish a session"
        );
        self.counters.errors.load(Ordering::Relaxed) == 0
    }
    fn current(&self) -> Option<RxFilter> {
        self.applied.lock().last().cloned()
    }
    fn apply(&self, f: &RxFilter) {
        self.applied.lock().push(f.clone());
    }
}

fuzz_target!(|data: &[u8]| {
    static N: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "ringswitch-fuzz-qmp-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).expect("bind");
    let bytes = data.to_vec();
    let peer = std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = s.set_read_timeout(Some(BOUND));
        let mut sink = [0u8; 4096];
        while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
    });
    let counters = Arc::new(qmp::QmpCounters::default());
    let sink = Sink {
        counters: counters.clone(),
        started: Instant::now(),
        applied: Mutex::new(Vec::new()),
    };
    let spec = control::QmpSpec {
        path: path.to_string_lossy().into_owned(),
        nic: if data.first() == Some(&b'{') {
            None
        } else {
            Some("net0".into())
        },
    };
    qmp::watch(&spec, &sink, &counters);
    let _ = peer.join();
    let _ = std::fs::remove_file(&path);
    for f in sink.applied.lock().iter() {
        assert!(f.uni.len() + f.multi.len() <= 2 * switch::filter::MAC_TABLE_ENTRIES);
    }
});
