//! Rate limiting for log lines a peer can trigger: a guest or a remote host sends bad
//! input at line rate, and must not be able to flood the log. At most one line per
//! interval per limiter, with the count of lines suppressed in between.
//!
//! Lock-free and shared: one limiter may serve every thread of a device. Sans-I/O like
//! the rest of the crate: the caller passes the time ([`Millis`]).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::time::Millis;

/// Allows one event per interval.
#[derive(Debug)]
pub struct RateLimit {
    interval_ms: u64,
    /// Milliseconds of the last allowed event, plus one (0 = never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl RateLimit {
    pub const fn new(interval_ms: u64) -> RateLimit {
        RateLimit {
            interval_ms,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last allowed event)` when a line may be logged now.
    pub fn check(&self, now: Millis) -> Option<u64> {
        let last = self.last.load(Ordering::Relaxed);
        let stamp = now.0.saturating_add(1);
        let allowed = (last == 0 || stamp >= last.saturating_add(self.interval_ms))
            && self
                .last
                .compare_exchange(last, stamp, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if allowed {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_with_count() {
        let r = RateLimit::new(1000);
        assert_eq!(r.check(Millis(0)), Some(0));
        assert_eq!(r.check(Millis(10)), None);
        assert_eq!(r.check(Millis(998)), None);
        assert_eq!(r.check(Millis(1000)), Some(2));
        assert_eq!(r.check(Millis(1500)), None);
        assert_eq!(r.check(Millis(2500)), Some(1));
    }
}
