//! [`Snooper`]: the snooping state shared by the worker threads.
//!
//! Control packets (rare) take a mutex; the data path reads an `arc-swap` snapshot and
//! never locks or writes shared memory. Refreshing an existing membership changes an
//! atomic inside the shared snapshot (no republish); joins, leaves and expiries publish a
//! new snapshot (see `mdb.rs`). Membership expiry is exact on the data path: a snapshot
//! entry carries expiry times and lookups compare them with `now`, so a late `tick` only
//! delays the clean-up and the queries, never the forwarding decision.
//!
//! Publishing costs O(groups) `Arc` clones. A guest alternating join and leave could make
//! every control packet pay that, so publishes driven by packets spend tokens of a bucket
//! (burst [`PUBLISH_BURST`](super::PUBLISH_BURST), one more per
//! [`PUBLISH_REFILL_MS`](super::PUBLISH_REFILL_MS)); beyond it the change
//! is published by the next call that has a token, at the latest the next `tick`. Until
//! then a new member sees the group as unregistered (flooded by default) and a removed
//! one keeps receiving: late by at most a tick, never lost state.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use parking_lot::Mutex;

use super::addr::GroupAddr;
use super::config::{RouterMode, SnoopConfig, VlanSnoopConfig};
use super::mdb::{
    ControlForward, McastEgress, Mdb, MdbEntry, QuerierStatus, QueryToSend, RouterEntry, Snapshot,
    SnoopAction, SnoopStats,
};
use super::wire::{self, WireError};
use crate::port::PortId;
use crate::time::Millis;
use crate::vlan::Vid;

/// Why a control packet was dropped (counted in [`SnoopStats`]).
pub type SnoopDrop = WireError;

/// IGMP/MLD snooping for one switch. `Send + Sync`: share it by reference or `Arc`.
pub struct Snooper {
    state: Mutex<Mdb>,
    snap: ArcSwap<Snapshot>,
}

/// A snapshot for a batch of data frames (like the FDB's `Switch::view()`): take it once
/// per batch, look up many frames.
pub struct McastView(Guard<Arc<Snapshot>>);

impl McastView {
    /// See [`Snooper::egress_ports`].
    #[inline]
    pub fn egress_ports(&self, group: GroupAddr, vid: Vid, now: Millis) -> McastEgress {
        self.0.egress(group, vid, now.0)
    }
}

impl Snooper {
    pub fn new(cfg: SnoopConfig) -> Snooper {
        let mdb = Mdb::new(cfg);
        let snap = ArcSwap::from_pointee(mdb.snapshot());
        Snooper {
            state: Mutex::new(mdb),
            snap,
        }
    }

    /// Publishes a new snapshot if the sets changed. Clock-driven calls (`now`) spend a
    /// publish token; without one the change waits for the next call with a token (at the
    /// latest the next `tick`). Configuration calls (`None`) always publish.
    fn publish(&self, m: &mut Mdb, now: Option<u64>) {
        if !m.dirty {
            return;
        }
        if let Some(now) = now {
            if !m.publish_budget.take(now) {
                m.stats.publish_deferred += 1;
                return;
            }
        }
        m.dirty = false;
        m.stats.publishes += 1;
        self.snap.store(Arc::new(m.snapshot()));
    }

    fn with<R>(&self, now: Option<u64>, f: impl FnOnce(&mut Mdb) -> R) -> R {
        let mut m = self.state.lock();
        let r = f(&mut m);
        self.publish(&mut m, now);
        r
    }

