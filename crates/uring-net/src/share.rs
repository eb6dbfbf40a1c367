//! Whether a worker has its core to itself, from the scheduler's own accounting.
//!
//! Why: inside a poll window a worker keeps polling guest TX rings for as long as it pops
//! frames that find room (no kicks needed, see `TxRing::poll`). With a core of its own
//! that is the fastest shape. When it shares a core with the busy-polling processes it
//! serves (three of them on two cores in the benchmark's oversubscribed shape), every
//! microsecond it polls is taken from the receiver, whose ring then overflows: measured,
//! 64-byte throughput halved (≈ 1.1 → ≈ 0.4 Mpps). A worker that keeps waiting on the run
//! queue (another task wanted its core) lets only completions (kicks) extend its poll
//! windows, so it sleeps between bursts and the others run.
//!
//! The measure is the thread's run-queue wait (`run_delay` of
//! `/proc/thread-self/schedstat`, Linux's schedstats): its own CPU time against the wall
//! time it was awake does not work, since a woken thread waiting for the core it shares
//! counts as asleep from its own side.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// How often the share is re-evaluated.
const PERIOD: Duration = Duration::from_millis(10);
/// Run-queue wait above this share of the period means another task wants the core.
const SHARED_ABOVE: f64 = 0.05;

pub(crate) struct CpuShare {
    /// The calling thread's schedstat (None: not available; never contended then).
    stat: Option<File>,
    since: Instant,
    delay_at: u64,
    contended: bool,
}

impl CpuShare {
    /// Must be called on the thread it measures.
    pub fn new() -> CpuShare {
        let stat = File::open("/proc/thread-self/schedstat").ok();
        let delay_at = stat.as_ref().and_then(run_delay).unwrap_or(0);
        CpuShare {
            stat,
            since: Instant::now(),
            delay_at,
            contended: false,
        }
    }

    /// Whether the worker shares its core (as of the last full period).
    pub fn contended(&self) -> bool {
        self.contended
    }

    /// Re-evaluates once per period (`now`: the caller's clock reading).
    pub fn tick(&mut self, now: Instant) {
        let wall = now.saturating_duration_since(self.since);
        if wall < PERIOD {
            return;
        }
        let Some(delay) = self.stat.as_ref().and_then(run_delay) else {
            return;
        };
        self.contended = shared(
            wall,
            Duration::from_nanos(delay.saturating_sub(self.delay_at)),
        );
        self.since = now;
        self.delay_at = delay;
    }
}

/// The verdict for one period of `wall` in which the thread waited `delay` for its core.
fn shared(wall: Duration, delay: Duration) -> bool {
    delay.as_secs_f64() > SHARED_ABOVE * wall.as_secs_f64()
}

/// `run_delay` (ns, the second field) of a schedstat file, re-read from its start.
fn run_delay(f: &File) -> Option<u64> {
    let mut buf = [0u8; 96];
    let n = f.read_at(&mut buf, 0).ok()?;
    parse_run_delay(buf.get(..n)?)
}

fn parse_run_delay(text: &[u8]) -> Option<u64> {
    std::str::from_utf8(text)
        .ok()?
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn waiting_for_the_core_means_shared() {
        assert!(!shared(10 * MS, Duration::ZERO));
        assert!(
            !shared(10 * MS, Duration::from_micros(300)),
            "a kernel thread's turn"
        );
        assert!(
            shared(10 * MS, 3 * MS),
            "a third of the time on the run queue"
        );
    }

    #[test]
    fn schedstat_line_parses() {
        assert_eq!(parse_run_delay(b"3907756 110089 3\n"), Some(110089));
        assert_eq!(parse_run_delay(b"3907756\n"), None);
        assert_eq!(parse_run_delay(b"x y z"), None);
        assert_eq!(parse_run_delay(b""), None);
    }

    #[test]
    fn the_calling_threads_schedstat_is_read() {
        let s = CpuShare::new();
        if let Some(f) = &s.stat {
            let d = run_delay(f).expect("schedstat has a run_delay field");
            assert!(d >= s.delay_at);
        }
    }
}
