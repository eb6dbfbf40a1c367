//! A message relay between the frontend's socket and vhost-user-backend's, fixing one
//! ordering the crate refuses.
//!
//! QEMU's virtio-net enables its vhost-user rings with VHOST_USER_SET_VRING_ENABLE when the
//! device is realized — before the driver has negotiated anything, so before
//! VHOST_USER_SET_FEATURES. The vhost crate (0.18) checks `PROTOCOL_FEATURES` against the
//! features acked *so far* and fails the request, and vhost-user-backend then drops the
//! connection: the NIC is dead before the guest boots. The vhost-user spec only says the
//! message is valid once PROTOCOL_FEATURES was *offered* (it was: we offer it).
//!
//! A second one: with several queue pairs QEMU runs one vhost device per pair over the same
//! connection, each with its own copy of the memory table, so with CONFIGURE_MEM_SLOTS every
//! pair sends VHOST_USER_ADD_MEM_REG for the same regions. vhost-user-backend refuses the
//! second copy ("memory regions intersect") and drops the connection.
//!
//! So every connection goes through this relay: messages are copied unchanged in both
//! directions (with their file descriptors, SCM_RIGHTS), except that
//! - a SET_VRING_ENABLE arriving before a SET_FEATURES that acks PROTOCOL_FEATURES is
//!   remembered (and acked ourselves when the frontend asked for a reply), then replayed
//!   right after that SET_FEATURES;
//! - an ADD_MEM_REG of a region identical to one already added only counts a reference (and
//!   is acked by us); a REM_MEM_REG reaches the back-end when the last reference goes.
//!   SET_MEM_TABLE replaces the table and resets the count.
//!
//! - SET_MEM_TABLE and ADD_MEM_REG are checked here, before vhost-user-backend maps
//!   anything: regions within their fds' files, at most the port's `max_mem_regions`
//!   ([`crate::frontend_checks`]); a bad one is NACKed and the connection ended.
//!   GET_MAX_MEM_SLOTS is answered with that limit.
//!
//! - VHOST_USER_SET_LOG_BASE (live migration) is served here: the log is mapped into the
//!   device's [`crate::dirtylog::DirtyLog`] and the reply sent by us, so vhost-user-backend
//!   (whose own handling needs a vm-memory bitmap on every access) never sees it; and the
//!   flags and `log_guest_addr` of each SET_VRING_ADDR, which vhost-user-backend drops, are
//!   recorded there on the way (the message itself is relayed unchanged).
//!
//! - SET_VRING_BASE is recorded whole on its way ([`crate::packed::ring::RingBases`]):
//!   for a packed ring its upper 16 bits are the used position, which vhost-user-backend
//!   drops; and the GET_VRING_BASE reply of a packed ring is rewritten with both positions
//!   the device recorded when it stopped the ring (vhost-user spec, "Vring descriptor
//!   indices for packed virtqueues").
//!
//! Only the control channel passes here; kicks, calls and guest memory never do, so the data
//! path pays nothing.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use parking_lot::Mutex;

use crate::frontend_checks::{check_wire_region, check_wire_table, Boundary, RegionError};

const HDR: usize = 12;
/// Largest payload we relay: vhost-user messages are a few hundred bytes (a memory table of
/// 8 regions is 264); anything near this is not a frontend we can serve.
const MAX_PAYLOAD: usize = 64 * 1024;
/// Most descriptors one message carries (VHOST_MEMORY_MAX_NREGIONS).
const MAX_FDS: usize = 8;

const SET_FEATURES: u32 = 2;
const SET_MEM_TABLE: u32 = 5;
const SET_LOG_BASE: u32 = 6;
const SET_VRING_ADDR: u32 = 9;
const SET_VRING_BASE: u32 = 10;
const GET_VRING_BASE: u32 = 11;
const SET_VRING_ENABLE: u32 = 18;
const ADD_MEM_REG: u32 = 37;
const GET_MAX_MEM_SLOTS: u32 = 36;
const REM_MEM_REG: u32 = 38;
const PROTOCOL_FEATURES_BIT: u64 = 1 << 30;
const F_VERSION_1: u32 = 0x1;
const F_REPLY: u32 = 0x4;
const F_NEED_REPLY: u32 = 0x8;

