//! Dirty-page logging for live migration (vhost-user spec, "Migration" and
//! VHOST_USER_SET_LOG_BASE; Linux `include/uapi/linux/vhost.h` for VHOST_F_LOG_ALL and
//! VHOST_VRING_F_LOG).
//!
//! While the frontend has negotiated `VHOST_F_LOG_ALL`, the back-end marks every 4 KiB
//! guest-physical page it writes in a bitmap the frontend shares with it (bit `p % 8` of
//! byte `p / 8` for page `p`), so the frontend copies those pages again. vm-memory would
//! log only writes made through its own API; ours are raw-pointer copies and atomic ring
//! stores, so the data path logs them itself through a [`Logger`], one per burst: pages
//! are collected in a few 64-bit words on the stack and ORed into the shared map
//! ([`Logger::flush`]) before the used index that publishes the writes.
//!
//! The map's size is the frontend's: a page beyond it is counted, never written.
//! See ARCHITECTURE.md, "Live migration".

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use vhost::vhost_user::message::VhostUserVirtioFeatures;
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use crate::chain::Mem;

/// VHOST_F_LOG_ALL as a feature mask: log every write while it is negotiated.
pub const LOG_ALL: u64 = VhostUserVirtioFeatures::LOG_ALL.bits();

/// VHOST_VRING_F_LOG: SET_VRING_ADDR's `log_guest_addr` is valid and the ring's used-ring
/// writes are to be logged there.
pub const VRING_F_LOG: u32 = 1;

/// The log's page: 4 KiB whatever the host's page size (vhost-user spec, VHOST_LOG_PAGE).
const LOG_PAGE_SHIFT: u32 = 12;

/// Largest log we map: 1 TiB of bitmap covers 32 PiB of guest memory; anything larger is a
/// frontend we refuse rather than a mapping we attempt.
const MAX_LOG_BYTES: u64 = 1 << 40;

/// 64-bit log words a burst collects before it flushes early.
const CACHE_WORDS: usize = 16;

/// "No log address" for a ring.
const NO_RING_LOG: u64 = u64::MAX;

/// The frontend's log, mapped shared. Unmapped when the last burst using it lets go.
pub(crate) struct LogMap {
    ptr: *mut u8,
    len: usize,
    /// Bits that fell outside the map (a log smaller than the memory it should cover).
    lost: AtomicU64,
}

// SAFETY: the map is plain shared memory owned by this value; every access through it is
// atomic (AtomicU8/AtomicU64 over the mapping), so it may be used from any thread.
unsafe impl Send for LogMap {}
// SAFETY: as above: no non-atomic access is ever made through `ptr`.
unsafe impl Sync for LogMap {}

