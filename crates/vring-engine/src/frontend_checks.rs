//! Checks on what a vhost-user frontend hands the device: memory-region files and the
//! kick/call/err fds. Anyone who can open the socket is a hostile frontend (see the
//! "frontend boundary" section of ARCHITECTURE.md).
//!
//! - Memory regions (vhost-user spec, VHOST_USER_SET_MEM_TABLE / VHOST_USER_ADD_MEM_REG):
//!   vm-memory maps `fd` at `mmap_offset` for `memory_size` bytes, and the mmap succeeds past
//!   the end of the file; the first access past EOF then raises SIGBUS, which kills the whole
//!   daemon. So every region must lie within its file's size at the time the table arrives:
//!   the relay checks the message before vhost-user-backend maps it
//!   (`check_wire_table`), and `update_memory` checks the mapped table again. A file
//!   shrunk later (an unsealed memfd) is sigbus.rs's.
//! - Kick/call/err fds (VHOST_USER_SET_VRING_KICK / _CALL / _ERR) must be eventfds: a pipe
//!   at EOF or `/dev/zero` is always readable, and a worker waiting on it would spin.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::Ordering;

use std::sync::Arc;

use crate::counters::{FrontendCounters, FrontendStats};
use crate::device::{Inner, NetDevice};
use crate::dirtylog::DirtyLog;
use crate::vring::GuestMem;

use vm_memory::{GuestAddressSpace, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Why a memory region was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegionError {
    #[error("memory region at guest address {gpa:#x} is not backed by a file")]
    NoFile { gpa: u64 },
    #[error("{count} memory regions, more than this port's max-mem-regions={max}")]
    TooMany { count: usize, max: u32 },
    #[error("cannot stat the file of memory region at {gpa:#x}")]
    Stat { gpa: u64 },
    #[error(
        "memory region at {gpa:#x} maps file bytes {start:#x}..{end:#x} but the file has only {file_size:#x}"
    )]
    PastEof {
        gpa: u64,
        start: u64,
        end: u64,
        file_size: u64,
    },
    #[error("malformed memory table message (region count, payload size or fds)")]
    Malformed,
    #[error("no room left to guard the unsealed memory regions against a later shrink")]
    Unguarded,
}

/// `F_SEAL_SHRINK` (fcntl(2)): the memfd can no longer be made smaller, so a region that
/// fits now fits for good. QEMU's `memory-backend-memfd` seals by default (`seal=on`).
const F_SEAL_SHRINK: i32 = 0x0002;

/// Whether `f` is a memfd sealed against shrinking (F_GET_SEALS; other files: false).
pub fn shrink_sealed(f: &File) -> bool {
    match nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_GET_SEALS) {
        Ok(seals) => seals & F_SEAL_SHRINK != 0,
        Err(_) => false,
    }
}

/// Checks that `[start, start + len)` of `file` lies within its current size (fstat).
pub fn check_region(gpa: u64, file: impl AsFd, start: u64, len: u64) -> Result<(), RegionError> {
    let file_size = nix::sys::stat::fstat(file.as_fd().as_raw_fd())
        .ok()
        .and_then(|st| u64::try_from(st.st_size).ok())
        .ok_or(RegionError::Stat { gpa })?;
    match start.checked_add(len) {
        Some(end) if end <= file_size => Ok(()),
        end => Err(RegionError::PastEof {
            gpa,
            start,
            end: end.unwrap_or(u64::MAX),
            file_size,
        }),
    }
}

/// Checks every region of a memory table (what vhost-user-backend mapped from a
/// SET_MEM_TABLE or after an ADD_MEM_REG). Returns the number of regions whose file is not
/// sealed against shrinking (a later `ftruncate` could still make them fault).
pub fn check_table(mem: &GuestMemoryMmap<()>) -> Result<usize, RegionError> {
    let mut unsealed = 0;
    for r in mem.iter() {
        let gpa = r.start_addr().0;
        let fo = r.file_offset().ok_or(RegionError::NoFile { gpa })?;
        check_region(gpa, fo.file(), fo.start(), r.len())?;
        if !shrink_sealed(fo.file()) {
            unsealed += 1;
        }
    }
    Ok(unsealed)
}

/// Whether `f` is an eventfd: an anonymous inode the kernel names `anon_inode:[eventfd]`
/// (the `/proc/self/fd` link, proc(5)).
pub fn is_eventfd(f: &File) -> bool {
    let Ok(md) = f.metadata() else {
        return false;
    };
    // Anonymous inodes are neither regular files, directories, FIFOs nor devices.
    use std::os::unix::fs::FileTypeExt;
    let ft = md.file_type();
    if ft.is_file() || ft.is_dir() || ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
        return false;
    }
    std::fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .is_ok_and(|p| p.as_os_str() == "anon_inode:[eventfd]")
}

