//! RAII memory mappings: page-aligned anonymous memory for buffer rings, and memfd-backed
//! shared memory (what QEMU's memory-backend-memfd gives us, and what tests use as "guest
//! memory").

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::cvt;

/// A mapping unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: *mut u8,
    len: usize,
    /// Backing memfd, if any (kept open so the memory can be shared/registered).
    fd: Option<OwnedFd>,
}

// SAFETY: the mapping is plain memory; synchronisation of its contents is the user's job
// (the data plane hands buffers between the kernel and one worker at a time).
unsafe impl Send for Mapping {}
// SAFETY: see above; `&Mapping` only exposes the address and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Private anonymous memory, zeroed, page-aligned.
    pub fn anonymous(len: usize) -> io::Result<Mapping> {
        Self::map(len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, None)
    }

    /// Shared memory backed by a fresh memfd of `len` bytes (how QEMU backs guest RAM).
    pub fn memfd(name: &str, len: usize) -> io::Result<Mapping> {
        let cname = std::ffi::CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in memfd name"))?;
        // SAFETY: `cname` is NUL-terminated and lives for the call.
        let fd = cvt(unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) })?;
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: no pointers.
        cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) })?;
        let raw = fd.as_raw_fd();
        Self::map(len, libc::MAP_SHARED, raw, Some(fd))
    }

    /// Shared mapping of an existing file descriptor (e.g. a regular file).
    pub fn shared_fd(fd: OwnedFd, len: usize) -> io::Result<Mapping> {
        let raw = fd.as_raw_fd();
        Self::map(len, libc::MAP_SHARED, raw, Some(fd))
    }

    fn map(len: usize, flags: libc::c_int, fd: i32, keep: Option<OwnedFd>) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"));
        }
        // SAFETY: a fresh mapping at a kernel-chosen address; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: p.cast(),
            len,
            fd: keep,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The backing fd, if the mapping has one.
    pub fn fd(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }

    /// The whole mapping as bytes.
    ///
    /// # Safety
    /// No one else (kernel I/O included) may be writing the memory while the slice lives.
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is `len` readable bytes for as long as `self` lives; the
        // caller guarantees the absence of concurrent writers.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The whole mapping as mutable bytes.
    ///
    /// # Safety
    /// No one else (kernel I/O included) may access the memory while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: as for `as_slice`, with exclusive access guaranteed by the caller.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping created in `map`, unmapped once.
        unsafe {
            libc::munmap(self.ptr.cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_is_shared_and_zeroed() {
        let m = Mapping::memfd("uring-net-test", 8192).unwrap();
        assert!(m.fd().is_some());
        // SAFETY: test-owned mapping, no I/O in flight.
        let s = unsafe { m.as_mut_slice() };
        assert!(s.iter().all(|b| *b == 0));
        s[4095] = 7;
        // SAFETY: as above: our own mapping, no mutable view alive any more.
        let r = unsafe { m.as_slice() };
        assert_eq!(r[4095], 7);
        assert!(Mapping::anonymous(0).is_err());
    }
}
