//! A guest's RX side for the io_uring workers ([`GuestSink`]): frames from taps,
//! AF_PACKET ports and other guests, adapted to the guest's offloads and copied once into
//! its RX buffers, spread over its active queue pairs by flow hash.

use switch::Offloads;
use uring_net::flow::pick_queue;
use vring_engine::NetDevice;

use switch::offload::{adapt, Undelivered};
use switch::DropReason;
use uring_net::Delivery;
use vring_engine::RxDrop;

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
    fn deliver_burst(
        &self,
        frames: &[uring_net::RxFrame<'_>],
        offloads: &Offloads,
        out: &mut [Delivery],
    ) {
        // One flow stays on one queue (never reordered); flows spread over the pairs.
        // One burst per RX queue pair the frames hash to (usually one).
        let pairs = self.dev.active_queue_pairs().max(1);
        let queue = |f: &uring_net::RxFrame<'_>| queue_of(f.flow, pairs);
        let bytes = frames
            .first()
            .map_or(0, |f| switch::bytes::total_len(f.parts));
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
                for (f, o) in frames.iter().zip(out.iter_mut()) {
                    if queue(f) == qp {
                        *o = outcome(adapt(&f.hdr, f.parts, offloads, |h, p| b.deliver(h, p)));
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

/// The switch's drop reason for what became of one frame: bad offload metadata under its
/// own reason, anything the RX queue refused (no buffers, too big for them, a bad chain,
/// a stopped or absent queue; each also counted on the queue with its own reason) as
/// `destination_full`.
fn outcome(r: Result<(), Undelivered<RxDrop>>) -> Delivery {
    match r {
        Ok(()) => Ok(()),
        Err(Undelivered::BadOffload(_)) => Err(DropReason::BadOffload),
        Err(Undelivered::Refused(_)) => Err(DropReason::DestinationFull),
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
    fn outcomes_keep_their_reason() {
        use switch::offload::OffloadDrop;
        assert_eq!(outcome(Ok(())), Ok(()));
        assert_eq!(
            outcome(Err(Undelivered::BadOffload(OffloadDrop::GsoSizeZero))),
            Err(DropReason::BadOffload)
        );
        assert_eq!(
            outcome(Err(Undelivered::Refused(RxDrop::NoBuffers))),
            Err(DropReason::DestinationFull)
        );
    }

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