/// What the relay ([`crate::relay`]) needs to refuse a frontend's request before
/// vhost-user-backend (or the dirty log) maps anything: the port's limits and counters.
pub(crate) struct Boundary {
    pub port: u16,
    /// The device's identity for [`crate::sigbus`].
    pub owner: usize,
    pub max_regions: u32,
    pub counters: Arc<FrontendCounters>,
    pub log: Arc<DirtyLog>,
    /// Packed rings' SET/GET_VRING_BASE values ([`crate::packed::ring`]).
    pub bases: Arc<crate::packed::ring::RingBases>,
}

impl Boundary {
    pub(crate) fn of(inner: &Inner) -> Boundary {
        Boundary {
            port: inner.port.0,
            owner: inner.sigbus_owner(),
            max_regions: inner.opts.max_mem_regions,
            counters: Arc::clone(&inner.frontend),
            log: Arc::clone(&inner.log),
            bases: Arc::clone(&inner.bases),
        }
    }

    /// A boundary with no device behind it (relay tests).
    #[cfg(test)]
    pub(crate) fn detached(log: Arc<DirtyLog>, max_regions: u32) -> Boundary {
        Boundary {
            port: u16::MAX,
            owner: 1,
            max_regions,
            counters: Arc::default(),
            log,
            bases: Arc::new(crate::packed::ring::RingBases::new(4)),
        }
    }

    /// A refused memory table: counted and (rate-limited) logged.
    pub(crate) fn refuse_table(&self, e: &RegionError) {
        self.counters
            .bad_memory_table
            .fetch_add(1, Ordering::Relaxed);
        if self.counters.may_log() {
            tracing::warn!(port = self.port, error = %e, "memory table refused");
        }
    }
}

/// One region of a SET_MEM_TABLE / ADD_MEM_REG payload (`VhostUserMemoryRegion`: guest
/// address, size, frontend address, mmap offset, all u64), read into private memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WireRegion {
    pub gpa: u64,
    pub size: u64,
    pub uaddr: u64,
    pub offset: u64,
}

impl WireRegion {
    pub(crate) fn parse(p: &[u8], at: usize) -> Option<WireRegion> {
        let f = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(
                p.get(at + i..at + i + 8)?.try_into().ok()?,
            ))
        };
        Some(WireRegion {
            gpa: f(0)?,
            size: f(8)?,
            uaddr: f(16)?,
            offset: f(24)?,
        })
    }
}

/// Checks a SET_MEM_TABLE (`u32 nregions; u32 padding; VhostUserMemoryRegion[nregions]`,
/// one fd per region) before anything maps it: the count against `max`, each region
/// within its file.
pub(crate) fn check_wire_table(
    payload: &[u8],
    fds: &[std::os::fd::OwnedFd],
    max: u32,
) -> Result<usize, RegionError> {
    let n = payload
        .get(0..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes);
    if n > max {
        return Err(RegionError::TooMany {
            count: usize::try_from(n).unwrap_or(usize::MAX),
            max,
        });
    }
    let n = usize::try_from(n).unwrap_or(usize::MAX);
    if fds.len() != n {
        return Err(RegionError::Malformed);
    }
    for (i, fd) in fds.iter().enumerate() {
        let r = WireRegion::parse(payload, 8 + 32 * i).ok_or(RegionError::Malformed)?;
        check_region(r.gpa, fd, r.offset, r.size)?;
    }
    Ok(n)
}

/// Checks an ADD_MEM_REG (`u64 padding; VhostUserMemoryRegion`, one fd) that would make
/// the table `count` regions long.
pub(crate) fn check_wire_region(
    payload: &[u8],
    fds: &[std::os::fd::OwnedFd],
    count: usize,
    max: u32,
) -> Result<(), RegionError> {
    if count > usize::try_from(max).unwrap_or(usize::MAX) {
        return Err(RegionError::TooMany { count, max });
    }
    let r = WireRegion::parse(payload, 8).ok_or(RegionError::Malformed)?;
    let [fd] = fds else {
        return Err(RegionError::NoFile { gpa: r.gpa });
    };
    check_region(r.gpa, fd, r.offset, r.size)
}

