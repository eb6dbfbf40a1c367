//! The boundary between the device and the daemon: the device validates and moves frames,
//! the daemon (through the switch) decides where they go.

use switch::{Offloads, PortId, RxFilter, VnetHdr};

use crate::chain::ChainError;
use crate::frame::TxFrame;

/// Receives every validated TX frame of a port. Called on the thread that processes the
/// TX queue, with that queue's lock held: implementations must not block for long and must
/// not call back into the *same* port's TX processing (delivering to RX queues is fine).
pub trait Forwarder: Send + Sync {
    /// One frame from `ingress`, with its virtio-net header (`num_buffers` is 0).
    fn forward(&self, ingress: PortId, hdr: &VnetHdr, frame: &TxFrame<'_>);

    /// The end of a TX batch: the moment to signal RX queues written during it
    /// ([`crate::NetDevice::flush_rx`]), so guests get one interrupt per batch.
    fn flush(&self) {}
}

/// Who moves a device's guest TX frames.
#[derive(Clone)]
pub enum TxPath {
    /// The device: vhost-user-backend's threads read the TX kicks, and each validated
    /// frame goes to the [`Forwarder`] (borrowed for the call only). For embedders
    /// without a data plane of their own, and the in-repo test harness.
    Forward(std::sync::Arc<dyn Forwarder>),
    /// A data plane that waits on the kick fds itself (ringswitch's io_uring workers,
    /// which write frames straight from guest memory and complete them later): the device
    /// neither watches TX kicks nor processes TX; it lends each live TX ring out with
    /// [`PortEvents::tx_ring_started`] and takes it back with
    /// [`PortEvents::tx_ring_stopped`].
    Lend,
}

/// Port state changes the switch must learn about.
pub trait PortEvents: Send + Sync {
    /// The driver changed its receive filter through the control queue (§5.1.6.5.1–3), or the
    /// filter was reset by feature negotiation, device reset or disconnect.
    fn rx_filter_changed(&self, port: PortId, filter: &RxFilter);

    /// What the guest accepts on RX changed: negotiated GUEST_* features (§5.1.3) or
    /// VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET (§5.1.6.5.6).
    fn offloads_changed(&self, port: PortId, offloads: Offloads);

    /// The port can (up) or cannot (down) take frames: a driver is attached and has set up
    /// its rings, or the frontend disconnected / reset the device.
    fn link_changed(&self, port: PortId, up: bool);

    /// The driver enabled `pairs` queue pairs (§5.1.6.5.5). Frames should be spread over
    /// RX queue pairs `0..pairs` only.
    fn queue_pairs_changed(&self, _port: PortId, _pairs: u16) {}

    /// The guest memory table changed (SET_MEM_TABLE, ADD/REM_MEM_REG): a data plane that
    /// registered guest memory (io_uring fixed buffers) re-reads
    /// [`crate::NetDevice::guest_memory`]. Called on the vhost-user protocol thread.
    fn memory_changed(&self, _port: PortId) {}

    /// With [`TxPath::Lend`]: TX ring `ring.pair()` is live (set up, enabled, kick fd
    /// set): service it. Called on the vhost-user protocol thread.
    fn tx_ring_started(&self, _port: PortId, _ring: crate::TxRing) {}

    /// Stop servicing queue pair `pair`'s TX ring and drop it; return only when every
    /// frame popped from it was completed (a vhost-user GET_VRING_BASE is waiting).
    fn tx_ring_stopped(&self, _port: PortId, _pair: u16) {}
}

/// Why [`crate::NetDevice::deliver`] did not place a frame. Each is counted on the RX queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RxDrop {
    #[error("RX queue not set up, not enabled, or queue pair not active")]
    NotReady,
    #[error("no RX buffers posted by the driver")]
    NoBuffers,
    #[error("frame larger than the posted (non-mergeable) buffer")]
    TooBig,
    #[error("RX descriptor chain invalid: {0}")]
    BadChain(ChainError),
    #[error("RX queue stopped after a ring protocol violation")]
    Broken,
}
