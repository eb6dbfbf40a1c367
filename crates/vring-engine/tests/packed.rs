//! Packed virtqueues (virtio 1.2 §2.8) through the whole device: a frontend negotiates
//! VIRTIO_F_RING_PACKED with a `packed` port, sets its rings up as QEMU does (the vhost-user
//! "avail" and "used" addresses are the driver and device event areas, SET_VRING_BASE
//! carries the wrap counter in bit 15), and a driver that follows §2.8's algorithm posts
//! RX buffers, sends TX lists and control commands. Frames are checked where they land;
//! GET_VRING_BASE reports both positions with their wrap counters (the vhost-user spec's
//! packed layout, served by the relay); a list with a buffer ID outside the ring is a
//! counted `BadRing` drop and a broken ring, signalled on the error eventfd.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::frames::*;
use common::*;
use parking_lot::Mutex;
use switch::{Offloads, PortId, RxFilter, VnetHdr};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VringConfigData};
use virtio_bindings::virtio_config::{VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_net::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vring_engine::features::bit;
use vring_engine::{DropReason, NetDevice, PortEvents, TxRing, VhostUserPort};

const F_AVAIL: u16 = 1 << 7;
const F_USED: u16 = 1 << 15;

/// The driver side of one packed virtqueue (§2.8 "Driver Ring Wrap Counter",
/// "Supplying Buffers to The Device", "Receiving Used Buffers From The Device").
struct PackedQueue {
    size: u16,
    desc: u64,
    driver: u64,
    device: u64,
    kick: EventFd,
    call: EventFd,
    err: EventFd,
    avail: (u16, bool),
    used: (u16, bool),
    free_ids: Vec<u16>,
    /// Per ID in flight: descriptors of its list.
    ndescs: HashMap<u16, u16>,
}

impl PackedQueue {
    fn new(base: u64, size: u16) -> PackedQueue {
        let driver = base + 16 * u64::from(size);
        PackedQueue {
            size,
            desc: base,
            driver,
            device: driver + 4,
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
            err: EventFd::new(EFD_NONBLOCK).unwrap(),
            avail: (0, true),
            used: (0, true),
            free_ids: (0..size).rev().collect(),
            ndescs: HashMap::new(),
        }
    }

    fn footprint(size: u16) -> u64 {
        16 * u64::from(size) + 8
    }

    fn config(&self, mem: &Mem) -> VringConfigData {
        let va = |a: u64| mem.get_host_address(GuestAddress(a)).unwrap() as u64;
        VringConfigData {
            queue_max_size: self.size,
            queue_size: self.size,
            flags: 0,
            desc_table_addr: va(self.desc),
            used_ring_addr: va(self.device),
            avail_ring_addr: va(self.driver),
            log_addr: None,
        }
    }

    fn advance(&self, (idx, wrap): (u16, bool), n: u16) -> (u16, bool) {
        let t = idx + n;
        if t >= self.size {
            (t - self.size, !wrap)
        } else {
            (t, wrap)
        }
    }

    fn write_desc(&self, mem: &Mem, slot: u16, addr: u64, len: u32, id: u16, flags: u16) {
        let at = self.desc + 16 * u64::from(slot);
        mem.write_obj(addr, GuestAddress(at)).unwrap();
        mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        mem.write_obj(id, GuestAddress(at + 12)).unwrap();
        mem.write_obj(flags, GuestAddress(at + 14)).unwrap();
    }

    /// Makes `bufs` (addr, len, device-writable) available as one list with buffer ID
    /// `id` (from the free list unless given): the head's flags are written last.
    fn add_with_id(&mut self, mem: &Mem, bufs: &[(u64, u32, bool)], id: u16) -> u16 {
        let n = bufs.len() as u16;
        let mut head = None;
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let (slot, wrap) = self.advance(self.avail, k as u16);
            let mut flags = if wrap { F_AVAIL } else { F_USED };
            if w {
                flags |= 2;
            }
            if k + 1 < bufs.len() {
                flags |= 1;
            }
            if k == 0 {
                head = Some((slot, addr, len, flags));
            } else {
                self.write_desc(mem, slot, addr, len, id, flags);
            }
        }
        let (slot, addr, len, flags) = head.unwrap();
        std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
        self.write_desc(mem, slot, addr, len, id, flags);
        self.avail = self.advance(self.avail, n);
        self.ndescs.insert(id, n);
        id
    }

    fn add(&mut self, mem: &Mem, bufs: &[(u64, u32, bool)]) -> u16 {
        let id = self.free_ids.pop().expect("a free buffer ID");
        self.add_with_id(mem, bufs, id)
    }

    /// Used buffers since the last call: (ID, length written).
    fn take_used(&mut self, mem: &Mem) -> Vec<(u16, u32)> {
        let mut out = Vec::new();
        loop {
            let at = self.desc + 16 * u64::from(self.used.0);
            let flags: u16 = mem.read_obj(GuestAddress(at + 14)).unwrap();
            let avail = flags & F_AVAIL != 0;
            let used = flags & F_USED != 0;
            if !(avail == self.used.1 && used == self.used.1) {
                return out;
            }
            let len: u32 = mem.read_obj(GuestAddress(at + 8)).unwrap();
            let id: u16 = mem.read_obj(GuestAddress(at + 12)).unwrap();
            let n = self
                .ndescs
                .remove(&id)
                .expect("a used ID that was in flight");
            self.used = self.advance(self.used, n);
            self.free_ids.push(id);
            out.push((id, len));
        }
    }

    fn wait_used(&mut self, mem: &Mem, n: usize) -> Vec<(u16, u32)> {
        let mut got = Vec::new();
        wait_for("used descriptors", || {
            got.extend(self.take_used(mem));
            (got.len() >= n).then_some(())
        });
        got
    }

    /// The position as the vhost-user ring base encodes it (bit 15: wrap counter).
    fn base(p: (u16, bool)) -> u32 {
        u32::from(p.0) | if p.1 { 0x8000 } else { 0 }
    }
}