/// One vhost-user message with its descriptors.
struct Msg {
    hdr: [u8; HDR],
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Msg {
    fn request(&self) -> u32 {
        u32::from_le_bytes([self.hdr[0], self.hdr[1], self.hdr[2], self.hdr[3]])
    }
    fn flags(&self) -> u32 {
        u32::from_le_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]])
    }
    fn set_flags(&mut self, f: u32) {
        self.hdr[4..8].copy_from_slice(&f.to_le_bytes());
    }
}

fn read_msg(s: &UnixStream) -> io::Result<Option<Msg>> {
    let mut hdr = [0u8; HDR];
    let mut fds = Vec::new();
    let n = {
        let mut iov = [IoSliceMut::new(&mut hdr)];
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let m = recvmsg::<()>(
            s.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        for c in m.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for fd in raw {
                    // SAFETY: the kernel just installed `fd` in our table for this message
                    // (SCM_RIGHTS); nothing else knows it, so we are its only owner.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        m.bytes
    };
    if n == 0 {
        return Ok(None);
    }
    (&*s).read_exact(&mut hdr[n..])?;
    let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "vhost-user message too large",
        ));
    }
    let mut payload = vec![0u8; size];
    (&*s).read_exact(&mut payload)?;
    Ok(Some(Msg { hdr, payload, fds }))
}

fn write_msg(s: &UnixStream, m: &Msg) -> io::Result<()> {
    let raw: Vec<RawFd> = m.fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [IoSlice::new(&m.hdr), IoSlice::new(&m.payload)];
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsg };
    let sent = sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io::Error::from)?;
    // A stream socket may take less; the descriptors went with the first byte.
    let mut all = Vec::with_capacity(HDR + m.payload.len());
    all.extend_from_slice(&m.hdr);
    all.extend_from_slice(&m.payload);
    if sent < all.len() {
        (&*s).write_all(&all[sent..])?;
    }
    Ok(())
}

