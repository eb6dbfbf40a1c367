//! Deliveries into guests — from other guests, taps, AF_PACKET ports and frames the
//! switch originates — staged during a batch and placed at its end as one burst per
//! destination: the one RX path.
//!
//! Why: placing a frame into a guest's RX ring has a fixed cost per *visit* — the
//! destination queue's lock, a guest-memory snapshot, a read of the driver's avail index
//! and a store of the used index, both on cache lines the driver's core polls. Visiting
//! once per frame made that the largest part of a 64-byte frame's cost
//! (docs/notebook.md); a burst pays it once per batch and destination, as DPDK's
//! `rte_vhost_enqueue_burst` does. Frames keep their order per destination; a frame's
//! guest TX descriptor is completed only after its burst, since the burst reads its pages
//! (the worker completes every frame it staged once [`RxStage::flush`] has returned).

use std::ops::Range;

use switch::{Chunk, DropReason, Offloads, PortId, VnetHdr};

use crate::guest::{Delivery, GuestRx, RxFrame};
use switch::bytes::Seg;

/// One staged delivery.
pub(crate) struct Staged {
    pub dest: PortId,
    pub ingress: PortId,
    hdr: VnetHdr,
    flow: u32,
    /// The frame's first bytes, from private memory (in [`RxStage::private`]): the egress
    /// L2 head and the rest of the head copy the switch decided on.
    prefix: Range<usize>,
    /// The rest of the frame, in guest memory.
    segs: Range<usize>,
}

/// The batch's staged deliveries.
#[derive(Default)]
pub(crate) struct RxStage {
    entries: Vec<Staged>,
    /// The staged frames' private bytes: what the decision rested on is delivered from
    /// here, never read again from the sender's memory (which its vCPUs may rewrite).
    private: Vec<u8>,
    segs: Vec<Seg>,
    order: Vec<usize>,
    /// Per-burst scratch kept across flushes: a 64-frame round allocated and freed two
    /// lists per destination before (malloc and free ≈ 1 % of the 64-byte profile). The
    /// borrowed lists are kept empty, with a `'static` element type (see [`recycle`]).
    ok: Vec<Delivery>,
    bytes: Vec<u64>,
    ranges: Vec<Range<usize>>,
    parts: Vec<Chunk<'static>>,
    frames: Vec<RxFrame<'static>>,
}

/// An empty vector's allocation under another element type of the same size and
/// alignment (here: the same type under another lifetime). The in-place `collect`
/// of an empty `vec::IntoIter` keeps the buffer, so scratch lists of borrowed slices can be
/// reused across calls whose borrows differ, without `unsafe`.
fn recycle<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter()
        .map(|_| unreachable!("the vector is empty"))
        .collect()
}

impl RxStage {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Stages a frame made of `prefix` (private bytes, copied into the stage) followed by
    /// `segs` (host addresses: guest memory, or private bytes that stay put until the
    /// flush, such as the popped frame's head copy).
    ///
    /// # Safety
    /// Every segment must stay mapped and readable until the next [`flush`](Self::flush)
    /// returns (the worker completes the source frame only after that).
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn push(
        &mut self,
        dest: PortId,
        ingress: PortId,
        hdr: VnetHdr,
        flow: u32,
        prefix: [&[u8]; 2],
        segs: impl IntoIterator<Item = Seg>,
    ) {
        let pstart = self.private.len();
        for p in prefix {
            self.private.extend_from_slice(p);
        }
        let start = self.segs.len();
        self.segs.extend(segs);
        self.entries.push(Staged {
            dest,
            ingress,
            hdr,
            flow,
            prefix: pstart..self.private.len(),
            segs: start..self.segs.len(),
        });
    }

    /// Places every staged frame: one [`GuestRx::deliver_burst`] per destination, frames
    /// in staging order. `sink` gives a destination's RX side and offloads (None: the port
    /// went away; its frames fail as [`DropReason::DestinationDown`]). `done(entry,
    /// bytes, delivery)` runs once per entry, after its burst. Leaves the stage empty.
    pub fn flush<'s>(
        &mut self,
        mut sink: impl FnMut(PortId) -> Option<(&'s dyn GuestRx, Offloads)>,
        mut done: impl FnMut(&Staged, u64, Delivery),
    ) {
        self.order.clear();
        self.order.extend(0..self.entries.len());
        let entries = &self.entries;
        // Stable: per destination, staging order. Usually one destination: no sort.
        if !entries.is_sorted_by_key(|e| e.dest.index()) {
            self.order.sort_by_key(|&i| entries[i].dest.index());
        }
        let (ok, bytes, ranges) = (&mut self.ok, &mut self.bytes, &mut self.ranges);
        let mut parts: Vec<Chunk<'_>> = recycle(std::mem::take(&mut self.parts));
        let mut spare_frames = std::mem::take(&mut self.frames);
        let mut run_start = 0;
        while run_start < self.order.len() {
            let dest = entries[self.order[run_start]].dest;
            let mut run_end = run_start + 1;
            while run_end < self.order.len() && entries[self.order[run_end]].dest == dest {
                run_end += 1;
            }
            let run = &self.order[run_start..run_end];
            ok.clear();
            ok.resize(run.len(), Err(DropReason::DestinationDown));
            bytes.clear();
            ranges.clear();
            if let Some((rx, offloads)) = sink(dest) {
                parts.clear();
                for &i in run {
                    let e = &entries[i];
                    let start = parts.len();
                    if !e.prefix.is_empty() {
                        parts.push(Chunk::private(&self.private[e.prefix.clone()]));
                    }
                    for s in &self.segs[e.segs.clone()] {
                        // SAFETY: `push`'s contract: the segment stays mapped and readable
                        // until this flush returns. The guest may change the bytes (not
                        // their bounds), so they are only ever copied out of (Chunk);
                        // every decision was taken on a private copy.
                        parts.push(unsafe { Chunk::shared(s.addr as *const u8, s.len as usize) });
                    }
                    bytes.push(switch::bytes::total_len(&parts[start..]) as u64);
                    ranges.push(start..parts.len());
                }
                // Borrows `parts`, so it lives only for this burst.
                let mut frames = recycle(spare_frames);
                frames.extend(run.iter().zip(ranges.iter()).map(|(&i, r)| RxFrame {
                    hdr: entries[i].hdr,
                    parts: &parts[r.clone()],
                    flow: entries[i].flow,
                }));
                rx.deliver_burst(&frames, &offloads, ok);
                spare_frames = recycle(frames);
            } else {
                bytes.resize(run.len(), 0);
            }
            for (k, &i) in run.iter().enumerate() {
                done(&entries[i], bytes[k], ok[k]);
            }
            run_start = run_end;
        }
        self.frames = spare_frames;
        self.parts = recycle(parts);
        self.entries.clear();
        self.private.clear();
        self.segs.clear();
    }
}