/// The "data plane": keeps lent TX rings.
#[derive(Default)]
struct Plane {
    rings: Mutex<Vec<TxRing>>,
}

struct Ev(Arc<Plane>);

impl PortEvents for Ev {
    fn rx_filter_changed(&self, _: PortId, _: &RxFilter) {}
    fn offloads_changed(&self, _: PortId, _: Offloads) {}
    fn link_changed(&self, _: PortId, _: bool) {}
    fn tx_ring_started(&self, _: PortId, ring: TxRing) {
        self.0.rings.lock().push(ring);
    }
    fn tx_ring_stopped(&self, _: PortId, pair: u16) {
        self.0.rings.lock().retain(|r| r.pair() != pair);
    }
}

struct Rig {
    plane: Arc<Plane>,
    port: VhostUserPort,
    fe: Frontend,
    mem: Mem,
    q: Vec<PackedQueue>,
    features: u64,
    next_buf: u64,
}

const SIZE: u16 = 8;

impl Rig {
    /// A `packed` port and a frontend that negotiates `want` (RING_PACKED among them) and
    /// sets up RX, TX and control queues of SIZE entries the way QEMU does.
    fn start(tag: &str, want: u64) -> Rig {
        let plane = Arc::new(Plane::default());
        let mut o = opts(tag, MAC_A);
        o.packed = true;
        let dev = NetDevice::new(PortId(0), o, Arc::new(Ev(plane.clone()))).unwrap();
        let port = VhostUserPort::start(dev).unwrap();
        let mut fe = TestGuest::connect(&port.device().options().socket, 3);
        fe.set_owner().unwrap();
        let offered = fe.get_features().unwrap();
        assert_ne!(
            offered & bit(VIRTIO_F_RING_PACKED),
            0,
            "a packed port offers it"
        );
        let pf = fe.get_protocol_features().unwrap();
        fe.set_protocol_features(
            pf & (VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::REPLY_ACK
                | VhostUserProtocolFeatures::CONFIG),
        )
        .unwrap();
        fe.set_hdr_flags(vhost::vhost_user::message::VhostUserHeaderFlag::NEED_REPLY);
        let features = offered & (want | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits());
        fe.set_features(features).unwrap();
        let mem = memfd_memory(MEM_BASE, MEM_SIZE);
        fe.set_mem_table(&regions(&mem)).unwrap();
        let mut q = Vec::new();
        let mut at = MEM_BASE;
        for _ in 0..3 {
            q.push(PackedQueue::new(at, SIZE));
            at += (PackedQueue::footprint(SIZE) + 4095) & !4095;
        }
        let mut r = Rig {
            plane,
            port,
            fe,
            mem,
            q,
            features,
            next_buf: at,
        };
        for i in 0..3 {
            r.setup(i);
        }
        r
    }

