//! The snooping state machine: MDB of (group, VLAN) → member ports with timers, router
//! ports, leave processing and the querier schedule (RFC 4541 §2.1, RFC 3376 §6–8,
//! RFC 3810 §7–9). Plain `&mut self` code with an injected clock; [`super::Snooper`]
//! puts it behind a mutex and publishes [`Snapshot`]s for the data path.
//!
//! Sharing with readers: a group's member list and a VLAN's router list live in `Arc`s
//! that the published snapshot shares. Their expiry times are atomics, so the common
//! case — a report refreshing an existing member — is one relaxed store and publishes
//! nothing; only a change of the *set* (join, removal, expiry) builds a new snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use super::addr::{v6_link_local_from_mac, Family, GroupAddr, NodeAddr};
use super::build::{igmp_query_frame, mld_query_frame, QueryParams};
use super::config::{RouterMode, SnoopConfig, Timers, UnregisteredPolicy, VlanSnoopConfig};
use super::querier::{is_unspecified, QuerierState};
use super::wire::{Control, Message, Query, RecordType, Version};
use crate::port::{PortId, MAX_PORTS};
use crate::portset::PortSet;
use crate::time::Millis;
use crate::vlan::Vid;

/// Sources remembered per INCLUDE-mode (group, port); more means "any source" (EXCLUDE
/// mode), which only costs precision, never correctness.
pub const MAX_INCLUDE_SOURCES: usize = 64;

/// Expiry value that never passes (static entries, PIM holdtime 0xffff).
const FOREVER: u64 = u64::MAX;

pub(crate) type Key = (GroupAddr, Vid);

/// One member port of a group.
#[derive(Debug)]
pub(crate) struct MemberSlot {
    pub port: PortId,
    /// Milliseconds; the member is live while `now < expires`.
    pub expires: AtomicU64,
    /// An IGMPv1 host reported on this port until then: leaves are ignored (RFC 2236 §3,
    /// "older version host present").
    pub v1_until: AtomicU64,
}

/// The member ports of one (group, VLAN).
#[derive(Debug, Default)]
pub(crate) struct Group {
    pub members: Vec<MemberSlot>,
}

impl Group {
    fn find(&self, port: PortId) -> Option<&MemberSlot> {
        self.members.iter().find(|m| m.port == port)
    }

    /// Ports whose membership has not expired at `now`.
    #[inline]
    pub fn live(&self, now: u64) -> PortSet {
        let mut s = PortSet::EMPTY;
        for m in &self.members {
            if now < m.expires.load(Relaxed) {
                s.insert(m.port);
            }
        }
        s
    }

    /// A copy with the members for which `keep` is true, plus `add`.
    fn rebuilt(&self, keep: impl Fn(&MemberSlot) -> bool, add: Option<(PortId, u64)>) -> Group {
        let mut members: Vec<MemberSlot> = self
            .members
            .iter()
            .filter(|m| keep(m))
            .map(|m| MemberSlot {
                port: m.port,
                expires: AtomicU64::new(m.expires.load(Relaxed)),
                v1_until: AtomicU64::new(m.v1_until.load(Relaxed)),
            })
            .collect();
        if let Some((port, expires)) = add {
            members.push(MemberSlot {
                port,
                expires: AtomicU64::new(expires),
                v1_until: AtomicU64::new(0),
            });
        }
        Group { members }
    }
}

/// One learnt router port.
#[derive(Debug)]
pub(crate) struct RouterSlot {
    pub port: PortId,
    pub expires: AtomicU64,
}

/// Learnt router ports of one (VLAN, family).
#[derive(Debug, Default)]
pub(crate) struct Routers {
    pub slots: Vec<RouterSlot>,
}

impl Routers {
    #[inline]
    fn live(&self, now: u64) -> PortSet {
        let mut s = PortSet::EMPTY;
        for r in &self.slots {
            if now < r.expires.load(Relaxed) {
                s.insert(r.port);
            }
        }
        s
    }
}

/// Where a data frame to a multicast group goes, before the decision path applies VLAN
/// membership, port state, rx filters and removes the ingress port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McastEgress {
    /// 224.0.0.0/24 or ff02::/16 (and ff00::/15): always flooded (RFC 4541 §2.1.2).
    LinkLocal,
    /// Snooping is off (globally or in this VLAN): flood.
    NotSnooped,
    /// Joined group: member ports plus router ports (RFC 4541 §2.1.2).
    Registered(PortSet),
    /// Nobody joined: flood, or router ports only, as the VLAN's policy says.
    Unregistered {
        policy: UnregisteredPolicy,
        routers: PortSet,
    },
}

