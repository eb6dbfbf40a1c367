//! VXLAN ports (RFC 7348): the UDP sockets and the state every worker shares for one
//! port — its remote VTEPs, the MAC → VTEP table learned from received packets, the
//! underlay's room for an inner frame, and the port's VXLAN counters.
//!
//! Sockets: each worker receives on its own socket bound to `local:dstport` with
//! SO_REUSEPORT (the kernel spreads flows over them, as AF_PACKET fanout does), and the
//! kernel does the outer IP/UDP (checksums included), so a receive hands us the VXLAN
//! header and the inner frame. Sends go through a pool of [`TX_SOCKETS`] sockets bound to
//! `local:0`, one picked by the inner flow hash: a UDP socket cannot choose its source
//! port per packet, and the alternative (a raw socket building the outer UDP header)
//! would get a copy of every UDP packet the host receives and lose UDP GSO. So the
//! source port of a flow is one of [`TX_SOCKETS`] kernel-chosen ephemeral ports (Linux's
//! vxlan takes its source ports from the same ephemeral range), which is what spreads
//! flows over the underlay's ECMP paths (§5).
//!
//! What a received datagram becomes is `decap` (and what a frame to send becomes,
//! `encap`), both without I/O: the `vxlan` fuzz target drives them.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;
pub mod decap;
pub mod encap;

use switch::vxlan::{VtepTable, ENCAP_LEN};
use switch::{Mac, Millis};

use crate::sys::cvt;

/// Send sockets per port (source ports a port's flows are spread over).
pub const TX_SOCKETS: usize = 8;
/// Most inner MACs a port remembers the VTEP of.
pub const VTEP_CAPACITY: usize = 16_384;

/// What a VXLAN port is: `vxlan:local=IP,remote=IP[;IP...],vni=N[,dstport=4789]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// The local VTEP address (the receive sockets are bound to it).
    pub local: IpAddr,
    /// Remote VTEPs: floods are replicated to each (head-end replication), and packets
    /// from any other source are dropped (counted).
    pub remotes: Vec<IpAddr>,
    /// The VXLAN network identifier (24 bits).
    pub vni: u32,
    /// UDP destination port, 4789 by default (RFC 7348 §5).
    pub dstport: u16,
}

/// Counters of one VXLAN port (any worker increments them: shared atomics, on paths that
/// are drops or per-port rare events, never per forwarded packet).
#[derive(Debug, Default)]
pub struct VxlanCounters {
    /// Received packets too short for the VXLAN and an Ethernet header, or cut short.
    pub rx_truncated: AtomicU64,
    /// Received packets without the I flag (RFC 7348 §5).
    pub rx_bad_flags: AtomicU64,
    /// Received packets for another VNI.
    pub rx_wrong_vni: AtomicU64,
    /// Received packets from an address that is not one of the port's remotes.
    pub rx_unknown_vtep: AtomicU64,
    /// Received inner frames larger than the underlay carries that are not TCP (which
    /// is passed on as a segmentation frame), dropped.
    pub rx_oversized: AtomicU64,
    /// Frames that did not fit the underlay's MTU once encapsulated and could not be
    /// segmented to fit (not TCP), dropped.
    pub tx_mtu_exceeded: AtomicU64,
    /// TCP segmentation frames segmented smaller than their gso_size to fit the
    /// underlay's MTU.
    pub tx_resegmented: AtomicU64,
    /// Frames sent to every remote because their destination's VTEP was not known.
    pub tx_flooded: AtomicU64,
    /// Frames that could not be encapsulated (malformed offload request), dropped.
    pub tx_bad_frame: AtomicU64,
}

/// A snapshot of [`VxlanCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VxlanStats {
    pub rx_truncated: u64,
    pub rx_bad_flags: u64,
    pub rx_wrong_vni: u64,
    pub rx_unknown_vtep: u64,
    pub rx_oversized: u64,
    pub tx_mtu_exceeded: u64,
    pub tx_resegmented: u64,
    pub tx_flooded: u64,
    pub tx_bad_frame: u64,
}

