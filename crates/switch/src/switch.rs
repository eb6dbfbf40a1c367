//! The switch: port table, FDB and the per-frame forwarding decision.
//!
//! Shared by all workers behind an `Arc`. The port table is copy-on-write behind
//! `arc-swap` (ctrl-vq commands and `ctl` changes are rare); workers take one
//! [`SwitchView`] per batch of frames, which pins the port table and FDB generation for
//! that batch, so the per-frame path takes no lock and allocates nothing.

use crate::egress::Egress;
use crate::fdb::{Fdb, FdbConfig, FdbView, Learn};
use crate::filter::RxFilter;
use crate::frame::FrameView;
use crate::mac::Mac;
use crate::port::{Offloads, PortConfig, PortId, MAX_PORTS};
use crate::portset::PortSet;
use crate::reason::DropReason;
use crate::time::Millis;
use crate::vlan::{Vid, VlanMode, VID_MAX};
use crate::vnet::VnetHdr;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Switch-wide configuration.
#[derive(Debug, Clone, Default)]
pub struct SwitchConfig {
    pub fdb: FdbConfig,
}

/// Errors of control-plane operations, each naming what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SwitchError {
    #[error("a port named {0:?} already exists: choose another name")]
    DuplicateName(String),
    #[error("no such port {0}")]
    NoSuchPort(String),
    #[error("the switch already has {MAX_PORTS} ports: remove one first")]
    TooManyPorts,
    #[error("vlan {0} is out of range: use 1..=4094")]
    BadVid(u32),
}

/// The result of one forwarding decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Drop(DropReason),
    Forward(Forward),
}

/// Where a frame goes, and what the switch learned parsing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    /// The VLAN the frame was classified into on ingress.
    pub vid: Vid,
    /// Destination ports (never contains the ingress port).
    pub ports: PortSet,
    /// The parsed frame, for egress rewriting, snooping and offload adaptation.
    pub frame: FrameView,
}

#[derive(Clone)]
struct PortEntry {
    cfg: PortConfig,
    up: bool,
}

#[derive(Clone, Default)]
struct PortTable {
    ports: Vec<Option<PortEntry>>,
    up: PortSet,
}

impl PortTable {
    #[inline]
    fn get(&self, id: PortId) -> Option<&PortEntry> {
        self.ports.get(id.index()).and_then(Option::as_ref)
    }
}

/// Learning and drop counters of one port (as ingress).
pub struct PortCounters {
    drops: [AtomicU64; DropReason::COUNT],
    learned: AtomicU64,
    moved: AtomicU64,
    learn_deferred: AtomicU64,
    learn_refused: AtomicU64,
}

impl PortCounters {
    fn new() -> PortCounters {
        PortCounters {
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            learned: AtomicU64::new(0),
            moved: AtomicU64::new(0),
            learn_deferred: AtomicU64::new(0),
            learn_refused: AtomicU64::new(0),
        }
    }

