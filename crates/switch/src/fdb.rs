//! Forwarding database keyed by (MAC, VID) (IEEE 802.1Q §8.8 "Filtering Database").
//!
//! Read by every worker for every frame, written rarely (a new address, a move, aging). So:
//! - lookups take no lock and write no shared memory: an open-addressing table whose slots
//!   are guarded by a per-slot sequence counter (a seqlock); a reader racing a writer on
//!   the same slot retries that slot;
//! - writers serialise on one mutex that the forwarding path only *try*-locks: if it is
//!   busy the frame is forwarded anyway and a later frame from that source learns;
//! - refreshing an entry on the same port is a relaxed store of its last-seen time, done
//!   at most once per [`REFRESH_MS`] so workers do not bounce the cache line;
//! - deletions leave tombstones; once they exceed a quarter of the table the writer builds
//!   a fresh table and publishes it with `arc-swap`. Readers load the table once per batch.
//!
//! The seqlock is checked by a loom model of `Slot` (`loom_tests`, run by `cargo xtask
//! test`); the atomics below are loom's in that build.

use crate::mac::Mac;
use crate::port::{PortId, MAX_PORTS};
use crate::time::Millis;
use crate::vlan::Vid;
use arc_swap::ArcSwap;
#[cfg(all(test, loom))]
use loom::sync::atomic::{fence, AtomicU64, Ordering};
use parking_lot::Mutex;
#[cfg(not(all(test, loom)))]
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

/// A seqlock reader's wait for the writer: a spin hint, or under the loom model a yield
/// (loom requires spin loops to yield so that it can schedule the writer).
#[inline(always)]
fn spin_wait() {
    #[cfg(all(test, loom))]
    loom::thread::yield_now();
    #[cfg(not(all(test, loom)))]
    std::hint::spin_loop();
}

/// Minimum interval between two last-seen refreshes of one entry (and the aging
/// granularity: last-seen times are kept in whole seconds).
pub const REFRESH_MS: u64 = 1000;

/// See [`FdbView::worth_prefetching`]: 32 Ki slots × 16 bytes.
const PREFETCH_MIN_SLOTS: usize = 1 << 15;

const EMPTY: u64 = 0;
/// Bit 0 is set in every live key, so 2 can never collide with one.
const TOMBSTONE: u64 = 2;

/// Packs (MAC, VID) into a key with bit 0 set.
#[inline(always)]
fn key(mac: Mac, vid: Vid) -> u64 {
    (mac.to_u64() << 16) | (u64::from(vid & 0xfff) << 4) | 1
}

#[inline]
fn unkey(k: u64) -> (Mac, Vid) {
    (Mac::from_u64(k >> 16), ((k >> 4) & 0xfff) as Vid)
}

/// murmur3's 64-bit finalizer, then the top bits. Measured: plain Fibonacci hashing
/// (one multiply) clustered sequential MACs so badly that a 100 k-entry table averaged
/// ~13 probes per lookup under linear probing; with this mix it is ~1.3.
#[inline(always)]
// `shift` is 64 - log2(table size): the result is a slot index below the table size.
#[allow(clippy::cast_possible_truncation)]
fn hash(k: u64, shift: u32) -> usize {
    let mut h = k;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> shift) as usize
}

/// The slot's second word: `seq:16 | port:16 | static:1 | seen_secs:31`.
/// `seq` is the seqlock counter (odd while a writer rewrites key and port); `seen` can
/// be refreshed by any reader with a compare-exchange that fails if a writer is active.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Meta(u64);

impl Meta {
    const SEQ: u64 = 0xffff;
    #[inline]
    fn new(seq: u64, port: PortId, is_static: bool, seen_s: u64) -> Meta {
        Meta(
            (seq & Self::SEQ)
                | (u64::from(port.0) << 16)
                | (u64::from(is_static) << 32)
                | ((seen_s & 0x7fff_ffff) << 33),
        )
    }
    #[inline]
    fn seq(self) -> u64 {
        self.0 & Self::SEQ
    }
    #[inline]
    fn port(self) -> PortId {
        PortId(((self.0 >> 16) & 0xffff) as u16)
    }
    #[inline]
    fn is_static(self) -> bool {
        self.0 & (1 << 32) != 0
    }
    #[inline]
    fn seen_s(self) -> u64 {
        self.0 >> 33
    }
    #[inline]
    fn with_seen(self, seen_s: u64) -> Meta {
        Meta((self.0 & ((1 << 33) - 1)) | ((seen_s & 0x7fff_ffff) << 33))
    }
}

