//! The boundary between the device and the daemon: the device validates and moves frames,
//! the daemon (through the switch) decides where they go.

use switch::{Offloads, PortId, RxFilter};

use crate::chain::ChainError;

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

    /// TX ring `ring.pair()` is live (set up, enabled, kick fd
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