    fn reset(&self) {
        for c in self.drops.iter() {
            c.store(0, Ordering::Relaxed);
        }
        for c in [
            &self.learned,
            &self.moved,
            &self.learn_deferred,
            &self.learn_refused,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }

    #[inline]
    fn drop(&self, r: DropReason) {
        self.drops[r as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of [`PortCounters`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortStats {
    /// Non-zero drop counters by reason.
    pub drops: Vec<(DropReason, u64)>,
    pub learned: u64,
    pub moved: u64,
    /// Learning skipped because another worker held the FDB writer lock.
    pub learn_deferred: u64,
    /// Learning refused: MAC limit, full table or static conflict.
    pub learn_refused: u64,
}

impl PortStats {
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops
            .iter()
            .find(|(x, _)| *x == r)
            .map(|(_, n)| *n)
            .unwrap_or(0)
    }
}

/// The L2 switch.
pub struct Switch {
    ports: ArcSwap<PortTable>,
    ports_writer: Mutex<()>,
    fdb: Fdb,
    counters: Box<[PortCounters]>,
}

impl Switch {
    pub fn new(cfg: SwitchConfig) -> Switch {
        Switch {
            ports: ArcSwap::from_pointee(PortTable::default()),
            ports_writer: Mutex::new(()),
            fdb: Fdb::new(cfg.fdb),
            counters: (0..MAX_PORTS).map(|_| PortCounters::new()).collect(),
        }
    }

    /// A view for one batch of frames: lock-free decisions until dropped.
    #[inline]
    pub fn view(&self) -> SwitchView<'_> {
        SwitchView {
            sw: self,
            ports: self.ports.load(),
            fdb: self.fdb.view(),
        }
    }

    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// Housekeeping tick: ages the FDB. Returns the number of entries removed.
    pub fn age(&self, now: Millis) -> usize {
        self.fdb.age(now)
    }

    /// Adds a port (link up). Names are unique.
    pub fn add_port(&self, cfg: PortConfig) -> Result<PortId, SwitchError> {
        validate_vlan(&cfg.vlan)?;
        let _w = self.ports_writer.lock();
        let mut t = PortTable::clone(&self.ports.load());
        if t.ports.iter().flatten().any(|p| p.cfg.name == cfg.name) {
            return Err(SwitchError::DuplicateName(cfg.name));
        }
        let idx = match t.ports.iter().position(Option::is_none) {
            Some(i) => i,
            None if t.ports.len() < MAX_PORTS => {
                t.ports.push(None);
                t.ports.len() - 1
            }
            None => return Err(SwitchError::TooManyPorts),
        };
        let id = PortId(idx as u16);
        self.counters[idx].reset();
        t.ports[idx] = Some(PortEntry { cfg, up: true });
        t.up.insert(id);
        self.ports.store(Arc::new(t));
        Ok(id)
    }

    /// Removes a port and forgets every address learned on it.
    pub fn remove_port(&self, id: PortId) -> Result<PortConfig, SwitchError> {
        let _w = self.ports_writer.lock();
        let mut t = PortTable::clone(&self.ports.load());
        let entry = t
            .ports
            .get_mut(id.index())
            .and_then(Option::take)
            .ok_or_else(|| SwitchError::NoSuchPort(id.to_string()))?;
        t.up.remove(id);
        self.ports.store(Arc::new(t));
        self.fdb.flush_port(id);
        Ok(entry.cfg)
    }

    /// Changes a port's configuration (rx filter, VLAN mode, offloads…) atomically for
    /// all workers. A VLAN change flushes the port's FDB entries.
    pub fn update_port(
        &self,
        id: PortId,
        f: impl FnOnce(&mut PortConfig),
    ) -> Result<(), SwitchError> {
        let _w = self.ports_writer.lock();
        let mut t = PortTable::clone(&self.ports.load());
        let e = t
            .ports
            .get_mut(id.index())
            .and_then(Option::as_mut)
            .ok_or_else(|| SwitchError::NoSuchPort(id.to_string()))?;
        let mut cfg = e.cfg.clone();
        f(&mut cfg);
        validate_vlan(&cfg.vlan)?;
        let vlan_changed = cfg.vlan != e.cfg.vlan;
        e.cfg = cfg;
        self.ports.store(Arc::new(t));
        if vlan_changed {
            self.fdb.flush_port(id);
        }
        Ok(())
    }

    /// The guest changed its receive filter through the ctrl vq.
    pub fn set_rx_filter(&self, id: PortId, filter: RxFilter) -> Result<(), SwitchError> {
        self.update_port(id, |c| c.rx_filter = filter)
    }

    /// The port's receivable offloads changed (negotiation, GUEST_OFFLOADS_SET).
    pub fn set_offloads(&self, id: PortId, offloads: Offloads) -> Result<(), SwitchError> {
        self.update_port(id, |c| c.offloads = offloads)
    }

    /// Link state: a down port neither sends nor receives; its addresses are flushed.
    pub fn set_link(&self, id: PortId, up: bool) -> Result<(), SwitchError> {
        {
            let _w = self.ports_writer.lock();
            let mut t = PortTable::clone(&self.ports.load());
            if t.get(id).is_none() {
                return Err(SwitchError::NoSuchPort(id.to_string()));
            }
            if let Some(Some(e)) = t.ports.get_mut(id.index()) {
                e.up = up;
            }
            if up {
                t.up.insert(id);
            } else {
                t.up.remove(id);
            }
            self.ports.store(Arc::new(t));
        }
        if !up {
            self.fdb.flush_port(id);
        }
        Ok(())
    }

    /// Looks a port up by name.
    pub fn port_by_name(&self, name: &str) -> Option<PortId> {
        let t = self.ports.load();
        t.ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.cfg.name == name))
            .map(|i| PortId(i as u16))
    }

    /// Every port with its configuration and link state.
    pub fn ports(&self) -> Vec<(PortId, PortConfig, bool)> {
        let t = self.ports.load();
        t.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (PortId(i as u16), p.cfg.clone(), p.up)))
            .collect()
    }

    /// Counters of one port.
    pub fn stats(&self, id: PortId) -> PortStats {
        let Some(c) = self.counters.get(id.index()) else {
            return PortStats::default();
        };
        PortStats {
            drops: DropReason::ALL
                .iter()
                .map(|r| (*r, c.drops[*r as usize].load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            learned: c.learned.load(Ordering::Relaxed),
            moved: c.moved.load(Ordering::Relaxed),
            learn_deferred: c.learn_deferred.load(Ordering::Relaxed),
            learn_refused: c.learn_refused.load(Ordering::Relaxed),
        }
    }

    /// Counts a drop decided outside the switch (e.g. a full destination ring), charged
    /// to `port`.
    pub fn count_drop(&self, port: PortId, reason: DropReason) {
        if let Some(c) = self.counters.get(port.index()) {
            c.drop(reason);
        }
    }
}

fn validate_vlan(m: &VlanMode) -> Result<(), SwitchError> {
    let ok = |v: Vid| (1..=VID_MAX).contains(&v);
    match m {
        VlanMode::Access(v) if !ok(*v) => Err(SwitchError::BadVid(u32::from(*v))),
        VlanMode::Trunk {
            native: Some(v), ..
        } if !ok(*v) => Err(SwitchError::BadVid(u32::from(*v))),
        _ => Ok(()),
    }
}

/// One batch's view of the switch.
pub struct SwitchView<'a> {
    sw: &'a Switch,
    ports: arc_swap::Guard<Arc<PortTable>>,
    fdb: FdbView,
}

