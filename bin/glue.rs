//! Glue between vhost-user devices, the io_uring data plane and the switch:
//! - a guest's RX side for the workers ([`GuestSink`]): frames adapted to the guest's
//!   offloads (`switch::offload`) and copied once into its RX buffers;
//! - device events (rx filter, offloads, link) update the switch's port state, and live
//!   TX rings are lent to the workers (`tx_ring_started`, see `crate::guest_tx`);
//! - frames the switch itself originates (querier) are flooded by [`Glue::inject`].

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use parking_lot::RwLock;
use switch::offload::{passes_unchanged, plan, Egress as Offload, Frame, MAX_HDR};
use switch::vlan::TPID_8021Q;
use switch::{Forward, FrameView, Offloads, PortId, RxFilter, Switch, Vid, VnetHdr, MAX_PORTS};
use uring_net::flow::pick_queue;
use uring_net::Dataplane;
use vring_engine::{NetDevice, PortEvents, TxRing};

/// Most slices one outgoing frame is made of (rewritten head + source pieces + the two
/// around a checksum patch).
const MAX_PARTS: usize = 72;

/// A frame as a short list of borrowed slices, without allocating.
struct Parts<'a> {
    v: [&'a [u8]; MAX_PARTS],
    n: usize,
}

impl<'a> Parts<'a> {
    fn new() -> Parts<'a> {
        Parts {
            v: [&[]; MAX_PARTS],
            n: 0,
        }
    }

    /// Appends `s` (empty slices are skipped); false when full.
    fn push(&mut self, s: &'a [u8]) -> bool {
        if s.is_empty() {
            return true;
        }
        if self.n == MAX_PARTS {
            return false;
        }
        self.v[self.n] = s;
        self.n += 1;
        true
    }

    fn as_slice(&self) -> &[&'a [u8]] {
        &self.v[..self.n]
    }
}

/// `parts` with the two bytes at `at` replaced by `patch` (a completed checksum), as a new
/// slice list: the payload itself is never copied.
fn patched<'a>(parts: &[&'a [u8]], at: usize, patch: &'a [u8; 2]) -> Option<Parts<'a>> {
    let mut out = Parts::new();
    let mut off = 0;
    let mut done = 0usize; // bytes of the patch already emitted
    for s in parts {
        let (start, end) = (off, off + s.len());
        off = end;
        // Overlap of [at, at+2) with [start, end).
        let lo = at.max(start);
        let hi = (at + 2).min(end);
        if lo >= hi {
            if !out.push(s) {
                return None;
            }
            continue;
        }
        if !out.push(&s[..lo - start]) {
            return None;
        }
        if !out.push(&patch[done..done + (hi - lo)]) {
            return None;
        }
        done += hi - lo;
        if !out.push(&s[hi - start..]) {
            return None;
        }
    }
    (done == 2).then_some(out)
}

/// Why a frame did not reach a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Undelivered {
    /// Offload metadata inconsistent with the frame.
    BadOffload,
    /// No room in the RX queue (or the queue is not ready).
    Full,
    /// A host port but no data plane (shutting down).
    NoPath,
}

/// Hands `parts` (an Ethernet frame as it leaves toward one destination) with header `hdr`
/// to `sink`, adapted to what the destination accepts (`switch::offload`): pass through,
/// complete the checksum, or segment in software. `sink` returns false when the
/// destination had no room. No payload copy here: the sink copies once (guest RX) or
/// writes the slices as they are (host ports).
fn adapt(
    hdr: &VnetHdr,
    parts: &[&[u8]],
    offloads: &Offloads,
    mut sink: impl FnMut(&VnetHdr, &[&[u8]]) -> bool,
) -> Result<(), Undelivered> {
    if passes_unchanged(hdr, offloads) {
        return if sink(hdr, parts) {
            Ok(())
        } else {
            Err(Undelivered::Full)
        };
    }
    let src = Frame::new(parts);
    let ok = match plan(hdr, &src, offloads) {
        Ok(Offload::PassThrough { hdr }) => sink(&hdr, parts),
        Ok(Offload::CompleteCsum(job)) => {
            let v = job.value(&src).to_be_bytes();
            match patched(parts, job.at, &v) {
                Some(p) => sink(&job.hdr, p.as_slice()),
                None => return Err(Undelivered::BadOffload),
            }
        }
        Ok(Offload::Segment(gp)) => {
            let Ok(mut segs) = gp.segments(src) else {
                return Err(Undelivered::BadOffload);
            };
            let mut all = true;
            let mut h = [0u8; MAX_HDR];
            while let Some(s) = segs.next_into(&mut h) {
                let mut p = Parts::new();
                let mut ok = p.push(&h[..s.hdr_len]);
                for sl in src.slices(s.payload.clone()) {
                    ok &= p.push(sl);
                }
                all &= ok && sink(&s.vnet, p.as_slice());
            }
            all
        }
        Err(_) => return Err(Undelivered::BadOffload),
    };
    if ok {
        Ok(())
    } else {
        Err(Undelivered::Full)
    }
}

