//! Port security: what a port may claim and how much it may flood.
//!
//! A switch shared by tenants is only as strong as its weakest port. Two per-port rules,
//! as OVS (port security, storm control) and DPDK-based vswitches offer them:
//! - **Source binding** (`PortConfig::port_security` with `PortConfig::mac`): frames
//!   whose Ethernet source, or whose ARP sender hardware address (RFC 826), is not the
//!   port's own MAC are dropped as `spoofed_source` — a guest cannot claim the
//!   gateway's MAC or poison other hosts' ARP caches, and cannot fill the FDB with made-up
//!   addresses (it never learns them).
//! - **Flood limit** (`PortConfig::flood_limit_pps`): frames the switch would flood
//!   (broadcast, multicast, unknown unicast) beyond the port's rate are dropped as
//!   `storm_limited`, so one port's storm costs the others nothing.
//!
//! The per-port MAC limit (`PortConfig::mac_limit`) lives with the FDB.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::frame::{FrameView, L3};
use crate::mac::Mac;
use crate::port::PortConfig;
use crate::time::Millis;

/// Whether a frame from a port with `cfg` may carry the source it carries. `bytes` are
/// the frame's first bytes (the parse `frame` was made from).
#[inline]
pub(crate) fn source_allowed(cfg: &PortConfig, frame: &FrameView, bytes: &[u8]) -> bool {
    if !cfg.port_security {
        return true;
    }
    let Some(own) = cfg.mac else {
        // Port security without a MAC to bind to allows nothing.
        return false;
    };
    if frame.src != own {
        return false;
    }
    if frame.l3 == L3::Arp {
        // htype(2) ptype(2) hlen(1) plen(1) oper(2), then the sender hardware address.
        let at = usize::from(frame.l3_offset) + 8;
        return match bytes.get(at..at + 6) {
            Some(sha) => Mac::from_slice(sha) == Some(own),
            None => false,
        };
    }
    true
}

/// Largest burst a flood bucket holds (frames).
const MAX_BURST: u64 = (1 << 24) - 1;

/// A token bucket of flooded frames per second, lock-free, shared by every worker.
/// State: `last_ms << 24 | tokens`; refilled from the time passed at each take.
#[derive(Debug)]
pub(crate) struct FloodBucket {
    pps: u64,
    burst: u64,
    state: AtomicU64,
}

impl FloodBucket {
    /// `pps` frames per second, bursts of up to one second's worth.
    pub(crate) fn new(pps: u32) -> FloodBucket {
        let burst = u64::from(pps).clamp(1, MAX_BURST);
        FloodBucket {
            pps: u64::from(pps),
            burst,
            state: AtomicU64::new(burst),
        }
    }

    /// Takes one token at `now`; false when the port is over its rate.
    pub(crate) fn take(&self, now: Millis) -> bool {
        let now_ms = now.0 & ((1 << 40) - 1);
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (last, tokens) = (cur >> 24, cur & MAX_BURST);
            let elapsed = now_ms.saturating_sub(last);
            let refill = elapsed.saturating_mul(self.pps) / 1000;
            let mut t = tokens.saturating_add(refill).min(self.burst);
            // Keep the sub-token remainder: advance `last` only by the time refilled.
            let last = if refill > 0 || last > now_ms {
                now_ms
            } else {
                last
            };
            if t == 0 {
                return false;
            }
            t -= 1;
            let new = (last << 24) | t;
            match self
                .state
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(c) => cur = c,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::PortKind;
    use crate::vlan::TPID_8021Q;

    fn arp(src: [u8; 6], sha: [u8; 6]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&sha);
        f.extend_from_slice(&[198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 198, 18, 0, 2]);
        f.resize(60, 0);
        f
    }

    #[test]
    fn source_and_arp_sender_must_be_the_ports_mac() {
        let me = [2, 0, 0, 0, 0, 1];
        let other = [2, 0, 0, 0, 0, 9];
        let mut cfg = PortConfig::new("p", PortKind::VhostUser).with_mac(Mac(me));
        let check = |cfg: &PortConfig, f: &[u8]| {
            let v = FrameView::parse(f, f.len(), TPID_8021Q, false).unwrap();
            source_allowed(cfg, &v, f)
        };
        assert!(check(&cfg, &arp(other, other)), "off: anything goes");
        cfg.port_security = true;
        assert!(check(&cfg, &arp(me, me)));
        assert!(!check(&cfg, &arp(other, me)), "spoofed Ethernet source");
        assert!(
            !check(&cfg, &arp(me, other)),
            "spoofed ARP sender (cache poisoning)"
        );
        cfg.mac = None;
        assert!(
            !check(&cfg, &arp(me, me)),
            "nothing to bind to: nothing allowed"
        );
    }

    #[test]
    fn flood_bucket_refills_at_its_rate() {
        let b = FloodBucket::new(10);
        let t0 = Millis(1000);
        // The first take refills from `last` = 0: the burst, 10 frames.
        for _ in 0..10 {
            assert!(b.take(t0));
        }
        assert!(!b.take(t0), "burst spent");
        assert!(!b.take(Millis(1050)), "half a token");
        assert!(b.take(Millis(1100)), "one token per 100 ms");
        assert!(!b.take(Millis(1100)));
        // A long pause refills to the burst, not beyond.
        let n = (0..100).filter(|_| b.take(Millis(60_000))).count();
        assert_eq!(n, 10);
    }
}
