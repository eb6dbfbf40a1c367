//! Fuzz vhost-user message sequences from a hostile frontend, through the whole path the
//! daemon serves: the port's socket, the relay (crates/vring-engine/src/relay.rs, which
//! rewrites some sequences), vhost-user-backend's request handler and our
//! `VhostUserBackend` implementation (features, memory table, rings, config space).
//!
//! One real [`VhostUserPort`] per fuzzing process; each input is one connection: its
//! messages are sent, with file descriptors where the request carries them (memfds for
//! SET_MEM_TABLE / ADD_MEM_REG / REM_MEM_REG, eventfds otherwise), every eventfd sent is
//! then signalled (so rings the input set up are processed), and the connection is
//! closed. The port must close its side within a bound and accept the next connection: a
//! panic, a hang or a crash (SIGBUS from a region larger than its file included) fails.
//!
//! Input: records `req, flags, len, fdinfo, payload[len]`. `flags` bit 7 set: raw header
//! flags, else VERSION 1 plus NEED_REPLY (bit 3). `fdinfo` bits 4-6: descriptors to
//! attach; bit 7: the header's size field lies by bits 0-3.
#![no_main]

use std::fs::File;
use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use switch::{Offloads, PortId, RxFilter};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vring_engine::{NetDevice, PortEvents, PortOptions, TxRing, VhostUserPort};

struct Quiet;
impl PortEvents for Quiet {
    fn rx_filter_changed(&self, _: PortId, _: &RxFilter) {}
    fn offloads_changed(&self, _: PortId, _: Offloads) {}
    fn link_changed(&self, _: PortId, _: bool) {}
    fn tx_ring_started(&self, _: PortId, ring: TxRing) {
        drop(ring);
    }
}

const SET_MEM_TABLE: u8 = 5;
const ADD_MEM_REG: u8 = 37;
const REM_MEM_REG: u8 = 38;
/// A port that does not close a finished connection within this is hung.
const BOUND: Duration = Duration::from_secs(10);

fn port() -> &'static PathBuf {
    static PORT: OnceLock<(VhostUserPort, PathBuf)> = OnceLock::new();
    &PORT
        .get_or_init(|| {
            let path = std::env::temp_dir()
                .join(format!("ringswitch-fuzz-vu-{}.sock", std::process::id()));
            let mut opts = PortOptions::new(&path);
            opts.queue_pairs = 2;
            opts.max_queue_size = 256;
            let dev = NetDevice::new(PortId(0), opts, Arc::new(Quiet)).expect("options");
            (VhostUserPort::start(dev).expect("port"), path)
        })
        .1
}

fn memfd() -> File {
    let fd =
        nix::sys::memfd::memfd_create(c"fuzz-guest", nix::sys::memfd::MemFdCreateFlag::empty())
            .expect("memfd");
    let f = File::from(fd);
    f.set_len(1 << 20).expect("memfd size");
    f
}

fn connect() -> UnixStream {
    let until = Instant::now() + BOUND;
    loop {
        match UnixStream::connect(port()) {
            Ok(s) => return s,
            Err(e) => {
                assert!(
                    Instant::now() < until,
                    "port does not accept connections: {e}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let s = connect();
    let mut memfds: Vec<File> = Vec::new();
    let mut events: Vec<EventFd> = Vec::new();
    let mut rest = data;
    while let [req, flags, len, fdinfo, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, tail) = tail.split_at(n);
        rest = tail;
        let hflags: u32 = if flags & 0x80 != 0 {
            u32::from(*flags & 0x7f)
        } else {
            0x1 | u32::from(*flags & 0x8)
        };
        let size = if fdinfo & 0x80 != 0 {
            n as u32 + u32::from(fdinfo & 0x0f)
        } else {
            n as u32
        };
        let mut hdr = [0u8; 12];
        hdr[0..4].copy_from_slice(&u32::from(*req).to_le_bytes());
        hdr[4..8].copy_from_slice(&hflags.to_le_bytes());
        hdr[8..12].copy_from_slice(&size.to_le_bytes());
        let nfds = usize::from((fdinfo >> 4) & 7);
        let mut fds: Vec<RawFd> = Vec::new();
        for _ in 0..nfds {
            if matches!(*req, SET_MEM_TABLE | ADD_MEM_REG | REM_MEM_REG) {
                let f = memfd();
                fds.push(f.as_raw_fd());
                memfds.push(f);
            } else {
                let e = EventFd::new(EFD_NONBLOCK).expect("eventfd");
                fds.push(e.as_raw_fd());
                events.push(e);
            }
        }
        let iov = [IoSlice::new(&hdr), IoSlice::new(payload)];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        if sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None).is_err() {
            // The port closed the connection: it refused a message. Fine.
            break;
        }
    }
    for e in &events {
        let _ = e.write(1);
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    // Drain replies until the port closes its side.
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let until = Instant::now() + BOUND;
    let mut buf = [0u8; 4096];
    let mut s = s;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                assert!(
                    Instant::now() < until,
                    "port did not close a finished connection"
                );
            }
            Err(_) => break,
        }
    }
});
