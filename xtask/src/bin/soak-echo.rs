//! `soak-echo MAC`: the soak test's responder inside a QEMU guest (xtask/src/soak/guest.rs
//! puts it into the guest's initramfs and /init runs it).
//!
//! It does in the guest what dpdk-testpmd's `macswap` does for the testpmd peers: every
//! soak frame (xtask/src/soak/frame.rs) addressed to the guest's MAC goes back to its
//! sender with the two MAC addresses swapped and the payload unchanged, so the sender
//! checks it (right peer, sequence, generations). Unlike testpmd it also checks what it
//! gets: the guest's port has `mac=`, so the switch may hand it unicast for that MAC only
//! (broadcast aside); any other unicast soak frame is misdelivered, printed and counted.
//!
//! The interface is found by its MAC (a hot-plugged NIC may come back under another
//! name), set up, and found again whenever it disappears or changes its ifindex.
//!
//! Output on stdout (the guest's console, ttyS0), parsed by the soak orchestrator:
//! `SOAK-ECHO up dev=D ifindex=I` on each (re)open, and once a second
//! `SOAK-ECHO stats boot=B rx=N echoed=N broadcast=N foreign=N mem_kib=M` (B: the kernel's
//! boot_id, so counts of different boots are told apart; M: MemTotal, which shows a
//! hot-plugged DIMM onlined and gone again), `SOAK-ECHO foreign …` per misdelivered frame
//! (the first 20 per boot).

#[allow(dead_code)]
#[path = "../soak/frame.rs"]
mod frame;

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

fn main() {
    let Some(mac) = std::env::args().nth(1).and_then(|s| parse_mac(&s)) else {
        eprintln!("usage: soak-echo MAC");
        std::process::exit(2);
    };
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let mut st = Stats::default();
    let mut cur: Option<(OwnedFd, String, i32)> = None;
    let mut next_report = Instant::now();
    let mut buf = [0u8; 2048];
    loop {
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(1);
            println!(
                "SOAK-ECHO stats boot={boot} rx={} echoed={} broadcast={} foreign={} mem_kib={}",
                st.rx,
                st.echoed,
                st.broadcast,
                st.foreign,
                mem_total_kib()
            );
            let _ = io::stdout().flush();
            // The NIC may have been unplugged and another plugged in.
            if let Some((_, dev, idx)) = &cur {
                if ifindex(dev) != Some(*idx) || find_dev(mac).as_deref() != Some(dev) {
                    cur = None;
                }
            }
        }
        if cur.is_none() {
            match open_dev(mac) {
                Ok(Some(c)) => {
                    println!("SOAK-ECHO up dev={} ifindex={}", c.1, c.2);
                    let _ = io::stdout().flush();
                    cur = Some(c);
                }
                Ok(None) => {}
                Err(e) => eprintln!("SOAK-ECHO error {e}"),
            }
        }
        let Some((sock, _, _)) = &cur else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let fd = sock.as_raw_fd();
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd we own.
        unsafe {
            libc::poll(&mut p, 1, 100);
        }
        loop {
            match recv(fd, &mut buf) {
                Ok(Some(n)) => handle(fd, mac, &mut buf[..n], &mut st),
                Ok(None) => break,
                Err(_) => {
                    // ENETDOWN after the device went away: find it again.
                    cur = None;
                    break;
                }
            }
        }
    }
}

#[derive(Default)]
struct Stats {
    rx: u64,
    echoed: u64,
    broadcast: u64,
    foreign: u64,
}

fn handle(fd: i32, mac: [u8; 6], b: &mut [u8], st: &mut Stats) {
    let Some(f) = frame::decode(b) else { return };
    st.rx += 1;
    if f.eth_dst == frame::BROADCAST {
        st.broadcast += 1;
        return;
    }
    if f.eth_dst != mac {
        st.foreign += 1;
        if st.foreign <= 20 {
            println!(
                "SOAK-ECHO foreign eth_dst={} eth_src={} {:?}",
                fmt_mac(f.eth_dst),
                fmt_mac(f.eth_src),
                f.p
            );
        }
        return;
    }
    // macswap: back to the sender, from us; the payload stays as the sender wrote it.
    b[0..6].copy_from_slice(&f.eth_src);
    b[6..12].copy_from_slice(&mac);
    // SAFETY: send(2) reads b.len() bytes from a live buffer.
    let r = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
    if r >= 0 {
        st.echoed += 1;
    }
}

/// MemTotal from /proc/meminfo (0 if unreadable).
fn mem_total_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut m = [0u8; 6];
    let mut it = s.trim().split(':');
    for b in m.iter_mut() {
        *b = u8::from_str_radix(it.next()?, 16).ok()?;
    }
    it.next().is_none().then_some(m)
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The interface whose address is `mac`.
fn find_dev(mac: [u8; 6]) -> Option<String> {
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .find_map(|e| {
            let a = std::fs::read_to_string(e.path().join("address")).ok()?;
            (parse_mac(&a) == Some(mac)).then(|| e.file_name().to_string_lossy().into_owned())
        })
}

fn ifindex(dev: &str) -> Option<i32> {
    std::fs::read_to_string(format!("/sys/class/net/{dev}/ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Finds the interface, sets it up and binds a raw socket for the soak ethertype to it.
fn open_dev(mac: [u8; 6]) -> io::Result<Option<(OwnedFd, String, i32)>> {
    let Some(dev) = find_dev(mac) else {
        return Ok(None);
    };
    let Some(idx) = ifindex(&dev) else {
        return Ok(None);
    };
    set_up(&dev)?;
    let proto = frame::ETHERTYPE.to_be();
    // Protocol 0 here, the ethertype only in bind(2): a packet socket opened with a
    // protocol receives it from every interface of the namespace until it is bound
    // (packet(7)), so frames arriving on other interfaces in that moment (the switch's
    // own veth ends, for the tap endpoint) would be read as delivered to this one.
    // SAFETY: socket(2) has no memory preconditions; the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = idx;
    // SAFETY: bind(2) reads a sockaddr_ll of the size we pass.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Some((sock, dev, idx)))
}

/// `ip link set DEV up` (SIOCGIFFLAGS / SIOCSIFFLAGS, netdevice(7)).
fn set_up(dev: &str) -> io::Result<()> {
    // SAFETY: socket(2) has no memory preconditions; the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let s = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name = dev.as_bytes();
    if name.len() >= ifr.ifr_name.len() {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS writes the flags into the ifreq we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: reading the union member SIOCGIFFLAGS just filled in.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One received frame that this socket did not send; None when the queue is empty.
fn recv(fd: i32, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: recvfrom(2) writes at most buf.len() bytes into buf and at most len
        // bytes into sll, both live for the call.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        if sll.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        return Ok(Some(usize::try_from(n).unwrap_or(0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("02:53:4b:00:00:06\n"),
            Some([2, 0x53, 0x4b, 0, 0, 6])
        );
        assert_eq!(parse_mac("02:53:4b:00:00"), None);
        assert_eq!(parse_mac("02:53:4b:00:00:06:07"), None);
        assert_eq!(fmt_mac([2, 0x53, 0x4b, 0, 0, 6]), "02:53:4b:00:00:06");
    }
}