#[inline]
fn secs(now: Millis) -> u64 {
    now.0 / 1000
}

/// 16 bytes: four slots per cache line.
#[repr(align(16))]
struct Slot {
    key: AtomicU64,
    meta: AtomicU64,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            key: AtomicU64::new(EMPTY),
            meta: AtomicU64::new(0),
        }
    }

    /// Consistent (key, meta) snapshot of this slot.
    #[inline(always)]
    fn read(&self) -> (u64, Meta) {
        loop {
            let m1 = self.meta.load(Ordering::Acquire);
            if m1 & 1 == 0 {
                let k = self.key.load(Ordering::Relaxed);
                fence(Ordering::Acquire);
                let m2 = self.meta.load(Ordering::Relaxed);
                if (m1 ^ m2) & Meta::SEQ == 0 {
                    return (k, Meta(m2));
                }
            }
            spin_wait();
        }
    }

    /// Writer side of the seqlock; callers hold the FDB writer mutex.
    #[inline]
    fn write(&self, k: u64, port: PortId, is_static: bool, seen_s: u64) {
        let old = Meta(self.meta.load(Ordering::Relaxed));
        let seq = old.seq();
        self.meta.store(
            (old.0 & !Meta::SEQ) | ((seq + 1) & Meta::SEQ),
            Ordering::Relaxed,
        );
        fence(Ordering::Release);
        self.key.store(k, Ordering::Relaxed);
        self.meta.store(
            Meta::new(seq + 2, port, is_static, seen_s).0,
            Ordering::Release,
        );
    }

    /// Lock-free refresh of the last-seen time; loses harmlessly to a concurrent writer.
    #[inline]
    fn refresh(&self, m: Meta, now_s: u64) {
        let _ = self.meta.compare_exchange(
            m.0,
            m.with_seen(now_s).0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
}

/// One published table generation.
pub(crate) struct Table {
    slots: Box<[Slot]>,
    mask: usize,
    shift: u32,
    /// Secret mixed into every key before hashing (see [`random_seed`]).
    seed: u64,
}

/// A per-table secret for the slot hash. Why: with linear probing, keys whose home slots
/// an attacker can predict build long probe clusters (every lookup of the victim's MACs
/// then walks them). Guests choose their source MACs freely, so the slot of a MAC must
/// not be computable from the MAC alone: the key is XORed with this secret, drawn from
/// the OS-seeded `RandomState`, before the murmur3 finalizer mixes it.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}

impl Table {
    fn with_slots(n: usize, seed: u64) -> Table {
        let n = n.next_power_of_two().max(64);
        Table {
            slots: (0..n).map(|_| Slot::new()).collect(),
            mask: n - 1,
            shift: 64 - n.trailing_zeros(),
            seed,
        }
    }

    /// The home slot of key `k`.
    #[inline(always)]
    fn home(&self, k: u64) -> usize {
        hash(k ^ self.seed, self.shift)
    }

    /// Index of the live slot holding `k`, with its meta word.
    #[inline]
    fn find(&self, k: u64) -> Option<(usize, Meta)> {
        self.find_from(k, self.home(k))
    }

    /// [`Table::find`] with the home slot already computed (`home` = [`Table::home`]).
    #[inline(always)]
    fn find_from(&self, k: u64, home: usize) -> Option<(usize, Meta)> {
        let mut i = home & self.mask;
        // At most one visit per slot (a full table of other keys ends the probe too); a
        // plain down-counter, since the inclusive range's bookkeeping showed up in the
        // profile on every lookup.
        let mut left = self.mask;
        loop {
            let (sk, m) = self.slots[i].read();
            if sk == k {
                return Some((i, m));
            }
            if sk == EMPTY || left == 0 {
                return None;
            }
            left -= 1;
            i = (i + 1) & self.mask;
        }
    }

    /// Hints the CPU to load the home slot of `k` (batch lookups hide memory latency).
    #[inline]
    fn prefetch(&self, k: u64) {
        self.prefetch_slot(self.home(k));
    }

    #[inline]
    fn prefetch_slot(&self, home: usize) {
        if let Some(slot) = self.slots.get(home) {
            prefetch_read(slot as *const Slot as *const i8);
        }
    }
}

/// A (MAC, VID) key with its home slot in one table generation: a frame's source and
/// destination are hashed once and the result serves the prefetch, learning and the
/// lookup (measured: hashing twice per key, as the prefetch-then-decide path did, cost
/// ~30 instructions per decision). Only meaningful with the [`FdbView`] that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hashed {
    key: u64,
    home: usize,
}

