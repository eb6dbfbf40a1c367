//! Helpers for the GSO golden test: a throw-away network namespace with a veth pair whose
//! sender has every offload off, AF_PACKET sockets inside it, and a frame builder.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

/// A named network namespace, deleted on drop (also when the test fails).
pub struct Netns {
    pub name: String,
}

fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = format!("rs-off-{tag}-{}", std::process::id());
        // A leftover of a crashed earlier run with the same pid: remove it first.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        Netns { name }
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args));
    }

    /// Runs `f` on a thread that has entered the namespace (setns only affects the
    /// calling thread, so the test's own thread stays in the root namespace).
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let ns = File::open(&path).expect("open netns");
                // SAFETY: setns on a valid namespace fd; affects only this thread.
                let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("netns thread panicked")
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

fn ifindex(name: &str) -> i32 {
    let c = CString::new(name).expect("ifname");
    // SAFETY: valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name}");
    i as i32
}

fn packet_socket(proto: u16, ifname: &str) -> OwnedFd {
    // SAFETY: plain socket(2) call; the fd is owned right after.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto.to_be() as i32) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; zeroed is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = ifindex(ifname);
    // SAFETY: sll is a valid sockaddr_ll of the size passed.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
    fd
}

fn setsockopt_int(fd: &OwnedFd, level: i32, name: i32, v: i32) {
    // SAFETY: passes a pointer to a live i32 and its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            &v as *const i32 as *const libc::c_void,
            4,
        )
    };
    assert_eq!(
        r,
        0,
        "setsockopt {level}/{name}: {}",
        std::io::Error::last_os_error()
    );
}

/// Sender (AF_PACKET with 10-byte virtio-net headers) and capture sockets.
pub struct Pair {
    tx: OwnedFd,
    rx: OwnedFd,
}

impl Pair {
    /// Must run inside the namespace (see [`Netns::enter`]).
    pub fn open(tx_if: &str, rx_if: &str) -> Pair {
        let rx = packet_socket(libc::ETH_P_ALL as u16, rx_if);
        setsockopt_int(&rx, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 8 << 20);
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: passes a pointer to a live timeval and its size.
        let r = unsafe {
            libc::setsockopt(
                rx.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        assert_eq!(r, 0);
        setsockopt_int(&rx, libc::SOL_PACKET, libc::PACKET_AUXDATA, 1);
        let tx = packet_socket(0, tx_if);
        setsockopt_int(&tx, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1);
        Pair { tx, rx }
    }

    /// Sends `vnet` (10 bytes) + `frame` through the sender.
    pub fn send(&self, vnet: &[u8], frame: &[u8]) {
        let mut b = vnet.to_vec();
        b.extend_from_slice(frame);
        // SAFETY: b is a live buffer of b.len() bytes.
        let n = unsafe {
            libc::send(
                self.tx.as_raw_fd(),
                b.as_ptr() as *const libc::c_void,
                b.len(),
                0,
            )
        };
        assert_eq!(
            n,
            b.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Captures incoming frames whose source MAC is `src` until `want` arrived or the
    /// socket's receive timeout passes (then returns what arrived).
    pub fn capture(&self, src: &[u8; 6], want: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 70000];
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.len() < want && std::time::Instant::now() < deadline {
            // SAFETY: zeroed sockaddr_ll / msghdr are valid values.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut cmsg = [0u64; 16];
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = &mut sll as *mut libc::sockaddr_ll as *mut libc::c_void;
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = cmsg.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = std::mem::size_of_val(&cmsg);
            // SAFETY: msg points at live buffers of the sizes it declares.
            let n = unsafe { libc::recvmsg(self.rx.as_raw_fd(), &mut msg, 0) };
            if n < 0 {
                break; // timeout
            }
            let vlan = aux_vlan(&msg);
            let f = &buf[..n as usize];
            if sll.sll_pkttype != libc::PACKET_OUTGOING && f.len() >= 12 && &f[6..12] == src {
                // The receive path moves a VLAN tag out of band (PACKET_AUXDATA); put it
                // back where it was on the wire.
                let mut v = f[..12].to_vec();
                if let Some((tpid, tci)) = vlan {
                    v.extend_from_slice(&tpid.to_be_bytes());
                    v.extend_from_slice(&tci.to_be_bytes());
                }
                v.extend_from_slice(&f[12..]);
                out.push(v);
            }
        }
        out
    }
}

/// `struct tpacket_auxdata` (linux/if_packet.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct AuxData {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// The out-of-band VLAN tag of a received frame, from its PACKET_AUXDATA cmsg.
fn aux_vlan(msg: &libc::msghdr) -> Option<(u16, u16)> {
    // SAFETY: msg was filled by recvmsg; the CMSG_* macros walk its control buffer.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(msg) };
    while !c.is_null() {
        // SAFETY: c is a valid cmsghdr inside the control buffer.
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_PACKET && h.cmsg_type == libc::PACKET_AUXDATA {
            // SAFETY: the kernel wrote a tpacket_auxdata as this cmsg's data; read_unaligned
            // because the data pointer need not be aligned for the struct.
            let a = unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const AuxData) };
            if a.tp_status & TP_STATUS_VLAN_VALID != 0 {
                let tpid = if a.tp_status & TP_STATUS_VLAN_TPID_VALID != 0 {
                    a.tp_vlan_tpid
                } else {
                    0x8100
                };
                return Some((tpid, a.tp_vlan_tci));
            }
            return None;
        }
        // SAFETY: as above.
        c = unsafe { libc::CMSG_NXTHDR(msg, c) };
    }
    None
}

/// Sets up `ip netns` + veth `a` → `b`, with segmentation off on `a` so the kernel
/// segments in software on transmit, and nothing merged on `b`. With `tx_csum` the
/// sender keeps checksum offload, so segments leave with partial checksums (the seed);
/// without, the kernel completes them.
pub fn veth_lab(tag: &str, tx_csum: bool) -> (Netns, String, String) {
    let ns = Netns::new(tag);
    let pid = std::process::id();
    let (a, b) = (format!("ga{pid}"), format!("gb{pid}"));
    ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]);
    ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.default.disable_ipv6=1"]);
    ns.exec(&[
        "ip", "link", "add", &a, "mtu", "9000", "type", "veth", "peer", "name", &b, "mtu", "9000",
    ]);
    let tx = if tx_csum { "on" } else { "off" };
    ns.exec(&[
        "ethtool",
        "-K",
        &a,
        "tx",
        tx,
        "tso",
        "off",
        "gso",
        "off",
        "tx-udp-segmentation",
        "off",
    ]);
    ns.exec(&[
        "ethtool", "-K", &b, "rx", "off", "gro", "off", "tso", "off", "gso", "off", "tx", "off",
    ]);
    ns.exec(&["ip", "link", "set", &a, "up"]);
    ns.exec(&["ip", "link", "set", &b, "up"]);
    (ns, a, b)
}

