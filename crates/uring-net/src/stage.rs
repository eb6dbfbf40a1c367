//! Guest→guest deliveries of one pop batch, placed at the batch's end as one burst per
//! destination.
//!
//! Why: placing a frame into a guest's RX ring has a fixed cost per *visit* — the
//! destination queue's lock, a guest-memory snapshot, a read of the driver's avail index
//! and a store of the used index, both on cache lines the driver's core polls. Visiting
//! once per frame made that the largest part of a 64-byte frame's cost
//! (docs/design/bench.md); a burst pays it once per batch and destination, as DPDK's
//! `rte_vhost_enqueue_burst` does. Frames keep their order per destination; a frame's
//! guest TX descriptor is completed only after its burst, since the burst reads its pages.

use std::ops::Range;

use switch::egress::Egress;
use switch::{Offloads, PortId, VnetHdr};

use crate::guest::{GuestRx, RxFrame, Seg};

/// One staged delivery.
pub(crate) struct Staged {
    pub dest: PortId,
    pub ingress: PortId,
    /// The worker's in-flight guest frame this delivery holds a reference on.
    pub slot: u32,
    hdr: VnetHdr,
    flow: u32,
    /// The rewritten L2 head when the frame leaves with a different VLAN tag.
    head: Option<Egress>,
    segs: Range<usize>,
}

/// The batch's staged deliveries.
#[derive(Default)]
pub(crate) struct RxStage {
    entries: Vec<Staged>,
    segs: Vec<Seg>,
    order: Vec<usize>,
    /// Per-burst scratch kept across flushes (the borrowed part lists cannot be).
    ok: Vec<bool>,
    bytes: Vec<u64>,
    ranges: Vec<Range<usize>>,
}

impl RxStage {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Stages `segs` (guest memory, host addresses), preceded by `head`'s bytes if given.
    ///
    /// # Safety
    /// Every segment must stay mapped and readable until the next [`flush`](Self::flush)
    /// returns (the worker completes the source frame only after that).
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn push(
        &mut self,
        dest: PortId,
        ingress: PortId,
        slot: u32,
        hdr: VnetHdr,
        flow: u32,
        head: Option<Egress>,
        segs: impl IntoIterator<Item = Seg>,
    ) {
        let start = self.segs.len();
        self.segs.extend(segs);
        self.entries.push(Staged {
            dest,
            ingress,
            slot,
            hdr,
            flow,
            head,
            segs: start..self.segs.len(),
        });
    }

