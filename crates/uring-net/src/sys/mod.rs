//! Thin, checked wrappers around the Linux interfaces the ports need: tap devices, AF_PACKET
//! sockets, interface flags, eventfds and anonymous mappings. Each wrapper returns an
//! `OwnedFd` or an RAII object so nothing leaks on error paths.

pub mod afpacket;
pub mod auxdata;
pub mod ifreq;
pub mod mmap;
pub mod tap;

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Converts a `-1`-on-error libc return value into `io::Result`.
pub(crate) fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A non-blocking, close-on-exec eventfd: how other threads wake a worker's ring.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd has no pointer arguments; the returned fd is checked and owned once.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets an integer socket option.
pub(crate) fn setsockopt_int(
    fd: libc::c_int,
    level: libc::c_int,
    name: libc::c_int,
    val: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `val` lives for the call and its exact size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(drop)
}
