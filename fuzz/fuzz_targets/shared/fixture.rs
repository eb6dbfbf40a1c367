//! A real vhost-user port ([`VhostUserPort`]: socket, relay, vhost-user-backend, the
//! daemon's [`NetDevice`]) driven by the in-repo test frontend (crates/vring-engine's
//! tests/common/guest.rs, included with `#[path]`): set up once per fuzzing process and shared by
//! every input, which resets only the ring it uses. The queues' descriptor tables and
//! avail rings are then written by the fuzz input directly in the shared guest memory,
//! as a hostile guest driver would.

use std::sync::{Arc, Mutex};

use parking_lot::Mutex as PlMutex;
use switch::{Offloads, PortId, RxFilter};
use vm_memory::{Bytes, GuestAddress};
use vring_engine::{NetDevice, PortEvents, PortOptions, TxRing, VhostUserPort};

#[path = "../../../crates/vring-engine/tests/common/guest.rs"]
#[allow(dead_code, unused_imports)]
pub mod common;

pub use common::{DriverQueue, TestGuest, F_WRITE, MEM_BASE, MEM_SIZE};

/// Ring size of every queue: small, so that hostile tables are found quickly.
pub const QS: u16 = 64;
/// Bytes of buffer memory inputs place their buffers in (offsets are taken modulo it).
pub const AREA: u64 = 64 * 1024;
/// Bytes reserved for indirect tables.
pub const ITAB: u64 = 4096;

/// Keeps the TX rings the device lends (the data plane's role in the daemon).
#[derive(Default)]
pub struct Lender {
    pub tx: PlMutex<Vec<TxRing>>,
}

impl PortEvents for Lender {
    fn rx_filter_changed(&self, _: PortId, _: &RxFilter) {}
    fn offloads_changed(&self, _: PortId, _: Offloads) {}
    fn link_changed(&self, _: PortId, _: bool) {}
    fn tx_ring_started(&self, _: PortId, ring: TxRing) {
        self.tx.lock().push(ring);
    }
    fn tx_ring_stopped(&self, _: PortId, pair: u16) {
        self.tx.lock().retain(|r| r.pair() != pair);
    }
}

pub struct Fixture {
    pub port: VhostUserPort,
    pub lender: Arc<Lender>,
    pub guest: TestGuest,
    /// Guest addresses of the buffer area and of the indirect-table area.
    pub area: u64,
    pub itab: u64,
}

impl Fixture {
    fn new(features: u64) -> Fixture {
        let path = common::sock_path("fuzz");
        let lender = Arc::new(Lender::default());
        let mut opts = PortOptions::new(&path);
        opts.max_queue_size = QS;
        let dev = NetDevice::new(PortId(0), opts, lender.clone()).expect("options");
        let port = VhostUserPort::start(dev).expect("port");
        let fe = TestGuest::connect(&path, 3);
        let mut guest = TestGuest::start_sized(fe, 3, features, QS);
        let area = guest.alloc(AREA);
        let itab = guest.alloc(ITAB);
        Fixture {
            port,
            lender,
            guest,
            area,
            itab,
        }
    }

    pub fn dev(&self) -> &NetDevice {
        self.port.device()
    }

    /// A fresh driver ring `q` (zeroed memory, indices 0) and the device's set up again
    /// (SET_VRING_NUM/BASE/ADDR/...: what a driver reload does).
    pub fn reset_queue(&mut self, q: usize) {
        // A lent ring must not be held while the device stops it (tx_ring_stopped).
        self.lender.tx.lock().clear();
        let base = self.guest.queues[q].desc.0;
        self.guest.queues[q] = DriverQueue::fresh(&self.guest.mem, base, QS);
        self.guest.setup_queue(q);
    }

    /// Writes `b` at guest address `a`.
    pub fn write(&self, a: u64, b: &[u8]) {
        self.guest
            .mem
            .write_slice(b, GuestAddress(a))
            .expect("in memory");
    }

    pub fn read(&self, a: u64, len: usize) -> Vec<u8> {
        self.guest.read(a, len)
    }
}

/// One process-wide fixture per feature set (index chosen by the target).
pub fn with<R>(slot: usize, features: u64, f: impl FnOnce(&mut Fixture) -> R) -> R {
    static FIX: [Mutex<Option<Fixture>>; 2] = [Mutex::new(None), Mutex::new(None)];
    let mut g = FIX[slot].lock().unwrap_or_else(|e| e.into_inner());
    let fx = g.get_or_insert_with(|| Fixture::new(features));
    f(fx)
}

/// A descriptor decoded from 8 input bytes, with its address chosen among the places a
/// driver (or an attacker) points at: the buffer area, the indirect-table area, beyond the
/// end of guest memory, or straddling it.
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl Desc {
    pub fn decode(fx: &Fixture, r: &[u8]) -> Desc {
        let off = u64::from(u16::from_le_bytes([r[0], r[1]]));
        let len = u32::from(u16::from_le_bytes([r[2], r[3]]));
        let addr = match r[6] & 7 {
            0..=3 => fx.area + off % AREA,
            4 => fx.itab + (off % ITAB & !15),
            5 => MEM_BASE + MEM_SIZE as u64 - (off % 4096),
            6 => u64::from_le_bytes([r[0], r[1], r[6], r[7], r[2], 0, 0, r[3]]),
            _ => u64::MAX - off,
        };
        Desc {
            addr,
            len: if r[6] & 0x80 != 0 {
                len << 16 | len
            } else {
                len
            },
            flags: u16::from(r[4] & 7),
            next: u16::from(r[5]),
        }
    }

    pub fn bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// Writes the ring `q` from the input: `heads` into the avail ring (avail->idx =
/// their count), then 8-byte descriptor records, the first [`QS`] into the descriptor
/// table and the rest into the indirect-table area (zeroed first). Returns every descriptor written.
pub fn write_ring(fx: &mut Fixture, q: usize, heads: &[u8], recs: &[u8]) -> Vec<Desc> {
    // No indirect table left over from an earlier input.
    fx.write(fx.itab, &[0; ITAB as usize]);
    let dq = &fx.guest.queues[q];
    let (desc, avail) = (dq.desc.0, dq.avail.0);
    let mut all = Vec::new();
    for (i, r) in recs.chunks_exact(8).enumerate() {
        let d = Desc::decode(fx, r);
        let at = if i < QS as usize {
            desc + 16 * i as u64
        } else {
            let k = (i - QS as usize) as u64;
            if 16 * (k + 1) > ITAB {
                break;
            }
            fx.itab + 16 * k
        };
        fx.write(at, &d.bytes());
        all.push(d);
    }
    for (i, h) in heads.iter().enumerate() {
        // Mostly valid heads; 0xff.. bytes give out-of-range ones.
        let head = if *h >= 0xf0 {
            u16::from(*h) << 4
        } else {
            u16::from(*h) % QS
        };
        fx.write(avail + 4 + 2 * i as u64, &head.to_le_bytes());
    }
    fx.guest.queues[q].set_avail_idx(&fx.guest.mem, heads.len() as u16);
    all
}