impl SwitchView<'_> {
    /// The configuration of `id` as this batch sees it.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortConfig> {
        self.ports.get(id).map(|e| &e.cfg)
    }

    /// Decides where one frame goes. `bytes` is the frame or at least its first bytes
    /// (headers); `frame_len` its full length; `hdr` its virtio-net header. Learns the
    /// source address. Drops are counted on the ingress port.
    #[inline]
    pub fn decide(
        &self,
        ingress: PortId,
        hdr: &VnetHdr,
        bytes: &[u8],
        frame_len: usize,
        now: Millis,
    ) -> Decision {
        match self.decide_inner(ingress, hdr, bytes, frame_len, now) {
            Ok(f) => Decision::Forward(f),
            Err(r) => {
                self.sw.count_drop(ingress, r);
                Decision::Drop(r)
            }
        }
    }

    #[inline]
    fn decide_inner(
        &self,
        ingress: PortId,
        hdr: &VnetHdr,
        bytes: &[u8],
        frame_len: usize,
        now: Millis,
    ) -> Result<Forward, DropReason> {
        let inp = match self.ports.get(ingress) {
            Some(e) if e.up => e,
            _ => return Err(DropReason::IngressDown),
        };
        let gso = hdr.gso().map_err(|_| DropReason::BadVnetHdr)?;
        let frame = FrameView::parse(
            bytes,
            frame_len,
            inp.cfg.tpid,
            gso != crate::vnet::Gso::None,
        )?;
        if frame.src.is_multicast() || frame.src == Mac::ZERO {
            return Err(DropReason::InvalidSource);
        }
        let vid = inp.cfg.vlan.classify(frame.tag.map(|t| t.vid()))?;
        if inp.cfg.learning {
            self.learn(ingress, inp, &frame, vid, now);
        }
        if frame.dst.is_8021d_reserved() {
            return Err(DropReason::ReservedGroup);
        }
        if frame.dst.is_unicast() {
            if let Some(out) = self.fdb.lookup(frame.dst, vid) {
                if out == ingress {
                    return Err(DropReason::SameSegment);
                }
                self.deliverable(out, vid, &frame.dst)?;
                return Ok(Forward {
                    vid,
                    ports: PortSet::single(out),
                    frame,
                });
            }
        }
        let ports = self.flood_set(ingress, vid, &frame.dst);
        if ports.is_empty() {
            return Err(DropReason::NoDestination);
        }
        Ok(Forward { vid, ports, frame })
    }

    #[inline]
    fn learn(&self, ingress: PortId, inp: &PortEntry, frame: &FrameView, vid: Vid, now: Millis) {
        let c = &self.sw.counters[ingress.index()];
        match self
            .sw
            .fdb
            .learn(&self.fdb, frame.src, vid, ingress, inp.cfg.mac_limit, now)
        {
            Learn::Known => {}
            Learn::Learned => {
                c.learned.fetch_add(1, Ordering::Relaxed);
            }
            Learn::Moved { .. } => {
                c.moved.fetch_add(1, Ordering::Relaxed);
            }
            Learn::Deferred => {
                c.learn_deferred.fetch_add(1, Ordering::Relaxed);
            }
            Learn::PortLimit | Learn::Full | Learn::StaticConflict => {
                c.learn_refused.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Can `port` receive a frame to `dst` in `vid`? (link, VLAN membership, rx filter as
    /// the frame will be delivered: tagged or not on that port.)
    #[inline]
    fn deliverable(&self, port: PortId, vid: Vid, dst: &Mac) -> Result<(), DropReason> {
        let e = match self.ports.get(port) {
            Some(e) if e.up => e,
            _ => return Err(DropReason::DestinationDown),
        };
        let tag = e.cfg.vlan.egress(vid).ok_or(DropReason::DestinationDown)?;
        if e.cfg.rx_filter.accepts(dst, tag) {
            Ok(())
        } else {
            Err(DropReason::Filtered)
        }
    }

    /// Every up port except `ingress` that is in `vid` and accepts `dst`.
    #[inline]
    fn flood_set(&self, ingress: PortId, vid: Vid, dst: &Mac) -> PortSet {
        let mut out = PortSet::EMPTY;
        for p in self.ports.up.iter() {
            if p != ingress && self.deliverable(p, vid, dst).is_ok() {
                out.insert(p);
            }
        }
        out
    }

    /// Egress rewriting of `fwd`'s frame for destination `port` (tag push/pop/keep).
    /// `frame` is the source frame's first bytes (at least the L2 header).
    #[inline]
    pub fn egress(&self, port: PortId, fwd: &Forward, frame: &[u8]) -> Egress {
        let (tpid, tag) = match self.ports.get(port) {
            Some(e) => (e.cfg.tpid, e.cfg.vlan.egress(fwd.vid).flatten()),
            None => (crate::vlan::TPID_8021Q, None),
        };
        Egress::new(frame, &fwd.frame, tag.map(|v| (tpid, v)))
    }
}