impl Hashed {
    /// No key (the empty-slot key, which no live entry has).
    pub(crate) const NONE: Hashed = Hashed {
        key: EMPTY,
        home: 0,
    };

    #[inline]
    pub(crate) fn is_none(&self) -> bool {
        self.key == EMPTY
    }

    /// The packed key, so that callers can check a precomputed value still applies.
    #[inline]
    pub(crate) fn key(&self) -> u64 {
        self.key
    }
}

/// The packed FDB key of (mac, vid), as [`Hashed::key`] holds it.
#[inline]
pub(crate) fn packed_key(mac: Mac, vid: Vid) -> u64 {
    key(mac, vid)
}

#[inline]
fn prefetch_read(p: *const i8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is only a hint; it never faults, even on an invalid address, and
    // SSE is part of the x86_64 baseline.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// A read-only view of the FDB for one batch of frames.
pub struct FdbView {
    table: arc_swap::Guard<Arc<Table>>,
}

impl FdbView {
    /// The port `mac` was learned on in `vid`.
    #[inline]
    pub fn lookup(&self, mac: Mac, vid: Vid) -> Option<PortId> {
        self.table.find(key(mac, vid)).map(|(_, m)| m.port())
    }

    /// Starts loading the slot of (mac, vid) into the cache.
    #[inline]
    pub fn prefetch(&self, mac: Mac, vid: Vid) {
        self.table.prefetch(key(mac, vid));
    }

    /// Hashes (mac, vid) for this view's table.
    #[inline(always)]
    pub(crate) fn hashed(&self, mac: Mac, vid: Vid) -> Hashed {
        let key = key(mac, vid);
        Hashed {
            key,
            home: self.table.home(key),
        }
    }

    /// [`FdbView::lookup`] of a key hashed by this view.
    #[inline(always)]
    pub(crate) fn lookup_hashed(&self, h: Hashed) -> Option<PortId> {
        self.table.find_from(h.key, h.home).map(|(_, m)| m.port())
    }

    /// [`FdbView::prefetch`] of a key hashed by this view.
    #[inline(always)]
    pub(crate) fn prefetch_hashed(&self, h: Hashed) {
        self.table.prefetch_slot(h.home);
    }

    /// Whether the table is big enough (≥ 512 KiB) for prefetching to pay: smaller tables
    /// stay cache-resident and a prefetch would only cost instructions.
    #[inline]
    pub fn worth_prefetching(&self) -> bool {
        self.table.slots.len() >= PREFETCH_MIN_SLOTS
    }
}

/// Configuration of the FDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbConfig {
    /// Most entries in total (the table has twice as many slots).
    pub max_entries: usize,
    /// Dynamic entries not seen for this long are removed (default 300 s, as 802.1Q).
    pub aging_ms: u64,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            max_entries: 65_536,
            aging_ms: 300_000,
        }
    }
}

/// What learning a source address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learn {
    /// Already known on this port (maybe refreshed).
    Known,
    Learned,
    /// Moved from another port.
    Moved {
        from: PortId,
    },
    /// The writer lock was busy; a later frame will learn it.
    Deferred,
    /// The port reached its MAC limit.
    PortLimit,
    /// The table is full.
    Full,
    /// A static entry for this address points elsewhere; not moved.
    StaticConflict,
}

/// An entry as the control plane shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: Mac,
    pub vid: Vid,
    pub port: PortId,
    pub is_static: bool,
    /// Milliseconds since last seen (0 for static entries).
    pub age_ms: u64,
}

/// Errors of control-plane FDB operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FdbError {
    #[error("forwarding table full ({0} entries): raise fdb max_entries")]
    Full(usize),
    #[error("{0} is not a unicast address; only unicast MACs can be FDB entries")]
    NotUnicast(Mac),
}

struct Writer {
    len: usize,
    tombstones: usize,
    per_port: Box<[u32; MAX_PORTS]>,
}

/// The forwarding database shared by all workers.
pub struct Fdb {
    table: ArcSwap<Table>,
    writer: Mutex<Writer>,
    cfg: FdbConfig,
}