impl LogMap {
    /// Maps `size` bytes of `fd` at `offset` (SET_LOG_BASE's `mmap_size`/`mmap_offset`).
    pub(crate) fn map(fd: BorrowedFd<'_>, size: u64, offset: u64) -> io::Result<LogMap> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
        if size == 0 || size > MAX_LOG_BYTES {
            return Err(bad("dirty log size out of range"));
        }
        // mmap needs a page-aligned offset; QEMU sends 0.
        if offset % 4096 != 0 {
            return Err(bad("dirty log offset not page aligned"));
        }
        // mmap succeeds past the file's end; the first bit set there would SIGBUS the
        // daemon. So the log must lie within its file now (a later shrink is sigbus.rs's).
        let file_size = nix::sys::stat::fstat(fd.as_raw_fd())
            .ok()
            .and_then(|st| u64::try_from(st.st_size).ok())
            .ok_or_else(|| bad("cannot stat the dirty log's fd"))?;
        if offset.checked_add(size).is_none_or(|end| end > file_size) {
            return Err(bad("dirty log extends past the end of its file"));
        }
        let len = usize::try_from(size).map_err(|_| bad("dirty log size"))?;
        let off = nix::libc::off_t::try_from(offset).map_err(|_| bad("dirty log offset"))?;
        // SAFETY: a fresh shared mapping at an address the kernel picks (no MAP_FIXED), of
        // a descriptor the caller lent us; nothing in this process aliases it yet.
        let p = unsafe {
            nix::libc::mmap(
                std::ptr::null_mut(),
                len,
                nix::libc::PROT_READ | nix::libc::PROT_WRITE,
                nix::libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == nix::libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(LogMap {
            ptr: p.cast(),
            len,
            lost: AtomicU64::new(0),
        })
    }

    /// ORs `mask` into log word `w` (pages 64·w … 64·w + 63). Bits beyond the map are
    /// counted in `lost`.
    fn or_word(&self, w: usize, mask: u64) {
        let Some(start) = w.checked_mul(8) else {
            self.count_lost(u64::from(mask.count_ones()));
            return;
        };
        if start.checked_add(8).is_some_and(|end| end <= self.len) {
            // SAFETY: `start..start + 8` is inside the mapping (checked), 8-aligned on a
            // page-aligned base; the frontend reads and clears it concurrently, hence an
            // atomic read-modify-write. Little-endian order keeps bit p % 8 of byte p / 8.
            unsafe { AtomicU64::from_ptr(self.ptr.add(start).cast()) }
                .fetch_or(mask.to_le(), Ordering::Relaxed);
            return;
        }
        let mut lost = 0;
        for (b, byte) in mask.to_le_bytes().into_iter().enumerate() {
            if byte == 0 {
                continue;
            }
            match start.checked_add(b) {
                Some(i) if i < self.len => {
                    // SAFETY: byte `i` is inside the mapping (checked); atomic as above.
                    unsafe { AtomicU8::from_ptr(self.ptr.add(i)) }
                        .fetch_or(byte, Ordering::Relaxed);
                }
                _ => lost += u64::from(byte.count_ones()),
            }
        }
        self.count_lost(lost);
    }

    /// Counts `n` pages that could not be logged; the first ones of a log get a warning
    /// (once per log: a frontend's too-small log would otherwise warn per burst).
    fn count_lost(&self, n: u64) {
        if n > 0 && self.lost.fetch_add(n, Ordering::Relaxed) == 0 {
            tracing::warn!(
                log_bytes = self.len,
                "writes to guest pages outside the dirty log (counted, not logged)"
            );
        }
    }
}

impl Drop for LogMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `map`, unmapped once, here; no
        // burst holds it any more (they hold an Arc of this value).
        unsafe {
            nix::libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A device's logging state: the frontend's log (SET_LOG_BASE) and each ring's used-ring
/// log address (SET_VRING_ADDR), both recorded by the relay as the messages pass, and
/// the count of pages that could not be logged.
pub(crate) struct DirtyLog {
    map: RwLock<Option<Arc<LogMap>>>,
    rings: Box<[AtomicU64]>,
    /// Bits lost by logs already replaced or dropped, plus writes with no address to log.
    errors: AtomicU64,
}

impl DirtyLog {
    pub(crate) fn new(queues: usize) -> DirtyLog {
        DirtyLog {
            map: RwLock::new(None),
            rings: (0..queues).map(|_| AtomicU64::new(NO_RING_LOG)).collect(),
            errors: AtomicU64::new(0),
        }
    }

    /// SET_LOG_BASE: maps the new log; it replaces an earlier one.
    pub(crate) fn set_base(&self, fd: BorrowedFd<'_>, size: u64, offset: u64) -> io::Result<()> {
        let m = Arc::new(LogMap::map(fd, size, offset)?);
        let old = self.map.write().replace(m);
        self.retire(old);
        Ok(())
    }

    /// SET_VRING_ADDR's flags and `log_guest_addr` for ring `index` (ignored when out of
    /// range: vhost-user-backend refuses that message itself).
    pub(crate) fn set_ring(&self, index: u32, flags: u32, log_addr: u64) {
        let Some(r) = usize::try_from(index).ok().and_then(|i| self.rings.get(i)) else {
            return;
        };
        let v = if flags & VRING_F_LOG != 0 && log_addr != NO_RING_LOG {
            log_addr
        } else {
            NO_RING_LOG
        };
        r.store(v, Ordering::Release);
    }

    /// Logging stopped (LOG_ALL cleared): the log is unmapped once no burst holds it.
    pub(crate) fn stop(&self) {
        let old = self.map.write().take();
        self.retire(old);
    }

    /// The connection is gone or the device reset: no log, no ring addresses.
    pub(crate) fn reset(&self) {
        self.stop();
        for r in self.rings.iter() {
            r.store(NO_RING_LOG, Ordering::Release);
        }
    }

    /// Lets go of a replaced or dropped log. Bursts that took it before the swap may
    /// still be ORing into it, and QEMU reads a replaced log one last time after our
    /// reply to SET_LOG_BASE (`vhost_dev_log_resize`): so wait for them first (a burst
    /// takes microseconds; bounded at 100 ms).
    fn retire(&self, old: Option<Arc<LogMap>>) {
        let Some(o) = old else { return };
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(100);
        while Arc::strong_count(&o) > 1 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        self.errors
            .fetch_add(o.lost.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Ring `q`'s used-ring log address, when SET_VRING_ADDR set VHOST_VRING_F_LOG.
    #[cfg(test)]
    pub(crate) fn ring_addr(&self, q: usize) -> Option<u64> {
        let a = self.rings.get(q)?.load(Ordering::Acquire);
        (a != NO_RING_LOG).then_some(a)
    }

    /// Where the current log is mapped in this process: (address, length).
    pub(crate) fn host_range(&self) -> Option<(usize, usize)> {
        self.map.read().as_ref().map(|m| (m.ptr as usize, m.len))
    }

    /// Whether a log is mapped.
    pub(crate) fn mapped(&self) -> bool {
        self.map.read().is_some()
    }

    /// Pages that could not be logged since the device was made.
    pub(crate) fn errors(&self) -> u64 {
        let cur = self
            .map
            .read()
            .as_ref()
            .map_or(0, |m| m.lost.load(Ordering::Relaxed));
        self.errors.load(Ordering::Relaxed) + cur
    }

    /// A logger for one burst on queue `q`, when `acked` has LOG_ALL; `None` otherwise
    /// (the one test the data path pays when not migrating). LOG_ALL without a log (a
    /// frontend that never sent SET_LOG_BASE) is counted once per burst.
    #[inline]
    pub(crate) fn logger<'m>(&self, acked: u64, mem: &'m Mem, q: usize) -> Option<Logger<'m>> {
        if acked & LOG_ALL == 0 {
            return None;
        }
        self.open(mem, q)
    }

    #[cold]
    fn open<'m>(&self, mem: &'m Mem, q: usize) -> Option<Logger<'m>> {
        let Some(map) = self.map.read().clone() else {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let used = self
            .rings
            .get(q)
            .map(|r| r.load(Ordering::Acquire))
            .filter(|&a| a != NO_RING_LOG);
        Some(Logger {
            map,
            mem,
            used,
            words: [(0, 0); CACHE_WORDS],
            n: 0,
            unmapped: 0,
        })
    }
}

/// One burst's logging: pages collected as 64-bit log words, ORed into the log by
/// [`flush`](Self::flush) (also on drop).
pub(crate) struct Logger<'m> {
    map: Arc<LogMap>,
    mem: &'m Mem,
    /// The used ring's log address (VHOST_VRING_F_LOG), if the frontend gave one.
    used: Option<u64>,
    words: [(usize, u64); CACHE_WORDS],
    n: usize,
    /// Host writes whose guest-physical address could not be found.
    unmapped: u64,
}

impl Logger<'_> {
    /// Marks the pages of guest-physical `[gpa, gpa + len)`.
    pub(crate) fn gpa(&mut self, gpa: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = gpa >> LOG_PAGE_SHIFT;
        let last = gpa.saturating_add(len - 1) >> LOG_PAGE_SHIFT;
        for page in first..=last {
            let Ok(w) = usize::try_from(page / 64) else {
                self.unmapped += 1;
                continue;
            };
            self.mark(w, 1u64 << (page % 64));
        }
    }

