//! Thin, checked wrappers around the Linux interfaces the ports need: tap devices, AF_PACKET
//! sockets, interface flags, eventfds and anonymous mappings. Each wrapper returns an
//! `OwnedFd` or an RAII object so nothing leaks on error paths.

pub mod afpacket;
pub mod auxdata;
pub mod ifreq;
pub mod mmap;
pub mod tap;

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

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

/// Adds 1 to an eventfd's counter: wakes whoever waits on it (a worker's ring, or a
/// queue's kick reader).
pub fn eventfd_signal(fd: impl AsFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a local to a descriptor the caller keeps open.
    let r = unsafe { libc::write(fd.as_fd().as_raw_fd(), (&one as *const u64).cast(), 8) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets an integer socket option.
// Kernel ABI: the constants and struct sizes passed fit the fields' types.
#[allow(clippy::cast_possible_truncation)]
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