impl Fdb {
    pub fn new(cfg: FdbConfig) -> Fdb {
        Fdb {
            table: ArcSwap::from_pointee(Table::with_slots(
                cfg.max_entries.saturating_mul(2),
                random_seed(),
            )),
            writer: Mutex::new(Writer {
                len: 0,
                tombstones: 0,
                per_port: Box::new([0; MAX_PORTS]),
            }),
            cfg,
        }
    }

    pub fn config(&self) -> FdbConfig {
        self.cfg
    }

    /// A snapshot for one batch: lock-free lookups until dropped.
    #[inline]
    pub fn view(&self) -> FdbView {
        FdbView {
            table: self.table.load(),
        }
    }

    /// Learns that `mac` in `vid` is behind `port` (forwarding path: never blocks).
    /// `limit` is the port's MAC limit (0 = none).
    #[inline]
    pub fn learn(
        &self,
        view: &FdbView,
        mac: Mac,
        vid: Vid,
        port: PortId,
        limit: u32,
        now: Millis,
    ) -> Learn {
        self.learn_hashed(view, view.hashed(mac, vid), port, limit, now)
    }

    /// [`Fdb::learn`] of a key hashed by `view`. Inlined into the decision: the common
    /// case is a known source on its port; everything else goes to [`Fdb::learn_slow`].
    #[inline(always)]
    pub(crate) fn learn_hashed(
        &self,
        view: &FdbView,
        h: Hashed,
        port: PortId,
        limit: u32,
        now: Millis,
    ) -> Learn {
        let k = h.key;
        if let Some((i, m)) = view.table.find_from(k, h.home) {
            if m.port() == port {
                let now_s = secs(now);
                if !m.is_static() && now_s > m.seen_s() {
                    view.table.slots[i].refresh(m, now_s);
                }
                return Learn::Known;
            }
            if m.is_static() {
                return Learn::StaticConflict;
            }
        }
        self.learn_slow(k, port, limit, now)
    }

    /// A new or moved source: needs the writer lock, which the forwarding path only
    /// try-locks.
    #[cold]
    #[inline(never)]
    fn learn_slow(&self, k: u64, port: PortId, limit: u32, now: Millis) -> Learn {
        match self.writer.try_lock() {
            Some(mut w) => self.upsert(&mut w, k, port, false, limit, now),
            None => Learn::Deferred,
        }
    }

    /// Inserts or moves `k` to `port`. Caller holds the writer lock.
    fn upsert(
        &self,
        w: &mut Writer,
        k: u64,
        port: PortId,
        is_static: bool,
        limit: u32,
        now: Millis,
    ) -> Learn {
        let t = self.table.load();
        let now_s = secs(now);
        let limited = |w: &Writer| !is_static && limit != 0 && w.per_port[port.index()] >= limit;
        if let Some((i, old)) = t.find(k) {
            let from = old.port();
            if old.is_static() && !is_static {
                return Learn::StaticConflict;
            }
            if from == port {
                t.slots[i].write(k, port, is_static, now_s);
                return Learn::Known;
            }
            if limited(w) {
                return Learn::PortLimit;
            }
            w.per_port[from.index()] = w.per_port[from.index()].saturating_sub(1);
            w.per_port[port.index()] += 1;
            t.slots[i].write(k, port, is_static, now_s);
            return Learn::Moved { from };
        }
        if limited(w) {
            return Learn::PortLimit;
        }
        if w.len >= self.cfg.max_entries {
            return Learn::Full;
        }
        let t = if w.tombstones * 4 > t.slots.len() {
            self.rebuild(w);
            self.table.load()
        } else {
            t
        };
        let mut i = t.home(k);
        loop {
            let sk = t.slots[i].key.load(Ordering::Relaxed);
            if sk == EMPTY || sk == TOMBSTONE {
                if sk == TOMBSTONE {
                    w.tombstones -= 1;
                }
                t.slots[i].write(k, port, is_static, now_s);
                break;
            }
            i = (i + 1) & t.mask;
        }
        w.len += 1;
        w.per_port[port.index()] += 1;
        Learn::Learned
    }

