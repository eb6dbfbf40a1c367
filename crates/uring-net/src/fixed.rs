//! Guest memory as io_uring fixed buffers.
//!
//! Why: a write from a registered buffer (WriteFixed/WritevFixed) lets the kernel read the
//! guest's pages directly, without pinning them per request, so guest → tap/AF_PACKET TX
//! makes no copy in our process. Facts this module is built on (measured here, see
//! docs/environment.md): one registered iovec may be at most 1 GiB; only memfd/shmem
//! and hugetlb mappings register (a MAP_SHARED file on ext4 gives EFAULT); registration pins
//! every page and takes seconds per GiB, and without CAP_IPC_LOCK the memlock limit makes
//! it fail with ENOMEM.
//!
//! Shape: [`FixedTable::register`] pins the memory once, in the calling (control) thread,
//! into a private *registrar* ring. Workers then clone that table into their own rings
//! (IORING_REGISTER_CLONE_BUFFERS at an offset, Linux ≥ 6.13), which shares the pinned
//! pages and costs microseconds, so the datapath never stalls on a memory-table change.
//! When registration fails the caller keeps the error, counts it and transmits with plain
//! writev.

use std::os::fd::{AsRawFd, RawFd};

use io_uring::IoUring;

use crate::error::{Error, Result};

/// Largest iovec the kernel registers as one fixed buffer.
pub const MAX_FIXED_BUF: u64 = 1 << 30;

/// One contiguous range of guest memory as mapped in our process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemRegion {
    pub host_addr: u64,
    pub len: u64,
}

/// Where a host address range lives in the fixed-buffer table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedRef {
    /// Buffer index to put in the SQE.
    pub slot: u16,
    /// Offset of the range inside that buffer.
    pub offset: u64,
}

/// Regions split into ≤ 1 GiB chunks, sorted by address: the pure part (no syscalls), so
/// splitting and lookup are unit-tested without pinning memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixedPlan {
    chunks: Vec<MemRegion>,
}

impl FixedPlan {
    /// Splits `regions` into chunks of at most `max_chunk` bytes. Empty, wrapping or
    /// overlapping regions are refused (a memory table with them is malformed).
    pub fn new(regions: &[MemRegion], max_chunk: u64) -> Result<FixedPlan> {
        let max_chunk = max_chunk.max(1);
        let mut sorted: Vec<MemRegion> = regions.to_vec();
        sorted.sort_by_key(|r| r.host_addr);
        let mut chunks = Vec::new();
        let mut prev_end = 0u64;
        for r in &sorted {
            let end = r.host_addr.checked_add(r.len);
            let bad = Error::BadRegion {
                addr: r.host_addr,
                len: r.len,
            };
            let Some(end) = end else { return Err(bad) };
            if r.len == 0 || r.host_addr < prev_end {
                return Err(bad);
            }
            prev_end = end;
            let mut a = r.host_addr;
            while a < end {
                let l = (end - a).min(max_chunk);
                chunks.push(MemRegion {
                    host_addr: a,
                    len: l,
                });
                a += l;
            }
        }
        Ok(FixedPlan { chunks })
    }

    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn chunks(&self) -> &[MemRegion] {
        &self.chunks
    }

    /// Index of the chunk holding all of `[addr, addr+len)`, and the offset in it. A range
    /// that straddles two chunks (or lies outside) has none: such a frame is sent with writev.
    pub fn lookup(&self, addr: u64, len: u64) -> Option<(usize, u64)> {
        let end = addr.checked_add(len)?;
        let i = self.chunks.partition_point(|c| c.host_addr <= addr);
        let i = i.checked_sub(1)?;
        let c = self.chunks[i];
        (end <= c.host_addr + c.len).then_some((i, addr - c.host_addr))
    }
}

/// A registered plan: pinned pages held by a private registrar ring whose table workers
/// clone into their rings at `base_slot..base_slot+len`.
pub struct FixedTable {
    plan: FixedPlan,
    base_slot: u16,
    registrar: IoUring,
}

impl std::fmt::Debug for FixedTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedTable")
            .field("chunks", &self.plan.len())
            .field("base_slot", &self.base_slot)
            .finish()
    }
}

impl FixedTable {
    /// Pins `regions` (slow: call it off the datapath). Fails with the kernel's error when
    /// the memory is not registrable (EFAULT: not memfd/hugetlb; ENOMEM: memlock limit).
    ///
    /// # Safety
    /// The regions must stay mapped until this table and every ring it was cloned into have
    /// dropped it (the data plane guarantees the latter when a port's memory is replaced).
    pub unsafe fn register(regions: &[MemRegion], base_slot: u16) -> Result<FixedTable> {
        let plan = FixedPlan::new(regions, MAX_FIXED_BUF)?;
        if plan.len() + base_slot as usize > u16::MAX as usize {
            return Err(Error::NoSlots(plan.len()));
        }
        let registrar = IoUring::new(2).map_err(Error::Ring)?;
        let iov: Vec<libc::iovec> = plan
            .chunks
            .iter()
            .map(|c| libc::iovec {
                iov_base: c.host_addr as *mut libc::c_void,
                iov_len: c.len as usize,
            })
            .collect();
        // SAFETY: the caller guarantees the regions stay mapped while registered.
        unsafe { registrar.submitter().register_buffers(&iov) }.map_err(Error::Fixed)?;
        Ok(FixedTable {
            plan,
            base_slot,
            registrar,
        })
    }

