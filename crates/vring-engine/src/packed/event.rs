//! Packed-ring event suppression (virtio 1.2 §2.8 "Driver and Device Event
//! Suppression", "Event Suppression Structure Format").
//!
//! Both areas are `le16 off_wrap; le16 flags`: `flags` is ENABLE (0), DISABLE (1) or DESC
//! (2, only with RING_EVENT_IDX): notify when the descriptor at offset `off_wrap & 0x7fff`
//! in the round of wrap counter `off_wrap >> 15` is made available (device area, read by
//! the driver) or used (driver area, read by the device).
//!
//! Positions are compared in a cycle of 2 × size ([`Pos::lin`]): the wrap counter is the
//! high "bit" of the position, so "did the used position pass the driver's event since
//! the last decision" is the split ring's `vring_need_event` window test (§2.7.7.2) in
//! that cycle. A value the driver wrote that makes no sense (reserved flag 3, DESC without
//! EVENT_IDX, an offset past the ring) is taken as ENABLE or as an event that never
//! matches: the driver only affects its own notifications, and the work stays constant.

use std::sync::atomic::{fence, Ordering};

use super::desc::DescRing;
use super::Pos;

/// Event flags (§2.8 "Driver and Device Event Suppression").
pub const EVENT_ENABLE: u16 = 0;
pub const EVENT_DISABLE: u16 = 1;
pub const EVENT_DESC: u16 = 2;

/// Whether an event at cycle position `event` lies in `[old, new)` of a cycle of `m`
/// positions (`m` = 2 × queue size; all three below `m`).
#[inline]
pub fn need_event(event: u32, new: u32, old: u32, m: u32) -> bool {
    let dist = |a: u32, b: u32| (a + m - b) % m;
    dist(new, event) > 0 && dist(new, event) <= dist(new, old)
}

impl DescRing<'_> {
    /// Whether the driver wants a used buffer notification now that the device's used
    /// position moved from `old` to `new` (nothing moved: no). Reads the Driver Event
    /// Suppression area once, after a full fence: the used descriptors must be visible
    /// before the driver's event is read, or a driver that just re-armed could be missed.
    pub fn wants_call(&self, event_idx: bool, old: Pos, new: Pos) -> bool {
        if old == new {
            return false;
        }
        fence(Ordering::SeqCst);
        let flags = self.driver.load16(2, Ordering::Relaxed) & 3;
        match flags {
            EVENT_DISABLE => false,
            EVENT_DESC if event_idx => {
                let ow = self.driver.load16(0, Ordering::Relaxed);
                let m = 2 * u32::from(self.size);
                let ev = Pos {
                    idx: ow & 0x7fff,
                    wrap: ow & 0x8000 != 0,
                }
                .lin(self.size);
                // An offset past the ring names no descriptor: never matches.
                ev < m && need_event(ev, new.lin(self.size), old.lin(self.size), m)
            }
            _ => true,
        }
    }

    /// Sets the Device Event Suppression area: kicks off (`None`, DISABLE), or on — with
    /// EVENT_IDX for the descriptor at `at` (the next one the device will read), else for
    /// every descriptor (ENABLE). Writes only what changed, so the line the driver reads
    /// is not dirtied per burst; returns whether it wrote (a write to log while
    /// migrating). After turning kicks on the caller re-checks the ring (the driver may
    /// have made a descriptor available before it saw the change); the fence here orders
    /// this store before that re-check.
    pub fn set_kicks(&self, on: Option<Pos>, event_idx: bool) -> bool {
        let mut wrote = false;
        let want = match on {
            None => EVENT_DISABLE,
            Some(_) if !event_idx => EVENT_ENABLE,
            Some(at) => {
                let ow = at.to_base();
                if self.device.load16(0, Ordering::Relaxed) != ow {
                    self.device.store16(0, ow, Ordering::Relaxed);
                    wrote = true;
                }
                EVENT_DESC
            }
        };
        if self.device.load16(2, Ordering::Relaxed) != want {
            self.device.store16(2, want, Ordering::Release);
            wrote = true;
        }
        if on.is_some() {
            fence(Ordering::SeqCst);
        }
        wrote
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_event_window_in_the_wrapped_cycle() {
        let m = 16; // size 8
        assert!(need_event(5, 6, 5, m));
        assert!(!need_event(5, 7, 6, m));
        assert!(need_event(5, 10, 2, m));
        // across the end of the cycle (wrap counter back to 1).
        assert!(need_event(15, 1, 14, m));
        assert!(need_event(0, 1, 14, m));
        assert!(!need_event(2, 1, 14, m));
        // nothing moved.
        assert!(!need_event(3, 3, 3, m));
    }
}