    /// Copies live entries into a fresh table (dropping tombstones) and publishes it.
    fn rebuild(&self, w: &mut Writer) {
        let old = self.table.load();
        let new = Table::with_slots(old.slots.len(), old.seed);
        for s in old.slots.iter() {
            let k = s.key.load(Ordering::Relaxed);
            if k & 1 == 1 {
                let mut i = new.home(k);
                while new.slots[i].key.load(Ordering::Relaxed) != EMPTY {
                    i = (i + 1) & new.mask;
                }
                let m = Meta(s.meta.load(Ordering::Relaxed));
                new.slots[i].write(k, m.port(), m.is_static(), m.seen_s());
            }
        }
        w.tombstones = 0;
        self.table.store(Arc::new(new));
    }

    /// Adds (or replaces) a static entry: never ages, never moves by learning.
    pub fn add_static(&self, mac: Mac, vid: Vid, port: PortId) -> Result<(), FdbError> {
        if mac.is_multicast() {
            return Err(FdbError::NotUnicast(mac));
        }
        let mut w = self.writer.lock();
        match self.upsert(&mut w, key(mac, vid), port, true, 0, Millis(0)) {
            Learn::Full => Err(FdbError::Full(self.cfg.max_entries)),
            _ => Ok(()),
        }
    }

    /// Removes one entry (static or dynamic). Returns whether it existed.
    pub fn remove(&self, mac: Mac, vid: Vid) -> bool {
        let mut w = self.writer.lock();
        self.remove_where(&mut w, |k, _| k == key(mac, vid)) > 0
    }

    /// Removes every entry of `port` (port deleted or link down).
    pub fn flush_port(&self, port: PortId) -> usize {
        let mut w = self.writer.lock();
        self.remove_where(&mut w, |_, m| m.port() == port)
    }

    /// Removes dynamic entries not seen for the aging time. Returns how many.
    pub fn age(&self, now: Millis) -> usize {
        let aging_s = self.cfg.aging_ms / 1000;
        let now_s = secs(now);
        let mut w = self.writer.lock();
        self.remove_where(&mut w, |_, m| {
            !m.is_static() && now_s.saturating_sub(m.seen_s()) >= aging_s
        })
    }

