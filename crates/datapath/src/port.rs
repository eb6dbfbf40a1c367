//! Creating a vhost-user port the way the daemon runs it: a switch port on the data plane,
//! a device whose TX rings are lent to the io_uring workers, its RX side attached to them,
//! and the socket served — or, when any step fails, nothing left behind.

use std::sync::Arc;

use switch::mcast::RouterMode;
use switch::{PortConfig, PortId};
use uring_net::Dataplane;
use vring_engine::{NetDevice, PortOptions, VhostUserPort};

use crate::{Glue, GuestSink};

/// Why a vhost-user port could not be created. Nothing of it remains: the switch port is
/// removed and the device forgotten.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The port options do not validate (the user's to fix).
    #[error(transparent)]
    Options(#[from] vring_engine::OptionsError),
    /// The data plane refused the port (no free port, name taken, shutting down).
    #[error(transparent)]
    Dataplane(#[from] uring_net::Error),
    /// The vhost-user socket could not be served.
    #[error(transparent)]
    Socket(#[from] vring_engine::PortError),
}

impl Glue {
    /// Adds a vhost-user port with switch configuration `cfg` (kind vhost-user) and device
    /// options `opts`, and starts serving its socket. The caller keeps the returned
    /// [`VhostUserPort`] for as long as the port lives; `port.stop()`, then
    /// `set_device(id, None)` and `dp.remove_port(id)` take it down.
    ///
    /// The port's link stays down until a driver sets up its rings, and the port is never
    /// a multicast router port (a guest is untrusted: its IGMP/MLD queries must neither
    /// attract all multicast nor win the querier election against a real router or ours).
    /// Guest TX runs in the io_uring workers (the device lends them its TX rings:
    /// zero-copy toward host ports); guest RX is the workers' [`GuestSink`].
    pub fn add_vhost_user_port(
        self: &Arc<Self>,
        dp: &Dataplane,
        cfg: PortConfig,
        opts: PortOptions,
    ) -> Result<(PortId, VhostUserPort), Error> {
        // Checked before the switch port exists, so a bad option costs nothing to undo.
        opts.validate()?;
        let id = dp.add_guest_port(cfg)?;
        let sw = self.switch();
        // No driver yet: the link comes up when the guest sets up its rings.
        if let Err(e) = sw.set_link(id, false) {
            tracing::debug!(port = %id, "link down for a new port: {e}");
        }
        sw.snooper().set_router_mode(id, RouterMode::Never);
        let undo = |e: Error| {
            self.set_device(id, None);
            if let Err(r) = dp.remove_port(id) {
                tracing::warn!(port = %id, "removing a half-created port: {r}");
            }
            e
        };
        let dev = NetDevice::new(id, opts, self.clone()).map_err(|e| undo(e.into()))?;
        self.set_device(id, Some(dev.clone()));
        let sink = Arc::new(GuestSink::new(dev.clone()));
        dp.attach_guest_rx(id, sink).map_err(|e| undo(e.into()))?;
        let port = VhostUserPort::start(dev).map_err(|e| undo(e.into()))?;
        Ok((id, port))
    }
}
