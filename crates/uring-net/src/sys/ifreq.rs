//! `struct ifreq` helpers: interface names, indexes and the IFF_UP flag.

use std::io;

use super::cvt;
use crate::error::Error;

/// A zeroed `ifreq` carrying `name` (at most IFNAMSIZ-1 = 15 bytes, no NUL inside).
pub fn ifreq_for(name: &str) -> Result<libc::ifreq, Error> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= libc::IFNAMSIZ || b.contains(&0) {
        return Err(Error::BadIfName(name.to_string()));
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(b) {
        *d = *s as libc::c_char;
    }
    Ok(ifr)
}

/// The name the kernel wrote back into an `ifreq` (e.g. after TUNSETIFF with a pattern).
pub fn ifreq_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A throwaway datagram socket for interface ioctls (in the calling thread's netns).
fn ctl_socket() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: no pointers; the result is checked and owned once.
    let fd = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Interface index of `name` in the calling thread's network namespace.
pub fn ifindex(name: &str) -> Result<i32, Error> {
    use std::os::fd::AsRawFd;
    let mut ifr = ifreq_for(name)?;
    let s = ctl_socket().map_err(|e| Error::AfPacket {
        ifname: name.into(),
        op: "socket",
        source: e,
    })?;
    // SAFETY: SIOCGIFINDEX reads the name from and writes the index into `ifr`, which we own.
    cvt(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFINDEX, &mut ifr) }).map_err(|e| {
        Error::AfPacket {
            ifname: name.into(),
            op: "SIOCGIFINDEX",
            source: e,
        }
    })?;
    // SAFETY: the kernel filled the ifindex member of the union.
    Ok(unsafe { ifr.ifr_ifru.ifru_ifindex })
}

/// Sets IFF_UP on `name` (a port is only useful when its link is up).
// Kernel ABI: the constants and struct sizes passed fit the fields' types.
#[allow(clippy::cast_possible_truncation)]
pub fn set_up(name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut ifr = ifreq_for(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let s = ctl_socket()?;
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the flags member of our own `ifr`.
    unsafe {
        cvt(libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr))?;
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        cvt(libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(ifreq_for("").is_err());
        assert!(ifreq_for("0123456789abcdef").is_err());
        assert!(ifreq_for("a\0b").is_err());
        let ifr = ifreq_for("rs-tap0").unwrap();
        assert_eq!(ifreq_name(&ifr), "rs-tap0");
    }
}