/// The read-only state the data path looks up; published by the writer, shared by all
/// workers without locking.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub enabled: bool,
    pub default_vlan: Option<VlanSnoopConfig>,
    pub vlan_cfg: HashMap<Vid, VlanSnoopConfig>,
    pub groups: HashMap<Key, Arc<Group>>,
    pub routers: HashMap<(Vid, Family), Arc<Routers>>,
    pub static_routers: PortSet,
}

impl Snapshot {
    /// Router ports (static and live learnt) of a VLAN and family.
    #[inline]
    pub fn routers(&self, vid: Vid, fam: Family, now: u64) -> PortSet {
        match self.routers.get(&(vid, fam)) {
            Some(r) => r.live(now).union(&self.static_routers),
            None => self.static_routers,
        }
    }

    /// The egress of a data frame to `group` in `vid` at `now`. No allocation, no lock.
    #[inline]
    pub fn egress(&self, group: GroupAddr, vid: Vid, now: u64) -> McastEgress {
        if group.is_link_local() {
            return McastEgress::LinkLocal;
        }
        let cfg = match self.vlan_cfg.get(&vid).copied().or(self.default_vlan) {
            Some(c) if self.enabled && c.snooping => c,
            _ => return McastEgress::NotSnooped,
        };
        let routers = self.routers(vid, group.family(), now);
        if let Some(g) = self.groups.get(&(group, vid)) {
            let members = g.live(now);
            if !members.is_empty() {
                return McastEgress::Registered(members.union(&routers));
            }
        }
        McastEgress::Unregistered {
            policy: cfg.unregistered,
            routers,
        }
    }
}

/// What to do with the control packet itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlForward {
    /// Queries, PIM, MRD, unknown IGMP, or snooping off: flood in the VLAN.
    Flood,
    /// Reports and leaves: only to router ports (RFC 4541 §2.1.1), so hosts do not
    /// suppress their own reports. Empty when there is no router (our querier consumed it).
    Routers(PortSet),
    /// Not a snooping message (e.g. neighbour discovery): forward as multicast data.
    Data,
}

/// A query the data plane must send: a complete untagged Ethernet frame, to be flooded
/// to every port of `vid` (tagged as each port's VLAN mode says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryToSend {
    pub vid: Vid,
    pub family: Family,
    /// `None` for a general query.
    pub group: Option<GroupAddr>,
    pub frame: Vec<u8>,
}

/// The outcome of a valid control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnoopAction {
    pub forward: ControlForward,
    /// Group-specific queries our querier sends right away (leave processing).
    pub queries: Vec<QueryToSend>,
}

/// Event and drop counters (the control plane's `stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SnoopStats {
    pub queries: u64,
    pub reports: u64,
    pub leaves: u64,
    pub pim_hellos: u64,
    pub mrd: u64,
    pub other: u64,
    pub groups_added: u64,
    pub groups_expired: u64,
    pub fast_leaves: u64,
    /// Leaves ignored because an IGMPv1 host is present on the port.
    pub leaves_ignored_v1: u64,
    /// Joins refused by the per-port group limit.
    pub limit_refused: u64,
    pub router_learned: u64,
    pub queries_sent: u64,
    /// Snapshots published for the data path.
    pub publishes: u64,
    /// Publishes postponed because the publish budget was spent (join/leave storm).
    pub publish_deferred: u64,
    pub drop_bad_ip_header: u64,
    pub drop_bad_ip_checksum: u64,
    pub drop_bad_length: u64,
    pub drop_bad_checksum: u64,
    pub drop_fragment: u64,
    pub drop_no_router_alert: u64,
    pub drop_bad_hop_limit: u64,
    pub drop_bad_source: u64,
    pub drop_bad_group: u64,
}

/// Per-port snooping settings and accounting.
#[derive(Debug, Clone, Copy, Default)]
struct PortState {
    groups: u32,
    fast_leave: bool,
    router: RouterMode,
    limit: Option<u32>,
}

/// A leave being processed: group-specific queries still to send (RFC 3376 §6.6.3.1).
#[derive(Debug, Clone, Copy)]
struct Pending {
    key: Key,
    left: u8,
    next_at: u64,
}