    /// Marks the pages behind the `len` host bytes at `ptr`, written by us into guest
    /// memory: the memory table maps them back to guest-physical addresses. This logs the
    /// bytes actually written, not an address re-read from a descriptor the guest may
    /// have changed meanwhile.
    pub(crate) fn host(&mut self, ptr: *const u8, len: usize) {
        if len == 0 {
            return;
        }
        let at = ptr as usize;
        for r in self.mem.iter() {
            let Ok(base) = r.get_host_address(MemoryRegionAddress(0)) else {
                continue;
            };
            let base = base as usize;
            let Ok(rlen) = usize::try_from(r.len()) else {
                continue;
            };
            let off = at.wrapping_sub(base);
            if at >= base && off < rlen {
                // A slice we wrote never crosses a region; clip anyway.
                let n = len.min(rlen - off);
                self.gpa(r.start_addr().raw_value() + off as u64, n as u64);
                return;
            }
        }
        self.unmapped += 1;
    }

    /// Marks `len` bytes at `off` of the used ring, at the ring's log address.
    #[inline]
    pub(crate) fn used(&mut self, off: usize, len: usize) {
        if let Some(a) = self.used {
            self.gpa(a.saturating_add(off as u64), len as u64);
        }
    }

    fn mark(&mut self, w: usize, bit: u64) {
        if let Some(e) = self.words[..self.n].iter_mut().find(|e| e.0 == w) {
            e.1 |= bit;
            return;
        }
        if self.n == CACHE_WORDS {
            self.flush();
        }
        self.words[self.n] = (w, bit);
        self.n += 1;
    }

