//! RX delivery (virtio 1.2 §5.1.6.3 "Setting Up Receive Buffers", §5.1.6.4 "Processing of
//! Incoming Packets").
//!
//! With MRG_RXBUF a frame may span several chains: the first starts with the header whose
//! `num_buffers` says how many (§5.1.6.4). Without it, one chain must hold header and frame
//! (a driver offering GUEST_TSO* without MRG_RXBUF posts "big packet" chains of 64 KiB).
//! If the ring runs dry mid-frame, the chains taken so far are put back (the avail index is
//! rewound; nothing was published) and the frame is dropped as [`RxDrop::NoBuffers`].

use switch::VnetHdr;
use vhost_user_backend::VringT;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_queue::{Error as QueueError, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestAddressSpace, VolatileSlice};

use crate::api::RxDrop;
use crate::chain::{Chain, ChainError, Direction, TableInfo};
use crate::counters::Drop;
use crate::device::Inner;
use crate::features::{bit, vnet_hdr_len};
use crate::vring::NetVring;

impl From<RxDrop> for Drop {
    fn from(d: RxDrop) -> Drop {
        match d {
            RxDrop::NotReady => Drop::NotReady,
            RxDrop::NoBuffers => Drop::NoBuffers,
            RxDrop::TooBig => Drop::TooBig,
            RxDrop::BadChain(e) => Drop::Chain(e),
            RxDrop::Broken => Drop::AvailJump,
        }
    }
}

impl Inner {
    pub(crate) fn deliver(
        &self,
        queue_pair: u16,
        hdr: &VnetHdr,
        parts: &[&[u8]],
    ) -> Result<(), RxDrop> {
        let q = 2 * queue_pair as usize;
        let Some(ctr) = self.counters.get(q) else {
            return Err(RxDrop::NotReady);
        };
        // Pairs beyond VQ_PAIRS_SET are off limits when the driver talks to our control
        // queue (§5.1.6.5.5); otherwise the frontend steers pairs with SET_VRING_ENABLE,
        // which the ring's own enabled state reflects.
        let r = if queue_pair >= self.active_pairs.load(std::sync::atomic::Ordering::Acquire)
            && self.ctrl_ring_live()
        {
            Err(RxDrop::NotReady)
        } else {
            match self.vring(q) {
                Some(v) => self.deliver_to(&v, hdr, parts),
                None => Err(RxDrop::NotReady),
            }
        };
        match r {
            Ok(n) => {
                ctr.count_frame(n);
                Ok(())
            }
            Err(e) => {
                ctr.count_drop(e.into());
                Err(e)
            }
        }
    }