/// Port state of one (group, VLAN, port) beyond its timer: INCLUDE-mode source list.
/// Absent = EXCLUDE mode (any source), which v1/v2 joins and IS_EX/TO_EX records mean.
type IncludeSources = Vec<NodeAddr>;

/// A row of `ringswitch ctl mdb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdbEntry {
    pub group: GroupAddr,
    pub vid: Vid,
    /// (port, expiry) of live members, ascending by port.
    pub ports: Vec<(PortId, Millis)>,
}

/// A router port as the control plane shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterEntry {
    pub vid: Vid,
    pub family: Family,
    pub port: PortId,
    /// `None` for a static router port (then `vid`/`family` are not meaningful: all).
    pub expires: Option<Millis>,
}

/// The querier's view of one (VLAN, family).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuerierStatus {
    pub vid: Vid,
    pub family: Family,
    /// We are the querier here.
    pub active: bool,
    /// The elected other querier, if one is present.
    pub other: Option<NodeAddr>,
    pub timers: Timers,
}

pub(crate) struct Mdb {
    cfg: SnoopConfig,
    vlan_cfg: HashMap<Vid, VlanSnoopConfig>,
    groups: HashMap<Key, Arc<Group>>,
    routers: HashMap<(Vid, Family), Arc<Routers>>,
    queriers: HashMap<(Vid, Family), QuerierState>,
    ports: Vec<PortState>,
    include: HashMap<(Key, PortId), IncludeSources>,
    pending: Vec<Pending>,
    pub stats: SnoopStats,
    /// The member or router *sets* changed since the last snapshot.
    pub dirty: bool,
    pub publish_budget: PublishBudget,
}

/// Publishes a packet storm may cause at once.
pub const PUBLISH_BURST: u32 = 256;
/// One more publish per this many milliseconds.
pub const PUBLISH_REFILL_MS: u64 = 10;

/// Token bucket limiting snapshot publishes driven by control packets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishBudget {
    tokens: u32,
    last: u64,
}

impl PublishBudget {
    fn new() -> PublishBudget {
        PublishBudget {
            tokens: PUBLISH_BURST,
            last: 0,
        }
    }