    /// A control packet (one for which [`wire::is_control`] is true) arrived on `ingress`
    /// in `vid`; `ip` starts at the IP header. Learns from it and says where the packet
    /// itself goes. Malformed packets are counted and dropped, never learned from.
    pub fn on_control(
        &self,
        ingress: PortId,
        vid: Vid,
        ip: &[u8],
        now: Millis,
    ) -> Result<SnoopAction, SnoopDrop> {
        let parsed = wire::parse(ip);
        self.with(Some(now.0), |m| match parsed {
            Err(e) => {
                count_drop(&mut m.stats, e);
                Err(e)
            }
            Ok(None) => Ok(SnoopAction {
                forward: ControlForward::Data,
                queries: Vec::new(),
            }),
            Ok(Some(ctl)) => Ok(m.handle(ingress, vid, &ctl, now.0)),
        })
    }

    /// Where a multicast data frame to `group` in `vid` goes. Lock-free; allocation-free.
    #[inline]
    pub fn egress_ports(&self, group: GroupAddr, vid: Vid, now: Millis) -> McastEgress {
        self.snap.load().egress(group, vid, now.0)
    }

    /// A snapshot for a batch of lookups.
    #[inline]
    pub fn view(&self) -> McastView {
        McastView(self.snap.load())
    }

    /// Runs timers: expires members and router ports, and returns the queries the data
    /// plane must flood now (group-specific rounds, the querier's general queries). Call
    /// it from the housekeeping tick, at least every `last_member_interval` (1 s).
    pub fn tick(&self, now: Millis) -> Vec<QueryToSend> {
        self.with(Some(now.0), |m| m.tick(now.0))
    }

    /// The MDB for the control plane (`ringswitch ctl mdb`), sorted by VLAN and group.
    pub fn entries(&self, now: Millis) -> Vec<MdbEntry> {
        self.state.lock().entries(now.0)
    }

    /// Static and live learnt router ports.
    pub fn routers(&self, now: Millis) -> Vec<RouterEntry> {
        self.state.lock().router_entries(now.0)
    }

    /// The querier election state of every known VLAN and family.
    pub fn queriers(&self, now: Millis) -> Vec<QuerierStatus> {
        self.state.lock().querier_status(now.0)
    }

    pub fn stats(&self) -> SnoopStats {
        self.state.lock().stats
    }

    pub fn config(&self) -> SnoopConfig {
        self.state.lock().config().clone()
    }

    /// Per-VLAN settings (snooping, querier, unregistered policy). Configuring a VLAN also
    /// makes the querier run there before any control packet was seen in it.
    pub fn set_vlan(&self, vid: Vid, cfg: VlanSnoopConfig) {
        self.with(None, |m| m.set_vlan(vid, cfg))
    }

    /// Fast leave: a leave removes the port at once, without group-specific queries. Only
    /// right for ports with a single host behind them (a guest NIC).
    pub fn set_fast_leave(&self, port: PortId, on: bool) {
        self.with(None, |m| m.set_fast_leave(port, on))
    }

    /// Overrides the configured per-port group limit (`Some(0)` = no limit).
    pub fn set_group_limit(&self, port: PortId, limit: Option<u32>) {
        self.with(None, |m| m.set_group_limit(port, limit))
    }

    pub fn set_router_mode(&self, port: PortId, mode: RouterMode) {
        self.with(None, |m| m.set_router_mode(port, mode))
    }

    /// Forgets a port's memberships, router state and settings (port deleted or down).
    pub fn remove_port(&self, port: PortId) {
        self.with(None, |m| m.remove_port(port))
    }
}

fn count_drop(s: &mut SnoopStats, e: WireError) {
    let c = match e {
        WireError::BadIpHeader => &mut s.drop_bad_ip_header,
        WireError::BadIpChecksum => &mut s.drop_bad_ip_checksum,
        WireError::BadLength => &mut s.drop_bad_length,
        WireError::BadChecksum => &mut s.drop_bad_checksum,
        WireError::Fragment => &mut s.drop_fragment,
        WireError::NoRouterAlert => &mut s.drop_no_router_alert,
        WireError::BadHopLimit => &mut s.drop_bad_hop_limit,
        WireError::BadSource => &mut s.drop_bad_source,
        WireError::BadGroup => &mut s.drop_bad_group,
    };
    *c += 1;
}
