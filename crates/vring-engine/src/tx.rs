//! TX queue processing (virtio 1.2 §5.1.6.2 "Packet Transmission").
//!
//! Pop every available chain, validate it ([`crate::chain`]), strip the virtio-net header —
//! wherever it sits: its own descriptor, or inline with the frame (VERSION_1 implies
//! ANY_LAYOUT, §2.7.4.3) — and hand the frame, as guest-memory slices, to the
//! [`crate::Forwarder`]. Every chain goes back to the used ring with length 0 (the device
//! wrote nothing, §2.7.8), valid or not, so a bad chain costs the guest one buffer, not the
//! queue. The guest is signalled once per batch, EVENT_IDX-aware (§2.7.7.2).

use switch::vnet::{Gso, VnetHdr};
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
/// Batches per call before yielding: a guest that keeps its TX ring full must not hold the
/// queue lock (GET_VRING_BASE waits on it) or its worker thread forever.
pub const TX_BUDGET: usize = 4;

/// Longest frame accepted on TX: a 64 KiB GSO packet plus Ethernet and two VLAN tags.
pub const MAX_TX_FRAME: usize = 65_535 + 14 + 8;
/// Shortest: an Ethernet header.
pub const MIN_TX_FRAME: usize = 14;

impl Inner {
    pub(crate) fn process_tx(&self, q: usize) {
        let Some(fwd) = self.fwd.as_deref() else {
            return; // TX rings are lent out (TxPath::Lend): not ours to process
        };
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
        let rings = crate::split::Rings::new(&mem, st.get_queue());
        let mut chain = Chain::default();
        let mut segs: Vec<&[u8]> = Vec::with_capacity(8);
        let mut batches = 0;
        loop {
            let _ = st.get_queue_mut().disable_notification(&*mem);
            loop {
                if batches == TX_BUDGET {
                    // Notifications stay off; our own kick brings us back after the other
                    // queues of this thread and the protocol thread had their turn.
                    if let Some(k) = st.get_kick() {
                        if self_kick(k).is_err() {
                            let _ = st.get_queue_mut().enable_notification(&*mem);
                        }
                    }
                    return;
                }
                batches += 1;
                let mut heads = [0u16; TX_BATCH];
                let Some(n) = self.take_heads(
                    q,
                    &vring,
                    st.get_queue_mut(),
                    &mem,
                    rings.as_ref(),
                    &mut heads,
                ) else {
                    return;
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
                        Ok(()) => self.forward_chain(fwd, &chain, hdr_len, &mut segs, ctr),
                    }
                    if st.get_queue_mut().add_used(&*mem, head, 0).is_err() {
                        vring.mark_broken();
                        return;
                    }
                }
                fwd.flush();
                if st.get_queue_mut().needs_notification(&*mem).unwrap_or(true)
                    && st.signal_used_queue().is_ok()
                {
                    ctr.count_call();
                }
            }
            match st.get_queue_mut().enable_notification(&*mem) {
                Ok(true) => continue,
                _ => break,
            }
        }
    }

    /// Takes up to `heads.len()` chain heads from queue `q`'s avail ring (virtio 1.2
    /// §2.7.6). `None`: stop reading the ring — its avail index jumped past the ring size
    /// (counted, logged at most once a second, the ring marked broken) or it is unreadable.
    ///
    /// With `rings` (translated once by the caller for its whole burst) the entries are
    /// read directly: one avail-index load per call instead of virtio-queue's iterator,
    /// which translates the ring's guest address and re-checks the index per entry.
    pub(crate) fn take_heads(
        &self,
        q: usize,
        vring: &crate::vring::NetVring,
        queue: &mut virtio_queue::Queue,
        mem: &crate::chain::Mem,
        rings: Option<&crate::split::Rings<'_>>,
        heads: &mut [u16],
    ) -> Option<usize> {
        let Some(rings) = rings else {
            return match queue.iter(mem) {
                Ok(it) => {
                    let mut n = 0;
                    for (slot, c) in heads.iter_mut().zip(it) {
                        *slot = c.head_index();
                        n += 1;
                    }
                    Some(n)
                }
                Err(QueueError::InvalidAvailRingIndex) => {
                    self.avail_jumped(q, vring);
                    None
                }
                Err(_) => None,
            };
        };
        let next = queue.next_avail();
        let ready = rings.avail_idx().wrapping_sub(next);
        if ready > queue.size() {
            self.avail_jumped(q, vring);
            return None;
        }
        let n = heads.len().min(usize::from(ready));
        for (i, slot) in heads[..n].iter_mut().enumerate() {
            *slot = rings.avail_head(next.wrapping_add(i as u16));
        }
        queue.set_next_avail(next.wrapping_add(n as u16));
        Some(n)
    }

    fn avail_jumped(&self, q: usize, vring: &crate::vring::NetVring) {
        if let Some(c) = self.counters.get(q) {
            c.count_drop(Drop::AvailJump);
        }
        if self.log_limit.allow() {
            tracing::warn!(port = %self.port, queue = q, "avail index jumped past the ring size: queue stopped");
        }
        vring.mark_broken();
    }

    /// Checks a TX chain's virtio-net header, length and offload requests (§5.1.6.2,
    /// §5.1.6.2.1). Returns the header (with `num_buffers` cleared: an RX field that
    /// carries nothing on TX) and the Ethernet frame's length.
    pub(crate) fn check_tx_chain(
        &self,
        chain: &Chain<'_>,
        hdr_len: usize,
        acked: u64,
    ) -> Result<(VnetHdr, usize), Drop> {
        let mut hb = [0u8; switch::vnet::HDR_LEN];
        let n = crate::chain::copy_out(&chain.readable, 0, &mut hb[..hdr_len]);
        self.check_tx_hdr(&hb[..n], chain.read_len, hdr_len, acked)
    }

    /// [`check_tx_chain`](Self::check_tx_chain) on bytes already copied from the chain's
    /// beginning (`start`: at least the header, when the chain has that many) and the
    /// chain's readable length.
    pub(crate) fn check_tx_hdr(
        &self,
        start: &[u8],
        read_len: u32,
        hdr_len: usize,
        acked: u64,
    ) -> Result<(VnetHdr, usize), Drop> {
        let total = read_len as usize;
        if total < hdr_len || start.len() < hdr_len {
            return Err(Drop::BadHeader);
        }
        let mut hdr = VnetHdr::parse(&start[..hdr_len], hdr_len).map_err(|_| Drop::BadHeader)?;
        let gso = hdr.gso().map_err(|_| Drop::BadHeader)?;
        hdr.num_buffers = 0;
        let len = total - hdr_len;
        if !(MIN_TX_FRAME..=MAX_TX_FRAME).contains(&len) {
            return Err(Drop::BadLength);
        }
        if !offload_allowed(&hdr, gso, acked, len) {
            return Err(Drop::BadOffload);
        }
        Ok((hdr, len))
    }

    fn forward_chain<'m>(
        &self,
        fwd: &dyn crate::Forwarder,
        chain: &Chain<'m>,
        hdr_len: usize,
        segs: &mut Vec<&'m [u8]>,
        ctr: &crate::counters::QueueCounters,
    ) {
        let (hdr, len) = match self.check_tx_chain(chain, hdr_len, self.acked()) {
            Ok(v) => v,
            Err(d) => {
                ctr.count_drop(d);
                return;
            }
        };
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
        fwd.forward(self.port, &hdr, &frame);
    }
}