/// Guards the unsealed regions of `table` against a later shrink ([`crate::sigbus`]); the
/// port's other ranges (an earlier table's) are retired.
/// The dirty log's range (`log`, registered by the relay) stays live.
fn guard_unsealed(
    owner: usize,
    table: &GuestMemoryMmap<()>,
    log: Option<(usize, usize)>,
) -> Result<(), crate::sigbus::SigbusError> {
    let mut keep = Vec::new();
    for r in table.iter() {
        let Some(fo) = r.file_offset() else { continue };
        if shrink_sealed(fo.file()) {
            continue;
        }
        let Ok(len) = usize::try_from(r.len()) else {
            continue;
        };
        keep.push((r.as_ptr() as usize, len));
    }
    let mine = keep.len();
    keep.extend(log);
    crate::sigbus::retire(owner, &keep);
    if mine == 0 {
        return Ok(());
    }
    crate::sigbus::install()?;
    for &(start, len) in &keep[..mine] {
        crate::sigbus::register(start, len, owner)?;
    }
    Ok(())
}

impl Inner {
    /// Who this device is to [`crate::sigbus`]: its address, unique while it lives.
    pub(crate) fn sigbus_owner(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Called by `update_memory` with the table vhost-user-backend just installed (it
    /// replaced its atomic memory before calling us). A bad table is replaced by an empty
    /// one, so no queue can reach the bad mapping, and the request fails (the frontend sees
    /// the error; vhost-user-backend drops the connection).
    pub(crate) fn refuse_bad_table(&self, mem: &GuestMem) -> io::Result<()> {
        let table = mem.memory();
        let count = table.num_regions();
        let res = if count > self.opts.max_mem_regions as usize {
            Err(RegionError::TooMany {
                count,
                max: self.opts.max_mem_regions,
            })
        } else {
            check_table(&table)
        };
        let res = res.and_then(|unsealed| {
            if unsealed > 0 {
                tracing::debug!(port = %self.port, unsealed, "memory regions not sealed against shrinking: guarded");
            }
            guard_unsealed(self.sigbus_owner(), &table, self.log.host_range())
                .map_err(|_| RegionError::Unguarded)
        });
        drop(table);
        match res {
            Ok(()) => Ok(()),
            Err(e) => {
                if let Ok(g) = mem.lock() {
                    g.replace(GuestMemoryMmap::new());
                }
                *self.mem.write() = mem.clone();
                self.frontend
                    .bad_memory_table
                    .fetch_add(1, Ordering::Relaxed);
                if self.log_check().is_some() {
                    tracing::warn!(port = %self.port, error = %e, "memory table refused");
                }
                Err(io::Error::new(io::ErrorKind::InvalidInput, e))
            }
        }
    }
}

impl NetDevice {
    /// Refused frontend requests on this port: memory tables and vring fds.
    pub fn frontend_stats(&self) -> FrontendStats {
        let mut s = self.inner.frontend.snapshot();
        s.bad_vring_fd = self.inner.vrings.read().iter().map(|v| v.bad_fds()).sum();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};
    use vm_memory::{FileOffset, GuestAddress, GuestRegionMmap, MmapRegion};

    fn memfd(size: u64) -> File {
        let fd = nix::sys::memfd::memfd_create(c"t", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
            .unwrap();
        let f = File::from(fd);
        f.set_len(size).unwrap();
        f
    }

    fn table(f: File, offset: u64, len: usize) -> GuestMemoryMmap<()> {
        let r = MmapRegion::from_file(FileOffset::new(f, offset), len).unwrap();
        GuestMemoryMmap::from_regions(vec![GuestRegionMmap::new(r, GuestAddress(0)).unwrap()])
            .unwrap()
    }

    #[test]
    fn region_within_file_passes() {
        assert_eq!(check_table(&table(memfd(8192), 4096, 4096)), Ok(1));
    }

    #[test]
    fn region_past_eof_is_refused() {
        // mmap itself succeeds: only the check stands between this table and a SIGBUS.
        let e = check_table(&table(memfd(4096), 0, 8192)).unwrap_err();
        assert!(matches!(
            e,
            RegionError::PastEof {
                end: 8192,
                file_size: 4096,
                ..
            }
        ));
        let e = check_table(&table(memfd(8192), 4096, 8192)).unwrap_err();
        assert!(matches!(e, RegionError::PastEof { end: 12288, .. }));
        let f = memfd(4096);
        assert!(check_region(0, &f, u64::MAX - 1, 4096).is_err());
    }

    #[test]
    fn eventfd_detection() {
        let efd = vmm_sys_util::eventfd::EventFd::new(0).unwrap();
        let dup = efd.try_clone().unwrap();
        // SAFETY: `dup` is a fresh fd owned by nobody else once forgotten.
        let f =
            File::from(unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(dup)) });
        assert!(is_eventfd(&f));
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert!(!is_eventfd(&File::from(r)));
        assert!(!is_eventfd(&File::open("/dev/zero").unwrap()));
        assert!(!is_eventfd(&memfd(4096)));
    }
}