/// Relays one connection until either side closes. `front` is the frontend (QEMU), `back`
/// the connection vhost-user-backend serves; `b` the port's limits and counters.
pub(crate) fn run(front: UnixStream, back: UnixStream, b: &Boundary) {
    let (Ok(front2), Ok(back2), Ok(front3)) =
        (front.try_clone(), back.try_clone(), front.try_clone())
    else {
        return;
    };
    // A SIGBUS in this port's guest memory or log (sigbus.rs) fails this connection only.
    let counters = Arc::clone(&b.counters);
    let port = b.port;
    let _fault = crate::sigbus::on_fault(b.owner, move |n| {
        counters
            .memory_fault
            .fetch_add(u64::from(n), Ordering::Relaxed);
        tracing::error!(
            port,
            faults = n,
            "frontend shrank a file behind guest memory or the dirty log: port failed"
        );
        let _ = front3.shutdown(std::net::Shutdown::Both);
    });
    let front_w = Arc::new(Mutex::new(front2));
    let fw = front_w.clone();
    let bases = Arc::clone(&b.bases);
    let up = std::thread::Builder::new()
        .name("vhost-relay-up".into())
        .spawn(move || {
            // backend → frontend: replies, copied as they are but for a packed ring's
            // GET_VRING_BASE.
            while let Ok(Some(mut m)) = read_msg(&back2) {
                if m.request() == GET_VRING_BASE {
                    packed_vring_base(&bases, &mut m.payload);
                }
                if write_msg(&fw.lock(), &m).is_err() {
                    break;
                }
            }
            let _ = fw.lock().shutdown(std::net::Shutdown::Both);
        });
    // frontend → backend, with the fix-ups.
    let mut early: Vec<Msg> = Vec::new();
    let mut features_acked = false;
    let mut regions: HashMap<[u64; 3], u32> = HashMap::new();
    // Regions of the last SET_MEM_TABLE still in place (ADD_MEM_REG adds to them).
    let mut table_regions = 0usize;
    let reply = |m: &Msg, value: u64| -> io::Result<()> {
        let reply = Msg {
            hdr: reply_hdr(m.request(), 8),
            payload: value.to_le_bytes().to_vec(),
            fds: Vec::new(),
        };
        write_msg(&front_w.lock(), &reply)
    };
    let ack = |m: &Msg| -> io::Result<()> {
        if m.flags() & F_NEED_REPLY == 0 {
            return Ok(());
        }
        reply(m, 0)
    };
    // A refused memory table: counted, NACKed (REPLY_ACK) and the connection ended, as
    // vhost-user-backend does with a request that fails.
    let refuse = |m: &Msg, e: RegionError| {
        b.refuse_table(&e);
        if m.flags() & F_NEED_REPLY != 0 {
            let _ = reply(m, 1);
        }
    };
    while let Ok(Some(mut m)) = read_msg(&front) {
        let req = m.request();
        if req == SET_LOG_BASE {
            if set_log_base(b, &m, &front_w).is_err() {
                b.counters.bad_dirty_log.fetch_add(1, Ordering::Relaxed);
                break;
            }
            continue;
        }
        if req == GET_MAX_MEM_SLOTS {
            // The port's limit, not vhost-user-backend's: a frontend is never told more
            // slots than we then accept.
            if reply(&m, u64::from(b.max_regions)).is_err() {
                break;
            }
            continue;
        }
        if req == SET_VRING_ADDR {
            note_vring_addr(&b.log, &m.payload);
        }
        if req == SET_VRING_BASE {
            if let (Some(index), Some(num)) = (u32_at(&m.payload, 0), u32_at(&m.payload, 4)) {
                b.bases.note_set(index, num);
            }
        }
        if req == SET_MEM_TABLE {
            match check_wire_table(&m.payload, &m.fds, b.max_regions) {
                Ok(n) => {
                    tracing::debug!(port, regions = n, "memory table: SET_MEM_TABLE");
                    table_regions = n;
                }
                Err(e) => {
                    refuse(&m, e);
                    break;
                }
            }
            regions.clear();
        }
        if let (ADD_MEM_REG | REM_MEM_REG, Some(key)) = (req, region_key(&m.payload)) {
            if req == ADD_MEM_REG && !regions.contains_key(&key) {
                let count = table_regions + regions.len() + 1;
                if let Err(e) = check_wire_region(&m.payload, &m.fds, count, b.max_regions) {
                    refuse(&m, e);
                    break;
                }
            }
            if req == REM_MEM_REG && !regions.contains_key(&key) {
                table_regions = table_regions.saturating_sub(1);
            }
            let refs = regions.entry(key).or_insert(0);
            let forward = if req == ADD_MEM_REG {
                *refs += 1;
                *refs == 1
            } else {
                *refs = refs.saturating_sub(1);
                *refs == 0
            };
            if *refs == 0 {
                regions.remove(&key);
            }
            if !forward {
                if ack(&m).is_err() {
                    break;
                }
                continue;
            }
            // Debug level: a frontend may send these at will; operators and the memory
            // hot-plug test turn it on for this module only.
            tracing::debug!(
                port,
                guest_addr = format_args!("{:#x}", key[0]),
                size = key[1],
                "memory table: {}",
                if req == ADD_MEM_REG {
                    "ADD_MEM_REG"
                } else {
                    "REM_MEM_REG"
                }
            );
        }
        if req == SET_VRING_ENABLE && !features_acked {
            if ack(&m).is_err() {
                break;
            }
            m.set_flags(m.flags() & !F_NEED_REPLY);
            early.push(m);
            continue;
        }
        let is_features = req == SET_FEATURES && m.payload.len() >= 8;
        let acks_protocol = is_features && {
            let mut v = [0u8; 8];
            v.copy_from_slice(&m.payload[..8]);
            u64::from_le_bytes(v) & PROTOCOL_FEATURES_BIT != 0
        };
        if write_msg(&back, &m).is_err() {
            break;
        }
        if is_features {
            features_acked = acks_protocol;
            if acks_protocol {
                for e in early.drain(..) {
                    if write_msg(&back, &e).is_err() {
                        break;
                    }
                }
            } else {
                // Without PROTOCOL_FEATURES the back-end enables every ring itself.
                early.clear();
            }
        }
    }
    let _ = back.shutdown(std::net::Shutdown::Both);
    let _ = front.shutdown(std::net::Shutdown::Both);
    let _ = up.map(|t| t.join());
    // The connection's mappings stay guarded (frames in flight may hold them) until their
    // slots are needed.
    crate::sigbus::retire(b.owner, &[]);
}

