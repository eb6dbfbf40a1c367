//! TX chain checks (virtio 1.2 §5.1.6.2 "Packet Transmission") shared by the lent TX
//! rings ([`crate::TxRing`], popped by the data plane): reading chain heads from the avail
//! ring, and validating a chain's virtio-net header, length and offload requests
//! (§5.1.6.2.1) on a private copy of the header. A chain that fails is counted with its
//! reason and returned to the used ring with length 0 (the device wrote nothing, §2.7.8),
//! so a bad chain costs the guest one buffer, not the queue.

use switch::vnet::{Gso, VnetHdr};
use virtio_queue::{Error as QueueError, QueueOwnedT, QueueT};

use crate::counters::Drop;
use crate::device::Inner;
use crate::features::bit;

/// Longest frame accepted on TX: a 64 KiB GSO packet plus Ethernet and two VLAN tags.
pub const MAX_TX_FRAME: usize = 65_535 + 14 + 8;
/// Shortest: an Ethernet header.
pub const MIN_TX_FRAME: usize = 14;

impl Inner {
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
        let n16 = u16::try_from(heads.len()).unwrap_or(u16::MAX).min(ready);
        let n = usize::from(n16);
        for (slot, i) in heads[..n].iter_mut().zip(0u16..) {
            *slot = rings.avail_head(next.wrapping_add(i));
        }
        queue.set_next_avail(next.wrapping_add(n16));
        Some(n)
    }

    fn avail_jumped(&self, q: usize, vring: &crate::vring::NetVring) {
        if let Some(c) = self.counters.get(q) {
            c.count_drop(Drop::AvailJump);
        }
        if let Some(suppressed) = self.log_check() {
            tracing::warn!(port = %self.port, queue = q, suppressed, "avail index jumped past the ring size: queue stopped");
        }
        vring.mark_broken();
    }

    /// Checks a TX chain's virtio-net header, length and offload requests (§5.1.6.2,
    /// §5.1.6.2.1) on bytes already copied from the chain's beginning (`start`: at least
    /// the header, when the chain has that many) and the chain's readable length. Returns
    /// the header (with `num_buffers` cleared: an RX field that carries nothing on TX)
    /// and the Ethernet frame's length.
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
}

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

/// §5.1.6.2.1: the driver MUST NOT ask for an offload it did not negotiate; a checksum it
/// asks us (or a later NIC) to complete must lie inside the frame.
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