/// A guest's RX side as the io_uring workers see it (frames from taps and AF_PACKET
/// ports): offload adaptation, then one copy into the guest's buffers.
pub struct GuestSink {
    dev: NetDevice,
}

impl GuestSink {
    pub fn new(dev: NetDevice) -> GuestSink {
        GuestSink { dev }
    }
}

impl uring_net::GuestRx for GuestSink {
    fn deliver(
        &self,
        hdr: &VnetHdr,
        parts: &[&[u8]],
        offloads: &Offloads,
        flow: u32,
    ) -> Result<(), uring_net::RxFull> {
        let mut ok = [false];
        let frame = uring_net::RxFrame {
            hdr: *hdr,
            parts,
            flow,
        };
        self.deliver_burst(&[frame], offloads, &mut ok);
        if ok[0] {
            Ok(())
        } else {
            Err(uring_net::RxFull)
        }
    }

    fn deliver_burst(
        &self,
        frames: &[uring_net::RxFrame<'_>],
        offloads: &Offloads,
        ok: &mut [bool],
    ) {
        // One flow stays on one queue (never reordered); flows spread over the pairs.
        // One burst per RX queue pair the frames hash to (usually one).
        let pairs = self.dev.active_queue_pairs().max(1);
        let queue = |f: &uring_net::RxFrame<'_>| {
            if pairs > 1 {
                pick_queue(f.flow, pairs)
            } else {
                0
            }
        };
        let bytes = frames
            .first()
            .map_or(0, |f| f.parts.iter().map(|p| p.len()).sum());
        for qp in 0..pairs {
            let n = frames.iter().filter(|f| queue(f) == qp).count();
            if n == 0 {
                continue;
            }
            self.dev.rx_burst(qp, |b| {
                if n > 1 {
                    // Prefetching pays only when later frames' buffers load meanwhile.
                    b.expect(n, bytes);
                }
                for (f, o) in frames.iter().zip(ok.iter_mut()) {
                    if queue(f) == qp {
                        *o = adapt(&f.hdr, f.parts, offloads, |h, p| b.deliver(h, p).is_ok())
                            .is_ok();
                    }
                }
            });
        }
    }

    fn flush(&self) {
        for qp in 0..self.dev.active_queue_pairs().max(1) {
            self.dev.flush_rx(qp);
        }
    }
}

/// Shared by every vhost-user device of the daemon.
pub struct Glue {
    sw: Arc<Switch>,
    devices: RwLock<Vec<Option<NetDevice>>>,
    /// Host ports (tap, AF_PACKET) are written through the data plane.
    dp: ArcSwapOption<Dataplane>,
    /// Guest memory registered for zero-copy TX from the workers.
    memories: crate::guest_tx::GuestMemories,
}

impl Glue {
    pub fn new(sw: Arc<Switch>) -> Glue {
        Glue {
            sw,
            devices: RwLock::new(vec![None; MAX_PORTS]),
            dp: ArcSwapOption::empty(),
            memories: Default::default(),
        }
    }

    /// Whether guest memory is registered (pinned) as io_uring fixed buffers.
    pub fn set_pin_guest_memory(&self, pin: bool) {
        self.memories.set_pin(pin);
    }

    /// Sets (or clears, at shutdown) the data plane host-port writes go through.
    pub fn set_dataplane(&self, dp: Option<Arc<Dataplane>>) {
        self.dp.store(dp);
    }

    pub fn set_device(&self, port: PortId, dev: Option<NetDevice>) {
        if let Some(slot) = self.devices.write().get_mut(port.index()) {
            *slot = dev;
        }
    }

    pub fn device(&self, port: PortId) -> Option<NetDevice> {
        self.devices.read().get(port.index()).cloned().flatten()
    }

