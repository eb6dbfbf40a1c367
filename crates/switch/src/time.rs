//! Time as the caller sees it. The switch owns no clock (sans-I/O): every call that needs
//! time takes a [`Millis`], milliseconds since an epoch the caller picked (the daemon uses
//! its start `Instant`; tests count by hand).

/// Milliseconds since the caller's epoch. Monotonic by contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    #[inline]
    pub fn from_secs(s: u64) -> Millis {
        Millis(s.saturating_mul(1000))
    }

    /// `self - earlier`, zero if `earlier` is later.
    #[inline]
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    #[inline]
    pub fn plus_ms(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}
