//! A hostile vhost-user frontend, as a process of its own: it connects to a back-end's
//! socket like QEMU would (the vhost crate's `Frontend`, memfd guest memory), then floods
//! its TX queue with the worst chains a guest may post and kicks after every one:
//!
//! - indirect tables of queue-size descriptors of one byte each (the longest table the
//!   device must walk, virtio 1.2 §2.7.5.3.1), carrying a valid broadcast frame;
//! - the same frame as a direct chain of queue-size descriptors (§2.7.5.2: "MUST NOT
//!   create a descriptor chain longer than the Queue Size");
//! - indirect tables twice the queue size (too long), and tables of zero-length entries;
//! - direct chains of zero-length descriptors;
//! - broadcast frames with a virtio-net header of an unknown GSO type (§5.1.6.2);
//! - plain broadcast frames, flooded to every other port.
//!
//! It never posts RX buffers, so whatever the switch sends it is dropped on its port.
//! When its TX ring stops answering (the device stopped it), it takes the ring back
//! (GET_VRING_BASE) and sets it up afresh, so the flood goes on.
//!
//! Used by `cargo xtask bench` (the isolation scenario) and by tests/hostile_process.rs
//! (the data plane under this flood; it includes this file and runs [`run`] in a child
//! process of its own). Build: `cargo build -p ringswitch-datapath
//! --example hostile_frontend`.
//!
//! Usage: `hostile_frontend SOCKET [--secs S] [--queue-size N] [--benign]` (S = 0: until
//! killed). `--benign` connects and sets up the same way, then spins without posting
//! anything: the control that takes the same CPU time without the hostile chains.

#![allow(clippy::cast_possible_truncation)] // test tool: sizes bounded by the queue size

#[allow(dead_code)]
#[path = "../../vring-engine/tests/common/guest.rs"]
mod guest;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use guest::{DriverQueue, TestGuest, F_INDIRECT, F_NEXT};
use vhost::VhostBackend;
use vm_memory::{Bytes, GuestAddress};

const TX: usize = 1;
const SRC_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x66];
/// IEEE 802 local experimental EtherType: no L3 header for the switch to check.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

#[derive(Clone, Copy, Debug)]
enum Kind {
    IndirectMax,
    DirectMax,
    IndirectTooLong,
    IndirectZero,
    DirectZero,
    BadVnetHdr,
    Broadcast,
}

const KINDS: [Kind; 7] = [
    Kind::IndirectMax,
    Kind::DirectMax,
    Kind::IndirectTooLong,
    Kind::IndirectZero,
    Kind::DirectZero,
    Kind::BadVnetHdr,
    Kind::Broadcast,
];

struct Args {
    socket: PathBuf,
    secs: u64,
    queue_size: u16,
    benign: bool,
}

fn args(argv: Vec<String>) -> Result<Args, String> {
    let mut it = argv.into_iter();
    let mut a = Args {
        socket: PathBuf::new(),
        secs: 0,
        queue_size: 256,
        benign: false,
    };
    while let Some(x) = it.next() {
        let mut val = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match x.as_str() {
            "--secs" => a.secs = val("--secs")?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--benign" => a.benign = true,
            "--queue-size" => {
                a.queue_size = val("--queue-size")?
                    .parse()
                    .map_err(|e| format!("--queue-size: {e}"))?
            }
            s if !s.starts_with('-') && a.socket.as_os_str().is_empty() => {
                a.socket = PathBuf::from(s)
            }
            s => return Err(format!("unknown argument {s}")),
        }
    }
    if a.socket.as_os_str().is_empty() {
        return Err("usage: hostile_frontend SOCKET [--secs S] [--queue-size N] [--benign]".into());
    }
    if !a.queue_size.is_power_of_two() || a.queue_size < 8 {
        return Err("--queue-size must be a power of two >= 8".into());
    }
    Ok(a)
}

/// Guest memory laid out once: frames and indirect tables that every chain reuses (their
/// contents never change, so chains in flight may share them).
struct Layout {
    /// Header + broadcast frame, `q` bytes in all: one byte per descriptor of a maximal chain.
    long_frame: u64,
    /// Header + a 60-byte broadcast frame.
    bcast: u64,
    /// Header with an unknown GSO type + the same frame.
    bad_hdr: u64,
    frame_len: u32,
    /// Indirect tables: `q` one-byte entries over `long_frame`; `2q` entries; `q` zero-length.
    t_max: u64,
    t_long: u64,
    t_zero: u64,
}

fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0xffu8; 6];
    f.extend_from_slice(&SRC_MAC);
    f.extend_from_slice(&ETHERTYPE);
    f.resize(len.max(60), 0x5a);
    f
}

fn table(g: &mut TestGuest, entries: &[(u64, u32)]) -> u64 {
    let at = g.alloc(16 * entries.len() as u64);
    for (k, &(addr, len)) in entries.iter().enumerate() {
        let last = k + 1 == entries.len();
        let flags = if last { 0 } else { F_NEXT };
        DriverQueue::write_desc(
            &g.mem,
            GuestAddress(at),
            k as u16,
            (addr, len, flags, (k + 1) as u16),
        );
    }
    at
}

fn layout(g: &mut TestGuest, q: u16) -> Layout {
    let hl = g.hdr_len();
    let qn = usize::from(q);
    let mut long = vec![0u8; hl];
    long.extend_from_slice(&frame(qn.saturating_sub(hl)));
    long.truncate(qn.max(hl + 60));
    let long_frame = g.alloc(long.len() as u64);
    g.mem.write_slice(&long, GuestAddress(long_frame)).unwrap();

    let mut short = vec![0u8; hl];
    short.extend_from_slice(&frame(60));
    let bcast = g.alloc(short.len() as u64);
    g.mem.write_slice(&short, GuestAddress(bcast)).unwrap();
    // virtio_net_hdr.gso_type (byte 1): 0x7f is no GSO type (§5.1.6.2).
    short[1] = 0x7f;
    let bad_hdr = g.alloc(short.len() as u64);
    g.mem.write_slice(&short, GuestAddress(bad_hdr)).unwrap();

    let ones: Vec<(u64, u32)> = (0..qn).map(|i| (long_frame + i as u64, 1)).collect();
    let t_max = table(g, &ones);
    let twice: Vec<(u64, u32)> = (0..2 * qn).map(|i| (bcast + (i % 60) as u64, 1)).collect();
    let t_long = table(g, &twice);
    let zeros: Vec<(u64, u32)> = (0..qn).map(|_| (bcast, 0)).collect();
    let t_zero = table(g, &zeros);
    Layout {
        long_frame,
        bcast,
        bad_hdr,
        frame_len: short.len() as u32,
        t_max,
        t_long,
        t_zero,
    }
}

/// The TX queue's driver state beyond [`DriverQueue`]: descriptors per head in flight.
struct Flood {
    q: u16,
    free: u16,
    heads: HashMap<u16, u16>,
    posted: u64,
    per_kind: [u64; KINDS.len()],
    used: u64,
    restarts: u64,
}

impl Flood {
    fn post(&mut self, g: &mut TestGuest, l: &Layout, kind: Kind) -> bool {
        let q = self.q;
        let need = match kind {
            Kind::DirectMax => q,
            Kind::DirectZero => 4,
            _ => 1,
        };
        if self.free < need {
            return false;
        }
        let txq = &mut g.queues[TX];
        let head = match kind {
            Kind::IndirectMax | Kind::IndirectTooLong | Kind::IndirectZero => {
                let (t, n) = match kind {
                    Kind::IndirectMax => (l.t_max, u32::from(q)),
                    Kind::IndirectTooLong => (l.t_long, 2 * u32::from(q)),
                    _ => (l.t_zero, u32::from(q)),
                };
                let id = txq.take_free();
                DriverQueue::write_desc(&g.mem, txq.desc, id, (t, 16 * n, F_INDIRECT, 0));
                txq.publish(&g.mem, id);
                id
            }
            Kind::DirectMax => {
                let bufs: Vec<(u64, u32, bool)> = (0..u64::from(q))
                    .map(|i| (l.long_frame + i, 1, false))
                    .collect();
                txq.add(&g.mem, &bufs)
            }
            Kind::DirectZero => txq.add(&g.mem, &[(l.bcast, 0, false); 4]),
            Kind::BadVnetHdr => txq.add(&g.mem, &[(l.bad_hdr, l.frame_len, false)]),
            Kind::Broadcast => txq.add(&g.mem, &[(l.bcast, l.frame_len, false)]),
        };
        txq.kick();
        self.free -= need;
        self.heads.insert(head, need);
        self.posted += 1;
        self.per_kind[kind as usize] += 1;
        true
    }