    /// Takes a token at `now`, refilling first.
    pub fn take(&mut self, now: u64) -> bool {
        let earned = now.saturating_sub(self.last) / PUBLISH_REFILL_MS;
        if earned > 0 {
            self.tokens = u32::try_from(earned)
                .unwrap_or(u32::MAX)
                .saturating_add(self.tokens)
                .min(PUBLISH_BURST);
            self.last = self.last.saturating_add(earned * PUBLISH_REFILL_MS);
        } else if now < self.last {
            // The clock went backwards (a contract violation): restart from here.
            self.last = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// How a report record or message affects one port's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Join or refresh in EXCLUDE mode (v1/v2/MLDv1 reports, IS_EX, TO_EX).
    JoinAny { v1: bool },
    /// Join or refresh with these INCLUDE sources (IS_IN/ALLOW/TO_IN with sources).
    JoinInclude { to_in: bool },
    /// Sources blocked (BLOCK): a leave if an INCLUDE port has none left.
    Block,
    /// Leave (v2 leave, MLD done, TO_IN{} / IS_IN{}).
    Leave,
    /// Nothing (ALLOW{}, BLOCK{}).
    Nothing,
}

impl Mdb {
    pub fn new(cfg: SnoopConfig) -> Mdb {
        Mdb {
            cfg,
            vlan_cfg: HashMap::new(),
            groups: HashMap::new(),
            routers: HashMap::new(),
            queriers: HashMap::new(),
            ports: vec![PortState::default(); MAX_PORTS],
            include: HashMap::new(),
            pending: Vec::new(),
            stats: SnoopStats::default(),
            dirty: true,
            publish_budget: PublishBudget::new(),
        }
    }

    pub fn config(&self) -> &SnoopConfig {
        &self.cfg
    }

    fn default_timers(&self) -> Timers {
        Timers {
            robustness: self.cfg.robustness,
            query_interval_ms: self.cfg.query_interval_ms,
            query_response_ms: self.cfg.query_response_ms,
        }
    }

    fn timers(&self, vid: Vid, fam: Family) -> Timers {
        self.queriers
            .get(&(vid, fam))
            .map(|q| q.timers)
            .unwrap_or_else(|| self.default_timers())
    }

    pub fn vlan_config(&self, vid: Vid) -> VlanSnoopConfig {
        self.vlan_cfg
            .get(&vid)
            .copied()
            .unwrap_or_else(|| self.cfg.vlan_default())
    }

    pub fn set_vlan(&mut self, vid: Vid, c: VlanSnoopConfig) {
        self.vlan_cfg.insert(vid, c);
        self.dirty = true;
    }

    pub fn set_fast_leave(&mut self, port: PortId, on: bool) {
        if let Some(p) = self.ports.get_mut(port.index()) {
            p.fast_leave = on;
        }
    }

    pub fn set_group_limit(&mut self, port: PortId, limit: Option<u32>) {
        if let Some(p) = self.ports.get_mut(port.index()) {
            p.limit = limit;
        }
    }

    pub fn set_router_mode(&mut self, port: PortId, mode: RouterMode) {
        if let Some(p) = self.ports.get_mut(port.index()) {
            p.router = mode;
            if mode == RouterMode::Never {
                self.forget_router(port, None);
            }
            self.dirty = true;
        }
    }

    fn port(&self, port: PortId) -> PortState {
        self.ports.get(port.index()).copied().unwrap_or_default()
    }

    /// The snooper's own address in a family, if its querier runs in `vid`.
    fn own_addr(&self, vid: Vid, fam: Family) -> Option<NodeAddr> {
        let vc = self.vlan_config(vid);
        if !(self.cfg.enabled && vc.snooping && vc.querier) {
            return None;
        }
        Some(match fam {
            Family::V4 => NodeAddr::V4(self.cfg.querier.ip4),
            Family::V6 => NodeAddr::V6(
                self.cfg
                    .querier
                    .ip6
                    .unwrap_or_else(|| v6_link_local_from_mac(self.cfg.querier.mac)),
            ),
        })
    }

    /// Is our querier the active one in (vid, fam) at `now`?
    fn we_query(&self, vid: Vid, fam: Family, now: u64) -> bool {
        self.own_addr(vid, fam).is_some()
            && !self
                .queriers
                .get(&(vid, fam))
                .is_some_and(|q| q.other_present(now))
    }

    /// Somebody (we or an elected other querier) will ask the group.
    fn querier_present(&self, vid: Vid, fam: Family, now: u64) -> bool {
        self.we_query(vid, fam, now)
            || self
                .queriers
                .get(&(vid, fam))
                .is_some_and(|q| q.other_present(now))
    }

    fn querier_entry(&mut self, vid: Vid, fam: Family) -> &mut QuerierState {
        let t = self.default_timers();
        self.queriers
            .entry((vid, fam))
            .or_insert_with(|| QuerierState::new(t))
    }

    /// Handles a validated control packet that arrived on `ingress` in `vid`.
    pub fn handle(
        &mut self,
        ingress: PortId,
        vid: Vid,
        ctl: &Control<'_>,
        now: u64,
    ) -> SnoopAction {
        let vc = self.vlan_config(vid);
        let flood = SnoopAction {
            forward: ControlForward::Flood,
            queries: Vec::new(),
        };
        if !(self.cfg.enabled && vc.snooping) {
            return flood;
        }
        let fam = match ctl.src {
            NodeAddr::V4(_) => Family::V4,
            NodeAddr::V6(_) => Family::V6,
        };
        // Make the VLAN known to the querier.
        self.querier_entry(vid, Family::V4);
        self.querier_entry(vid, Family::V6);
        let mut queries = Vec::new();
        match ctl.msg {
            Message::Query(q) => {
                self.stats.queries += 1;
                self.on_query(ingress, vid, fam, ctl.src, &q, now);
                return flood;
            }
            Message::PimHello { holdtime_s } => {
                self.stats.pim_hellos += 1;
                let until = match holdtime_s {
                    0xffff => FOREVER,
                    h => now.saturating_add(u64::from(h) * 1000),
                };
                if holdtime_s == 0 {
                    self.forget_router(ingress, Some((vid, fam)));
                } else {
                    self.learn_router(ingress, vid, fam, until);
                }
                return flood;
            }
            Message::MrdAdvertisement { interval_s } => {
                self.stats.mrd += 1;
                // RFC 4286 leaves the snooper's timeout open: three advertisement intervals
                // (default 20 s) tolerate two lost advertisements.
                let iv = if interval_s == 0 {
                    20
                } else {
                    u64::from(interval_s)
                };
                self.learn_router(ingress, vid, fam, now.saturating_add(3 * iv * 1000));
                return flood;
            }
            Message::MrdTermination => {
                self.stats.mrd += 1;
                self.forget_router(ingress, Some((vid, fam)));
                return flood;
            }
            Message::Other => {
                self.stats.other += 1;
                return flood;
            }
            Message::Report { version, group } => {
                self.stats.reports += 1;
                let v1 = version == Version::IgmpV1;
                self.apply(
                    ingress,
                    vid,
                    group,
                    Effect::JoinAny { v1 },
                    &[],
                    now,
                    &mut queries,
                );
            }
            Message::Leave { group } => {
                self.stats.leaves += 1;
                self.apply(ingress, vid, group, Effect::Leave, &[], now, &mut queries);
            }
            Message::ReportV3 { records } => {
                self.stats.reports += 1;
                let mut srcs: Vec<NodeAddr> = Vec::new();
                for r in records.iter() {
                    srcs.clear();
                    srcs.extend(r.source_addrs().take(MAX_INCLUDE_SOURCES + 1));
                    let n = r.sources;
                    let effect = match r.kind {
                        RecordType::ModeIsExclude | RecordType::ChangeToExclude => {
                            Effect::JoinAny { v1: false }
                        }
                        RecordType::ModeIsInclude | RecordType::ChangeToInclude if n == 0 => {
                            Effect::Leave
                        }
                        RecordType::ModeIsInclude | RecordType::AllowNewSources if n > 0 => {
                            Effect::JoinInclude { to_in: false }
                        }
                        RecordType::ChangeToInclude => Effect::JoinInclude { to_in: true },
                        RecordType::BlockOldSources if n > 0 => Effect::Block,
                        _ => Effect::Nothing,
                    };
                    if effect == Effect::Leave {
                        self.stats.leaves += 1;
                    }
                    self.apply(ingress, vid, r.group, effect, &srcs, now, &mut queries);
                }
            }
        }
        SnoopAction {
            forward: ControlForward::Routers(self.router_set(vid, fam, now)),
            queries,
        }
    }

    fn router_set(&self, vid: Vid, fam: Family, now: u64) -> PortSet {
        let mut s = self.static_routers();
        if let Some(r) = self.routers.get(&(vid, fam)) {
            s = s.union(&r.live(now));
        }
        s
    }

    // `ports` has one entry per switch port (at most MAX_PORTS): every index fits a u16.
    #[allow(clippy::cast_possible_truncation)]
    pub fn static_routers(&self) -> PortSet {
        self.ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.router == RouterMode::Static)
            .map(|(i, _)| PortId(i as u16))
            .collect()
    }

    fn on_query(
        &mut self,
        ingress: PortId,
        vid: Vid,
        fam: Family,
        src: NodeAddr,
        q: &Query,
        now: u64,
    ) {
        // RFC 4541 §2.1.1: queries from 0.0.0.0 (a snooping switch's proxy querier)
        // neither make a router port nor take part in the election.
        if is_unspecified(&src) || self.port(ingress).router == RouterMode::Never {
            return;
        }
        let ours = self.own_addr(vid, fam);
        let qs = self.querier_entry(vid, fam);
        let elected = qs.heard_query(src, ours, now);
        if elected && q.group.is_none() {
            // Adopt the querier's timers (RFC 3376 §4.1.6/§4.1.7, RFC 3810 §5.1.8/§5.1.9).
            if let Some(r) = q.qrv {
                qs.timers.robustness = r;
            }
            if let Some(s) = q.qqi_s {
                qs.timers.query_interval_ms = s.saturating_mul(1000).max(1000);
            }
            if q.version != Version::IgmpV1 {
                qs.timers.query_response_ms = q.max_resp_ms.max(100);
            }
        }
        let until = now.saturating_add(qs.timers.other_querier_ms());
        self.learn_router(ingress, vid, fam, until);
    }

    fn learn_router(&mut self, port: PortId, vid: Vid, fam: Family, until: u64) {
        if port.index() >= MAX_PORTS || self.port(port).router == RouterMode::Never {
            return;
        }
        let r = self.routers.entry((vid, fam)).or_default();
        if let Some(s) = r.slots.iter().find(|s| s.port == port) {
            s.expires.fetch_max(until, Relaxed);
            return;
        }
        let mut slots: Vec<RouterSlot> = r
            .slots
            .iter()
            .map(|s| RouterSlot {
                port: s.port,
                expires: AtomicU64::new(s.expires.load(Relaxed)),
            })
            .collect();
        slots.push(RouterSlot {
            port,
            expires: AtomicU64::new(until),
        });
        *r = Arc::new(Routers { slots });
        self.stats.router_learned += 1;
        self.dirty = true;
    }

    /// Forgets `port` as a learnt router in one (VLAN, family), or everywhere.
    fn forget_router(&mut self, port: PortId, only: Option<(Vid, Family)>) {
        for (k, r) in self.routers.iter_mut() {
            if only.is_some_and(|o| o != *k) || !r.slots.iter().any(|s| s.port == port) {
                continue;
            }
            let slots = r
                .slots
                .iter()
                .filter(|s| s.port != port)
                .map(|s| RouterSlot {
                    port: s.port,
                    expires: AtomicU64::new(s.expires.load(Relaxed)),
                })
                .collect();
            *r = Arc::new(Routers { slots });
            self.dirty = true;
        }
    }

    /// Applies one membership effect of `port` on (group, vid).
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        port: PortId,
        vid: Vid,
        group: GroupAddr,
        effect: Effect,
        srcs: &[NodeAddr],
        now: u64,
        queries: &mut Vec<QueryToSend>,
    ) {
        if !group.is_snoopable() || port.index() >= MAX_PORTS {
            return;
        }
        let key = (group, vid);
        let fam = group.family();
        let gmi = now.saturating_add(self.timers(vid, fam).membership_ms());
        let member = self.groups.get(&key).and_then(|g| g.find(port)).is_some();
        match effect {
            Effect::Nothing => {}
            Effect::JoinAny { v1 } => {
                if self.join(port, key, gmi) {
                    self.include.remove(&(key, port));
                    if v1 {
                        if let Some(m) = self.groups.get(&key).and_then(|g| g.find(port)) {
                            m.v1_until.store(gmi, Relaxed);
                        }
                    }
                }
            }
            Effect::JoinInclude { to_in } => {
                let exclude = member && !self.include.contains_key(&(key, port));
                if !self.join(port, key, gmi) {
                    return;
                }
                if exclude && to_in {
                    // EXCLUDE → TO_IN(S): the port may no longer want every source; become
                    // INCLUDE(S) and ask (RFC 3376 §6.4.2 "Send Q(G)"). Not a leave: with
                    // nobody to ask (no querier) or one host only (fast leave) the timer
                    // stays, or the host that still wants S would lose it.
                    self.include.insert((key, port), srcs.to_vec());
                    if !self.port(port).fast_leave && self.querier_present(vid, fam, now) {
                        self.group_query(port, key, now, queries);
                    }
                } else if !exclude {
                    let set = self.include.entry((key, port)).or_default();
                    for s in srcs {
                        if !set.contains(s) {
                            set.push(*s);
                        }
                    }
                    if set.len() > MAX_INCLUDE_SOURCES {
                        self.include.remove(&(key, port));
                    }
                }
            }
            Effect::Block => {
                if let Some(set) = self.include.get_mut(&(key, port)) {
                    set.retain(|s| !srcs.contains(s));
                    if set.is_empty() && member {
                        self.leave(port, key, now, queries);
                    }
                }
            }
            Effect::Leave => {
                if member {
                    self.include.insert((key, port), Vec::new());
                    self.leave(port, key, now, queries);
                }
            }
        }
    }