    fn setup(&mut self, i: usize) {
        let q = &self.q[i];
        self.fe.set_vring_num(i, q.size).unwrap();
        // Next avail slot 0 in the first round: the wrap counter (1) in bit 15.
        self.fe.set_vring_base(i, 0x8000).unwrap();
        self.fe.set_vring_addr(i, &q.config(&self.mem)).unwrap();
        self.fe.set_vring_err(i, &q.err).unwrap();
        self.fe.set_vring_call(i, &q.call).unwrap();
        self.fe.set_vring_kick(i, &q.kick).unwrap();
        self.fe.set_vring_enable(i, true).unwrap();
    }

    fn dev(&self) -> &NetDevice {
        self.port.device()
    }

    fn alloc(&mut self, len: u64) -> u64 {
        let a = (self.next_buf + 15) & !15;
        self.next_buf = a + len;
        a
    }

    fn hdr_len(&self) -> usize {
        vring_engine::features::vnet_hdr_len(self.features)
    }

    fn post_rx(&mut self, n: usize, len: u32) -> Vec<(u16, u64)> {
        (0..n)
            .map(|_| {
                let a = self.alloc(u64::from(len));
                (self.q[0].add(&self.mem, &[(a, len, true)]), a)
            })
            .collect()
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        b
    }

    /// Pops every frame of the lent TX ring, completes it and flushes; returns the frames.
    fn pop_tx(&self) -> Vec<Vec<u8>> {
        let mut rings = self.plane.rings.lock();
        let r = rings.first_mut().expect("TX ring lent out");
        let mut out = Vec::new();
        let mut tokens = Vec::new();
        r.pop(64, |p| {
            let mut bytes = Vec::new();
            for s in p.segs {
                // SAFETY: the ring keeps popped pieces mapped until they complete.
                bytes.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(s.addr as *const u8, s.len as usize)
                });
            }
            out.push(bytes);
            tokens.push(p.token);
            true
        });
        for t in tokens {
            r.complete(t);
        }
        r.flush();
        out
    }
}

fn want() -> u64 {
    bit(VIRTIO_F_VERSION_1)
        | bit(VIRTIO_F_RING_PACKED)
        | bit(VIRTIO_NET_F_MRG_RXBUF)
        | bit(VIRTIO_NET_F_CTRL_VQ)
        | bit(VIRTIO_NET_F_CTRL_RX)
        | bit(VIRTIO_NET_F_MAC)
}

