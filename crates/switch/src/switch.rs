//! The switch: port table, FDB and the per-frame forwarding decision.
//!
//! Shared by all workers behind an `Arc`. The port table is copy-on-write behind
//! `arc-swap` (ctrl-vq commands and `ctl` changes are rare); workers take one
//! [`SwitchView`] per batch of frames, which pins the port table and FDB generation for
//! that batch, so the per-frame path takes no lock and allocates nothing.

use crate::egress::Egress;
use crate::fdb::{packed_key, Fdb, FdbConfig, FdbView, Hashed, Learn};
use crate::filter::RxFilter;
use crate::frame::FrameView;
use crate::frame::L3;
use crate::mac::Mac;
use crate::mcast::{
    self, ControlForward, McastEgress, McastView, MdbEntry, QueryToSend, SnoopConfig, Snooper,
    UnregisteredPolicy,
};
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
    /// IGMP/MLD snooping (on by default, querier off).
    pub mcast: SnoopConfig,
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
    #[error("mtu {0} is out of range: use {min}..={max}", min = crate::mtu::MIN_MTU, max = crate::mtu::MAX_MTU)]
    BadMtu(u16),
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
    /// The flood limit's bucket (shared by the table's clones, so by every worker).
    flood: Option<Arc<crate::security::FloodBucket>>,
}

fn flood_bucket(cfg: &PortConfig) -> Option<Arc<crate::security::FloodBucket>> {
    (cfg.flood_limit_pps > 0)
        .then(|| Arc::new(crate::security::FloodBucket::new(cfg.flood_limit_pps)))
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
    snooper: Snooper,
    /// Queries the snooper asked for while deciding (leave processing); drained by
    /// [`Switch::mcast_tick`].
    pending_queries: Mutex<Vec<QueryToSend>>,
    counters: Box<[PortCounters]>,
}

impl Switch {
    pub fn new(cfg: SwitchConfig) -> Switch {
        Switch {
            ports: ArcSwap::from_pointee(PortTable::default()),
            ports_writer: Mutex::new(()),
            fdb: Fdb::new(cfg.fdb),
            snooper: Snooper::new(cfg.mcast),
            pending_queries: Mutex::new(Vec::new()),
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
            mcast: self.snooper.view(),
        }
    }

    pub fn fdb(&self) -> &Fdb {
        &self.fdb
    }

    /// The IGMP/MLD snooper (per-VLAN settings, fast leave, limits, stats).
    pub fn snooper(&self) -> &Snooper {
        &self.snooper
    }

    /// The MDB for the control plane.
    pub fn mdb(&self, now: Millis) -> Vec<MdbEntry> {
        self.snooper.entries(now)
    }

    /// Snooping timers: expires memberships and router ports and returns the queries to
    /// flood now (the querier's, and those requested while deciding). Call at least once
    /// a second.
    pub fn mcast_tick(&self, now: Millis) -> Vec<QueryToSend> {
        let mut q = std::mem::take(&mut *self.pending_queries.lock());
        q.extend(self.snooper.tick(now));
        q
    }

    /// Housekeeping tick: ages the FDB. Returns the number of entries removed.
    pub fn age(&self, now: Millis) -> usize {
        self.fdb.age(now)
    }

    /// Adds a port (link up). Names are unique.
    pub fn add_port(&self, cfg: PortConfig) -> Result<PortId, SwitchError> {
        validate_vlan(&cfg.vlan)?;
        validate_mtu(cfg.mtu)?;
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
        // idx < MAX_PORTS (checked above), which fits a u16.
        #[allow(clippy::cast_possible_truncation)]
        let id = PortId(idx as u16);
        self.counters[idx].reset();
        let flood = flood_bucket(&cfg);
        t.ports[idx] = Some(PortEntry {
            cfg,
            up: true,
            flood,
        });
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
        self.snooper.remove_port(id);
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
        validate_mtu(cfg.mtu)?;
        let vlan_changed = cfg.vlan != e.cfg.vlan;
        if cfg.flood_limit_pps != e.cfg.flood_limit_pps {
            e.flood = flood_bucket(&cfg);
        }
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
    // The table holds at most MAX_PORTS entries: every index fits a u16.
    #[allow(clippy::cast_possible_truncation)]
    pub fn port_by_name(&self, name: &str) -> Option<PortId> {
        let t = self.ports.load();
        t.ports
            .iter()
            .position(|p| p.as_ref().is_some_and(|p| p.cfg.name == name))
            .map(|i| PortId(i as u16))
    }

    /// Every port with its configuration and link state.
    // The table holds at most MAX_PORTS entries: every index fits a u16.
    #[allow(clippy::cast_possible_truncation)]
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

fn validate_mtu(mtu: u16) -> Result<(), SwitchError> {
    if (crate::mtu::MIN_MTU..=crate::mtu::MAX_MTU).contains(&mtu) {
        Ok(())
    } else {
        Err(SwitchError::BadMtu(mtu))
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

/// Does deciding this frame need all of its bytes rather than a header copy? True for
/// multicast snooping control packets (IGMP, MLD, PIM, MRD): an MLDv2 report can be far
/// longer than a header copy, and the snooper validates its checksum over the whole
/// message. `head` is the frame's first bytes (at least the L2/L3 headers). Rare and
/// cheap: only frames to a multicast MAC are looked at.
pub fn needs_whole_frame(head: &[u8], frame_len: usize, tpid: u16) -> bool {
    if head.len() >= frame_len || head.first().is_none_or(|b| b & 1 == 0) {
        return false;
    }
    match FrameView::parse(head, frame_len, tpid, false) {
        Ok(v) if matches!(v.l3, L3::Ipv4 | L3::Ipv6) => head
            .get(usize::from(v.l3_offset)..)
            .is_some_and(mcast::is_control),
        _ => false,
    }
}

/// One frame of a batch for [`SwitchView::decide_batch`].
#[derive(Debug, Clone, Copy)]
pub struct FrameRef<'a> {
    pub ingress: PortId,
    pub hdr: VnetHdr,
    /// The frame, or at least its headers.
    pub bytes: &'a [u8],
    /// Full frame length.
    pub len: usize,
}

/// A frame's FDB keys, hashed when its slots were prefetched (see
/// [`SwitchView::decide_batch`]).
#[derive(Clone, Copy)]
struct Prehashed {
    src: Hashed,
    /// [`Hashed::NONE`] for a group destination (never in the FDB).
    dst: Hashed,
}

impl Prehashed {
    /// Nothing precomputed: `decide` hashes itself.
    const NONE: Prehashed = Prehashed {
        src: Hashed::NONE,
        dst: Hashed::NONE,
    };
}

/// The last reusable decision of a burst (see [`SwitchView::decide_cached`]). Create one
/// per view; [`DecisionCache::clear`] forgets it.
#[derive(Debug, Default, Clone)]
pub struct DecisionCache {
    last: Option<Cached>,
}

impl DecisionCache {
    pub fn clear(&mut self) {
        self.last = None;
    }
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    ingress: PortId,
    l2: [u8; 16],
    tpid: u16,
    vid: Vid,
    ports: PortSet,
}

/// One batch's view of the switch.
pub struct SwitchView<'a> {
    sw: &'a Switch,
    ports: arc_swap::Guard<Arc<PortTable>>,
    fdb: FdbView,
    mcast: McastView,
}

impl SwitchView<'_> {
    /// The configuration of `id` as this batch sees it.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortConfig> {
        self.ports.get(id).map(|e| &e.cfg)
    }