/// §5.1.6.2.1: the driver MUST NOT ask for an offload it did not negotiate; a checksum it
/// asks us (or a later NIC) to complete must lie inside the frame.
/// Writes 1 to the kick eventfd we were woken by.
pub(crate) fn self_kick(k: &vmm_sys_util::event::EventConsumer) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::fd::{FromRawFd, IntoRawFd};
    let dup = k.try_clone()?.into_raw_fd();
    // SAFETY: `dup` is a fresh duplicate of the kick eventfd made just above; nothing else
    // owns it, so the File takes sole ownership and closes it.
    let mut f = unsafe { std::fs::File::from_raw_fd(dup) };
    f.write_all(&1u64.to_ne_bytes())
}

fn offload_allowed(hdr: &VnetHdr, gso: Gso, acked: u64, len: usize) -> bool {
    use virtio_bindings::virtio_net::*;
    let has = |b: u32| acked & bit(b) != 0;
    let gso_ok = match gso {
        Gso::None => true,
        Gso::TcpV4 => has(VIRTIO_NET_F_HOST_TSO4),
        Gso::TcpV6 => has(VIRTIO_NET_F_HOST_TSO6),
        Gso::Udp => has(VIRTIO_NET_F_HOST_UFO),
        Gso::UdpL4 => has(VIRTIO_NET_F_HOST_USO),
    };
    if !gso_ok || (gso != Gso::None && hdr.gso_size == 0) {
        return false;
    }
    if hdr.ecn() && (gso == Gso::None || !has(VIRTIO_NET_F_HOST_ECN)) {
        return false;
    }
    if hdr.needs_csum() {
        let end = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset) + 2;
        if !has(VIRTIO_NET_F_CSUM) || end > len {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::vnet::{F_NEEDS_CSUM, GSO_ECN, GSO_TCPV4, GSO_UDP_L4};
    use virtio_bindings::virtio_net::*;

    #[test]
    fn offloads_must_be_negotiated_and_in_bounds() {
        let csum = bit(VIRTIO_NET_F_CSUM);
        let tso4 = csum | bit(VIRTIO_NET_F_HOST_TSO4);
        let plain = VnetHdr::default();
        assert!(offload_allowed(&plain, Gso::None, 0, 60));
        let c = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..plain
        };
        assert!(
            !offload_allowed(&c, Gso::None, 0, 100),
            "CSUM not negotiated"
        );
        assert!(offload_allowed(&c, Gso::None, csum, 100));
        assert!(
            !offload_allowed(&c, Gso::None, csum, 51),
            "checksum field past the end"
        );
        let t = VnetHdr {
            gso_type: GSO_TCPV4,
            gso_size: 1448,
            ..c
        };
        assert!(!offload_allowed(&t, Gso::TcpV4, csum, 9000));
        assert!(offload_allowed(&t, Gso::TcpV4, tso4, 9000));
        let t0 = VnetHdr { gso_size: 0, ..t };
        assert!(!offload_allowed(&t0, Gso::TcpV4, tso4, 9000));
        let e = VnetHdr {
            gso_type: GSO_TCPV4 | GSO_ECN,
            ..t
        };
        assert!(!offload_allowed(&e, Gso::TcpV4, tso4, 9000));
        assert!(offload_allowed(
            &e,
            Gso::TcpV4,
            tso4 | bit(VIRTIO_NET_F_HOST_ECN),
            9000
        ));
        let u = VnetHdr {
            gso_type: GSO_UDP_L4,
            ..t
        };
        assert!(!offload_allowed(&u, Gso::UdpL4, tso4, 9000));
    }
}