/// VHOST_USER_SET_LOG_BASE with LOG_SHMFD: payload `{ u64 mmap_size; u64 mmap_offset }`
/// and the log's fd. Maps it (after checking it lies within the fd's file, see
/// [`crate::dirtylog`]), guards the mapping against a later shrink ([`crate::sigbus`]) and
/// replies with the payload echoed (QEMU reads any reply of this request; the vhost
/// crate's frontend wants this one). A log we cannot map ends the connection: replying
/// would let the frontend migrate a guest whose pages we do not log.
fn set_log_base(b: &Boundary, m: &Msg, front: &Mutex<UnixStream>) -> io::Result<()> {
    use std::os::fd::AsFd;
    let field = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            m.payload.get(i..i + 8)?.try_into().ok()?,
        ))
    };
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let (Some(size), Some(offset)) = (field(0), field(8)) else {
        return Err(bad("SET_LOG_BASE without a log region"));
    };
    let [fd] = m.fds.as_slice() else {
        return Err(bad("SET_LOG_BASE needs exactly one fd"));
    };
    let guarded = || -> io::Result<()> {
        b.log.set_base(fd.as_fd(), size, offset)?;
        if let Some((start, len)) = b.log.host_range() {
            crate::sigbus::install().map_err(io::Error::other)?;
            crate::sigbus::register(start, len, b.owner).map_err(io::Error::other)?;
        }
        Ok(())
    };
    if let Err(e) = guarded() {
        b.log.stop();
        if b.counters.may_log() {
            tracing::error!(
                port = b.port,
                "cannot map the dirty log (size {size}, offset {offset}): {e}"
            );
        }
        return Err(e);
    }
    tracing::info!("dirty log mapped: {size} bytes");
    let reply = Msg {
        hdr: reply_hdr(SET_LOG_BASE, 16),
        payload: m.payload[..16].to_vec(),
        fds: Vec::new(),
    };
    write_msg(&front.lock(), &reply)
}

/// Records SET_VRING_ADDR's `flags` and `log_guest_addr` (`struct vhost_vring_addr`:
/// index u32, flags u32, desc, used, avail, log u64).
fn note_vring_addr(log: &crate::dirtylog::DirtyLog, p: &[u8]) {
    let u32_at =
        |i: usize| -> Option<u32> { Some(u32::from_le_bytes(p.get(i..i + 4)?.try_into().ok()?)) };
    let u64_at =
        |i: usize| -> Option<u64> { Some(u64::from_le_bytes(p.get(i..i + 8)?.try_into().ok()?)) };
    if let (Some(index), Some(flags), Some(addr)) = (u32_at(0), u32_at(4), u64_at(32)) {
        log.set_ring(index, flags, addr);
    }
}

fn u32_at(p: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(p.get(i..i + 4)?.try_into().ok()?))
}

/// A GET_VRING_BASE reply (`struct vhost_vring_state`: index u32, num u32) of a packed
/// ring: `num` becomes the positions the device recorded at the stop (avail and used,
/// each with its wrap counter); a split ring's reply is left as it is.
fn packed_vring_base(bases: &crate::packed::ring::RingBases, payload: &mut [u8]) {
    let Some(index) = u32_at(payload, 0) else {
        return;
    };
    if let (Some(v), Some(num)) = (bases.stopped(index), payload.get_mut(4..8)) {
        num.copy_from_slice(&v.to_le_bytes());
    }
}

/// (guest address, size, frontend address) of an ADD/REM_MEM_REG payload
/// (`u64 padding; VhostUserMemoryRegion`).
fn region_key(p: &[u8]) -> Option<[u64; 3]> {
    let f =
        |i: usize| -> Option<u64> { Some(u64::from_le_bytes(p.get(i..i + 8)?.try_into().ok()?)) };
    Some([f(8)?, f(16)?, f(24)?])
}

fn reply_hdr(req: u32, size: u32) -> [u8; HDR] {
    let mut h = [0u8; HDR];
    h[0..4].copy_from_slice(&req.to_le_bytes());
    h[4..8].copy_from_slice(&(F_VERSION_1 | F_REPLY).to_le_bytes());
    h[8..12].copy_from_slice(&size.to_le_bytes());
    h
}

