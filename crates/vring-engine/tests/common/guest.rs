//! An in-repo vhost-user *frontend* for tests: the vhost crate's `Frontend` for the protocol
//! plus a driver-side split virtqueue (virtio 1.2 §2.7) over memfd-backed guest memory,
//! driving the device the way QEMU and a Linux guest driver do: negotiate, set the memory
//! table, set up rings, post buffers, kick, wait for used entries and calls.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

pub type Mem = GuestMemoryMmap<()>;

/// A raw split descriptor: (addr, len, flags, next).
pub type RawDesc = (u64, u32, u16, u16);

/// A unique socket path under /tmp for this test process.
pub fn sock_path(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("vring-{}-{tag}-{n}.sock", std::process::id()))
}

/// Guest memory: one memfd region mapped shared, as QEMU's memory-backend-memfd.
pub fn memfd_memory(base: u64, size: usize) -> Mem {
    let fd =
        nix::sys::memfd::memfd_create(c"vring-test", nix::sys::memfd::MemFdCreateFlag::empty())
            .expect("memfd_create");
    let file = File::from(fd);
    file.set_len(size as u64).unwrap();
    GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(base),
        size,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap()
}

pub fn regions(mem: &Mem) -> Vec<VhostUserMemoryRegionInfo> {
    mem.iter()
        .map(|r| VhostUserMemoryRegionInfo::from_guest_region(r).unwrap())
        .collect()
}

/// Waits until `f` returns Some, or panics after 10 s (a hang is a failure, not a speed check).
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The driver side of one split virtqueue.
pub struct DriverQueue {
    pub size: u16,
    pub desc: GuestAddress,
    pub avail: GuestAddress,
    pub used: GuestAddress,
    pub kick: EventFd,
    pub call: EventFd,
    pub err: EventFd,
    free: Vec<u16>,
    pub avail_idx: u16,
    pub last_used: u16,
}

impl DriverQueue {
    /// Lays the rings out at `base` (needs 16·size + 6 + 2·size + 6 + 8·size + slack).
    pub fn new(base: u64, size: u16) -> DriverQueue {
        let s = u64::from(size);
        let desc = base;
        let avail = desc + 16 * s;
        let used = (avail + 6 + 2 * s + 3) & !3;
        DriverQueue {
            size,
            desc: GuestAddress(desc),
            avail: GuestAddress(avail),
            used: GuestAddress(used),
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
            err: EventFd::new(EFD_NONBLOCK).unwrap(),
            free: (0..size).rev().collect(),
            avail_idx: 0,
            last_used: 0,
        }
    }

    /// A new driver's ring at the same place: memory zeroed, indices back to 0 (what a
    /// driver does after reset or reload).
    pub fn fresh(mem: &Mem, base: u64, size: u16) -> DriverQueue {
        let zeros = vec![0u8; Self::footprint(size) as usize];
        mem.write_slice(&zeros, GuestAddress(base)).unwrap();
        DriverQueue::new(base, size)
    }

    pub fn footprint(size: u16) -> u64 {
        let s = u64::from(size);
        ((16 * s + 6 + 2 * s + 3) & !3) + 6 + 8 * s + 64
    }

    /// Ring addresses as the frontend's virtual addresses, as QEMU sends them (the back-end
    /// translates them through the memory table's `userspace_addr`).
    pub fn config(&self, mem: &Mem) -> VringConfigData {
        let va = |a: GuestAddress| mem.get_host_address(a).unwrap() as u64;
        VringConfigData {
            queue_max_size: self.size,
            queue_size: self.size,
            flags: 0,
            desc_table_addr: va(self.desc),
            used_ring_addr: va(self.used),
            avail_ring_addr: va(self.avail),
            log_addr: None,
        }
    }

