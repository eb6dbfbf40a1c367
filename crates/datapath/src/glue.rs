//! [`Glue`]: what every vhost-user device of the daemon shares with the switch and the
//! io_uring data plane.
//! - device events (rx filter, offloads, link) update the switch's port state, and live
//!   TX rings are lent to the workers (`tx_ring_started`, see [`crate::tx`]);
//! - frames the switch itself originates (querier) are flooded by [`Glue::inject`].

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use parking_lot::RwLock;
use switch::{Offloads, PortId, RxFilter, Switch, Vid, MAX_PORTS};
use uring_net::Dataplane;
use vring_engine::{NetDevice, PortEvents, TxRing};

use crate::tx::GuestTx;

/// Shared by every vhost-user device of the daemon.
pub struct Glue {
    sw: Arc<Switch>,
    devices: RwLock<Vec<Option<NetDevice>>>,
    /// Host ports (tap, AF_PACKET) are written through the data plane.
    dp: ArcSwapOption<Dataplane>,
}

impl Glue {
    pub fn new(sw: Arc<Switch>) -> Glue {
        Glue {
            sw,
            devices: RwLock::new(vec![None; MAX_PORTS]),
            dp: ArcSwapOption::empty(),
        }
    }

    /// The switch the ports are on.
    pub fn switch(&self) -> &Arc<Switch> {
        &self.sw
    }

    /// Sets (or clears, at shutdown) the data plane host-port writes go through.
    pub fn set_dataplane(&self, dp: Option<Arc<Dataplane>>) {
        self.dp.store(dp);
    }

    pub fn set_device(&self, port: PortId, dev: Option<NetDevice>) {
        if let Some(slot) = self.devices.write().get_mut(port.index()) {
            *slot = dev;
        }
    }

    pub fn device(&self, port: PortId) -> Option<NetDevice> {
        self.devices.read().get(port.index()).cloned().flatten()
    }

    /// Floods a frame the switch originates (an IGMP/MLD query of the querier) to every
    /// port of `vid` that accepts it: handed to the data plane, whose worker sends it the
    /// way it sends received frames (`uring_net::Dataplane::inject`: staged into guests
    /// and adapted to their offloads, written to taps and AF_PACKET ports, each tagged as
    /// the port's VLAN mode says).
    pub fn inject(&self, frame: Vec<u8>, vid: Vid) {
        let Some(dp) = self.dp.load_full() else {
            return;
        };
        if let Err(e) = dp.inject(frame, vid) {
            tracing::debug!("switch-originated frame not sent: {e}");
        }
    }
}

impl PortEvents for Glue {
    fn rx_filter_changed(&self, port: PortId, filter: &RxFilter) {
        if let Err(e) = self.sw.set_rx_filter(port, filter.clone()) {
            tracing::warn!(%port, "rx filter update failed: {e}");
        }
    }

    fn offloads_changed(&self, port: PortId, offloads: Offloads) {
        if let Err(e) = self.sw.set_offloads(port, offloads) {
            tracing::warn!(%port, "offload update failed: {e}");
        }
    }

    fn link_changed(&self, port: PortId, up: bool) {
        tracing::info!(%port, up, "vhost-user link");
        if let Err(e) = self.sw.set_link(port, up) {
            tracing::warn!(%port, "link update failed: {e}");
        }
    }

    fn tx_ring_started(&self, port: PortId, ring: TxRing) {
        let Some(dp) = self.dp.load_full() else {
            return;
        };
        let pair = ring.pair();
        let q = Box::new(GuestTx::new(ring));
        match dp.attach_guest_tx(port, u64::from(pair), None, q) {
            Ok(()) => tracing::debug!(%port, pair, "guest TX ring on the workers"),
            Err(e) => tracing::error!(%port, pair, "guest TX ring not serviced: {e}"),
        }
    }

    fn tx_ring_stopped(&self, port: PortId, pair: u16) {
        let Some(dp) = self.dp.load_full() else {
            return;
        };
        if let Err(e) = dp.detach_guest_tx(port, u64::from(pair), TX_STOP_WAIT) {
            tracing::warn!(%port, pair, "guest TX ring taken back with frames in flight: {e}");
        }
    }
}

/// How long stopping a guest TX ring waits for the writes in flight (they complete in
/// microseconds; a tap whose reader is gone still completes them with an error).
const TX_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