#[test]
fn packed_rings_carry_rx_tx_and_control() {
    let mut r = Rig::start("packed", want());
    assert_ne!(r.dev().acked_features() & bit(VIRTIO_F_RING_PACKED), 0);
    let hl = r.hdr_len();
    // RX: three frames into one buffer each, one that spans two buffers (MRG_RXBUF).
    let posted = r.post_rx(5, 2048);
    let frames: Vec<Vec<u8>> = [60, 1000, 1500, 3000]
        .iter()
        .map(|&n| udp_frame(MAC_B, MAC_A, n))
        .collect();
    r.dev().rx_burst(0, |b| {
        for f in &frames {
            b.deliver(&VnetHdr::default(), &[switch::Chunk::from(f.as_slice())])
                .unwrap();
        }
    });
    assert!(r.dev().flush_rx(0), "the driver asked for calls (ENABLE)");
    let used = r.q[0].wait_used(&r.mem, 5);
    let addr = |id: u16| posted.iter().find(|(i, _)| *i == id).unwrap().1;
    for (k, f) in frames.iter().take(3).enumerate() {
        let (id, len) = used[k];
        assert_eq!(len as usize, hl + f.len());
        let got = r.read(addr(id), len as usize);
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 1, "num_buffers");
        assert_eq!(&got[hl..], f.as_slice());
    }
    let (first, second) = (used[3], used[4]);
    assert_eq!(
        (first.1, second.1 as usize),
        (2048, hl + 3000 + 14 + 28 - 2048)
    );
    let mut whole = r.read(addr(first.0), 2048);
    assert_eq!(u16::from_le_bytes([whole[10], whole[11]]), 2, "num_buffers");
    whole.extend(r.read(addr(second.0), second.1 as usize));
    assert_eq!(&whole[hl..], frames[3].as_slice());
    // Out of buffers: the frame is a counted drop, nothing is consumed.
    let dropped = r.dev().deliver(
        0,
        &VnetHdr::default(),
        &[switch::Chunk::from(frames[0].as_slice())],
    );
    assert_eq!(dropped, Err(vring_engine::RxDrop::NoBuffers));
    assert!(r.q[0].take_used(&r.mem).is_empty());
    // TX: a header descriptor and a frame descriptor in one list.
    wait_for("TX ring lent out", || {
        (!r.plane.rings.lock().is_empty()).then_some(())
    });
    let f = udp_frame(MAC_A, MAC_B, 200);
    let (h, a) = (r.alloc(12), r.alloc(f.len() as u64));
    r.mem.write_slice(&[0u8; 12], GuestAddress(h)).unwrap();
    r.mem.write_slice(&f, GuestAddress(a)).unwrap();
    let id = r.q[1].add(&r.mem, &[(h, 12, false), (a, f.len() as u32, false)]);
    let sent = r.pop_tx();
    assert_eq!(sent.len(), 1);
    assert_eq!(&sent[0][12..], f.as_slice());
    assert_eq!(r.q[1].wait_used(&r.mem, 1), [(id, 0)]);
    // Control: CTRL_RX PROMISC on, acked OK with one byte written.
    let cmd = r.alloc(3);
    let ack = r.alloc(1);
    r.mem
        .write_slice(
            &[
                VIRTIO_NET_CTRL_RX as u8,
                VIRTIO_NET_CTRL_RX_PROMISC as u8,
                1,
            ],
            GuestAddress(cmd),
        )
        .unwrap();
    r.mem.write_slice(&[0xee], GuestAddress(ack)).unwrap();
    let id = r.q[2].add(&r.mem, &[(cmd, 3, false), (ack, 1, true)]);
    r.q[2].kick.write(1).unwrap();
    assert_eq!(r.q[2].wait_used(&r.mem, 1), [(id, 1)]);
    assert_eq!(r.read(ack, 1)[0], 0, "VIRTIO_NET_OK");
    assert!(r.dev().rx_filter().promisc, "{:?}", r.dev().rx_filter());
    // GET_VRING_BASE: next avail and next used with their wrap counters. RX took 5 of 5
    // posted lists, TX and ctrl 2 descriptors each; all were used.
    let expect = |q: &PackedQueue| PackedQueue::base(q.avail) | (PackedQueue::base(q.used) << 16);
    for i in 0..3 {
        let got = r.fe.get_vring_base(i).unwrap();
        assert_eq!(got, expect(&r.q[i]), "queue {i}: {got:#x}");
    }
    let rx = r.dev().queue_stats(0).unwrap();
    assert_eq!(rx.frames, 4, "{rx:?}");
    assert_eq!(rx.dropped(DropReason::NoBuffers), 1, "{rx:?}");
}