#[allow(clippy::cast_possible_truncation)]
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
        fn deliver_burst(&self, frames: &[RxFrame<'_>], _: &Offloads, ok: &mut [Delivery]) {
            let mut b = self.bursts.lock();
            let mut burst = Vec::new();
            for (k, f) in frames.iter().enumerate() {
                burst.push(switch::bytes::concat(f.parts));
                ok[k] = if k < self.refuse_after {
                    Ok(())
                } else {
                    Err(DropReason::DestinationFull)
                };
            }
            b.push(burst);
        }
        fn flush(&self) {}
    }

    /// A header that tells the staged entries apart in `done`.
    fn id(n: u16) -> VnetHdr {
        VnetHdr {
            gso_size: n,
            ..VnetHdr::default()
        }
    }

    #[test]
    fn recycle_keeps_the_allocation() {
        let x = 7u8;
        let mut v: Vec<&u8> = Vec::with_capacity(64);
        v.push(&x);
        let p = v.as_ptr() as usize;
        let w: Vec<&'static u8> = recycle(v);
        assert!(w.is_empty());
        assert_eq!(w.as_ptr() as usize, p, "same buffer");
        assert!(w.capacity() >= 64);
        let f: Vec<RxFrame<'_>> = Vec::with_capacity(32);
        let p = f.as_ptr() as usize;
        let g: Vec<RxFrame<'static>> = recycle(f);
        assert_eq!((g.as_ptr() as usize, g.capacity() >= 32), (p, true));
    }

    #[test]
    fn scratch_lists_are_reused_across_flushes() {
        let data: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 8 + usize::from(i)]).collect();
        let sink = Sink {
            refuse_after: 9,
            ..Default::default()
        };
        let mut st = RxStage::default();
        for round in 0..3 {
            // SAFETY: `data` outlives every flush below.
            unsafe {
                for (i, d) in data.iter().enumerate().skip(round) {
                    let s = Seg {
                        addr: d.as_ptr() as u64,
                        len: d.len() as u32,
                    };
                    st.push(PortId(1), PortId(0), id(i as u16), 0, [&[], &[]], [s]);
                }
            }
            let mut done = Vec::new();
            st.flush(
                |_| Some((&sink as &dyn GuestRx, Offloads::NONE)),
                |e, bytes, ok| done.push((e.hdr.gso_size, bytes, ok)),
            );
            let want: Vec<_> = (round..3)
                .map(|i| (i as u16, data[i].len() as u64, Ok(())))
                .collect();
            assert_eq!(done, want, "round {round}");
            let bursts = sink.bursts.lock();
            let last = bursts.last().expect("one burst per flush");
            assert_eq!(last, &data[round..].to_vec());
        }
        assert_eq!(sink.bursts.lock().len(), 3);
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
        // SAFETY: `data` outlives the flush below.
        unsafe {
            st.push(PortId(2), PortId(0), id(10), 0, [&[], &[]], [seg(0)]);
            st.push(PortId(1), PortId(0), id(11), 0, [&[], &[]], [seg(1)]);
            st.push(
                PortId(2),
                PortId(0),
                id(12),
                0,
                [&[], &[]],
                [seg(2), seg(3)],
            );
            st.push(PortId(3), PortId(0), id(13), 0, [&[], &[]], [seg(3)]);
        }
        let mut results = Vec::new();
        let (a2, b2) = (a.clone(), b.clone());
        st.flush(
            |p| match p.0 {
                1 => Some((&*a2 as &dyn GuestRx, Offloads::NONE)),
                2 => Some((&*b2 as &dyn GuestRx, Offloads::NONE)),
                _ => None,
            },
            |e, bytes, ok| results.push((e.hdr.gso_size, bytes, ok)),
        );
        assert!(st.is_empty());
        assert_eq!(a.bursts.lock().len(), 1);
        let bb = b.bursts.lock();
        assert_eq!(bb.len(), 1, "port 2's two frames share one burst");
        assert_eq!(bb[0][0], data[0]);
        assert_eq!(bb[0][1], [data[2].clone(), data[3].clone()].concat());
        results.sort_by_key(|r| r.0);
        assert_eq!(
            results,
            vec![
                (10, 20, Ok(())),
                (11, 20, Ok(())),
                (12, 40, Ok(())),
                (13, 0, Err(DropReason::DestinationDown))
            ]
        );
    }
}
