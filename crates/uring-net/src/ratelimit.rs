//! Rate limiting for logs a peer can trigger (a guest or a remote host must not be able to
//! flood our log): at most one line per interval per limiter, with a count of what was
//! suppressed in between.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    pub const fn new(every: Duration) -> RateLimit {
        RateLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Returns `Some(suppressed_since_last)` when a line may be logged now.
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_with_count() {
        let mut r = RateLimit::new(Duration::from_secs(1));
        let t = Instant::now();
        assert_eq!(r.check(t), Some(0));
        assert_eq!(r.check(t + Duration::from_millis(10)), None);
        assert_eq!(r.check(t + Duration::from_millis(20)), None);
        assert_eq!(r.check(t + Duration::from_secs(2)), Some(2));
    }
}