    /// Joins or refreshes `port` in `key` until `until`. False if the port's group limit
    /// refused a new membership.
    fn join(&mut self, port: PortId, key: Key, until: u64) -> bool {
        if let Some(m) = self.groups.get(&key).and_then(|g| g.find(port)) {
            m.expires.store(until, Relaxed);
            return true;
        }
        let ps = self.port(port);
        let limit = ps.limit.unwrap_or(self.cfg.group_limit);
        if limit != 0 && ps.groups >= limit {
            self.stats.limit_refused += 1;
            return false;
        }
        let g = self.groups.entry(key).or_default();
        *g = Arc::new(g.rebuilt(|_| true, Some((port, until))));
        if let Some(p) = self.ports.get_mut(port.index()) {
            p.groups += 1;
        }
        self.stats.groups_added += 1;
        self.dirty = true;
        true
    }

    fn remove_member(&mut self, port: PortId, key: Key) {
        let Some(g) = self.groups.get_mut(&key) else {
            return;
        };
        if g.find(port).is_none() {
            return;
        }
        let ng = g.rebuilt(|m| m.port != port, None);
        if ng.members.is_empty() {
            self.groups.remove(&key);
        } else {
            *g = Arc::new(ng);
        }
        self.include.remove(&(key, port));
        if let Some(p) = self.ports.get_mut(port.index()) {
            p.groups = p.groups.saturating_sub(1);
        }
        self.dirty = true;
    }

