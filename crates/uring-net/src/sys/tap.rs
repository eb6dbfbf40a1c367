//! Tap devices: one multi-queue tap per port, one queue fd per worker.
//!
//! Flags (Linux Documentation/networking/tuntap.rst): IFF_TAP|IFF_NO_PI for plain Ethernet
//! frames, IFF_VNET_HDR so every frame carries a virtio_net_hdr (virtio 1.2 §5.1.6) and
//! offloaded frames pass through unchanged, IFF_MULTI_QUEUE so each worker owns a queue
//! and no fd is shared between rings. The header size is set to 12 bytes (the
//! VERSION_1/MRG_RXBUF layout) so tap, AF_PACKET and guests all use one layout.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use switch::Offloads;

use super::cvt;
use super::ifreq::{ifreq_for, ifreq_name};
use crate::error::Error;

/// virtio_net_hdr size used on every port.
pub const VNET_HDR_LEN: libc::c_int = 12;

/// TUNSETVNETHDRSZ = _IOW('T', 216, int); not exported by libc.
const TUNSETVNETHDRSZ: libc::Ioctl = 0x4004_54d8;

/// TUNSETOFFLOAD flags for what *we* accept from the kernel through this tap.
pub fn tun_offload_flags(o: &Offloads) -> libc::c_uint {
    let mut f = 0;
    // The kernel only sends TSO/USO frames when partial checksums are accepted too.
    if o.csum {
        f |= libc::TUN_F_CSUM;
        if o.tso4 {
            f |= libc::TUN_F_TSO4;
        }
        if o.tso6 {
            f |= libc::TUN_F_TSO6;
        }
        if o.tso_ecn && (o.tso4 || o.tso6) {
            f |= libc::TUN_F_TSO_ECN;
        }
        if o.ufo {
            f |= libc::TUN_F_UFO;
        }
        if o.uso4 {
            f |= libc::TUN_F_USO4;
        }
        if o.uso6 {
            f |= libc::TUN_F_USO6;
        }
    }
    f
}

/// Opens (creating it if needed) one queue of the multi-queue tap `name` in the calling
/// thread's network namespace. Returns the fd (non-blocking) and the device name.
// Kernel ABI: the constants and struct sizes passed fit the fields' types.
#[allow(clippy::cast_possible_truncation)]
pub fn open_queue(name: &str, offloads: &Offloads) -> Result<(OwnedFd, String), Error> {
    let err = |op: &'static str, source: std::io::Error| Error::Tap {
        name: name.to_string(),
        op,
        source,
    };
    let mut ifr = ifreq_for(name)?;
    // SAFETY: the path is a NUL-terminated literal; the result is checked and owned once.
    let fd = cvt(unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })
    .map_err(|e| err("open /dev/net/tun", e))?;
    // SAFETY: fresh descriptor owned only here.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    ifr.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE) as _;
    // SAFETY: TUNSETIFF reads name+flags from our `ifr` and writes the final name back.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) })
        .map_err(|e| err("TUNSETIFF", e))?;
    let hdr = VNET_HDR_LEN;
    // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, which lives for the call.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &hdr) })
        .map_err(|e| err("TUNSETVNETHDRSZ", e))?;
    let flags = tun_offload_flags(offloads) as libc::c_ulong;
    // SAFETY: TUNSETOFFLOAD takes the flags by value.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOFFLOAD, flags) })
        .map_err(|e| err("TUNSETOFFLOAD", e))?;
    Ok((fd, ifreq_name(&ifr)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_flags_need_csum() {
        let mut o = Offloads::ALL;
        assert_eq!(tun_offload_flags(&o), 0x7f);
        o.csum = false;
        assert_eq!(tun_offload_flags(&o), 0);
        assert_eq!(tun_offload_flags(&Offloads::NONE), 0);
        let o = Offloads {
            csum: true,
            tso4: true,
            ..Offloads::NONE
        };
        assert_eq!(tun_offload_flags(&o), libc::TUN_F_CSUM | libc::TUN_F_TSO4);
    }
}