    fn remove_where(&self, w: &mut Writer, f: impl Fn(u64, Meta) -> bool) -> usize {
        let t = self.table.load();
        let mut n = 0;
        for s in t.slots.iter() {
            let k = s.key.load(Ordering::Relaxed);
            if k & 1 == 1 {
                let m = Meta(s.meta.load(Ordering::Relaxed));
                if f(k, m) {
                    s.write(TOMBSTONE, PortId(0), false, 0);
                    let pi = m.port().index();
                    if pi < MAX_PORTS {
                        w.per_port[pi] = w.per_port[pi].saturating_sub(1);
                    }
                    w.len -= 1;
                    w.tombstones += 1;
                    n += 1;
                }
            }
        }
        n
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.writer.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries learned behind `port`.
    pub fn port_count(&self, port: PortId) -> u32 {
        self.writer
            .lock()
            .per_port
            .get(port.index())
            .copied()
            .unwrap_or(0)
    }

    /// All entries, for the control plane.
    pub fn entries(&self, now: Millis) -> Vec<FdbEntry> {
        let t = self.table.load();
        let mut out: Vec<FdbEntry> = t
            .slots
            .iter()
            .filter_map(|s| {
                let (k, m) = s.read();
                if k & 1 == 0 {
                    return None;
                }
                let (mac, vid) = unkey(k);
                Some(FdbEntry {
                    mac,
                    vid,
                    port: m.port(),
                    is_static: m.is_static(),
                    age_ms: if m.is_static() {
                        0
                    } else {
                        now.0.saturating_sub(m.seen_s() * 1000)
                    },
                })
            })
            .collect();
        out.sort_by_key(|e| (e.vid, e.mac));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u32) -> Mac {
        let b = i.to_be_bytes();
        Mac([0x02, 0, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn learn_lookup_move() {
        let fdb = Fdb::new(FdbConfig::default());
        let v = fdb.view();
        assert_eq!(
            fdb.learn(&v, mac(1), 1, PortId(3), 0, Millis(0)),
            Learn::Learned
        );
        assert_eq!(fdb.view().lookup(mac(1), 1), Some(PortId(3)));
        assert_eq!(fdb.view().lookup(mac(1), 2), None, "keyed by VLAN too");
        assert_eq!(
            fdb.learn(&fdb.view(), mac(1), 1, PortId(3), 0, Millis(5)),
            Learn::Known
        );
        assert_eq!(
            fdb.learn(&fdb.view(), mac(1), 1, PortId(4), 0, Millis(6)),
            Learn::Moved { from: PortId(3) }
        );
        assert_eq!(fdb.view().lookup(mac(1), 1), Some(PortId(4)));
        assert_eq!(
            (fdb.port_count(PortId(3)), fdb.port_count(PortId(4))),
            (0, 1)
        );
    }

    #[test]
    fn aging_respects_refresh_and_static() {
        let fdb = Fdb::new(FdbConfig {
            max_entries: 16,
            aging_ms: 10_000,
        });
        fdb.learn(&fdb.view(), mac(1), 1, PortId(0), 0, Millis(0));
        fdb.learn(&fdb.view(), mac(2), 1, PortId(0), 0, Millis(0));
        fdb.add_static(mac(3), 1, PortId(1)).unwrap();
        fdb.learn(&fdb.view(), mac(1), 1, PortId(0), 0, Millis(6_000)); // refresh
        assert_eq!(fdb.age(Millis(10_000)), 1);
        assert_eq!(fdb.view().lookup(mac(2), 1), None);
        assert_eq!(fdb.view().lookup(mac(1), 1), Some(PortId(0)));
        assert_eq!(fdb.age(Millis(1_000_000)), 1);
        assert_eq!(
            fdb.view().lookup(mac(3), 1),
            Some(PortId(1)),
            "static never ages"
        );
        assert_eq!(
            fdb.learn(&fdb.view(), mac(3), 1, PortId(2), 0, Millis(1)),
            Learn::StaticConflict
        );
    }

    #[test]
    fn slot_hash_is_keyed_per_table() {
        let a = Fdb::new(FdbConfig::default());
        let b = Fdb::new(FdbConfig::default());
        let (ta, tb) = (a.table.load(), b.table.load());
        assert_ne!(ta.seed, tb.seed, "each table draws its own secret");
        // Sequential MACs an attacker might pick land on unrelated slots in the two.
        let differ = (0..64u64)
            .filter(|&i| {
                ta.home(key(Mac::from_u64(0x0200_0000_0000 + i), 1))
                    != tb.home(key(Mac::from_u64(0x0200_0000_0000 + i), 1))
            })
            .count();
        assert!(differ > 48, "{differ} of 64 differ");
    }

    #[test]
    fn limits_and_full() {
        let fdb = Fdb::new(FdbConfig {
            max_entries: 3,
            aging_ms: 1000,
        });
        assert_eq!(
            fdb.learn(&fdb.view(), mac(1), 1, PortId(0), 2, Millis(0)),
            Learn::Learned
        );
        assert_eq!(
            fdb.learn(&fdb.view(), mac(2), 1, PortId(0), 2, Millis(0)),
            Learn::Learned
        );
        assert_eq!(
            fdb.learn(&fdb.view(), mac(3), 1, PortId(0), 2, Millis(0)),
            Learn::PortLimit
        );
        assert_eq!(
            fdb.learn(&fdb.view(), mac(3), 1, PortId(1), 0, Millis(0)),
            Learn::Learned
        );
        assert_eq!(
            fdb.learn(&fdb.view(), mac(4), 1, PortId(1), 0, Millis(0)),
            Learn::Full
        );
        assert_eq!(fdb.add_static(mac(4), 1, PortId(1)), Err(FdbError::Full(3)));
        assert!(fdb.add_static(Mac::BROADCAST, 1, PortId(1)).is_err());
    }

    #[test]
    fn flush_and_tombstone_rebuild() {
        let fdb = Fdb::new(FdbConfig {
            max_entries: 64,
            aging_ms: 1000,
        });
        for round in 0..20u32 {
            for i in 0..60 {
                let l = fdb.learn(
                    &fdb.view(),
                    mac(round * 100 + i),
                    1,
                    PortId((i % 4) as u16),
                    0,
                    Millis(0),
                );
                assert_eq!(l, Learn::Learned);
            }
            assert_eq!(fdb.len(), 60);
            assert_eq!(fdb.flush_port(PortId(0)), 15);
            assert_eq!(fdb.view().lookup(mac(round * 100), 1), None);
            assert_eq!(fdb.view().lookup(mac(round * 100 + 1), 1), Some(PortId(1)));
            for p in 1..4 {
                fdb.flush_port(PortId(p));
            }
            assert!(fdb.is_empty());
        }
    }

    #[test]
    fn entries_listing() {
        let fdb = Fdb::new(FdbConfig::default());
        fdb.learn(&fdb.view(), mac(2), 5, PortId(1), 0, Millis(1000));
        fdb.add_static(mac(1), 5, PortId(0)).unwrap();
        let e = fdb.entries(Millis(2000));
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].mac, e[0].is_static, e[0].age_ms), (mac(1), true, 0));
        assert_eq!((e[1].port, e[1].age_ms, e[1].vid), (PortId(1), 1000, 5));
    }

    /// Readers on other threads never see a torn entry while a writer churns: every
    /// lookup returns a port the writer stored for that MAC, or None. mac(i) moves between
    /// ports i % 64 and 64 + i % 64 every round (and all entries age out every round), so
    /// a key read with another entry's port, or with a half-written one, shows.
    #[test]
    fn concurrent_readers_see_consistent_entries() {
        let fdb = Arc::new(Fdb::new(FdbConfig {
            max_entries: 256,
            aging_ms: 1000,
        }));
        let port_of = |i: u32, round: u64| {
            let base = u16::try_from(i % 64).expect("below 64");
            PortId(if round % 2 == 0 { base } else { base + 64 })
        };
        use std::sync::atomic::{AtomicBool, AtomicU64 as Count, Ordering::Relaxed};
        let stop = Arc::new(AtomicBool::new(false));
        // Per reader: lookups that found an entry, lookups that found none.
        let seen: Arc<[[Count; 2]; 2]> = Arc::new(Default::default());
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (fdb, stop, seen) = (fdb.clone(), stop.clone(), seen.clone());
                std::thread::spawn(move || {
                    while !stop.load(Relaxed) {
                        let v = fdb.view();
                        for i in 0..200u32 {
                            let got = v.lookup(mac(i), 1);
                            if let Some(p) = got {
                                assert!(
                                    p == port_of(i, 0) || p == port_of(i, 1),
                                    "mac {i} read with port {p:?}: a torn entry"
                                );
                            }
                            seen[r][usize::from(got.is_none())].fetch_add(1, Relaxed);
                        }
                    }
                })
            })
            .collect();
        // At least 200 rounds, and on until both readers saw both outcomes while the writer
        // ran (the table is full after each round's learning, empty after its aging).
        let both = || seen.iter().flatten().all(|c| c.load(Relaxed) > 0);
        let mut round = 0u64;
        while round < 200 || !both() {
            assert!(round < 1_000_000, "readers never ran: {seen:?}");
            for i in 0..200u32 {
                fdb.learn(&fdb.view(), mac(i), 1, port_of(i, round), 0, Millis(round));
            }
            fdb.age(Millis(round + 10_000));
            round += 1;
        }
        stop.store(true, Relaxed);
        for r in readers {
            r.join().unwrap();
        }
    }
}