    /// Leave processing (RFC 4541 §2.1.1, RFC 2236 §3, RFC 3376 §6.6.3.1): immediate on
    /// fast-leave ports, else lower the port's timer to the last member query time and let
    /// the querier (us, if elected) ask the group.
    fn leave(&mut self, port: PortId, key: Key, now: u64, queries: &mut Vec<QueryToSend>) {
        let Some(m) = self.groups.get(&key).and_then(|g| g.find(port)) else {
            return;
        };
        if now < m.v1_until.load(Relaxed) {
            self.stats.leaves_ignored_v1 += 1;
            return;
        }
        if self.port(port).fast_leave {
            self.stats.fast_leaves += 1;
            self.remove_member(port, key);
            return;
        }
        self.group_query(port, key, now, queries);
    }

    /// Lowers `port`'s timer in `key` to the last member query time and, if we are the
    /// querier, sends the first group-specific query now and schedules the rest.
    fn group_query(&mut self, port: PortId, key: Key, now: u64, queries: &mut Vec<QueryToSend>) {
        let count = self.cfg.last_member_count.max(1);
        let lmqt = now.saturating_add(u64::from(count) * self.cfg.last_member_interval_ms);
        if let Some(m) = self.groups.get(&key).and_then(|g| g.find(port)) {
            m.expires.fetch_min(lmqt, Relaxed);
        }
        let fam = key.0.family();
        if !self.we_query(key.1, fam, now) {
            return;
        }
        if let Some(p) = self.pending.iter_mut().find(|p| p.key == key) {
            // A query round for this group runs already; restart its count.
            p.left = count;
            return;
        }
        if let Some(q) = self.build_query(key.1, fam, Some(key.0), self.cfg.last_member_interval_ms)
        {
            queries.push(q);
            self.stats.queries_sent += 1;
        }
        if count > 1 {
            self.pending.push(Pending {
                key,
                left: count - 1,
                next_at: now.saturating_add(self.cfg.last_member_interval_ms),
            });
        }
    }