#[allow(clippy::cast_possible_truncation)]
#[cfg(test)]
mod tests {
    use super::*;

    fn msg(req: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&req.to_le_bytes());
        v.extend_from_slice(&flags.to_le_bytes());
        v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn early_enable_is_acked_and_replayed_after_set_features() {
        let (mut fe, front) = UnixStream::pair().unwrap();
        let (back, be) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            run(
                front,
                back,
                &Boundary::detached(std::sync::Arc::new(crate::dirtylog::DirtyLog::new(4)), 509),
            )
        });
        let enable = [0u8, 0, 0, 0, 1, 0, 0, 0];
        fe.write_all(&msg(SET_VRING_ENABLE, F_VERSION_1 | F_NEED_REPLY, &enable))
            .unwrap();
        // Our own ack comes back; nothing reached the back-end yet.
        let ack = read_msg(&fe).unwrap().unwrap();
        assert_eq!(ack.request(), SET_VRING_ENABLE);
        assert_eq!(ack.flags() & F_REPLY, F_REPLY);
        assert_eq!(ack.payload, 0u64.to_le_bytes());
        let feats = (PROTOCOL_FEATURES_BIT | 1).to_le_bytes();
        fe.write_all(&msg(SET_FEATURES, F_VERSION_1, &feats))
            .unwrap();
        let first = read_msg(&be).unwrap().unwrap();
        assert_eq!(first.request(), SET_FEATURES);
        let replay = read_msg(&be).unwrap().unwrap();
        assert_eq!(replay.request(), SET_VRING_ENABLE);
        assert_eq!(replay.flags() & F_NEED_REPLY, 0);
        assert_eq!(replay.payload, enable);
        // Later messages pass unchanged, with their descriptors; replies flow back.
        let (a, _b) = UnixStream::pair().unwrap();
        let m = Msg {
            hdr: msg(SET_VRING_ENABLE, F_VERSION_1, &[])[..HDR]
                .try_into()
                .unwrap(),
            payload: Vec::new(),
            fds: vec![OwnedFd::from(a)],
        };
        write_msg(&fe, &m).unwrap();
        let got = read_msg(&be).unwrap().unwrap();
        assert_eq!(got.fds.len(), 1);
        (&be)
            .write_all(&msg(1, F_VERSION_1 | F_REPLY, &[7; 8]))
            .unwrap();
        assert_eq!(read_msg(&fe).unwrap().unwrap().payload, vec![7; 8]);
        drop(fe);
        drop(be);
        t.join().unwrap();
    }

    /// SET_VRING_BASE is recorded whole (a packed ring's used half is in bits 16..32)
    /// and relayed unchanged; a GET_VRING_BASE reply is rewritten with the positions the
    /// device recorded only on a packed connection.
    #[test]
    fn packed_vring_bases_are_recorded_and_replied_whole() {
        use crate::packed::ring::RingBases;
        let (fe, front) = UnixStream::pair().unwrap();
        let (back, be) = UnixStream::pair().unwrap();
        let mut b = Boundary::detached(std::sync::Arc::new(crate::dirtylog::DirtyLog::new(4)), 509);
        let bases = std::sync::Arc::new(RingBases::new(4));
        b.bases = bases.clone();
        let t = std::thread::spawn(move || run(front, back, &b));
        let state = |index: u32, num: u32| {
            let mut p = index.to_le_bytes().to_vec();
            p.extend_from_slice(&num.to_le_bytes());
            p
        };
        (&fe)
            .write_all(&msg(SET_VRING_BASE, F_VERSION_1, &state(1, 0x0003_8005)))
            .unwrap();
        let fwd = read_msg(&be).unwrap().unwrap();
        assert_eq!(
            (fwd.request(), fwd.payload),
            (SET_VRING_BASE, state(1, 0x0003_8005))
        );
        assert_eq!(bases.set_base(1), 0x0003_8005);
        // The back-end's reply has the 16-bit avail half only.
        let reply = |num: u32| msg(GET_VRING_BASE, F_VERSION_1 | F_REPLY, &state(1, num));
        (&be).write_all(&reply(0x8005)).unwrap();
        assert_eq!(read_msg(&fe).unwrap().unwrap().payload, state(1, 0x8005));
        bases.set_packed(true);
        bases.note_stopped(1, 0x8007_8009);
        (&be).write_all(&reply(0x8009)).unwrap();
        assert_eq!(
            read_msg(&fe).unwrap().unwrap().payload,
            state(1, 0x8007_8009)
        );
        drop(fe);
        drop(be);
        t.join().unwrap();
    }

    #[test]
    fn duplicate_memory_regions_are_reference_counted() {
        let (fe, front) = UnixStream::pair().unwrap();
        let (back, be) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            run(
                front,
                back,
                &Boundary::detached(std::sync::Arc::new(crate::dirtylog::DirtyLog::new(4)), 509),
            )
        });
        let mut region = vec![0u8; 8];
        for v in [0x1000_0000u64, 0x4000, 0x7f00_0000_0000, 0] {
            region.extend_from_slice(&v.to_le_bytes());
        }
        let file = memfd(0x4000);
        let send = |req: u32| {
            let fds = if req == ADD_MEM_REG {
                vec![file.try_clone().unwrap()]
            } else {
                Vec::new()
            };
            let mut m = Msg {
                hdr: [0; HDR],
                payload: region.clone(),
                fds,
            };
            m.hdr[0..4].copy_from_slice(&req.to_le_bytes());
            m.set_flags(F_VERSION_1 | F_NEED_REPLY);
            m.hdr[8..12].copy_from_slice(&(region.len() as u32).to_le_bytes());
            write_msg(&fe, &m).unwrap();
        };
        send(ADD_MEM_REG);
        assert_eq!(read_msg(&be).unwrap().unwrap().request(), ADD_MEM_REG);
        // The second pair's copy is acked here and never reaches the back-end.
        send(ADD_MEM_REG);
        let ack = read_msg(&fe).unwrap().unwrap();
        assert_eq!(
            (ack.request(), ack.payload.clone()),
            (ADD_MEM_REG, vec![0; 8])
        );
        send(REM_MEM_REG);
        assert_eq!(read_msg(&fe).unwrap().unwrap().request(), REM_MEM_REG);
        send(REM_MEM_REG);
        assert_eq!(read_msg(&be).unwrap().unwrap().request(), REM_MEM_REG);
        drop(fe);
        drop(be);
        t.join().unwrap();
    }

    fn memfd(len: u64) -> OwnedFd {
        let fd = nix::sys::memfd::memfd_create(c"log", nix::sys::memfd::MemFdCreateFlag::empty())
            .unwrap();
        let f = std::fs::File::from(fd);
        f.set_len(len).unwrap();
        OwnedFd::from(f)
    }

    fn log_base(size: u64, offset: u64, fds: Vec<OwnedFd>) -> Msg {
        let mut payload = size.to_le_bytes().to_vec();
        payload.extend_from_slice(&offset.to_le_bytes());
        Msg {
            hdr: msg(SET_LOG_BASE, F_VERSION_1, &payload)[..HDR]
                .try_into()
                .unwrap(),
            payload,
            fds,
        }
    }

    /// A SET_MEM_TABLE whose region lies past its file's end, or with more regions than
    /// the port allows, is NACKed and the connection ended: the back-end (which would map
    /// it) never sees it. GET_MAX_MEM_SLOTS is answered with the port's limit.
    #[test]
    fn bad_memory_table_never_reaches_the_back_end() {
        let table = |n: u32, size: u64| {
            let mut p = n.to_le_bytes().to_vec();
            p.extend_from_slice(&[0; 4]);
            for i in 0..u64::from(n) {
                for v in [i << 30, size, 0x7f00_0000_0000 + (i << 30), 0] {
                    p.extend_from_slice(&v.to_le_bytes());
                }
            }
            p
        };
        let send = |fe: &UnixStream, req: u32, payload: Vec<u8>, fds: Vec<OwnedFd>| {
            let mut m = Msg {
                hdr: [0; HDR],
                payload,
                fds,
            };
            m.hdr[0..4].copy_from_slice(&req.to_le_bytes());
            m.set_flags(F_VERSION_1 | F_NEED_REPLY);
            m.hdr[8..12].copy_from_slice(&(m.payload.len() as u32).to_le_bytes());
            write_msg(fe, &m).unwrap();
        };
        let cases: [(u32, u64, u64); 2] = [
            (1, 0x2000, 0x1000), // region 8 KiB, file 4 KiB
            (3, 0x1000, 0x1000), // three regions, limit 2
        ];
        for (n, size, file) in cases {
            let counters = {
                let (fe, front) = UnixStream::pair().unwrap();
                let (back, be) = UnixStream::pair().unwrap();
                let b =
                    Boundary::detached(std::sync::Arc::new(crate::dirtylog::DirtyLog::new(4)), 2);
                let counters = b.counters.clone();
                let t = std::thread::spawn(move || run(front, back, &b));
                send(&fe, GET_MAX_MEM_SLOTS, Vec::new(), Vec::new());
                assert_eq!(read_msg(&fe).unwrap().unwrap().payload, 2u64.to_le_bytes());
                let fds = (0..n).map(|_| memfd(file)).collect();
                send(&fe, SET_MEM_TABLE, table(n, size), fds);
                let nack = read_msg(&fe).unwrap().unwrap();
                assert_eq!(
                    (nack.request(), nack.payload),
                    (SET_MEM_TABLE, 1u64.to_le_bytes().to_vec())
                );
                t.join().unwrap();
                assert!(
                    read_msg(&be).map_or(true, |m| m.is_none()),
                    "nothing forwarded"
                );
                counters
            };
            assert_eq!(counters.snapshot().bad_memory_table, 1);
        }
    }

    /// SET_LOG_BASE is served here (mapped, replied to, never forwarded) and
    /// SET_VRING_ADDR's log address noted on its way through; a log that cannot be
    /// mapped, or comes without its fd, ends the connection.
    #[test]
    fn log_base_is_served_and_vring_log_addresses_noted() {
        let log = std::sync::Arc::new(crate::dirtylog::DirtyLog::new(4));
        let (fe, front) = UnixStream::pair().unwrap();
        let (back, be) = UnixStream::pair().unwrap();
        let l = Boundary::detached(log.clone(), 509);
        let t = std::thread::spawn(move || run(front, back, &l));
        write_msg(&fe, &log_base(4096, 0, vec![memfd(4096)])).unwrap();
        let reply = read_msg(&fe).unwrap().unwrap();
        assert_eq!(reply.request(), SET_LOG_BASE);
        assert_eq!(reply.flags() & F_REPLY, F_REPLY);
        assert_eq!(reply.payload.len(), 16);
        assert!(log.mapped());
        // SET_VRING_ADDR: index 1, flags LOG, desc/used/avail, log address.
        let mut addr = Vec::new();
        addr.extend_from_slice(&1u32.to_le_bytes());
        addr.extend_from_slice(&crate::dirtylog::VRING_F_LOG.to_le_bytes());
        for v in [0x1000u64, 0x2000, 0x3000, 0x2000] {
            addr.extend_from_slice(&v.to_le_bytes());
        }
        (&fe)
            .write_all(&msg(SET_VRING_ADDR, F_VERSION_1, &addr))
            .unwrap();
        let fwd = read_msg(&be).unwrap().unwrap();
        assert_eq!((fwd.request(), fwd.payload), (SET_VRING_ADDR, addr));
        assert_eq!((log.ring_addr(1), log.ring_addr(0)), (Some(0x2000), None));
        // A log without its fd: the relay hangs up.
        write_msg(&fe, &log_base(4096, 0, Vec::new())).unwrap();
        t.join().unwrap();
        assert!(read_msg(&fe).map_or(true, |m| m.is_none()));
        // An unmappable log (offset not page-aligned) too.
        let (fe, front) = UnixStream::pair().unwrap();
        let (back, _be) = UnixStream::pair().unwrap();
        let l = Boundary::detached(log.clone(), 509);
        let t = std::thread::spawn(move || run(front, back, &l));
        write_msg(&fe, &log_base(4096, 100, vec![memfd(8192)])).unwrap();
        t.join().unwrap();
        assert!(read_msg(&fe).map_or(true, |m| m.is_none()));
    }
}