    /// ORs the collected words into the log. Release order: the writes they stand for
    /// are visible to whoever sees the bits (the frontend reads the log, then the pages).
    pub(crate) fn flush(&mut self) {
        if self.n == 0 {
            return;
        }
        fence(Ordering::Release);
        for &(w, m) in &self.words[..self.n] {
            self.map.or_word(w, m);
        }
        self.n = 0;
    }

    /// Flushes and returns how many written ranges of this burst had no guest-physical
    /// address (counted with the log's lost pages).
    pub(crate) fn finish(mut self) -> u64 {
        self.flush();
        let lost = std::mem::take(&mut self.unmapped);
        self.map.count_lost(lost);
        lost
    }
}

impl Drop for Logger<'_> {
    fn drop(&mut self) {
        self.flush();
        self.map.count_lost(std::mem::take(&mut self.unmapped));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    fn memfd(len: u64) -> std::fs::File {
        let fd = nix::sys::memfd::memfd_create(c"log", nix::sys::memfd::MemFdCreateFlag::empty())
            .unwrap();
        let f = std::fs::File::from(fd);
        f.set_len(len).unwrap();
        f
    }

    fn bytes(f: &std::fs::File, n: usize) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let mut b = vec![0u8; n];
        f.read_exact_at(&mut b, 0).unwrap();
        b
    }

    #[test]
    fn pages_are_set_bytewise_and_out_of_range_is_counted() {
        let f = memfd(4096);
        let log = DirtyLog::new(2);
        // 9 bytes: a whole word and one byte past it (72 pages).
        log.set_base(f.as_fd(), 9, 0).unwrap();
        let mem: Mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        assert!(log.logger(0, &mem, 0).is_none(), "no LOG_ALL, no logger");
        let mut l = log.logger(LOG_ALL, &mem, 0).unwrap();
        l.gpa(0x0, 1); // page 0
        l.gpa(0x1fff, 2); // pages 1 and 2
        l.gpa(64 << 12, 4096); // page 64: byte 8, bit 0
        l.gpa(80 << 12, 1); // page 80: byte 10, beyond the 9-byte map
        assert_eq!(bytes(&f, 16), [0; 16], "nothing before the flush");
        assert_eq!(l.finish(), 0);
        let b = bytes(&f, 16);
        assert_eq!(b[0], 0b111);
        assert_eq!(b[8], 0b1);
        assert!(
            b[9..].iter().all(|&x| x == 0),
            "no write past the map: {b:?}"
        );
        assert_eq!(log.errors(), 1);
        // A host pointer is mapped back to its guest-physical page.
        let mut l = log.logger(LOG_ALL, &mem, 0).unwrap();
        let p = mem.get_host_address(GuestAddress(5 << 12)).unwrap();
        l.host(p, 10);
        l.host(std::ptr::null(), 10);
        assert_eq!(l.finish(), 1, "an address outside guest memory is counted");
        assert_eq!(bytes(&f, 1)[0], 0b10_0111);
        log.stop();
        assert!(!log.mapped() && log.logger(LOG_ALL, &mem, 0).is_none());
        assert_eq!(log.errors(), 3, "LOG_ALL without a log counts too");
    }

    #[test]
    fn used_ring_writes_follow_the_ring_log_address() {
        let f = memfd(4096);
        let log = DirtyLog::new(2);
        log.set_base(f.as_fd(), 4096, 0).unwrap();
        let mem: Mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        log.set_ring(1, VRING_F_LOG, 3 << 12);
        log.set_ring(7, VRING_F_LOG, 0); // out of range: ignored
        let mut l = log.logger(LOG_ALL, &mem, 0).unwrap();
        l.used(0, 8); // ring 0 has no log address: nothing
        drop(l);
        assert_eq!(bytes(&f, 1)[0], 0);
        let mut l = log.logger(LOG_ALL, &mem, 1).unwrap();
        l.used(4096 + 4, 8); // second page of the ring
        drop(l);
        assert_eq!(bytes(&f, 1)[0], 0b1_0000);
        log.set_ring(1, 0, 3 << 12); // flag cleared
        let mut l = log.logger(LOG_ALL, &mem, 1).unwrap();
        l.used(0, 2);
        drop(l);
        assert_eq!(bytes(&f, 1)[0], 0b1_0000);
    }

    #[test]
    fn many_pages_flush_early_and_hostile_maps_are_refused() {
        let f = memfd(4096);
        assert!(LogMap::map(f.as_fd(), 0, 0).is_err());
        assert!(LogMap::map(f.as_fd(), 4096, 100).is_err());
        assert!(LogMap::map(f.as_fd(), MAX_LOG_BYTES + 1, 0).is_err());
        // Past the file's end: mmap would succeed and the first bit set there SIGBUS.
        assert!(LogMap::map(f.as_fd(), 8192, 0).is_err());
        assert!(LogMap::map(f.as_fd(), 4096, 4096).is_err());
        assert!(LogMap::map(f.as_fd(), 4096, !4095u64).is_err());
        let log = DirtyLog::new(1);
        log.set_base(f.as_fd(), 4096, 0).unwrap();
        let mem: Mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let mut l = log.logger(LOG_ALL, &mem, 0).unwrap();
        // One page in each of 40 words: more than the cache holds.
        for w in 0..40u64 {
            l.gpa((w * 64) << 12, 1);
        }
        assert_eq!(l.finish(), 0);
        let b = bytes(&f, 320);
        for w in 0..40 {
            assert_eq!(b[w * 8], 1, "word {w}");
        }
        // Replacing the log keeps its lost count.
        let g = memfd(4096);
        log.set_base(g.as_fd(), 4096, 0).unwrap();
        assert_eq!(log.errors(), 0);
    }
}
