//! `struct ifreq` helpers: interface names, indexes, the IFF_UP flag and the MTU.

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

/// Sets `name`'s MTU (SIOCSIFMTU, netdevice(7)): a tap's MTU is what the kernel sends
/// through it at most, so it follows the port's.
pub fn set_mtu(name: &str, mtu: u16) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut ifr = ifreq_for(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let s = ctl_socket()?;
    ifr.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
    // SAFETY: SIOCSIFMTU reads the name and the mtu member of our own `ifr`.
    cvt(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFMTU, &ifr) })?;
    Ok(())
}

/// `name`'s MTU (SIOCGIFMTU, netdevice(7)), saturated to u16.
pub fn mtu(name: &str) -> io::Result<u16> {
    use std::os::fd::AsRawFd;
    let mut ifr = ifreq_for(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let s = ctl_socket()?;
    // SAFETY: SIOCGIFMTU reads the name from and writes the mtu member into our `ifr`.
    cvt(unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr) })?;
    // SAFETY: the kernel filled the mtu member of the union.
    let m = unsafe { ifr.ifr_ifru.ifru_mtu };
    Ok(u16::try_from(m.max(0)).unwrap_or(u16::MAX))
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
