//! Per-VLAN, per-family querier state: the election by lowest address (RFC 2236 §3,
//! RFC 3376 §6.6.2, RFC 3810 §7.6.2) and the startup/general query schedule (RFC 3376
//! §8.6–8.7).

use super::addr::NodeAddr;
use super::config::Timers;

/// Querier and timer state of one (VLAN, family).
#[derive(Debug, Clone)]
pub(crate) struct QuerierState {
    /// Timer inputs (learnt from the elected querier's queries, else configured).
    pub timers: Timers,
    /// Another querier with a lower address was heard; we stay quiet until then (ms).
    pub other_until: u64,
    pub other_addr: Option<NodeAddr>,
    /// We were the active querier at the last tick.
    pub active: bool,
    /// When our next general query is due (only meaningful while active).
    pub next_general: u64,
    /// Startup queries still to send at a quarter of the query interval.
    pub startup_left: u8,
}

impl QuerierState {
    pub fn new(timers: Timers) -> QuerierState {
        QuerierState {
            timers,
            other_until: 0,
            other_addr: None,
            active: false,
            next_general: 0,
            startup_left: 0,
        }
    }

    /// Another querier is present at `now`.
    pub fn other_present(&self, now: u64) -> bool {
        now < self.other_until
    }

    /// A general or group-specific query from `src` was heard. `ours` is our own address
    /// if we run a querier here. Returns true if `src` is (now) the elected querier,
    /// i.e. its timers should be adopted. Unspecified sources never take part (RFC 4541
    /// §2.1.1: another snooping switch's proxy queries).
    pub fn heard_query(&mut self, src: NodeAddr, ours: Option<NodeAddr>, now: u64) -> bool {
        let wins = match ours {
            // An unspecified own address loses to everybody.
            Some(o) if !is_unspecified(&o) => src < o,
            _ => true,
        };
        if wins {
            self.other_until = now.saturating_add(self.timers.other_querier_ms());
            self.other_addr = Some(src);
            self.active = false;
        }
        wins
    }

    /// Decides whether a general query is due now and updates the schedule. Call once per
    /// tick for a VLAN where our querier is enabled.
    pub fn general_due(&mut self, robustness: u8, now: u64) -> bool {
        if self.other_present(now) {
            self.active = false;
            return false;
        }
        if !self.active {
            // Becoming querier (startup, or the other querier went silent): query at once
            // and repeat robustness-1 times at a quarter interval (RFC 3376 §8.6–8.7).
            self.active = true;
            self.other_addr = None;
            self.startup_left = robustness.saturating_sub(1);
            self.next_general = now;
        }
        if now < self.next_general {
            return false;
        }
        let qi = self.timers.query_interval_ms;
        if self.startup_left > 0 {
            self.startup_left -= 1;
            self.next_general = now.saturating_add((qi / 4).max(1));
        } else {
            self.next_general = now.saturating_add(qi.max(1));
        }
        true
    }
}

pub(crate) fn is_unspecified(a: &NodeAddr) -> bool {
    match a {
        NodeAddr::V4(a) => a.is_unspecified(),
        NodeAddr::V6(a) => a.is_unspecified(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn t() -> Timers {
        Timers {
            robustness: 2,
            query_interval_ms: 125_000,
            query_response_ms: 10_000,
        }
    }
    fn a(s: &str) -> NodeAddr {
        NodeAddr::V4(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn election_lowest_wins() {
        let mut q = QuerierState::new(t());
        assert!(q.general_due(2, 0));
        assert!(q.active);
        // A higher address does not silence us.
        assert!(!q.heard_query(a("198.18.0.9"), Some(a("198.18.0.5")), 1000));
        assert!(!q.other_present(1000));
        // A lower one does, for the other querier present interval (255 s).
        assert!(q.heard_query(a("198.18.0.1"), Some(a("198.18.0.5")), 2000));
        assert!(!q.general_due(2, 3000) && !q.active);
        assert!(!q.general_due(2, 2000 + 254_999));
        // It went silent: we take over at once.
        assert!(q.general_due(2, 2000 + 255_000));
    }

    #[test]
    fn unspecified_own_address_loses() {
        let mut q = QuerierState::new(t());
        assert!(q.heard_query(a("198.18.0.200"), Some(a("0.0.0.0")), 0));
        assert!(q.other_present(1));
    }

    #[test]
    fn startup_schedule() {
        let mut q = QuerierState::new(t());
        assert!(q.general_due(2, 0));
        assert!(!q.general_due(2, 31_249));
        assert!(q.general_due(2, 31_250)); // startup interval = QI/4
        assert!(!q.general_due(2, 31_250 + 124_999));
        assert!(q.general_due(2, 31_250 + 125_000));
    }
}