/// A ring that wraps: lists cross the ring's end and the wrap counters flip, on RX and
/// TX, for several rounds.
#[test]
fn packed_rings_wrap_around() {
    let mut r = Rig::start("packedwrap", want());
    wait_for("TX ring lent out", || {
        (!r.plane.rings.lock().is_empty()).then_some(())
    });
    let hl = r.hdr_len();
    for round in 0..10u16 {
        // TX: three lists of two descriptors: 6 of 8 slots, so every other round
        // crosses the end of the ring.
        let mut ids = Vec::new();
        let f = udp_frame(MAC_A, MAC_B, 100 + usize::from(round));
        for _ in 0..3 {
            let (h, a) = (r.alloc(12), r.alloc(f.len() as u64));
            r.mem.write_slice(&[0u8; 12], GuestAddress(h)).unwrap();
            r.mem.write_slice(&f, GuestAddress(a)).unwrap();
            ids.push(r.q[1].add(&r.mem, &[(h, 12, false), (a, f.len() as u32, false)]));
        }
        let sent = r.pop_tx();
        assert_eq!(sent.len(), 3, "round {round}");
        assert!(sent.iter().all(|s| &s[12..] == f.as_slice()));
        let used: Vec<u16> = r.q[1].wait_used(&r.mem, 3).iter().map(|u| u.0).collect();
        assert_eq!(used, ids, "round {round}: in pop order");
        // RX: five single buffers, five frames.
        let posted = r.post_rx(5, 256);
        let g = udp_frame(MAC_B, MAC_A, 50 + usize::from(round));
        r.dev().rx_burst(0, |b| {
            for _ in 0..5 {
                b.deliver(&VnetHdr::default(), &[switch::Chunk::from(g.as_slice())])
                    .unwrap();
            }
        });
        let used = r.q[0].wait_used(&r.mem, 5);
        for (id, len) in used {
            let a = posted.iter().find(|(i, _)| *i == id).unwrap().1;
            assert_eq!(&r.read(a, len as usize)[hl..], g.as_slice());
        }
    }
    let tx = r.dev().queue_stats(1).unwrap();
    assert_eq!((tx.frames, tx.dropped_total()), (30, 0), "{tx:?}");
}

/// A TX list whose buffer ID is outside the ring cannot be completed: the ring is broken
/// (`BadRing`, the error eventfd) and nothing is popped from it any more; RX goes on.
#[test]
fn packed_ring_with_a_bad_buffer_id_is_broken() {
    let mut r = Rig::start("packedbad", want());
    wait_for("TX ring lent out", || {
        (!r.plane.rings.lock().is_empty()).then_some(())
    });
    let f = udp_frame(MAC_A, MAC_B, 64);
    let a = r.alloc(12 + f.len() as u64);
    r.mem.write_slice(&[0u8; 12], GuestAddress(a)).unwrap();
    r.mem.write_slice(&f, GuestAddress(a + 12)).unwrap();
    r.q[1].add_with_id(&r.mem, &[(a, 12 + f.len() as u32, false)], SIZE + 3);
    assert!(r.pop_tx().is_empty());
    let tx = r.dev().queue_stats(1).unwrap();
    assert_eq!(tx.dropped(DropReason::BadRing), 1, "{tx:?}");
    wait_for("error eventfd", || r.q[1].err.read().ok());
    // Other queues keep working.
    let posted = r.post_rx(1, 2048);
    r.dev()
        .deliver(0, &VnetHdr::default(), &[switch::Chunk::from(f.as_slice())])
        .unwrap();
    assert_eq!(r.q[0].wait_used(&r.mem, 1)[0].0, posted[0].0);
}