    /// Floods a frame the switch originates (an IGMP/MLD query of the querier) to every
    /// port of `vid` that accepts it, tagged as each port's VLAN mode says and adapted to
    /// its offloads: into a guest's RX queue pair 0 (signalled at once: queries are rare),
    /// or written to a tap/AF_PACKET port from the calling thread
    /// (`Dataplane::transmit`).
    pub fn inject(&self, frame: &[u8], vid: Vid) {
        let view = self.sw.view();
        let Ok(fv) = FrameView::parse(frame, frame.len(), TPID_8021Q, false) else {
            return;
        };
        let fwd = Forward {
            vid,
            ports: view.flood_ports(vid, &fv.dst),
            frame: fv,
        };
        let devices = self.devices.read();
        let dp = self.dp.load();
        let hdr = VnetHdr::default();
        for p in fwd.ports.iter() {
            let Some(cfg) = view.port(p) else { continue };
            let eg = view.egress(p, &fwd, frame);
            let body = frame.get(usize::from(eg.body_offset)..).unwrap_or_default();
            let parts = [eg.head(), body];
            let sent = match (devices.get(p.index()).and_then(Option::as_ref), dp.as_ref()) {
                (Some(dev), _) => {
                    let r = adapt(&hdr, &parts, &cfg.offloads, |h, q| {
                        dev.deliver(0, h, q).is_ok()
                    });
                    dev.flush_rx(0);
                    r
                }
                (None, Some(dp)) => adapt(&hdr, &parts, &cfg.offloads, |h, q| {
                    dp.transmit(p, h, q).is_ok()
                }),
                (None, None) => Err(Undelivered::NoPath),
            };
            if let Err(e) = sent {
                tracing::debug!(port = %p, ?e, "switch-originated frame not delivered");
            }
        }
    }
}

impl PortEvents for Glue {
    fn rx_filter_changed(&self, port: PortId, filter: &RxFilter) {
        if let Err(e) = self.sw.set_rx_filter(port, filter.clone()) {
            tracing::warn!(%port, "rx filter update failed: {e}");
        }
    }

    fn offloads_changed(&self, port: PortId, offloads: Offloads) {
        if let Err(e) = self.sw.set_offloads(port, offloads) {
            tracing::warn!(%port, "offload update failed: {e}");
        }
    }

    fn link_changed(&self, port: PortId, up: bool) {
        tracing::info!(%port, up, "vhost-user link");
        if let Err(e) = self.sw.set_link(port, up) {
            tracing::warn!(%port, "link update failed: {e}");
        }
    }

    fn tx_ring_started(&self, port: PortId, ring: TxRing) {
        let (Some(dp), Some(dev)) = (self.dp.load_full(), self.device(port)) else {
            return;
        };
        let pair = ring.pair();
        let memory = self.memories.ring_out(&dp, &dev);
        let q = Box::new(crate::guest_tx::GuestTx::new(ring, memory));
        match dp.attach_guest_tx(port, u64::from(pair), None, q) {
            Ok(fixed) => tracing::debug!(%port, pair, fixed, "guest TX ring on the workers"),
            Err(e) => {
                self.memories.ring_back(&dp, port);
                tracing::error!(%port, pair, "guest TX ring not serviced: {e}");
            }
        }
    }

    fn tx_ring_stopped(&self, port: PortId, pair: u16) {
        let Some(dp) = self.dp.load_full() else {
            return;
        };
        if let Err(e) = dp.detach_guest_tx(port, u64::from(pair), TX_STOP_WAIT) {
            tracing::warn!(%port, pair, "guest TX ring taken back with frames in flight: {e}");
        }
        self.memories.ring_back(&dp, port);
    }

    fn memory_changed(&self, port: PortId) {
        if let (Some(dp), Some(dev)) = (self.dp.load_full(), self.device(port)) {
            self.memories.changed(&dp, &dev);
        }
    }
}

/// How long stopping a guest TX ring waits for the writes in flight (they complete in
/// microseconds; a tap whose reader is gone still completes them with an error).
const TX_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_patch() {
        let a = [1u8, 2, 3];
        let b = [4u8, 5, 6, 7];
        let mut p = Parts::new();
        assert!(p.push(&a[2..]) && p.push(&b));
        assert_eq!(p.as_slice(), &[&a[2..], &b[..]]);
        // Patch across the boundary of the two slices: bytes 0..2 = [3, 4].
        let patch = [9u8, 8];
        let q = patched(p.as_slice(), 0, &patch).unwrap();
        let flat: Vec<u8> = q
            .as_slice()
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(flat, vec![9, 8, 5, 6, 7]);
        let q = patched(p.as_slice(), 3, &patch).unwrap();
        let flat: Vec<u8> = q
            .as_slice()
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect();
        assert_eq!(flat, vec![3, 4, 5, 9, 8]);
        assert!(patched(p.as_slice(), 4, &patch).is_none(), "past the end");
    }
}
