//! A guest's RX side for the io_uring workers ([`GuestSink`]): frames from taps,
//! AF_PACKET ports and other guests, adapted to the guest's offloads and copied once into
//! its RX buffers, spread over its active queue pairs by flow hash.

use switch::{Offloads, VnetHdr};
use uring_net::flow::pick_queue;
use vring_engine::NetDevice;

use crate::adapt::adapt;

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