    /// Places every staged frame: one [`GuestRx::deliver_burst`] per destination, frames
    /// in staging order. `sink` gives a destination's RX side and offloads (None: the port
    /// went away; its frames fail). `done(entry, bytes, delivered)` runs once per entry,
    /// after its burst. Leaves the stage empty.
    pub fn flush<'s>(
        &mut self,
        mut sink: impl FnMut(PortId) -> Option<(&'s dyn GuestRx, Offloads)>,
        mut done: impl FnMut(&Staged, u64, bool),
    ) {
        self.order.clear();
        self.order.extend(0..self.entries.len());
        // Stable: per destination, staging order.
        let entries = &self.entries;
        self.order.sort_by_key(|&i| entries[i].dest.index());
        let (ok, bytes, ranges) = (&mut self.ok, &mut self.bytes, &mut self.ranges);
        let mut run_start = 0;
        while run_start < self.order.len() {
            let dest = entries[self.order[run_start]].dest;
            let mut run_end = run_start + 1;
            while run_end < self.order.len() && entries[self.order[run_end]].dest == dest {
                run_end += 1;
            }
            let run = &self.order[run_start..run_end];
            ok.clear();
            ok.resize(run.len(), false);
            bytes.clear();
            ranges.clear();
            if let Some((rx, offloads)) = sink(dest) {
                let mut parts: Vec<&[u8]> = Vec::with_capacity(run.len() * 3);
                for &i in run {
                    let e = &entries[i];
                    let start = parts.len();
                    if let Some(h) = &e.head {
                        parts.push(h.head());
                    }
                    for s in &self.segs[e.segs.clone()] {
                        // SAFETY: `push`'s contract: the segment stays mapped and readable
                        // until this flush returns. The guest may change the bytes (not
                        // their bounds); every decision was taken on a private copy.
                        parts.push(unsafe {
                            std::slice::from_raw_parts(s.addr as *const u8, s.len as usize)
                        });
                    }
                    bytes.push(parts[start..].iter().map(|p| p.len() as u64).sum::<u64>());
                    ranges.push(start..parts.len());
                }
                let frames: Vec<RxFrame<'_>> = run
                    .iter()
                    .zip(ranges.iter())
                    .map(|(&i, r)| RxFrame {
                        hdr: entries[i].hdr,
                        parts: &parts[r.clone()],
                        flow: entries[i].flow,
                    })
                    .collect();
                rx.deliver_burst(&frames, &offloads, ok);
            } else {
                bytes.resize(run.len(), 0);
            }
            for (k, &i) in run.iter().enumerate() {
                done(&entries[i], bytes[k], ok[k]);
            }
            run_start = run_end;
        }
        self.entries.clear();
        self.segs.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;

    #[derive(Default)]
    struct Sink {
        bursts: Mutex<Vec<Vec<Vec<u8>>>>,
        refuse_after: usize,
    }

    impl GuestRx for Sink {
        fn deliver(
            &self,
            _: &VnetHdr,
            _: &[&[u8]],
            _: &Offloads,
            _: u32,
        ) -> Result<(), crate::RxFull> {
            unreachable!("the stage delivers in bursts")
        }
        fn deliver_burst(&self, frames: &[RxFrame<'_>], _: &Offloads, ok: &mut [bool]) {
            let mut b = self.bursts.lock();
            let mut burst = Vec::new();
            for (k, f) in frames.iter().enumerate() {
                burst.push(f.parts.concat());
                ok[k] = k < self.refuse_after;
            }
            b.push(burst);
        }
        fn flush(&self) {}
    }

    #[test]
    fn one_burst_per_destination_in_order() {
        let data: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 20]).collect();
        let seg = |i: usize| Seg {
            addr: data[i].as_ptr() as u64,
            len: 20,
        };
        let a: Arc<Sink> = Arc::new(Sink {
            refuse_after: 1,
            ..Default::default()
        });
        let b: Arc<Sink> = Arc::new(Sink {
            refuse_after: 9,
            ..Default::default()
        });
        let mut st = RxStage::default();
        let h = VnetHdr::default();
        // SAFETY: `data` outlives the flush below.
        unsafe {
            st.push(PortId(2), PortId(0), 10, h, 0, None, [seg(0)]);
            st.push(PortId(1), PortId(0), 11, h, 0, None, [seg(1)]);
            st.push(PortId(2), PortId(0), 12, h, 0, None, [seg(2), seg(3)]);
            st.push(PortId(3), PortId(0), 13, h, 0, None, [seg(3)]);
        }
        let mut results = Vec::new();
        let (a2, b2) = (a.clone(), b.clone());
        st.flush(
            |p| match p.0 {
                1 => Some((&*a2 as &dyn GuestRx, Offloads::NONE)),
                2 => Some((&*b2 as &dyn GuestRx, Offloads::NONE)),
                _ => None,
            },
            |e, bytes, ok| results.push((e.slot, bytes, ok)),
        );
        assert!(st.is_empty());
        assert_eq!(a.bursts.lock().len(), 1);
        let bb = b.bursts.lock();
        assert_eq!(bb.len(), 1, "port 2's two frames share one burst");
        assert_eq!(bb[0][0], data[0]);
        assert_eq!(bb[0][1], [data[2].clone(), data[3].clone()].concat());
        results.sort();
        assert_eq!(
            results,
            vec![
                (10, 20, true),
                (11, 20, true),
                (12, 40, true),
                (13, 0, false)
            ]
        );
    }
}