/// Lists whose buffers are bad still have a well-defined extent and ID: each is a counted
/// drop, completed with length 0, and the ring goes on. TX: a buffer outside guest
/// memory, a zero-length buffer; RX: a buffer the device may not write (no WRITE flag).
/// An indirect TX list (a table of two buffers) is popped like any other.
#[test]
fn packed_lists_with_bad_buffers_are_counted_drops() {
    use virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC;
    let mut r = Rig::start("packedhostile", want() | bit(VIRTIO_RING_F_INDIRECT_DESC));
    wait_for("TX ring lent out", || {
        (!r.plane.rings.lock().is_empty()).then_some(())
    });
    let f = udp_frame(MAC_A, MAC_B, 100);
    let (h, a) = (r.alloc(12), r.alloc(f.len() as u64));
    r.mem.write_slice(&[0u8; 12], GuestAddress(h)).unwrap();
    r.mem.write_slice(&f, GuestAddress(a)).unwrap();
    let outside = r.q[1].add(&r.mem, &[(h, 12, false), (0x4000_0000, 100, false)]);
    let empty = r.q[1].add(&r.mem, &[(h, 12, false), (a, 0, false)]);
    // The indirect table: two 16-byte entries (addr, len, id, flags), the list one
    // ring descriptor with INDIRECT (§2.8 "Indirect Flag").
    let table = r.alloc(32);
    for (k, (addr, len)) in [(h, 12u32), (a, f.len() as u32)].into_iter().enumerate() {
        let at = table + 16 * k as u64;
        r.mem.write_obj(addr, GuestAddress(at)).unwrap();
        r.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        r.mem.write_obj(0u32, GuestAddress(at + 12)).unwrap();
    }
    let id = r.q[1].free_ids.pop().unwrap();
    let (slot, wrap) = r.q[1].avail;
    let flags = 4 | if wrap { F_AVAIL } else { F_USED };
    r.q[1].write_desc(&r.mem, slot, table, 32, id, flags);
    r.q[1].avail = r.q[1].advance(r.q[1].avail, 1);
    r.q[1].ndescs.insert(id, 1);
    let sent = r.pop_tx();
    assert_eq!(sent.len(), 1, "only the indirect list is a frame");
    assert_eq!(&sent[0][12..], f.as_slice());
    let used = r.q[1].wait_used(&r.mem, 3);
    assert_eq!(used, [(outside, 0), (empty, 0), (id, 0)]);
    let tx = r.dev().queue_stats(1).unwrap();
    assert_eq!(
        tx.dropped(DropReason::Chain(
            vring_engine::chain::ChainError::OutOfMemory
        )),
        1,
        "{tx:?}"
    );
    assert_eq!(
        tx.dropped(DropReason::Chain(
            vring_engine::chain::ChainError::ZeroLength
        )),
        1,
        "{tx:?}"
    );
    // RX: a read-only buffer is consumed empty, the frame dropped; the next takes the
    // next buffer.
    let ro = r.alloc(2048);
    let bad = r.q[0].add(&r.mem, &[(ro, 2048, false)]);
    let good = r.post_rx(1, 2048);
    let g = udp_frame(MAC_B, MAC_A, 70);
    let frame = || [switch::Chunk::from(g.as_slice())];
    assert_eq!(
        r.dev().deliver(0, &VnetHdr::default(), &frame()),
        Err(vring_engine::RxDrop::BadChain(
            vring_engine::chain::ChainError::WrongDirection
        ))
    );
    r.dev().deliver(0, &VnetHdr::default(), &frame()).unwrap();
    let used = r.q[0].wait_used(&r.mem, 2);
    assert_eq!(used[0], (bad, 0));
    assert_eq!(used[1].0, good[0].0);
    assert_eq!(
        &r.read(good[0].1, used[1].1 as usize)[r.hdr_len()..],
        g.as_slice()
    );
    assert!(
        r.q[0].err.read().is_err() && r.q[1].err.read().is_err(),
        "no ring broken"
    );
}