    fn build_query(
        &self,
        vid: Vid,
        fam: Family,
        group: Option<GroupAddr>,
        max_resp_ms: u64,
    ) -> Option<QueryToSend> {
        let t = self.timers(vid, fam);
        let qc = &self.cfg.querier;
        let (kind, own) = match fam {
            Family::V4 => (qc.igmp, self.own_addr(vid, fam)?),
            Family::V6 => (qc.mld, self.own_addr(vid, fam)?),
        };
        let params = QueryParams {
            kind,
            group,
            max_resp_ms,
            robustness: t.robustness,
            query_interval_s: t.query_interval_ms / 1000,
            suppress: false,
        };
        let frame = match own {
            NodeAddr::V4(a) => igmp_query_frame(a, qc.mac, &params),
            NodeAddr::V6(a) => mld_query_frame(a, qc.mac, &params),
        };
        Some(QueryToSend {
            vid,
            family: fam,
            group,
            frame,
        })
    }

    /// Timers: expiry of members and router ports, pending group-specific queries, and the
    /// querier's general queries.
    pub fn tick(&mut self, now: u64) -> Vec<QueryToSend> {
        // Members.
        let mut expired: Vec<(Key, PortId)> = Vec::new();
        for (k, g) in &self.groups {
            for m in &g.members {
                if now >= m.expires.load(Relaxed) {
                    expired.push((*k, m.port));
                }
            }
        }
        for (k, p) in expired {
            self.stats.groups_expired += 1;
            self.remove_member(p, k);
        }
        // Router ports.
        let mut dead: Vec<((Vid, Family), PortId)> = Vec::new();
        for (k, r) in &self.routers {
            for s in &r.slots {
                if now >= s.expires.load(Relaxed) {
                    dead.push((*k, s.port));
                }
            }
        }
        for (k, p) in dead {
            self.forget_router(p, Some(k));
        }
        self.routers.retain(|_, r| !r.slots.is_empty());
        // Group-specific query rounds.
        let mut out = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for mut p in pending {
            let fam = p.key.0.family();
            if !self.we_query(p.key.1, fam, now) {
                continue;
            }
            if now >= p.next_at {
                if let Some(q) = self.build_query(
                    p.key.1,
                    fam,
                    Some(p.key.0),
                    self.cfg.last_member_interval_ms,
                ) {
                    out.push(q);
                    self.stats.queries_sent += 1;
                }
                p.left -= 1;
                p.next_at = now.saturating_add(self.cfg.last_member_interval_ms);
            }
            if p.left > 0 {
                self.pending.push(p);
            }
        }
        // General queries.
        let mut vids: Vec<Vid> = self.vlan_cfg.keys().copied().collect();
        vids.extend(self.queriers.keys().map(|k| k.0));
        vids.sort_unstable();
        vids.dedup();
        let robustness = self.cfg.robustness;
        for vid in vids {
            for fam in [Family::V4, Family::V6] {
                if self.own_addr(vid, fam).is_none() {
                    continue;
                }
                if self.querier_entry(vid, fam).general_due(robustness, now) {
                    let qri = self.timers(vid, fam).query_response_ms;
                    if let Some(q) = self.build_query(vid, fam, None, qri) {
                        out.push(q);
                        self.stats.queries_sent += 1;
                    }
                }
            }
        }
        out
    }