    /// Returns the frame length placed.
    fn deliver_to(
        &self,
        vring: &NetVring,
        hdr: &VnetHdr,
        parts: &[&[u8]],
    ) -> Result<usize, RxDrop> {
        let acked = self.acked();
        let hdr_len = vnet_hdr_len(acked);
        let mergeable = acked & bit(VIRTIO_NET_F_MRG_RXBUF) != 0;
        let indirect = acked & bit(virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC) != 0;
        let payload: usize = parts.iter().map(|p| p.len()).sum();
        let total = hdr_len + payload;
        if total > u32::MAX as usize {
            return Err(RxDrop::TooBig);
        }
        let mem = self.mem.read().memory();
        let mut st = vring.get_mut();
        if !st.get_queue().ready() || !st.is_enabled() {
            return Err(RxDrop::NotReady);
        }
        if vring.is_broken() {
            return Err(RxDrop::Broken);
        }
        let table = TableInfo {
            desc_table: GuestAddress(st.get_queue().desc_table()),
            queue_size: st.get_queue().size(),
            indirect_allowed: indirect,
        };
        let start = st.get_queue().next_avail();
        let mut chains: smallvec::SmallVec<[Chain<'_>; 2]> = smallvec::SmallVec::new();
        let mut cap = 0usize;
        while cap < total {
            let head = match st.get_queue_mut().iter(&*mem) {
                Ok(mut it) => it.next().map(|c| c.head_index()),
                Err(QueueError::InvalidAvailRingIndex) => {
                    vring.mark_broken();
                    return Err(RxDrop::Broken);
                }
                Err(_) => return Err(RxDrop::NotReady),
            };
            let Some(head) = head else {
                st.get_queue_mut().set_next_avail(start);
                return Err(RxDrop::NoBuffers);
            };
            if head >= table.queue_size {
                vring.mark_broken();
                return Err(RxDrop::BadChain(ChainError::BadIndex));
            }
            let mut c = Chain::default();
            if let Err(e) = c.walk(&mem, table, head, Direction::WriteOnly) {
                // The bad chain is consumed (else it would come back forever); the good
                // ones taken for this frame are returned empty too: the frame is lost.
                for ch in &chains {
                    let _ = st.get_queue_mut().add_used(&*mem, ch.head, 0);
                }
                let _ = st.get_queue_mut().add_used(&*mem, head, 0);
                return Err(RxDrop::BadChain(e));
            }
            cap += c.write_len as usize;
            chains.push(c);
            if !mergeable {
                break;
            }
        }
        if cap < total {
            st.get_queue_mut().set_next_avail(start);
            return Err(RxDrop::TooBig);
        }
        let mut h = *hdr;
        // §5.1.6.4: without MRG_RXBUF the (12-byte, VERSION_1) header says 1 buffer.
        h.num_buffers = if mergeable { chains.len() as u16 } else { 1 };
        let mut hb = [0u8; switch::vnet::HDR_LEN];
        let _ = h.emit(&mut hb, hdr_len);
        let mut w = Writer::new(&chains);
        w.write(&hb[..hdr_len]);
        for p in parts {
            w.write(p);
        }
        // Bytes go in order, so chain i holds min(its room, what was left for it).
        let mut left = total;
        for c in &chains {
            let n = left.min(c.write_len as usize);
            left -= n;
            if st
                .get_queue_mut()
                .add_used(&*mem, c.head, n as u32)
                .is_err()
            {
                vring.mark_broken();
                return Err(RxDrop::Broken);
            }
        }
        Ok(payload)
    }

    pub(crate) fn flush_rx(&self, queue_pair: u16) -> bool {
        let q = 2 * queue_pair as usize;
        let Some(v) = self.vring(q) else { return false };
        let mem = self.mem.read().memory();
        let st = &mut *v.get_mut();
        if !st.get_queue().ready() {
            return false;
        }
        // We never wait for RX kicks: delivery reads the avail ring when it has a frame.
        // So ask the driver not to kick after refilling (VRING_USED_F_NO_NOTIFY, virtio 1.2
        // §2.7.10; a no-op with EVENT_IDX, where we never advance avail_event on RX). Drivers
        // without EVENT_IDX (DPDK virtio-user) otherwise kick on every refill.
        let _ = st.get_queue_mut().disable_notification(&*mem);
        if st.get_queue_mut().needs_notification(&*mem).unwrap_or(true)
            && st.signal_used_queue().is_ok()
        {
            if let Some(c) = self.counters.get(q) {
                c.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            return true;
        }
        false
    }
}

/// Sequential writer over the writable buffers of several chains.
struct Writer<'c, 'm> {
    chains: &'c [Chain<'m>],
    chain: usize,
    slice: usize,
    off: usize,
}

impl<'c, 'm> Writer<'c, 'm> {
    fn new(chains: &'c [Chain<'m>]) -> Self {
        Writer {
            chains,
            chain: 0,
            slice: 0,
            off: 0,
        }
    }

    fn cur(&self) -> Option<&VolatileSlice<'m, ()>> {
        self.chains.get(self.chain)?.writable.get(self.slice)
    }

    fn write(&mut self, mut src: &[u8]) {
        while !src.is_empty() {
            let Some(s) = self.cur() else {
                if self.chain >= self.chains.len() {
                    return;
                }
                self.chain += 1;
                self.slice = 0;
                self.off = 0;
                continue;
            };
            let room = s.len() - self.off;
            if room == 0 {
                self.slice += 1;
                self.off = 0;
                continue;
            }
            let n = room.min(src.len());
            if let Ok(dst) = s.subslice(self.off, n) {
                dst.copy_from(&src[..n]);
            }
            self.off += n;
            src = &src[n..];
        }
    }
}