/// A loom model of the seqlock (`RUSTFLAGS="--cfg loom" cargo test -p ringswitch-switch
/// --release --lib loom`): the real [`Slot::read`] and [`Slot::write`], with loom's
/// atomics, under every interleaving and every value the memory model lets a load return.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;

    const K1: u64 = 0x0002_0000_0001_0001;
    const K2: u64 = 0x0002_0000_0002_0001;

    /// One writer rewrites a slot twice while one reader snapshots it twice: each snapshot
    /// is the empty slot or one of the two entries whole, never one entry's key with the
    /// other's port, flags or time; and the second is never older than the first.
    #[test]
    fn loom_seqlock_reader_never_sees_a_torn_entry() {
        loom::model(|| {
            let slot = loom::sync::Arc::new(Slot::new());
            let w = slot.clone();
            let writer = loom::thread::spawn(move || {
                w.write(K1, PortId(1), false, 10);
                w.write(K2, PortId(2), true, 20);
            });
            let states = [
                (EMPTY, PortId(0), false, 0),
                (K1, PortId(1), false, 10),
                (K2, PortId(2), true, 20),
            ];
            let snapshot = || {
                let (k, m) = slot.read();
                let got = (k, m.port(), m.is_static(), m.seen_s());
                states
                    .iter()
                    .position(|s| *s == got)
                    .unwrap_or_else(|| panic!("torn entry {got:x?}"))
            };
            let first = snapshot();
            let second = snapshot();
            assert!(second >= first, "went back from state {first} to {second}");
            writer.join().unwrap();
        });
    }
}
