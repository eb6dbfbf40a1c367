//! A per-device log rate limit: a guest can trigger log lines at line rate (bad chains,
//! refused commands), so such lines are written at most once per interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Allows one event per `interval`; lock-free, shared by all threads of a device.
#[derive(Debug)]
pub struct RateLimit {
    start: Instant,
    interval_ms: u64,
    /// Milliseconds since `start` of the last allowed event, plus one (0 = never).
    last: AtomicU64,
}

impl RateLimit {
    pub fn new(interval: Duration) -> RateLimit {
        RateLimit {
            start: Instant::now(),
            interval_ms: interval.as_millis() as u64,
            last: AtomicU64::new(0),
        }
    }

    /// Whether an event may be logged now.
    pub fn allow(&self) -> bool {
        self.allow_at(self.start.elapsed().as_millis() as u64)
    }

    fn allow_at(&self, now_ms: u64) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now_ms + 1 < last + self.interval_ms {
            return false;
        }
        self.last
            .compare_exchange(last, now_ms + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval() {
        let r = RateLimit::new(Duration::from_millis(1000));
        assert!(r.allow_at(0));
        assert!(!r.allow_at(10));
        assert!(!r.allow_at(998));
        assert!(r.allow_at(1000));
        assert!(!r.allow_at(1500));
        assert!(r.allow_at(2500));
    }
}