/// The shared state of one VXLAN port.
pub struct VxlanPort {
    pub(crate) cfg: VxlanConfig,
    /// The remotes as socket addresses (with `dstport`), in `cfg.remotes` order.
    pub(crate) addrs: Vec<SockAddr>,
    pub(crate) tx: Vec<OwnedFd>,
    /// Largest inner frame (Ethernet header included) whose encapsulation fits the
    /// smallest path MTU to a remote.
    pub(crate) inner_max: usize,
    vteps: RwLock<VtepTable>,
    pub(crate) counters: VxlanCounters,
}

impl VxlanPort {
    /// Opens the send sockets and measures the underlay MTU towards each remote (the
    /// route's MTU, IP_MTU on a connected socket).
    pub(crate) fn open(cfg: VxlanConfig, aging_ms: u64) -> io::Result<VxlanPort> {
        if cfg.remotes.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a vxlan port needs at least one remote",
            ));
        }
        if cfg
            .remotes
            .iter()
            .any(|r| r.is_ipv4() != cfg.local.is_ipv4())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "local and remote addresses must all be IPv4 or all IPv6",
            ));
        }
        let mut addrs = Vec::with_capacity(cfg.remotes.len());
        let mut mtu = usize::MAX;
        for r in &cfg.remotes {
            let a = SockAddr::from(SocketAddr::new(*r, cfg.dstport));
            mtu = mtu.min(path_mtu(&cfg.local, &a)?);
            addrs.push(a);
        }
        let ip_hdr = if cfg.local.is_ipv4() { 20 } else { 40 };
        let inner_max = mtu.saturating_sub(ip_hdr + ENCAP_LEN);
        if inner_max < 64 {
            return Err(io::Error::other(format!(
                "the underlay MTU ({mtu}) leaves no room for an inner frame"
            )));
        }
        let mut tx = Vec::with_capacity(TX_SOCKETS);
        for _ in 0..TX_SOCKETS {
            tx.push(udp_socket(SocketAddr::new(cfg.local, 0), false)?);
        }
        Ok(VxlanPort {
            cfg,
            addrs,
            tx,
            inner_max,
            vteps: RwLock::new(VtepTable::new(VTEP_CAPACITY, aging_ms)),
            counters: VxlanCounters::default(),
        })
    }

    /// One receive socket per worker, bound to `local:dstport` with SO_REUSEPORT.
    pub(crate) fn open_rx(cfg: &VxlanConfig, n: usize) -> io::Result<Vec<OwnedFd>> {
        (0..n)
            .map(|_| udp_socket(SocketAddr::new(cfg.local, cfg.dstport), true))
            .collect()
    }

    /// The configuration the port was opened with.
    pub fn config(&self) -> &VxlanConfig {
        &self.cfg
    }

    /// The largest inner frame that fits the underlay.
    pub fn inner_max(&self) -> usize {
        self.inner_max
    }

    /// The remote VTEP `mac` was learned behind, if it has not aged out.
    pub fn vtep_of(&self, mac: &Mac, now: Millis) -> Option<IpAddr> {
        let i = self.vteps.read().get(mac, now)?;
        self.cfg.remotes.get(usize::from(i)).copied()
    }

    /// The remote index of `mac` (for the send path).
    pub(crate) fn remote_of(&self, mac: &Mac, now: Millis) -> Option<u16> {
        self.vteps.read().get(mac, now)
    }

    /// Learns that inner source `mac` is behind remote `remote`. Takes the write lock
    /// only for a new address, a move or a due refresh.
    pub(crate) fn learn(&self, mac: Mac, remote: u16, now: Millis) {
        if self.vteps.read().needs_update(&mac, remote, now) {
            self.vteps.write().learn(mac, remote, now);
        }
    }

    /// The send socket for a flow hash.
    pub(crate) fn tx_fd(&self, hash: u32) -> libc::c_int {
        let i = (hash as usize) % self.tx.len().max(1);
        self.tx.get(i).map_or(-1, |f| f.as_raw_fd())
    }

    /// A snapshot of the port's VXLAN counters.
    pub fn stats(&self) -> VxlanStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        VxlanStats {
            rx_truncated: g(&c.rx_truncated),
            rx_bad_flags: g(&c.rx_bad_flags),
            rx_wrong_vni: g(&c.rx_wrong_vni),
            rx_unknown_vtep: g(&c.rx_unknown_vtep),
            rx_oversized: g(&c.rx_oversized),
            tx_mtu_exceeded: g(&c.tx_mtu_exceeded),
            tx_resegmented: g(&c.tx_resegmented),
            tx_flooded: g(&c.tx_flooded),
            tx_bad_frame: g(&c.tx_bad_frame),
        }
    }
}

