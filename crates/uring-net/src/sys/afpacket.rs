//! AF_PACKET sockets bound to one interface (the host end of a container's veth).
//!
//! packet(7): PACKET_VNET_HDR_SZ = 12 so frames carry the same virtio_net_hdr as taps and
//! guests (GSO frames pass through whole), PACKET_QDISC_BYPASS because we are the only
//! sender and queueing happens in our rings, PACKET_IGNORE_OUTGOING so we never see our own
//! transmissions again (that would loop), PACKET_AUXDATA for offloaded VLAN tags
//! ([`super::auxdata`]), PACKET_MR_PROMISC because a switch port receives
//! every destination, and PACKET_FANOUT (hash) so that a flow always lands on the same
//! worker while different flows spread over all of them.
//!
//! The receive queue is sized for GSO frames ([`RCVBUF_BYTES`]), and the frames the kernel
//! still had to drop at a full queue are read back with PACKET_STATISTICS ([`queue_drops`])
//! so they show up as a counted drop instead of as silent TCP retransmissions.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::{cvt, ifreq, setsockopt_int};
use crate::error::Error;

/// Receive queue per socket. The kernel's default (`net.core.rmem_default`, 208 KiB)
/// holds about three 64 KiB GSO frames (the queue is charged each skb's truesize), so
/// a TCP flow between two containers overflowed it whenever the worker was off the CPU
/// for a moment: measured, ~35 000 retransmissions/s at ~10 Gbit/s. With 4 MiB (~60 GSO
/// frames, or thousands of small ones) the same flow saw ~200/s and ran a median 7 % faster
/// (docs/notebook.md, session 7).
pub const RCVBUF_BYTES: libc::c_int = 4 << 20;

/// One AF_PACKET socket per worker for a port; all of them join one fanout group.
pub struct PacketSocket {
    pub fd: OwnedFd,
}

fn err(ifname: &str, op: &'static str, source: std::io::Error) -> Error {
    Error::AfPacket {
        ifname: ifname.to_string(),
        op,
        source,
    }
}

/// Opens `n` sockets on `ifname` (in the calling thread's netns), all in one fanout group.
pub fn open_group(ifname: &str, n: usize) -> Result<Vec<PacketSocket>, Error> {
    let ifindex = ifreq::ifindex(ifname)?;
    let mut out = Vec::with_capacity(n);
    let mut group: Option<u16> = None;
    for _ in 0..n.max(1) {
        let s = open_one(ifname, ifindex)?;
        group = Some(join_fanout(ifname, &s.fd, group)?);
        out.push(s);
    }
    Ok(out)
}

// Kernel ABI: the constants and struct sizes passed fit the fields' types.
#[allow(clippy::cast_possible_truncation)]
fn open_one(ifname: &str, ifindex: i32) -> Result<PacketSocket, Error> {
    // Protocol 0: receive nothing until bound to the one interface.
    // SAFETY: no pointers; the result is checked and owned once.
    let raw = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })
    .map_err(|e| err(ifname, "socket", e))?;
    // SAFETY: fresh descriptor owned only here.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let r = fd.as_raw_fd();
    setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_VNET_HDR_SZ, 12)
        .map_err(|e| err(ifname, "PACKET_VNET_HDR_SZ", e))?;
    setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
        .map_err(|e| err(ifname, "PACKET_QDISC_BYPASS", e))?;
    setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
        .map_err(|e| err(ifname, "PACKET_IGNORE_OUTGOING", e))?;
    set_rcvbuf(r).map_err(|e| err(ifname, "SO_RCVBUF", e))?;
    // Offloaded VLAN tags are only reported here (see `auxdata`).
    setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1)
        .map_err(|e| err(ifname, "PACKET_AUXDATA", e))?;
    // SAFETY: sockaddr_ll is plain old data.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: `sll` lives for the call and its exact size is passed.
    cvt(unsafe {
        libc::bind(
            r,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })
    .map_err(|e| err(ifname, "bind", e))?;
    // SAFETY: packet_mreq is plain old data.
    let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
    mreq.mr_ifindex = ifindex;
    mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
    // SAFETY: `mreq` lives for the call and its exact size is passed.
    cvt(unsafe {
        libc::setsockopt(
            r,
            libc::SOL_PACKET,
            libc::PACKET_ADD_MEMBERSHIP,
            (&mreq as *const libc::packet_mreq).cast(),
            std::mem::size_of::<libc::packet_mreq>() as libc::socklen_t,
        )
    })
    .map_err(|e| err(ifname, "PACKET_ADD_MEMBERSHIP", e))?;
    Ok(PacketSocket { fd })
}

/// Sets the receive queue to [`RCVBUF_BYTES`]: SO_RCVBUFFORCE (CAP_NET_ADMIN, which an
/// AF_PACKET socket needs anyway) may exceed `net.core.rmem_max`; without the capability
/// SO_RCVBUF gets as much as `rmem_max` allows. VXLAN receive sockets take the same.
pub(crate) fn set_rcvbuf(fd: libc::c_int) -> std::io::Result<()> {
    match setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF_BYTES) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF_BYTES)
        }
        r => r,
    }
}

/// Frames the kernel dropped at this socket's full receive queue since the last call
/// (PACKET_STATISTICS reads and clears the socket's counters, packet(7)).
// Kernel ABI: the constants and struct sizes passed fit the fields' types.
#[allow(clippy::cast_possible_truncation)]
pub fn queue_drops(fd: &impl AsRawFd) -> std::io::Result<u32> {
    // SAFETY: tpacket_stats is plain old data.
    let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `st`/`len` live for the call; the kernel writes at most `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut st as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    })?;
    Ok(st.tp_drops)
}

/// Joins the socket to the port's fanout group; the first socket asks the kernel for a
/// unique group id (PACKET_FANOUT_FLAG_UNIQUEID) so ports never collide with each other or
/// with other programs in the namespace.
// Kernel ABI: the constants and struct sizes passed fit the fields' types.
#[allow(clippy::cast_possible_truncation)]
fn join_fanout(ifname: &str, fd: &OwnedFd, group: Option<u16>) -> Result<u16, Error> {
    let r = fd.as_raw_fd();
    let (id, flags) = match group {
        Some(id) => (id as u32, 0),
        None => (0, libc::PACKET_FANOUT_FLAG_UNIQUEID),
    };
    let arg = (id | ((libc::PACKET_FANOUT_HASH | flags) << 16)) as libc::c_int;
    setsockopt_int(r, libc::SOL_PACKET, libc::PACKET_FANOUT, arg)
        .map_err(|e| err(ifname, "PACKET_FANOUT", e))?;
    if let Some(id) = group {
        return Ok(id);
    }
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `val`/`len` live for the call; the kernel writes at most `len` bytes.
    cvt(unsafe {
        libc::getsockopt(
            r,
            libc::SOL_PACKET,
            libc::PACKET_FANOUT,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        )
    })
    .map_err(|e| err(ifname, "getsockopt PACKET_FANOUT", e))?;
    Ok((val as u32 & 0xffff) as u16)
}