    /// Starts loading the FDB slots a later `decide` of this frame will read (its source
    /// and destination in its VLAN). Only a hint: malformed frames are ignored here.
    #[inline]
    pub fn prefetch(&self, ingress: PortId, bytes: &[u8]) {
        self.prehash_and_prefetch(ingress, bytes);
    }

    /// Hashes the FDB keys a later `decide` of this frame will look up (source, and a
    /// unicast destination, in the frame's VLAN) and starts loading their slots. Reads
    /// only the L2 header; `None` for frames `decide` will refuse anyway.
    #[inline]
    fn prehash_and_prefetch(&self, ingress: PortId, bytes: &[u8]) -> Prehashed {
        self.try_prehash(ingress, bytes).unwrap_or(Prehashed::NONE)
    }

    #[inline(always)]
    fn try_prehash(&self, ingress: PortId, bytes: &[u8]) -> Option<Prehashed> {
        let e = self.ports.get(ingress)?;
        let h: &[u8; 14] = bytes.get(..14)?.try_into().ok()?;
        let dst = Mac([h[0], h[1], h[2], h[3], h[4], h[5]]);
        let src = Mac([h[6], h[7], h[8], h[9], h[10], h[11]]);
        let tag = if u16::from_be_bytes([h[12], h[13]]) == e.cfg.tpid {
            let t = bytes.get(14..16)?;
            Some(u16::from_be_bytes([t[0], t[1]]) & 0x0fff)
        } else {
            None
        };
        let vid = e.cfg.vlan.classify(tag).ok()?;
        let src = self.fdb.hashed(src, vid);
        self.fdb.prefetch_hashed(src);
        let dst = if dst.is_unicast() {
            let d = self.fdb.hashed(dst, vid);
            self.fdb.prefetch_hashed(d);
            d
        } else {
            Hashed::NONE
        };
        Some(Prehashed { src, dst })
    }