pub const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];

/// What to build: Ethernet (+ optional 802.1Q tag), IPv4 (+ options) or IPv6
/// (+ destination-options header), TCP (+ options) or UDP, payload.
#[derive(Debug, Clone)]
pub struct Spec {
    pub v6: bool,
    pub vlan: bool,
    pub tcp: bool,
    pub ip_opts: usize,
    pub tcp_opts: usize,
    pub tcp_flags: u8,
    pub ip_id: u16,
    pub df: bool,
    pub seq: u32,
    pub payload_len: usize,
}

/// Builds the frame with the pseudo-header seed in the L4 checksum field (what a sender
/// using NEEDS_CSUM leaves there) and returns it with csum_start.
pub fn build(s: &Spec) -> (Vec<u8>, usize) {
    let mut f = vec![0x02, 0x00, 0x5e, 0x10, 0x00, 0x02];
    f.extend_from_slice(&SRC_MAC);
    if s.vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    }
    let l4_hlen = if s.tcp { 20 + s.tcp_opts } else { 8 };
    let l4_len = l4_hlen + s.payload_len;
    let proto = if s.tcp { 6u8 } else { 17 };
    let l3 = f.len() + 2;
    let (src, dst): (Vec<u8>, Vec<u8>) = if s.v6 {
        (
            vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            vec![0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
        )
    } else {
        (vec![198, 18, 0, 1], vec![198, 19, 0, 2])
    };
    if !s.v6 {
        f.extend_from_slice(&[0x08, 0x00]);
        let ihl = 20 + s.ip_opts;
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0x02);
        f.extend_from_slice(&((ihl + l4_len) as u16).to_be_bytes());
        f.extend_from_slice(&s.ip_id.to_be_bytes());
        f.extend_from_slice(&(if s.df { 0x4000u16 } else { 0 }).to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend(std::iter::repeat_n(1u8, s.ip_opts)); // NOP options
        let c = switch::offload::checksum(&f[l3..l3 + ihl]);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&((s.ip_opts + l4_len) as u16).to_be_bytes());
        f.push(if s.ip_opts > 0 { 60 } else { proto });
        f.push(64);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        if s.ip_opts > 0 {
            f.extend_from_slice(&[proto, (s.ip_opts / 8 - 1) as u8, 1, (s.ip_opts - 4) as u8]);
            f.extend(std::iter::repeat_n(0u8, s.ip_opts - 4));
        }
    }
    let l4 = f.len();
    f.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89]);
    if s.tcp {
        f.extend_from_slice(&s.seq.to_be_bytes());
        f.extend_from_slice(&0x0a0b_0c0du32.to_be_bytes());
        f.push(((l4_hlen / 4) as u8) << 4);
        f.push(s.tcp_flags);
        f.extend_from_slice(&[0x20, 0x00, 0, 0, 0, 0]);
        f.extend(std::iter::repeat_n(1u8, s.tcp_opts));
    } else {
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend((0..s.payload_len).map(|i| (i * 131 + i / 256) as u8));
    let mut c = switch::offload::Csum::new();
    c.add_bytes(&src);
    c.add_bytes(&dst);
    c.add_u16(proto as u16);
    c.add_u16(l4_len as u16);
    let at = l4 + if s.tcp { 16 } else { 6 };
    f[at..at + 2].copy_from_slice(&c.fold().to_be_bytes());
    (f, l4)
}

/// First differing byte, for failure messages.
pub fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or(if a.len() != b.len() {
            Some(a.len().min(b.len()))
        } else {
            None
        })
}
