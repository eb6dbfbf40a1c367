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
        let queue = |f: &uring_net::RxFrame<'_>| queue_of(f.flow, pairs);
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

/// The RX queue pair a frame of flow hash `flow` goes to when the guest has `pairs`
/// active: one flow always on one queue (never reordered), flows spread over the pairs.
fn queue_of(flow: u32, pairs: u16) -> u16 {
    if pairs > 1 {
        pick_queue(flow, pairs)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_spread_over_the_active_pairs_and_stay_on_theirs() {
        for pairs in [1u16, 2, 3, 4, 8] {
            let mut per = vec![0u32; usize::from(pairs)];
            for i in 0..4096u32 {
                let flow = i.wrapping_mul(0x9e37_79b9);
                let q = queue_of(flow, pairs);
                assert!(q < pairs, "{q} of {pairs}");
                assert_eq!(q, queue_of(flow, pairs), "one flow, one queue");
                per[usize::from(q)] += 1;
            }
            // Every pair gets a fair share (±25 %).
            let fair = 4096 / u32::from(pairs);
            for (q, n) in per.iter().enumerate() {
                assert!(
                    n * 4 >= fair * 3 && n * 4 <= fair * 5,
                    "pair {q} of {pairs}: {n}"
                );
            }
        }
        assert_eq!(queue_of(0xdead_beef, 1), 0, "one pair: always pair 0");
    }
}