    /// Decides a batch, prefetching a few frames ahead so FDB lookups overlap their
    /// memory latency (the table is larger than the caches at 100 k MACs). Calls
    /// `out(i, decision)` for each frame in order.
    #[inline]
    pub fn decide_batch(
        &self,
        frames: &[FrameRef<'_>],
        now: Millis,
        mut out: impl FnMut(usize, Decision),
    ) {
        const AHEAD: usize = 4;
        if !self.fdb.worth_prefetching() {
            for (i, f) in frames.iter().enumerate() {
                let d = self.decide_with(f.ingress, &f.hdr, f.bytes, f.len, now, Prehashed::NONE);
                out(i, d);
            }
            return;
        }
        // ring[i % AHEAD] holds frame i's hashed keys from the time its slots were
        // prefetched, so that each key is hashed once.
        let mut ring = [Prehashed::NONE; AHEAD];
        for (r, f) in ring.iter_mut().zip(frames) {
            *r = self.prehash_and_prefetch(f.ingress, f.bytes);
        }
        for (i, f) in frames.iter().enumerate() {
            let pre = ring[i % AHEAD];
            if let Some(n) = frames.get(i + AHEAD) {
                ring[i % AHEAD] = self.prehash_and_prefetch(n.ingress, n.bytes);
            }
            out(
                i,
                self.decide_with(f.ingress, &f.hdr, f.bytes, f.len, now, pre),
            );
        }
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
        self.decide_with(ingress, hdr, bytes, frame_len, now, Prehashed::NONE)
    }

    /// [`SwitchView::decide`] for the frames of one burst, reusing the previous frame's
    /// decision (kept in `cache`) when this one comes from the same port with the same
    /// first 16 bytes — destination, source, and EtherType or VLAN tag — and no GSO.
    ///
    /// Why: a burst from one guest queue is mostly one conversation, and the decision is a
    /// function of exactly those bytes and the port tables (learning, FDB lookup or flood
    /// set, VLAN classification, receive filters): ≈ 14 % of a 64-byte frame's cost on
    /// the vhost path. The frame itself is still parsed (its L3/L4 offsets are its own);
    /// a frame that fails to parse is decided in full, and dropped and counted there.
    ///
    /// Only unicast decisions whose source is settled in the FDB are kept: multicast goes
    /// through snooping, and a refused or deferred learn is retried per frame. The cache
    /// belongs to one view: a decision can be reused for the rest of its batch, never past
    /// it (FDB changes by other workers and port changes are seen from the next batch on,
    /// as if the burst had been decided a few microseconds earlier).
    #[inline]
    pub fn decide_cached(
        &self,
        cache: &mut DecisionCache,
        ingress: PortId,
        hdr: &VnetHdr,
        bytes: &[u8],
        frame_len: usize,
        now: Millis,
    ) -> Decision {
        let key: Option<[u8; 16]> = if hdr.gso_type == 0 {
            bytes.get(..16).and_then(|b| b.try_into().ok())
        } else {
            None
        };
        if let (Some(k), Some(c)) = (key, &cache.last) {
            if c.ingress == ingress && c.l2 == k {
                if let Ok(frame) = FrameView::parse_inlined(bytes, frame_len, c.tpid, false) {
                    return Decision::Forward(Forward {
                        vid: c.vid,
                        ports: c.ports,
                        frame,
                    });
                }
            }
        }
        let mut settled = true;
        let r = self.decide_inner(
            ingress,
            hdr,
            bytes,
            frame_len,
            now,
            Prehashed::NONE,
            &mut settled,
        );
        cache.last = match (&r, key, self.ports.get(ingress)) {
            // Not ARP: its sender address past the first 16 bytes is checked per frame.
            (Ok(f), Some(l2), Some(e))
                if settled && f.frame.dst.is_unicast() && f.frame.l3 != L3::Arp =>
            {
                Some(Cached {
                    ingress,
                    l2,
                    tpid: e.cfg.tpid,
                    vid: f.vid,
                    ports: f.ports,
                })
            }
            _ => None,
        };
        match r {
            Ok(f) => Decision::Forward(f),
            Err(r) => {
                self.sw.count_drop(ingress, r);
                Decision::Drop(r)
            }
        }
    }

    /// [`SwitchView::decide`] with the frame's keys possibly hashed already.
    #[inline(always)]
    fn decide_with(
        &self,
        ingress: PortId,
        hdr: &VnetHdr,
        bytes: &[u8],
        frame_len: usize,
        now: Millis,
        pre: Prehashed,
    ) -> Decision {
        match self.decide_inner(ingress, hdr, bytes, frame_len, now, pre, &mut true) {
            Ok(f) => Decision::Forward(f),
            Err(r) => {
                self.sw.count_drop(ingress, r);
                Decision::Drop(r)
            }
        }
    }

    /// `settled` is cleared when the source could not be learned (see [`Self::learn`]).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn decide_inner(
        &self,
        ingress: PortId,
        hdr: &VnetHdr,
        bytes: &[u8],
        frame_len: usize,
        now: Millis,
        pre: Prehashed,
        settled: &mut bool,
    ) -> Result<Forward, DropReason> {
        let inp = match self.ports.get(ingress) {
            Some(e) if e.up => e,
            _ => return Err(DropReason::IngressDown),
        };
        // Plain frames (gso_type 0) skip decoding the GSO kind.
        let gso = hdr.gso_type != 0
            && hdr.gso().map_err(|_| DropReason::BadVnetHdr)? != crate::vnet::Gso::None;
        let frame = FrameView::parse_inlined(bytes, frame_len, inp.cfg.tpid, gso)?;
        if frame.src.is_multicast() || frame.src == Mac::ZERO {
            return Err(DropReason::InvalidSource);
        }
        if !crate::security::source_allowed(&inp.cfg, &frame, bytes) {
            return Err(DropReason::SpoofedSource);
        }
        let vid = inp.cfg.vlan.classify(frame.tag.map(|t| t.vid()))?;
        if inp.cfg.learning {
            // A prehash was made from the same L2 header and port table as this parse
            // (the tag and the VLAN classification read the same bytes), so it holds
            // whenever the parse succeeded.
            let src = if pre.src.is_none() {
                self.fdb.hashed(frame.src, vid)
            } else {
                debug_assert_eq!(pre.src.key(), packed_key(frame.src, vid));
                pre.src
            };
            *settled = self.learn(ingress, inp, src, now)?;
        }
        if frame.dst.is_8021d_reserved() {
            return Err(DropReason::ReservedGroup);
        }
        let mut only = None;
        if frame.dst.is_multicast()
            && !frame.dst.is_broadcast()
            && matches!(frame.l3, L3::Ipv4 | L3::Ipv6)
        {
            only = self.snoop(ingress, vid, frame.l3_offset, frame.frame_len, bytes, now)?;
        } else if frame.dst.is_unicast() {
            let dst = if pre.dst.is_none() {
                self.fdb.hashed(frame.dst, vid)
            } else {
                debug_assert_eq!(pre.dst.key(), packed_key(frame.dst, vid));
                pre.dst
            };
            if let Some(out) = self.fdb.lookup_hashed(dst) {
                if out == ingress {
                    return Err(DropReason::SameSegment);
                }
                self.deliverable(out, vid, frame.dst)?;
                return Ok(Forward {
                    vid,
                    ports: PortSet::single(out),
                    frame,
                });
            }
        }
        let mut ports = self.flood_set(ingress, vid, frame.dst);
        if let Some(set) = only {
            ports = ports.intersection(&set);
        }
        if ports.is_empty() {
            return Err(DropReason::NoDestination);
        }
        if let Some(b) = &inp.flood {
            if !b.take(now) {
                return Err(DropReason::StormLimited);
            }
        }
        Ok(Forward { vid, ports, frame })
    }

    /// Rule 6, IGMP/MLD snooping (RFC 4541): control packets feed the MDB and go where the
    /// snooper says; data to a snooped group goes to its members and router ports only.
    /// Returns the set the flood is restricted to (`None`: flood as usual).
    #[inline]
    fn snoop(
        &self,
        ingress: PortId,
        vid: Vid,
        l3_offset: u16,
        frame_len: u32,
        bytes: &[u8],
        now: Millis,
    ) -> Result<Option<PortSet>, DropReason> {
        let end = bytes.len().min(frame_len as usize);
        let ip = bytes.get(usize::from(l3_offset)..end).unwrap_or_default();
        if mcast::is_control(ip) {
            if end < frame_len as usize {
                // The caller had to pass the whole frame (see `needs_whole_frame`).
                return Err(DropReason::HeadersTooLong);
            }
            let action = self
                .sw
                .snooper
                .on_control(ingress, vid, ip, now)
                .map_err(|_| DropReason::McastBadControl)?;
            if !action.queries.is_empty() {
                self.sw.pending_queries.lock().extend(action.queries);
            }
            return Ok(match action.forward {
                ControlForward::Flood => None,
                ControlForward::Routers(set) => Some(set),
                ControlForward::Data => self.mcast_data(ip, vid, now)?,
            });
        }
        self.mcast_data(ip, vid, now)
    }

    #[inline]
    fn mcast_data(&self, ip: &[u8], vid: Vid, now: Millis) -> Result<Option<PortSet>, DropReason> {
        let Some(group) = mcast::dst_group(ip) else {
            return Ok(None);
        };
        match self.mcast.egress_ports(group, vid, now) {
            McastEgress::LinkLocal
            | McastEgress::NotSnooped
            | McastEgress::Unregistered {
                policy: UnregisteredPolicy::Flood,
                ..
            } => Ok(None),
            McastEgress::Registered(set) => Ok(Some(set)),
            McastEgress::Unregistered {
                policy: UnregisteredPolicy::RouterPorts,
                routers,
            } => {
                if routers.is_empty() {
                    Err(DropReason::McastUnregistered)
                } else {
                    Ok(Some(routers))
                }
            }
        }
    }