    /// Forgets everything about a port (it went away or down).
    pub fn remove_port(&mut self, port: PortId) {
        let keys: Vec<Key> = self
            .groups
            .iter()
            .filter(|(_, g)| g.find(port).is_some())
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            self.remove_member(port, k);
        }
        self.forget_router(port, None);
        if let Some(p) = self.ports.get_mut(port.index()) {
            *p = PortState::default();
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            enabled: self.cfg.enabled,
            default_vlan: Some(self.cfg.vlan_default()),
            vlan_cfg: self.vlan_cfg.clone(),
            groups: self.groups.clone(),
            routers: self.routers.clone(),
            static_routers: self.static_routers(),
        }
    }

    pub fn entries(&self, now: u64) -> Vec<MdbEntry> {
        let mut v: Vec<MdbEntry> = self
            .groups
            .iter()
            .filter_map(|((group, vid), g)| {
                let mut ports: Vec<(PortId, Millis)> = g
                    .members
                    .iter()
                    .map(|m| (m.port, Millis(m.expires.load(Relaxed))))
                    .filter(|(_, e)| now < e.0)
                    .collect();
                ports.sort_unstable();
                (!ports.is_empty()).then_some(MdbEntry {
                    group: *group,
                    vid: *vid,
                    ports,
                })
            })
            .collect();
        v.sort_unstable_by_key(|e| (e.vid, e.group));
        v
    }

    pub fn router_entries(&self, now: u64) -> Vec<RouterEntry> {
        let mut v: Vec<RouterEntry> = self
            .static_routers()
            .iter()
            .map(|port| RouterEntry {
                vid: 0,
                family: Family::V4,
                port,
                expires: None,
            })
            .collect();
        let mut learnt: Vec<RouterEntry> = Vec::new();
        for ((vid, family), r) in &self.routers {
            for s in &r.slots {
                let e = s.expires.load(Relaxed);
                if now < e {
                    learnt.push(RouterEntry {
                        vid: *vid,
                        family: *family,
                        port: s.port,
                        expires: Some(Millis(e)),
                    });
                }
            }
        }
        learnt.sort_unstable_by_key(|r| (r.vid, r.family, r.port));
        v.extend(learnt);
        v
    }

    pub fn querier_status(&self, now: u64) -> Vec<QuerierStatus> {
        let mut v: Vec<QuerierStatus> = self
            .queriers
            .iter()
            .map(|((vid, family), q)| QuerierStatus {
                vid: *vid,
                family: *family,
                active: self.we_query(*vid, *family, now) && q.active,
                other: q.other_addr.filter(|_| q.other_present(now)),
                timers: q.timers,
            })
            .collect();
        v.sort_unstable_by_key(|q| (q.vid, q.family));
        v
    }
}