/// Adds one to a shared counter.
pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A socket address in the kernel's form, with a stable size for `msg_name`.
#[derive(Clone, Copy)]
pub(crate) struct SockAddr {
    pub(crate) storage: libc::sockaddr_in6,
    pub(crate) len: libc::socklen_t,
}

impl From<SocketAddr> for SockAddr {
    // The sizes of sockaddr_in/_in6 fit a socklen_t.
    #[allow(clippy::cast_possible_truncation)]
    fn from(a: SocketAddr) -> SockAddr {
        // SAFETY: sockaddr_in6 is plain old data; all-zero is valid.
        let mut storage: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let len = match a {
            SocketAddr::V4(v4) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: v4.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(v4.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_in is smaller than sockaddr_in6 and both are plain
                // old data; the copy stays inside `storage`.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        (&sin as *const libc::sockaddr_in).cast::<u8>(),
                        (&mut storage as *mut libc::sockaddr_in6).cast::<u8>(),
                        std::mem::size_of::<libc::sockaddr_in>(),
                    );
                }
                std::mem::size_of::<libc::sockaddr_in>()
            }
            SocketAddr::V6(v6) => {
                storage.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                storage.sin6_port = v6.port().to_be();
                storage.sin6_addr.s6_addr = v6.ip().octets();
                storage.sin6_scope_id = v6.scope_id();
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        SockAddr {
            storage,
            len: len as libc::socklen_t,
        }
    }
}

impl SockAddr {
    fn as_ptr(&self) -> *const libc::sockaddr {
        (&self.storage as *const libc::sockaddr_in6).cast()
    }
}

/// The source IP of a received packet's `msg_name` bytes (sockaddr_in or _in6).
pub(crate) fn source_ip(name: &[u8]) -> Option<IpAddr> {
    let family = u16::from_ne_bytes([*name.first()?, *name.get(1)?]);
    match i32::from(family) {
        libc::AF_INET => {
            let a: [u8; 4] = name.get(4..8)?.try_into().ok()?;
            Some(IpAddr::from(a))
        }
        libc::AF_INET6 => {
            let a: [u8; 16] = name.get(8..24)?.try_into().ok()?;
            let ip = std::net::Ipv6Addr::from(a);
            // A v4 packet on a dual-stack socket: the mapped address.
            Some(match ip.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(ip),
            })
        }
        _ => None,
    }
}