    #[inline(always)]
    /// Learns `src` on `ingress`. Returns whether the FDB now holds it there (false when
    /// learning was deferred or refused: the next frame from it tries again).
    /// Err(MacLimit): a new source beyond the port's MAC limit (the frame is dropped, as
    /// port security's "restrict" mode does; a known source still passes).
    fn learn(
        &self,
        ingress: PortId,
        inp: &PortEntry,
        src: Hashed,
        now: Millis,
    ) -> Result<bool, DropReason> {
        let c = &self.sw.counters[ingress.index()];
        match self
            .sw
            .fdb
            .learn_hashed(&self.fdb, src, ingress, inp.cfg.mac_limit, now)
        {
            Learn::Known => Ok(true),
            Learn::Learned => {
                c.learned.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Learn::Moved { .. } => {
                c.moved.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Learn::Deferred => {
                c.learn_deferred.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
            Learn::PortLimit => {
                c.learn_refused.fetch_add(1, Ordering::Relaxed);
                Err(DropReason::MacLimit)
            }
            Learn::Full | Learn::StaticConflict => {
                c.learn_refused.fetch_add(1, Ordering::Relaxed);
                Ok(false)
            }
        }
    }

    /// Can `port` receive a frame to `dst` in `vid`? (link, VLAN membership, rx filter as
    /// the frame will be delivered: tagged or not on that port.) `dst` by value, like
    /// every frame field the decision passes on: a reference would pin the whole frame
    /// view in memory instead of registers.
    #[inline(always)]
    fn deliverable(&self, port: PortId, vid: Vid, dst: Mac) -> Result<(), DropReason> {
        let e = match self.ports.get(port) {
            Some(e) if e.up => e,
            _ => return Err(DropReason::DestinationDown),
        };
        let tag = e.cfg.vlan.egress(vid).ok_or(DropReason::DestinationDown)?;
        if e.cfg.rx_filter.accepts(&dst, tag) {
            Ok(())
        } else {
            Err(DropReason::Filtered)
        }
    }

    /// Every up port in `vid` whose rx filter accepts `dst`: where a frame the switch
    /// originates itself (an IGMP/MLD query of the querier) is flooded.
    #[inline]
    pub fn flood_ports(&self, vid: Vid, dst: &Mac) -> PortSet {
        self.flood_set(PortId(u16::MAX), vid, *dst)
    }

    /// Every up port except `ingress` that is in `vid` and accepts `dst`.
    #[inline]
    fn flood_set(&self, ingress: PortId, vid: Vid, dst: Mac) -> PortSet {
        let mut out = PortSet::EMPTY;
        for p in self.ports.up.iter() {
            if p != ingress && self.deliverable(p, vid, dst).is_ok() {
                out.insert(p);
            }
        }
        out
    }

    /// Whether `fwd`'s frame fits destination `port`'s MTU (each segment, for a GSO
    /// frame; [`crate::mtu`]). `head` is the frame's first bytes as decided on. The data
    /// plane asks per destination, after the decision: a decision is shared by frames
    /// of any length (`decide_cached`), the MTU check is not.
    #[inline]
    pub fn check_mtu(
        &self,
        port: PortId,
        hdr: &VnetHdr,
        fwd: &Forward,
        head: &[u8],
    ) -> Result<(), DropReason> {
        match self.ports.get(port) {
            Some(e) if !crate::mtu::fits(e.cfg.mtu, hdr, &fwd.frame, head) => {
                Err(DropReason::MtuExceeded)
            }
            _ => Ok(()),
        }
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

#[allow(clippy::cast_possible_truncation)]
#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::{eth, ipv4};
    use crate::frame::ETHERTYPE_IPV4;
    use crate::port::PortKind;
    use crate::vlan::VlanSet;

    const BCAST: [u8; 6] = [0xff; 6];

    fn m(i: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, i]
    }

    fn sw_with(n: usize) -> (Switch, Vec<PortId>) {
        let sw = Switch::new(SwitchConfig::default());
        let ids = (0..n)
            .map(|i| {
                sw.add_port(PortConfig::new(format!("p{i}"), PortKind::Tap))
                    .unwrap()
            })
            .collect();
        (sw, ids)
    }

    fn send(sw: &Switch, from: PortId, f: &[u8], t: u64) -> Decision {
        sw.view()
            .decide(from, &VnetHdr::default(), f, f.len(), Millis(t))
    }

    fn ports(d: Decision) -> Vec<u16> {
        match d {
            Decision::Forward(f) => f.ports.iter().map(|p| p.0).collect(),
            Decision::Drop(r) => panic!("unexpected drop {r}"),
        }
    }

    fn ip_frame(dst: [u8; 6], src: [u8; 6], vid: Option<u16>) -> Vec<u8> {
        eth(dst, src, vid, ETHERTYPE_IPV4, &ipv4(17, 30))
    }

    #[test]
    fn learns_then_forwards_unicast() {
        let (sw, p) = sw_with(3);
        // Unknown unicast floods to everyone but the ingress port.
        assert_eq!(
            ports(send(&sw, p[0], &ip_frame(m(2), m(1), None), 0)),
            vec![1, 2]
        );
        // m(2) answers from port 1: now m(1) is known on port 0.
        assert_eq!(
            ports(send(&sw, p[1], &ip_frame(m(1), m(2), None), 1)),
            vec![0]
        );
        assert_eq!(
            ports(send(&sw, p[0], &ip_frame(m(2), m(1), None), 2)),
            vec![1]
        );
        assert_eq!(sw.stats(p[0]).learned, 1);
    }

    /// Each destination's own MTU decides, after a decision that flooded to all: a 9000
    /// port takes a jumbo frame, a 1500 port refuses it; both take a 1500-byte packet.
    /// Out-of-range MTUs never enter the table.
    #[test]
    fn egress_mtu_is_per_destination() {
        let sw = Switch::new(SwitchConfig::default());
        let port = |name: &str, mtu| {
            let mut c = PortConfig::new(name, PortKind::Tap);
            c.mtu = mtu;
            sw.add_port(c).unwrap()
        };
        let (a, big, small) = (port("a", 9000), port("big", 9000), port("small", 1500));
        for id in [a, big, small] {
            sw.set_link(id, true).unwrap();
        }
        let v = sw.view();
        for (ip_len, small_ok) in [(1500, true), (1501, false), (9000, false)] {
            let f = eth(BCAST, m(1), None, ETHERTYPE_IPV4, &ipv4(17, ip_len - 20));
            let Decision::Forward(fwd) = v.decide(a, &VnetHdr::default(), &f, f.len(), Millis(0))
            else {
                panic!("flood expected");
            };
            assert_eq!(ports(Decision::Forward(fwd)), vec![big.0, small.0]);
            let h = VnetHdr::default();
            assert_eq!(v.check_mtu(big, &h, &fwd, &f), Ok(()));
            let want = if small_ok {
                Ok(())
            } else {
                Err(DropReason::MtuExceeded)
            };
            assert_eq!(v.check_mtu(small, &h, &fwd, &f), want, "{ip_len}");
        }
        let mut c = PortConfig::new("tiny", PortKind::Tap);
        c.mtu = 67;
        assert_eq!(sw.add_port(c), Err(SwitchError::BadMtu(67)));
        assert_eq!(
            sw.update_port(small, |c| c.mtu = 9001),
            Err(SwitchError::BadMtu(9001))
        );
        sw.update_port(small, |c| c.mtu = 9000).unwrap();
        assert_eq!(sw.view().port(small).map(|c| c.mtu), Some(9000));
    }

    #[test]
    fn port_security_drops_spoofed_sources_and_never_learns_them() {
        let (sw, p) = sw_with(3);
        sw.update_port(p[0], |c| {
            c.mac = Some(Mac(m(1)));
            c.port_security = true;
        })
        .unwrap();
        // Claiming the gateway's MAC (m(9)) from port 0: dropped, counted, not learned.
        assert_eq!(
            send(&sw, p[0], &ip_frame(m(2), m(9), None), 0),
            Decision::Drop(DropReason::SpoofedSource)
        );
        assert_eq!(sw.stats(p[0]).drop_count(DropReason::SpoofedSource), 1);
        assert_eq!(sw.stats(p[0]).learned, 0);
        // Its own MAC goes through, and other ports are unaffected.
        assert_eq!(
            ports(send(&sw, p[0], &ip_frame(m(2), m(1), None), 1)),
            vec![1, 2]
        );
        assert_eq!(
            ports(send(&sw, p[1], &ip_frame(m(3), m(9), None), 2)),
            vec![0, 2]
        );
        // The cache does not skip the check for a repeated spoofed header either.
        let mut cache = DecisionCache::default();
        let v = sw.view();
        let f = ip_frame(m(2), m(9), None);
        for t in 3..6 {
            let d = v.decide_cached(
                &mut cache,
                p[0],
                &VnetHdr::default(),
                &f,
                f.len(),
                Millis(t),
            );
            assert_eq!(d, Decision::Drop(DropReason::SpoofedSource));
        }
    }

    #[test]
    fn flood_limit_caps_a_ports_floods_only() {
        let (sw, p) = sw_with(3);
        sw.update_port(p[0], |c| c.flood_limit_pps = 5).unwrap();
        let bc = ip_frame(BCAST, m(1), None);
        let ok = (0..20)
            .filter(|_| matches!(send(&sw, p[0], &bc, 1000), Decision::Forward(_)))
            .count();
        assert_eq!(ok, 5, "one second's burst");
        assert_eq!(sw.stats(p[0]).drop_count(DropReason::StormLimited), 15);
        // Known unicast is not a flood; another port floods freely.
        send(&sw, p[1], &ip_frame(m(1), m(2), None), 1000);
        assert_eq!(
            ports(send(&sw, p[0], &ip_frame(m(2), m(1), None), 1000)),
            vec![1]
        );
        for _ in 0..20 {
            assert!(matches!(send(&sw, p[2], &bc, 1000), Decision::Forward(_)));
        }
        // Refilled over time.
        assert!(matches!(send(&sw, p[0], &bc, 1300), Decision::Forward(_)));
    }

    #[test]
    fn broadcast_floods_except_ingress() {
        let (sw, p) = sw_with(4);
        assert_eq!(
            ports(send(&sw, p[2], &ip_frame(BCAST, m(1), None), 0)),
            vec![0, 1, 3]
        );
    }

    #[test]
    fn never_back_out_of_ingress() {
        let (sw, p) = sw_with(2);
        send(&sw, p[0], &ip_frame(BCAST, m(1), None), 0);
        send(&sw, p[0], &ip_frame(BCAST, m(2), None), 0);
        assert_eq!(
            send(&sw, p[0], &ip_frame(m(2), m(1), None), 1),
            Decision::Drop(DropReason::SameSegment)
        );
        assert_eq!(sw.stats(p[0]).drop_count(DropReason::SameSegment), 1);
    }

    #[test]
    fn invalid_sources_and_reserved_groups() {
        let (sw, p) = sw_with(2);
        let mc_src = [1, 0, 0x5e, 0, 0, 1];
        assert_eq!(
            send(&sw, p[0], &ip_frame(m(2), mc_src, None), 0),
            Decision::Drop(DropReason::InvalidSource)
        );
        assert_eq!(
            send(&sw, p[0], &ip_frame(m(2), [0; 6], None), 0),
            Decision::Drop(DropReason::InvalidSource)
        );
        let stp = [0x01, 0x80, 0xc2, 0, 0, 0];
        assert_eq!(
            send(&sw, p[0], &ip_frame(stp, m(1), None), 0),
            Decision::Drop(DropReason::ReservedGroup)
        );
        // 01:80:c2:00:00:10 is not reserved and floods.
        assert_eq!(
            ports(send(
                &sw,
                p[0],
                &ip_frame([1, 0x80, 0xc2, 0, 0, 0x10], m(1), None),
                0
            )),
            vec![1]
        );
        assert!(
            sw.fdb().view().lookup(Mac(m(1)), 1).is_some(),
            "learned before the drop"
        );
    }

    #[test]
    fn malformed_frames_are_counted_drops() {
        let (sw, p) = sw_with(2);
        assert_eq!(
            send(&sw, p[0], &[0u8; 10], 0),
            Decision::Drop(DropReason::Runt)
        );
        let bad = VnetHdr {
            gso_type: 9,
            ..Default::default()
        };
        let f = ip_frame(BCAST, m(1), None);
        assert_eq!(
            sw.view().decide(p[0], &bad, &f, f.len(), Millis(0)),
            Decision::Drop(DropReason::BadVnetHdr)
        );
        assert_eq!(sw.stats(p[0]).drop_count(DropReason::Runt), 1);
        assert_eq!(sw.stats(p[0]).drop_count(DropReason::BadVnetHdr), 1);
        assert_eq!(sw.stats(p[1]).drops, vec![]);
    }

    #[test]
    fn vlans_isolate_and_retag() {
        let sw = Switch::new(SwitchConfig::default());
        let cfg = |name: &str, vlan: VlanMode| {
            let mut c = PortConfig::new(name, PortKind::Tap);
            c.vlan = vlan;
            sw.add_port(c).unwrap()
        };
        let a10 = cfg("a10", VlanMode::Access(10));
        let b10 = cfg("b10", VlanMode::Access(10));
        let c20 = cfg("c20", VlanMode::Access(20));
        let mut allowed = VlanSet::empty();
        allowed.insert(10);
        allowed.insert(20);
        let trunk = cfg(
            "trunk",
            VlanMode::Trunk {
                native: None,
                allowed: Box::new(allowed),
            },
        );
        let f = ip_frame(BCAST, m(1), None);
        let d = send(&sw, a10, &f, 0);
        assert_eq!(ports(d), vec![b10.0, trunk.0]);
        let Decision::Forward(fwd) = d else {
            unreachable!()
        };
        let v = sw.view();
        // Toward the trunk the frame gains tag 10; toward the access port it stays as is.
        let e = v.egress(trunk, &fwd, &f);
        assert_eq!(e.delta, 4);
        assert_eq!(&e.head()[12..16], &[0x81, 0x00, 0, 10]);
        assert!(v.egress(b10, &fwd, &f).is_identity(&f));
        // Tagged 20 from the trunk reaches only c20, untagged.
        let t = ip_frame(BCAST, m(2), Some(20));
        assert_eq!(ports(send(&sw, trunk, &t, 0)), vec![c20.0]);
        // Tagged frames on an access port, untagged on a native-less trunk, VID 30: drops.
        assert_eq!(
            send(&sw, a10, &t, 0),
            Decision::Drop(DropReason::TaggedOnAccess)
        );
        assert_eq!(
            send(&sw, trunk, &f, 0),
            Decision::Drop(DropReason::UntaggedNotAllowed)
        );
        let t30 = ip_frame(BCAST, m(2), Some(30));
        assert_eq!(
            send(&sw, trunk, &t30, 0),
            Decision::Drop(DropReason::VlanNotAllowed)
        );
        // The same MAC is learned per VLAN.
        assert_eq!(sw.fdb().view().lookup(Mac(m(2)), 20), Some(trunk));
        assert_eq!(sw.fdb().view().lookup(Mac(m(2)), 10), None);
    }

    #[test]
    fn rx_filter_limits_flooding_and_unicast() {
        let sw = Switch::new(SwitchConfig::default());
        let a = sw.add_port(PortConfig::new("a", PortKind::Tap)).unwrap();
        let g = sw
            .add_port(PortConfig::new("guest", PortKind::VhostUser).with_mac(Mac(m(9))))
            .unwrap();
        let other = sw.add_port(PortConfig::new("b", PortKind::Tap)).unwrap();
        // Unknown unicast for someone else is not offered to the filtering guest.
        assert_eq!(
            ports(send(&sw, a, &ip_frame(m(5), m(1), None), 0)),
            vec![other.0]
        );
        // Its own address and broadcast are.
        assert_eq!(
            ports(send(&sw, a, &ip_frame(m(9), m(1), None), 0)),
            vec![g.0, other.0]
        );
        assert_eq!(
            ports(send(&sw, a, &ip_frame(BCAST, m(1), None), 0)),
            vec![g.0, other.0]
        );
        // nobcast through the ctrl vq.
        let mut f = RxFilter::for_mac(Mac(m(9)));
        f.nobcast = true;
        sw.set_rx_filter(g, f).unwrap();
        assert_eq!(
            ports(send(&sw, a, &ip_frame(BCAST, m(1), None), 0)),
            vec![other.0]
        );
        // A learned unicast destination whose filter refuses: counted drop.
        let mut f = RxFilter::for_mac(Mac(m(9)));
        f.nouni = true;
        sw.set_rx_filter(g, f).unwrap();
        send(&sw, g, &ip_frame(BCAST, m(9), None), 0);
        assert_eq!(
            send(&sw, a, &ip_frame(m(9), m(1), None), 0),
            Decision::Drop(DropReason::Filtered)
        );
        // Promiscuous again: everything.
        sw.set_rx_filter(g, RxFilter::promiscuous()).unwrap();
        assert_eq!(
            ports(send(&sw, a, &ip_frame(m(5), m(1), None), 0)),
            vec![g.0, other.0]
        );
    }

    #[test]
    fn link_down_and_removal() {
        let (sw, p) = sw_with(3);
        send(&sw, p[1], &ip_frame(BCAST, m(2), None), 0);
        sw.set_link(p[1], false).unwrap();
        assert_eq!(
            sw.fdb().view().lookup(Mac(m(2)), 1),
            None,
            "flushed on link down"
        );
        assert_eq!(
            ports(send(&sw, p[0], &ip_frame(BCAST, m(1), None), 0)),
            vec![2]
        );
        assert_eq!(
            send(&sw, p[1], &ip_frame(BCAST, m(2), None), 0),
            Decision::Drop(DropReason::IngressDown)
        );
        sw.set_link(p[1], true).unwrap();
        send(&sw, p[2], &ip_frame(BCAST, m(3), None), 0);
        sw.remove_port(p[2]).unwrap();
        assert_eq!(
            sw.fdb().view().lookup(Mac(m(3)), 1),
            None,
            "flushed on removal"
        );
        assert_eq!(
            ports(send(&sw, p[0], &ip_frame(m(3), m(1), None), 0)),
            vec![1]
        );
        assert!(sw.remove_port(p[2]).is_err());
        // The freed id is reused; names stay unique.
        let again = sw.add_port(PortConfig::new("p9", PortKind::Tap)).unwrap();
        assert_eq!(again, p[2]);
        assert_eq!(
            sw.add_port(PortConfig::new("p9", PortKind::Tap)),
            Err(SwitchError::DuplicateName("p9".into()))
        );
        assert_eq!(sw.port_by_name("p9"), Some(again));
    }

    #[test]
    fn mac_moves_and_limits() {
        let sw = Switch::new(SwitchConfig::default());
        let mut c = PortConfig::new("limited", PortKind::VhostUser);
        c.mac_limit = 2;
        let lim = sw.add_port(c).unwrap();
        let other = sw.add_port(PortConfig::new("o", PortKind::Tap)).unwrap();
        for i in 1..=5 {
            send(&sw, lim, &ip_frame(BCAST, m(i), None), 0);
        }
        assert_eq!(sw.fdb().port_count(lim), 2);
        assert_eq!(sw.stats(lim).learn_refused, 3);
        // Sources beyond the limit are dropped and counted; the learned ones still pass.
        assert_eq!(
            send(&sw, lim, &ip_frame(BCAST, m(5), None), 0),
            Decision::Drop(DropReason::MacLimit)
        );
        assert_eq!(sw.stats(lim).drop_count(DropReason::MacLimit), 4);
        assert_eq!(
            ports(send(&sw, lim, &ip_frame(BCAST, m(1), None), 0)),
            vec![other.0]
        );
        // Move m(1) to the other port.
        send(&sw, other, &ip_frame(BCAST, m(1), None), 1);
        assert_eq!(sw.fdb().view().lookup(Mac(m(1)), 1), Some(other));
        assert_eq!(sw.stats(other).moved, 1);
    }

    #[test]
    fn bad_vlan_config_names_the_fix() {
        let sw = Switch::new(SwitchConfig::default());
        let mut c = PortConfig::new("x", PortKind::Tap);
        c.vlan = VlanMode::Access(0);
        let e = sw.add_port(c).unwrap_err();
        assert!(e.to_string().contains("1..=4094"), "{e}");
    }

    #[test]
    fn batch_equals_single_decisions() {
        let (sw, p) = sw_with(3);
        let frames: Vec<Vec<u8>> = (1..=20u8)
            .map(|i| ip_frame(if i % 3 == 0 { BCAST } else { m(i - 1) }, m(i), None))
            .collect();
        let refs: Vec<FrameRef> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| FrameRef {
                ingress: p[i % 3],
                hdr: VnetHdr::default(),
                bytes: f,
                len: f.len(),
            })
            .collect();
        let (sw2, _) = sw_with(3);
        let mut got = Vec::new();
        sw.view()
            .decide_batch(&refs, Millis(0), |i, d| got.push((i, d)));
        let want: Vec<_> = refs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    i,
                    sw2.view()
                        .decide(r.ingress, &r.hdr, r.bytes, r.len, Millis(0)),
                )
            })
            .collect();
        assert_eq!(got, want);
    }

    /// The batch path hashes FDB keys ahead (prefetch ring); with tags, VLAN modes,
    /// truncated and malformed frames, moves and a table big enough for prefetching it
    /// must decide exactly as frame-by-frame `decide` on an identical switch does.
    #[test]
    fn prefetching_batches_equal_single_decisions() {
        let mk = || {
            let sw = Switch::new(SwitchConfig::default());
            let mut allowed = VlanSet::empty();
            allowed.insert(10);
            allowed.insert(20);
            let modes = [
                VlanMode::default(),
                VlanMode::Access(10),
                VlanMode::Trunk {
                    native: None,
                    allowed: Box::new(allowed),
                },
                VlanMode::Access(20),
            ];
            let ids: Vec<PortId> = modes
                .into_iter()
                .enumerate()
                .map(|(i, vlan)| {
                    let mut c = PortConfig::new(format!("p{i}"), PortKind::Tap);
                    c.vlan = vlan;
                    sw.add_port(c).unwrap()
                })
                .collect();
            (sw, ids)
        };
        let (a, ids) = mk();
        let (b, _) = mk();
        assert!(
            a.view().fdb.worth_prefetching(),
            "exercise the prefetch ring"
        );
        let mut x: u32 = 7;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut frames = Vec::new();
        for _ in 0..600 {
            let r = rnd();
            let dst = match r % 7 {
                0 => BCAST,
                1 => [1, 0, 0x5e, 0, 0, 1],
                _ => m((r >> 3) as u8 % 12 + 1),
            };
            let src = m((r >> 8) as u8 % 12 + 1);
            let vid = match (r >> 12) % 4 {
                0 => Some(10),
                1 => Some(20),
                2 => Some(0),
                _ => None,
            };
            let mut f = ip_frame(dst, src, vid);
            match (r >> 16) % 16 {
                0 => f.truncate(13),
                1 => f.truncate(16),
                2 => f.truncate(20),
                3 => f[6] |= 1, // group source
                _ => {}
            }
            frames.push((ids[(r >> 20) as usize % ids.len()], f));
        }
        let mut t = 0;
        for chunk in frames.chunks(37) {
            let refs: Vec<FrameRef> = chunk
                .iter()
                .map(|(p, f)| FrameRef {
                    ingress: *p,
                    hdr: VnetHdr::default(),
                    bytes: f,
                    len: f.len(),
                })
                .collect();
            let mut got = Vec::new();
            a.view()
                .decide_batch(&refs, Millis(t), |i, d| got.push((i, d)));
            let want: Vec<_> = refs
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let d = b
                        .view()
                        .decide(r.ingress, &r.hdr, r.bytes, r.len, Millis(t));
                    (i, d)
                })
                .collect();
            assert_eq!(got, want);
            t += 700;
        }
        for p in ids {
            assert_eq!(a.stats(p), b.stats(p));
        }
        assert_eq!(a.fdb().entries(Millis(t)), b.fdb().entries(Millis(t)));
    }

    /// Reusing the previous frame's decision within a burst must decide, count and learn
    /// exactly as frame-by-frame `decide` on an identical switch: runs of frames with the
    /// same L2 header but other IP headers, truncated ones inside a run, GSO headers,
    /// multicast and broadcast, VLANs and a port whose MAC limit refuses learning.
    #[test]
    fn cached_decisions_equal_single_decisions() {
        let mk = || {
            let sw = Switch::new(SwitchConfig::default());
            let mut allowed = VlanSet::empty();
            allowed.insert(10);
            let mut ids = Vec::new();
            for (i, vlan) in [
                VlanMode::default(),
                VlanMode::Access(10),
                VlanMode::Trunk {
                    native: None,
                    allowed: Box::new(allowed),
                },
                VlanMode::default(),
            ]
            .into_iter()
            .enumerate()
            {
                let mut c = PortConfig::new(format!("p{i}"), PortKind::VhostUser);
                c.vlan = vlan;
                if i == 3 {
                    c.mac_limit = 1;
                }
                ids.push(sw.add_port(c).unwrap());
            }
            (sw, ids)
        };
        let (a, ids) = mk();
        let (b, _) = mk();
        let mut x: u32 = 11;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        let mut frames = Vec::new();
        while frames.len() < 800 {
            let r = rnd();
            let dst = match r % 8 {
                0 => BCAST,
                1 => [1, 0, 0x5e, 0, 0, 1],
                _ => m((r >> 3) as u8 % 16 + 1),
            };
            let src = m((r >> 8) as u8 % 16 + 1);
            let vid = match (r >> 12) % 3 {
                0 => Some(10),
                _ => None,
            };
            let ingress = ids[(r >> 20) as usize % ids.len()];
            // A run of one conversation: same L2 header, other IP headers.
            for k in 0..(r >> 24) % 5 + 1 {
                let mut f = ip_frame(dst, src, vid);
                let ip = 14 + if vid.is_some() { 4 } else { 0 };
                f[ip + 8] = k as u8; // TTL
                f[ip + 15] = (r >> (k * 3)) as u8; // source address
                f[ip + 10..ip + 12].fill(0);
                let c = crate::offload::checksum(&f[ip..ip + 20]);
                f[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
                let mut hdr = VnetHdr::default();
                match rnd() % 12 {
                    0 => f.truncate(ip + 10),
                    1 => f[ip] = 0x65,     // not IPv4 after all
                    2 => hdr.gso_type = 1, // TCPv4 GSO on a UDP frame: dropped
                    _ => {}
                }
                frames.push((ingress, hdr, f));
            }
        }
        let mut t = 0;
        let mut hits = 0;
        for chunk in frames.chunks(40) {
            let va = a.view();
            let vb = b.view();
            let mut cache = DecisionCache::default();
            for (p, hdr, f) in chunk {
                hits +=
                    usize::from(cache.last.as_ref().is_some_and(|c| {
                        c.ingress == *p && f.get(..16).is_some_and(|k| k == c.l2)
                    }));
                let got = va.decide_cached(&mut cache, *p, hdr, f, f.len(), Millis(t));
                let want = vb.decide(*p, hdr, f, f.len(), Millis(t));
                assert_eq!(got, want, "frame {f:02x?} from {p:?}");
                // Group destinations go through snooping every time (an IGMP report can
                // share its first 16 bytes with data to its group).
                if f[0] & 1 != 0 {
                    assert!(cache.last.is_none());
                }
            }
            t += 700;
        }
        assert!(hits > 60, "the runs must exercise the cache: {hits} hits");
        for p in ids {
            assert_eq!(a.stats(p), b.stats(p));
        }
        assert_eq!(a.fdb().entries(Millis(t)), b.fdb().entries(Millis(t)));
    }

    fn igmp_frame(src_mac: [u8; 6], src_ip: [u8; 4], ty: u8, group: [u8; 4]) -> Vec<u8> {
        use crate::mcast::build::{ethernet, ipv4_igmp};
        let mut msg = vec![ty, 0, 0, 0];
        msg.extend_from_slice(&group);
        let c = crate::offload::checksum(&msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
        let dst_ip = if ty == 0x17 { [224, 0, 0, 2] } else { group };
        let ip = ipv4_igmp(src_ip.into(), dst_ip.into(), &msg);
        let dst_mac = [0x01, 0, 0x5e, dst_ip[1] & 0x7f, dst_ip[2], dst_ip[3]];
        ethernet(Mac(dst_mac), Mac(src_mac), ETHERTYPE_IPV4, &ip)
    }

    fn mcast_data(src_mac: [u8; 6], group: [u8; 4]) -> Vec<u8> {
        let mut ip = ipv4(17, 30);
        ip[16..20].copy_from_slice(&group);
        eth(
            [0x01, 0, 0x5e, group[1] & 0x7f, group[2], group[3]],
            src_mac,
            None,
            ETHERTYPE_IPV4,
            &ip,
        )
    }

    #[test]
    fn igmp_snooping_narrows_multicast() {
        let (sw, p) = sw_with(4);
        let g = [239, 1, 1, 1];
        // Before anyone joins, unregistered multicast floods.
        assert_eq!(
            ports(send(&sw, p[3], &mcast_data(m(4), g), 0)),
            vec![0, 1, 2]
        );
        // Ports 0 and 1 join; their reports go to router ports only (none yet).
        for i in 0..2u8 {
            let r = igmp_frame(m(i + 1), [198, 18, 0, i + 1], 0x16, g);
            assert_eq!(
                send(&sw, p[i as usize], &r, 10),
                Decision::Drop(DropReason::NoDestination)
            );
        }
        assert_eq!(ports(send(&sw, p[3], &mcast_data(m(4), g), 20)), vec![0, 1]);
        // Link-local groups are always flooded.
        assert_eq!(
            ports(send(&sw, p[3], &mcast_data(m(4), [224, 0, 0, 251]), 20)),
            vec![0, 1, 2]
        );
        assert_eq!(sw.mdb(Millis(20)).len(), 1);
        // A corrupt report is dropped, counted and not learnt from.
        let mut bad = igmp_frame(m(3), [198, 18, 0, 3], 0x16, g);
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        assert_eq!(
            send(&sw, p[2], &bad, 30),
            Decision::Drop(DropReason::McastBadControl)
        );
        assert_eq!(ports(send(&sw, p[3], &mcast_data(m(4), g), 40)), vec![0, 1]);
        // Removing a member port forgets its membership.
        sw.remove_port(p[1]).unwrap();
        assert_eq!(ports(send(&sw, p[3], &mcast_data(m(4), g), 50)), vec![0]);
    }

    #[test]
    fn whole_frame_needed_only_for_control() {
        let r = igmp_frame(m(1), [198, 18, 0, 1], 0x16, [239, 1, 1, 1]);
        assert!(needs_whole_frame(&r[..40], r.len(), 0x8100));
        assert!(!needs_whole_frame(&r, r.len(), 0x8100));
        let d = mcast_data(m(1), [239, 1, 1, 1]);
        assert!(!needs_whole_frame(&d[..40], d.len(), 0x8100));
        let u = ip_frame(m(2), m(1), None);
        assert!(!needs_whole_frame(&u[..20], u.len(), 0x8100));
        let (sw, p) = sw_with(2);
        assert_eq!(
            sw.view()
                .decide(p[0], &VnetHdr::default(), &r[..40], r.len(), Millis(0)),
            Decision::Drop(DropReason::HeadersTooLong)
        );
    }

    #[test]
    fn aging_through_the_switch() {
        let (sw, p) = sw_with(2);
        send(&sw, p[0], &ip_frame(BCAST, m(1), None), 0);
        assert_eq!(sw.age(Millis(299_999)), 0);
        assert_eq!(sw.age(Millis(300_000)), 1);
        assert_eq!(
            ports(send(&sw, p[1], &ip_frame(m(1), m(2), None), 300_001)),
            vec![0]
        );
    }
}
