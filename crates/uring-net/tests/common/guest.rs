//! A test "guest": TX queue over a memory mapping, RX sink collecting frames.
#![allow(dead_code)]
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

use std::collections::VecDeque;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use parking_lot::Mutex;
use uring_net::{Delivery, FrameBatch, GuestFrame, GuestRx, GuestTxQueue, RxFrame};

/// A guest TX queue over a mapping: frames are (token, segments) queued by the test.
pub struct MemTxQueue {
    pub kick: OwnedFd,
    pub pending: Arc<Mutex<VecDeque<GuestFrame>>>,
    pub done: Arc<Mutex<Vec<u64>>>,
}

impl GuestTxQueue for MemTxQueue {
    fn kick_fd(&self) -> i32 {
        self.kick.as_raw_fd()
    }
    fn pop(&mut self, max: usize, out: &mut FrameBatch) {
        let mut p = self.pending.lock();
        while out.len() < max {
            match p.pop_front() {
                Some(f) => out.push_frame(f),
                None => break,
            }
        }
    }
    fn complete(&mut self, token: u64) {
        self.done.lock().push(token);
    }
}

fn csum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// vnet header (12 zero bytes) + Ethernet/IPv4/UDP frame (port 40000 -> 5000).
pub fn udp_frame(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src_ip: [u8; 4],
    dst_ip: [u8; 4],
    payload: &[u8],
) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = 20 + 8 + payload.len();
    let mut ip = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ];
    ip.extend_from_slice(&src_ip);
    ip.extend_from_slice(&dst_ip);
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let ul = (8 + payload.len()) as u16;
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&5000u16.to_be_bytes());
    f.extend_from_slice(&ul.to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum (RFC 768, IPv4)
    f.extend_from_slice(payload);
    f
}

/// A guest RX side that keeps what it is given (up to `cap` frames: then it is "full"),
/// and checks where each part was copied from.
pub struct CollectRx {
    pub cap: usize,
    pub frames: Mutex<Vec<Vec<u8>>>,
    /// For each delivered frame: did every part after the first (the private head copy
    /// the switch decided on) lie inside `src_range`, i.e. was the rest of the frame read
    /// straight from the sender's memory, with no copy before ours?
    pub from_source: Mutex<Vec<bool>>,
    /// For each delivered frame: how many parts it came in.
    pub parts: Mutex<Vec<usize>>,
    pub src_range: (u64, u64),
    pub flushes: std::sync::atomic::AtomicU64,
}

impl CollectRx {
    pub fn new(cap: usize, src_range: (u64, u64)) -> CollectRx {
        CollectRx {
            cap,
            frames: Mutex::new(Vec::new()),
            from_source: Mutex::new(Vec::new()),
            parts: Mutex::new(Vec::new()),
            src_range,
            flushes: Default::default(),
        }
    }
}

impl GuestRx for CollectRx {
    fn deliver_burst(
        &self,
        frames: &[RxFrame<'_>],
        _offloads: &switch::Offloads,
        out: &mut [Delivery],
    ) {
        let mut f = self.frames.lock();
        for (fr, o) in frames.iter().zip(out.iter_mut()) {
            if f.len() >= self.cap {
                *o = Err(switch::DropReason::DestinationFull);
                continue;
            }
            let parts = fr.parts;
            self.parts.lock().push(parts.len());
            let inside = parts.iter().skip(1).filter(|p| !p.is_empty()).all(|p| {
                let a = p.as_ptr() as u64;
                a >= self.src_range.0 && a + p.len() as u64 <= self.src_range.1
            });
            self.from_source.lock().push(inside);
            f.push(switch::bytes::concat(parts));
            *o = Ok(());
        }
    }
    fn flush(&self) {
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}