    /// Fixed buffer slot and offset for a host range, if it lies in one registered chunk.
    pub fn resolve(&self, addr: u64, len: u64) -> Option<FixedRef> {
        let (i, offset) = self.plan.lookup(addr, len)?;
        Some(FixedRef {
            slot: self.base_slot + i as u16,
            offset,
        })
    }

    pub fn base_slot(&self) -> u16 {
        self.base_slot
    }

    pub fn len(&self) -> usize {
        self.plan.len()
    }

    pub fn is_empty(&self) -> bool {
        self.plan.is_empty()
    }

    /// The registrar ring, the source for IORING_REGISTER_CLONE_BUFFERS.
    pub fn source_fd(&self) -> RawFd {
        self.registrar.as_raw_fd()
    }

    /// Installs this table into `ring`'s (sparse) buffer table at its slots.
    pub fn install_into(&self, submitter: &io_uring::Submitter<'_>) -> std::io::Result<()> {
        submitter.register_buffers_clone_offset(
            self.source_fd(),
            0,
            self.base_slot as u32,
            self.plan.len() as u32,
            io_uring::types::CloneBuffersFlags::DST_REPLACE,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mmap::Mapping;
    use io_uring::{opcode, types};

    const G: u64 = 1 << 30;

    #[test]
    fn splits_at_one_gib_and_looks_up() {
        let regs = [
            MemRegion {
                host_addr: 10 * G,
                len: 2 * G + 4096,
            },
            MemRegion {
                host_addr: 0x1000,
                len: 0x2000,
            },
        ];
        let p = FixedPlan::new(&regs, MAX_FIXED_BUF).unwrap();
        let lens: Vec<u64> = p.chunks().iter().map(|c| c.len).collect();
        assert_eq!(lens, vec![0x2000, G, G, 4096]);
        assert_eq!(p.lookup(0x1000, 0x2000), Some((0, 0)));
        assert_eq!(p.lookup(0x1800, 0x100), Some((0, 0x800)));
        assert_eq!(p.lookup(0x2fff, 2), None, "runs past the region");
        assert_eq!(p.lookup(0, 1), None);
        assert_eq!(p.lookup(11 * G - 10, 10), Some((1, G - 10)));
        assert_eq!(p.lookup(11 * G - 10, 20), None, "straddles two chunks");
        assert_eq!(p.lookup(12 * G, 4096), Some((3, 0)));
        assert_eq!(p.lookup(u64::MAX, 2), None);
    }

    #[test]
    fn refuses_malformed_tables() {
        let r = |a, l| MemRegion {
            host_addr: a,
            len: l,
        };
        assert!(FixedPlan::new(&[r(0x1000, 0)], G).is_err());
        assert!(FixedPlan::new(&[r(u64::MAX - 1, 4)], G).is_err());
        assert!(FixedPlan::new(&[r(0x1000, 0x2000), r(0x2000, 0x1000)], G).is_err());
    }

    /// memfd memory registers, clones into a worker-style sparse table, and WriteFixed from
    /// it delivers exactly the bytes in guest memory.
    #[test]
    fn memfd_registers_clones_and_writes() {
        let m = Mapping::memfd("fixed-test", 1 << 20).unwrap();
        // SAFETY: test-owned mapping, no I/O in flight yet.
        unsafe { m.as_mut_slice()[4096..4100].copy_from_slice(b"ring") };
        // SAFETY: `m` outlives the table and the ring below.
        let t = unsafe {
            FixedTable::register(
                &[MemRegion {
                    host_addr: m.addr(),
                    len: m.len() as u64,
                }],
                3,
            )
        }
        .unwrap();
        let mut ring: IoUring = IoUring::new(4).unwrap();
        ring.submitter().register_buffers_sparse(8).unwrap();
        t.install_into(&ring.submitter()).unwrap();
        let fr = t.resolve(m.addr() + 4096, 4).unwrap();
        assert_eq!(
            fr,
            FixedRef {
                slot: 3,
                offset: 4096
            }
        );
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills our array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0);
        let e = opcode::WriteFixed::new(
            types::Fd(fds[1]),
            (m.addr() + fr.offset) as *const u8,
            4,
            fr.slot,
        )
        .build();
        // SAFETY: the buffer is registered and alive until completion.
        unsafe { ring.submission().push(&e).unwrap() };
        ring.submit_and_wait(1).unwrap();
        assert_eq!(ring.completion().next().unwrap().result(), 4);
        let mut out = [0u8; 4];
        // SAFETY: reading into our own array.
        assert_eq!(unsafe { libc::read(fds[0], out.as_mut_ptr().cast(), 4) }, 4);
        assert_eq!(&out, b"ring");
        // SAFETY: closing our own pipe.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }

    /// A shared mapping of a regular (ext4) file is refused: the fallback trigger.
    #[test]
    fn regular_file_mapping_is_refused() {
        use std::os::fd::OwnedFd;
        let path = std::env::temp_dir().join(format!("uring-net-fixed-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(1 << 16).unwrap();
        std::fs::remove_file(&path).unwrap();
        let m = Mapping::shared_fd(OwnedFd::from(f), 1 << 16).unwrap();
        // SAFETY: `m` outlives the (failed) registration.
        let r = unsafe {
            FixedTable::register(
                &[MemRegion {
                    host_addr: m.addr(),
                    len: m.len() as u64,
                }],
                0,
            )
        };
        assert!(matches!(r, Err(Error::Fixed(_))), "{r:?}");
    }
}
