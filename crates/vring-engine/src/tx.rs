//! TX queue processing (virtio 1.2 §5.1.6.2 "Packet Transmission").
//!
//! Pop every available chain, validate it ([`crate::chain`]), strip the virtio-net header —
//! wherever it sits: its own descriptor, or inline with the frame (VERSION_1 implies
//! ANY_LAYOUT, §2.7.4.3) — and hand the frame, as guest-memory slices, to the
//! [`crate::Forwarder`]. Every chain goes back to the used ring with length 0 (the device
//! wrote nothing, §2.7.8), valid or not, so a bad chain costs the guest one buffer, not the
//! queue. The guest is signalled once per batch, EVENT_IDX-aware (§2.7.7.2).

use std::sync::atomic::Ordering;

use switch::vnet::VnetHdr;
use vhost_user_backend::VringT;
use virtio_queue::{Error as QueueError, QueueOwnedT, QueueT};
use vm_memory::{GuestAddress, GuestAddressSpace};

use crate::chain::{Chain, ChainError, Direction, TableInfo};
use crate::counters::Drop;
use crate::device::Inner;
use crate::features::{bit, vnet_hdr_len};
use crate::frame::{as_bytes, TxFrame};

/// Chains taken from the avail ring per batch (one used-ring notification per batch).
pub const TX_BATCH: usize = 64;

/// Longest frame accepted on TX: a 64 KiB GSO packet plus Ethernet and two VLAN tags.
pub const MAX_TX_FRAME: usize = 65_535 + 14 + 8;
/// Shortest: an Ethernet header.
pub const MIN_TX_FRAME: usize = 14;

impl Inner {
    pub(crate) fn process_tx(&self, q: usize) {
        let Some(vring) = self.vring(q) else { return };
        let Some(ctr) = self.counters.get(q) else {
            return;
        };
        let acked = self.acked();
        let hdr_len = vnet_hdr_len(acked);
        let indirect = acked & bit(virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC) != 0;
        let mem = self.mem.read().memory();
        let mut st = vring.get_mut();
        if !st.get_queue().ready() || !st.is_enabled() || vring.is_broken() {
            return;
        }
        let table = TableInfo {
            desc_table: GuestAddress(st.get_queue().desc_table()),
            queue_size: st.get_queue().size(),
            indirect_allowed: indirect,
        };
        let mut chain = Chain::default();
        let mut segs: Vec<&[u8]> = Vec::with_capacity(8);
        loop {
            let _ = st.disable_notification();
            loop {
                let mut heads = [0u16; TX_BATCH];
                let n = match st.get_queue_mut().iter(&*mem) {
                    Ok(it) => {
                        let mut n = 0;
                        for c in it.take(TX_BATCH) {
                            heads[n] = c.head_index();
                            n += 1;
                        }
                        n
                    }
                    Err(QueueError::InvalidAvailRingIndex) => {
                        ctr.count_drop(Drop::AvailJump);
                        tracing::warn!(port = %self.port, queue = q, "avail index jumped past the ring size: queue stopped");
                        vring.mark_broken();
                        return;
                    }
                    Err(_) => return,
                };
                if n == 0 {
                    break;
                }
                for &head in &heads[..n] {
                    if head >= table.queue_size {
                        ctr.count_drop(Drop::Chain(ChainError::BadIndex));
                        vring.mark_broken();
                        return;
                    }
                    match chain.walk(&mem, table, head, Direction::ReadOnly) {
                        Err(e) => ctr.count_drop(Drop::Chain(e)),
                        Ok(()) => self.forward_chain(&chain, hdr_len, &mut segs, ctr),
                    }
                    if st.add_used(head, 0).is_err() {
                        vring.mark_broken();
                        return;
                    }
                }
                self.fwd.flush();
                if st.needs_notification().unwrap_or(true) && st.signal_used_queue().is_ok() {
                    ctr.calls.fetch_add(1, Ordering::Relaxed);
                }
            }
            match st.enable_notification() {
                Ok(true) => continue,
                _ => break,
            }
        }
    }

    fn forward_chain<'m>(
        &self,
        chain: &Chain<'m>,
        hdr_len: usize,
        segs: &mut Vec<&'m [u8]>,
        ctr: &crate::counters::QueueCounters,
    ) {
        let total = chain.read_len as usize;
        if total < hdr_len {
            ctr.count_drop(Drop::BadHeader);
            return;
        }
        let mut hb = [0u8; switch::vnet::HDR_LEN];
        if crate::chain::copy_out(&chain.readable, 0, &mut hb[..hdr_len]) != hdr_len {
            ctr.count_drop(Drop::BadHeader);
            return;
        }
        let Ok(mut hdr) = VnetHdr::parse(&hb, hdr_len) else {
            ctr.count_drop(Drop::BadHeader);
            return;
        };
        if hdr.gso().is_err() {
            ctr.count_drop(Drop::BadHeader);
            return;
        }
        // num_buffers is an RX field; on TX it carries nothing (§5.1.6.2).
        hdr.num_buffers = 0;
        let len = total - hdr_len;
        if !(MIN_TX_FRAME..=MAX_TX_FRAME).contains(&len) {
            ctr.count_drop(Drop::BadLength);
            return;
        }
        segs.clear();
        let mut skip = hdr_len;
        for s in &chain.readable {
            let b = as_bytes(s);
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            segs.push(&b[skip..]);
            skip = 0;
        }
        let frame = TxFrame::new(segs);
        ctr.count_frame(len);
        self.fwd.forward(self.port, &hdr, &frame);
    }
}