    fn reclaim(&mut self, g: &mut TestGuest) -> usize {
        let used = g.queues[TX].take_used(&g.mem);
        for (id, _) in &used {
            if let Some(n) = self.heads.remove(id) {
                self.free += n;
            }
        }
        self.used += used.len() as u64;
        used.len()
    }

    /// Takes the stopped ring back and sets it up afresh at the same place.
    fn restart(&mut self, g: &mut TestGuest) {
        let _ = g.fe.get_vring_base(TX);
        let base = g.queues[TX].desc.0;
        g.queues[TX] = DriverQueue::fresh(&g.mem, base, self.q);
        g.setup_queue(TX);
        self.free = self.q;
        self.heads.clear();
        self.restarts += 1;
    }
}

fn main() {
    std::process::exit(run(std::env::args().skip(1).collect()));
}

/// The whole program on `argv` (without the program name); returns the exit status.
/// tests/hostile_process.rs runs it in a child process of its own.
pub fn run(argv: Vec<String>) -> i32 {
    let a = match args(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hostile_frontend: {e}");
            return 2;
        }
    };
    let fe = TestGuest::connect(&a.socket, 3);
    // Everything offered except a packed ring (this driver is split) and dirty logging.
    let want = !(vring_engine::features::RING_PACKED | vring_engine::dirtylog::LOG_ALL);
    let mut g = TestGuest::start_sized(fe, 3, want, a.queue_size);
    // Requests are acked one by one during setup; the flood needs none of that.
    g.fe.set_hdr_flags(vhost::vhost_user::message::VhostUserHeaderFlag::empty());
    let l = layout(&mut g, a.queue_size);
    let mut f = Flood {
        q: a.queue_size,
        free: a.queue_size,
        heads: HashMap::new(),
        posted: 0,
        per_kind: [0; KINDS.len()],
        used: 0,
        restarts: 0,
    };
    println!(
        "hostile_frontend: {} {} (queue size {}, features {:#x})",
        if a.benign { "spinning on" } else { "flooding" },
        a.socket.display(),
        a.queue_size,
        g.features
    );
    let start = Instant::now();
    let mut last_progress = Instant::now();
    let mut last_print = Instant::now();
    let mut k = 0usize;
    let mut draining = false;
    let mut last_drain = Instant::now();
    while a.secs == 0 || start.elapsed() < Duration::from_secs(a.secs) {
        if f.reclaim(&mut g) > 0 {
            last_progress = Instant::now();
        }
        let mut any = a.benign;
        if draining {
            // The queue-size chain needs every descriptor: wait for the ring to drain.
            if f.post(&mut g, &l, Kind::DirectMax) {
                draining = false;
                any = true;
            }
        } else if !a.benign {
            for _ in 0..32 {
                let kind = KINDS[k % KINDS.len()];
                k += 1;
                any |= f.post(&mut g, &l, kind);
            }
            // Every 20 ms, let the ring drain for one queue-size direct chain (it needs
            // every descriptor free; draining more often would slow the rest of the flood).
            if last_drain.elapsed() >= Duration::from_millis(20) {
                draining = true;
                last_drain = Instant::now();
            }
        }
        if !any && last_progress.elapsed() > Duration::from_millis(500) {
            f.restart(&mut g);
            draining = false;
            last_progress = Instant::now();
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            println!(
                "hostile_frontend: posted {} chains, {} came back used, {} ring restarts",
                f.posted, f.used, f.restarts
            );
            last_print = Instant::now();
        }
    }
    let kinds: Vec<String> = KINDS
        .iter()
        .zip(f.per_kind)
        .map(|(k, n)| format!("{k:?} {n}"))
        .collect();
    println!(
        "hostile_frontend: done: posted {} chains ({}), {} came back used, {} ring restarts",
        f.posted,
        kinds.join(", "),
        f.used,
        f.restarts
    );
    0
}