    /// Writes descriptor `i` of the table at `table`: (addr, len, flags, next).
    pub fn write_desc(mem: &Mem, table: GuestAddress, i: u16, d: RawDesc) {
        let (addr, len, flags, next) = d;
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&next.to_le_bytes());
        mem.write_slice(&b, table.unchecked_add(16 * u64::from(i)))
            .unwrap();
    }

    /// Posts a chain of (addr, len, device-writable) buffers; returns its head.
    pub fn add(&mut self, mem: &Mem, bufs: &[(u64, u32, bool)]) -> u16 {
        let ids: Vec<u16> = (0..bufs.len())
            .map(|_| self.free.pop().expect("ring full"))
            .collect();
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let last = k + 1 == bufs.len();
            let flags = if w { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            let next = if last { 0 } else { ids[k + 1] };
            Self::write_desc(mem, self.desc, ids[k], (addr, len, flags, next));
        }
        self.publish(mem, ids[0]);
        ids[0]
    }

    /// Posts one indirect descriptor pointing at a table at `table` holding `bufs`.
    pub fn add_indirect(&mut self, mem: &Mem, table: u64, bufs: &[(u64, u32, bool)]) -> u16 {
        for (k, &(addr, len, w)) in bufs.iter().enumerate() {
            let last = k + 1 == bufs.len();
            let flags = if w { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            Self::write_desc(
                mem,
                GuestAddress(table),
                k as u16,
                (addr, len, flags, (k + 1) as u16),
            );
        }
        let id = self.free.pop().expect("ring full");
        Self::write_desc(
            mem,
            self.desc,
            id,
            (table, 16 * bufs.len() as u32, F_INDIRECT, 0),
        );
        self.publish(mem, id);
        id
    }

    /// Takes a free descriptor index (for hand-made hostile chains).
    pub fn take_free(&mut self) -> u16 {
        self.free.pop().expect("ring full")
    }

    /// Puts `head` into the avail ring and bumps avail->idx (release order, §2.7.13).
    pub fn publish(&mut self, mem: &Mem, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        mem.write_obj(head.to_le(), self.avail.unchecked_add(4 + 2 * slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(mem, self.avail_idx);
    }

    pub fn set_avail_idx(&self, mem: &Mem, idx: u16) {
        std::sync::atomic::fence(Ordering::Release);
        mem.store(idx.to_le(), self.avail.unchecked_add(2), Ordering::Release)
            .unwrap();
    }

    /// used_event (EVENT_IDX, §2.7.10): ask for a call once the used index passes `v`.
    pub fn set_used_event(&self, mem: &Mem, v: u16) {
        let at = self.avail.unchecked_add(4 + 2 * u64::from(self.size));
        mem.store(v.to_le(), at, Ordering::Release).unwrap();
    }

    /// avail_event (EVENT_IDX, §2.7.10): the device wants a kick once the avail index
    /// passes it.
    pub fn avail_event(&self, mem: &Mem) -> u16 {
        let at = self.used.unchecked_add(4 + 8 * u64::from(self.size));
        u16::from_le(mem.load(at, Ordering::Acquire).unwrap())
    }

    /// The used ring's flags (VRING_USED_F_NO_NOTIFY = 1, §2.7.10 without EVENT_IDX).
    pub fn used_flags(&self, mem: &Mem) -> u16 {
        u16::from_le(mem.load(self.used, Ordering::Acquire).unwrap())
    }

    pub fn used_idx(&self, mem: &Mem) -> u16 {
        u16::from_le(
            mem.load(self.used.unchecked_add(2), Ordering::Acquire)
                .unwrap(),
        )
    }

    /// Used entries (id, len) not seen yet; their descriptors go back to the free list
    /// (chains are walked via `next` to free every descriptor).
    pub fn take_used(&mut self, mem: &Mem) -> Vec<(u16, u32)> {
        let end = self.used_idx(mem);
        let mut out = Vec::new();
        while self.last_used != end {
            let slot = u64::from(self.last_used % self.size);
            let at = self.used.unchecked_add(4 + 8 * slot);
            let id: u32 = u32::from_le(mem.read_obj(at).unwrap());
            let len: u32 = u32::from_le(mem.read_obj(at.unchecked_add(4)).unwrap());
            self.last_used = self.last_used.wrapping_add(1);
            let id = id as u16;
            self.release(mem, id);
            out.push((id, len));
        }
        out
    }

    fn release(&mut self, mem: &Mem, head: u16) {
        let mut i = head;
        for _ in 0..self.size {
            if i >= self.size || self.free.contains(&i) {
                return;
            }
            self.free.push(i);
            let flags: u16 = mem
                .read_obj(self.desc.unchecked_add(16 * u64::from(i) + 12))
                .unwrap();
            if flags & F_NEXT == 0 {
                return;
            }
            i = mem
                .read_obj(self.desc.unchecked_add(16 * u64::from(i) + 14))
                .unwrap();
        }
    }

    pub fn kick(&self) {
        self.kick.write(1).unwrap();
    }

    /// Reads (and clears) the call eventfd: whether the device signalled since last time.
    pub fn called(&self) -> bool {
        self.call.read().is_ok()
    }

    pub fn errored(&self) -> bool {
        self.err.read().is_ok()
    }

    /// Waits for `n` used entries.
    pub fn wait_used(&mut self, mem: &Mem, n: usize) -> Vec<(u16, u32)> {
        let mut got = Vec::new();
        wait_for("used entries", || {
            got.extend(self.take_used(mem));
            (got.len() >= n).then_some(())
        });
        got
    }
}

/// A test "guest": memory, the protocol connection, queues and a buffer allocator.
pub struct TestGuest {
    pub mem: Mem,
    pub fe: Frontend,
    pub queues: Vec<DriverQueue>,
    pub features: u64,
    next_buf: u64,
    buf_end: u64,
}

pub const MEM_BASE: u64 = 0x10_0000;
pub const MEM_SIZE: usize = 8 << 20;
pub const QSIZE: u16 = 256;

impl TestGuest {
    /// Connects to a server-mode device at `path` (retrying while it starts).
    pub fn connect(path: &Path, num_queues: usize) -> Frontend {
        wait_for("backend socket", || {
            Frontend::connect(path, num_queues as u64).ok()
        })
    }

    /// Accepts a client-mode device on `listener`.
    pub fn accept(listener: &UnixListener, num_queues: usize) -> Frontend {
        let (s, _) = listener.accept().unwrap();
        Frontend::from_stream(s, num_queues as u64)
    }

    /// The QEMU start sequence: SET_OWNER, GET_FEATURES, GET/SET_PROTOCOL_FEATURES,
    /// SET_FEATURES(wanted ∩ offered), SET_MEM_TABLE, and per queue SET_VRING_NUM/BASE/ADDR/
    /// KICK/CALL/ERR + SET_VRING_ENABLE.
    pub fn start(fe: Frontend, num_queues: usize, want: u64) -> TestGuest {
        Self::start_sized(fe, num_queues, want, QSIZE)
    }

    /// [`start`](Self::start) with every ring `size` entries long (QEMU's
    /// `rx_queue_size`/`tx_queue_size`, DPDK virtio-user's `queue_size`).
    pub fn start_sized(mut fe: Frontend, num_queues: usize, want: u64, size: u16) -> TestGuest {
        fe.set_owner().unwrap();
        let offered = fe.get_features().unwrap();
        assert_ne!(
            offered & VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits(),
            0
        );
        let pf = fe.get_protocol_features().unwrap();
        fe.set_protocol_features(
            pf & (VhostUserProtocolFeatures::MQ
                | VhostUserProtocolFeatures::CONFIG
                | VhostUserProtocolFeatures::REPLY_ACK
                | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
                | VhostUserProtocolFeatures::RESET_DEVICE
                | VhostUserProtocolFeatures::LOG_SHMFD),
        )
        .unwrap();
        // Every request acked (REPLY_ACK): when start() returns, the device has applied it.
        fe.set_hdr_flags(vhost::vhost_user::message::VhostUserHeaderFlag::NEED_REPLY);
        let features = offered & (want | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits());
        fe.set_features(features).unwrap();
        let mem = memfd_memory(MEM_BASE, MEM_SIZE);
        fe.set_mem_table(&regions(&mem)).unwrap();
        let mut g = TestGuest {
            mem,
            fe,
            queues: Vec::new(),
            features,
            next_buf: 0,
            buf_end: MEM_BASE + MEM_SIZE as u64,
        };
        let mut at = MEM_BASE;
        for _ in 0..num_queues {
            g.queues.push(DriverQueue::new(at, size));
            at += (DriverQueue::footprint(size) + 4095) & !4095;
        }
        g.next_buf = at;
        for i in 0..num_queues {
            g.setup_queue(i);
        }
        g
    }

    pub fn setup_queue(&mut self, i: usize) {
        let q = &self.queues[i];
        self.fe.set_vring_num(i, q.size).unwrap();
        self.fe.set_vring_base(i, 0).unwrap();
        self.fe.set_vring_addr(i, &q.config(&self.mem)).unwrap();
        self.fe.set_vring_err(i, &q.err).unwrap();
        self.fe.set_vring_call(i, &q.call).unwrap();
        self.fe.set_vring_kick(i, &q.kick).unwrap();
        self.fe.set_vring_enable(i, true).unwrap();
    }

    /// Where the next [`alloc`](Self::alloc) starts looking (before alignment).
    pub fn next_alloc(&self) -> u64 {
        self.next_buf
    }

    /// Allocates `len` bytes of buffer memory (16-byte aligned).
    pub fn alloc(&mut self, len: u64) -> u64 {
        let a = (self.next_buf + 15) & !15;
        assert!(a + len <= self.buf_end, "test guest out of buffer memory");
        self.next_buf = a + len;
        a
    }

    pub fn hdr_len(&self) -> usize {
        vring_engine::features::vnet_hdr_len(self.features)
    }

    /// Sends one frame on TX queue `q` with `hdr` in its own descriptor (Linux's layout
    /// without ANY_LAYOUT).
    pub fn send_split(&mut self, q: usize, hdr: &[u8], frame: &[u8]) -> u16 {
        let h = self.alloc(hdr.len() as u64);
        let f = self.alloc(frame.len() as u64);
        self.mem.write_slice(hdr, GuestAddress(h)).unwrap();
        self.mem.write_slice(frame, GuestAddress(f)).unwrap();
        let head = self.queues[q].add(
            &self.mem,
            &[(h, hdr.len() as u32, false), (f, frame.len() as u32, false)],
        );
        self.queues[q].kick();
        head
    }

    /// Sends header and frame in one descriptor (ANY_LAYOUT).
    pub fn send_inline(&mut self, q: usize, hdr: &[u8], frame: &[u8]) -> u16 {
        let mut all = hdr.to_vec();
        all.extend_from_slice(frame);
        let a = self.alloc(all.len() as u64);
        self.mem.write_slice(&all, GuestAddress(a)).unwrap();
        let head = self.queues[q].add(&self.mem, &[(a, all.len() as u32, false)]);
        self.queues[q].kick();
        head
    }

    /// Posts `n` RX buffers of `len` bytes on queue `q`; returns (head, addr) pairs.
    pub fn post_rx(&mut self, q: usize, n: usize, len: u32) -> Vec<(u16, u64)> {
        let mut v = Vec::new();
        for _ in 0..n {
            let a = self.alloc(u64::from(len));
            let head = self.queues[q].add(&self.mem, &[(a, len, true)]);
            v.push((head, a));
        }
        self.queues[q].kick();
        v
    }

    pub fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read_slice(&mut b, GuestAddress(addr)).unwrap();
        b
    }

    /// Sends a control command (class, cmd, data) on queue `q`; returns the ack byte.
    pub fn ctrl(&mut self, q: usize, class: u8, cmd: u8, data: &[u8]) -> u8 {
        let mut c = vec![class, cmd];
        c.extend_from_slice(data);
        let a = self.alloc(c.len() as u64);
        let ack = self.alloc(1);
        self.mem.write_slice(&c, GuestAddress(a)).unwrap();
        self.mem.write_slice(&[0xee], GuestAddress(ack)).unwrap();
        // Linux sends class+cmd, data and ack as separate descriptors.
        let mut bufs = vec![(a, 2, false)];
        if !data.is_empty() {
            bufs.push((a + 2, data.len() as u32, false));
        }
        bufs.push((ack, 1, true));
        let head = self.queues[q].add(&self.mem, &bufs);
        self.queues[q].kick();
        let used = self.queues[q].wait_used(&self.mem, 1);
        assert_eq!(used[0], (head, 1));
        self.read(ack, 1)[0]
    }
}