/// A non-blocking UDP socket bound to `at`; `reuse`: SO_REUSEPORT (a receive group) and
/// a receive queue the size of an AF_PACKET port's.
fn udp_socket(at: SocketAddr, reuse: bool) -> io::Result<OwnedFd> {
    let domain = if at.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: socket(2) has no pointer arguments; the fd is checked and owned once.
    let fd = cvt(unsafe {
        libc::socket(
            domain,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_UDP,
        )
    })?;
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    if reuse {
        crate::sys::setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1)?;
        // A receive socket takes the sender's UDP GSO batches as single datagrams: with
        // the default queue (rmem_default, 208 KiB) a burst of one TCP window overflows it
        // (measured: 17 % of a TCP stream's datagrams lost, RcvbufErrors).
        crate::sys::afpacket::set_rcvbuf(raw)?;
        // UDP_GRO (Linux >= 5.0): a UDP GSO batch from a sender on this kernel (over a
        // veth) arrives whole instead of segmented, and the NIC or veth GRO may coalesce
        // a flow's datagrams; one receive then carries up to 64 datagrams, the segment
        // size in a control message (`decap::decapsulate_burst`).
        crate::sys::setsockopt_int(raw, decap::SOL_UDP, decap::UDP_GRO, 1)?;
    }
    if !at.is_ipv4() {
        crate::sys::setsockopt_int(raw, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let a = SockAddr::from(at);
    // SAFETY: `a` is a valid sockaddr of `a.len` bytes that lives for the call.
    cvt(unsafe { libc::bind(raw, a.as_ptr(), a.len) })?;
    Ok(fd)
}

/// The route MTU from `local` towards `to` (IP_MTU / IPV6_MTU of a connected socket).
// sizeof(int) fits a socklen_t.
#[allow(clippy::cast_possible_truncation)]
fn path_mtu(local: &IpAddr, to: &SockAddr) -> io::Result<usize> {
    let fd = udp_socket(SocketAddr::new(*local, 0), false)?;
    let raw = fd.as_raw_fd();
    // SAFETY: `to` is a valid sockaddr of `to.len` bytes that lives for the call.
    cvt(unsafe { libc::connect(raw, to.as_ptr(), to.len) })?;
    let (level, name) = if local.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_MTU)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    };
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` live for the call; `len` is `v`'s exact size.
    cvt(unsafe {
        libc::getsockopt(
            raw,
            level,
            name,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    usize::try_from(v).map_err(|_| io::Error::other("negative path MTU"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ip_reads_both_families_and_refuses_junk() {
        let v4 = SockAddr::from("198.18.0.2:4789".parse::<SocketAddr>().unwrap());
        // SAFETY: reading the plain-old-data storage as bytes.
        let b = unsafe {
            std::slice::from_raw_parts(
                (&v4.storage as *const libc::sockaddr_in6).cast::<u8>(),
                v4.len as usize,
            )
        };
        assert_eq!(source_ip(b), Some("198.18.0.2".parse().unwrap()));
        let v6 = SockAddr::from("[2001:db8::2]:4789".parse::<SocketAddr>().unwrap());
        // SAFETY: as above.
        let b = unsafe {
            std::slice::from_raw_parts(
                (&v6.storage as *const libc::sockaddr_in6).cast::<u8>(),
                v6.len as usize,
            )
        };
        assert_eq!(source_ip(b), Some("2001:db8::2".parse().unwrap()));
        assert_eq!(source_ip(&[]), None);
        assert_eq!(source_ip(&[2, 0, 0]), None);
        assert_eq!(source_ip(&[99, 0, 0, 0, 0, 0, 0, 0]), None);
    }

    /// Receive sockets get an AF_PACKET port's queue (capped by rmem_max without
    /// CAP_NET_ADMIN).
    #[test]
    fn receive_sockets_have_a_large_queue() {
        let cfg = VxlanConfig {
            local: "127.0.0.1".parse().unwrap(),
            remotes: vec!["127.0.0.2".parse().unwrap()],
            vni: 42,
            dstport: 0,
        };
        let fds = VxlanPort::open_rx(&cfg, 1).unwrap();
        let mut v: libc::c_int = 0;
        let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap();
        // SAFETY: `v`/`len` live for the call; the kernel writes at most `len` bytes.
        let r = unsafe {
            libc::getsockopt(
                fds[0].as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(r, 0);
        let rmem_max: libc::c_int = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let want = crate::sys::afpacket::RCVBUF_BYTES.min(rmem_max);
        assert!(v >= want, "SO_RCVBUF {v}, want at least {want}");
    }

    /// A port over loopback: the MTU is measured, the send pool opened, learning works.
    #[test]
    fn a_port_over_loopback_measures_its_mtu_and_learns() {
        let cfg = VxlanConfig {
            local: "127.0.0.1".parse().unwrap(),
            remotes: vec!["127.0.0.2".parse().unwrap()],
            vni: 42,
            dstport: 4789,
        };
        let p = VxlanPort::open(cfg.clone(), 300_000).unwrap();
        // Loopback's MTU is 65536 (or what the test host set), far above 1500.
        assert!(p.inner_max() > 1500, "{}", p.inner_max());
        assert_eq!(p.tx.len(), TX_SOCKETS);
        let m = Mac([2, 0, 0, 0, 0, 9]);
        assert_eq!(p.vtep_of(&m, Millis(0)), None);
        p.learn(m, 0, Millis(0));
        assert_eq!(p.vtep_of(&m, Millis(1)), Some("127.0.0.2".parse().unwrap()));
        let mixed = VxlanConfig {
            remotes: vec!["::1".parse().unwrap()],
            ..cfg
        };
        assert!(VxlanPort::open(mixed, 1000).is_err());
    }
}
