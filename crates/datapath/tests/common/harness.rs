//! vhost-user ports wired exactly as the daemon wires them: one switch, a real
//! `uring_net::Dataplane` (io_uring workers pop the guests' TX rings and deliver into
//! their RX rings), and every port created by [`datapath::Glue::add_vhost_user_port`].
//! What the tests observe of port events, they observe on the switch the events updated.

use std::sync::Arc;

use datapath::Glue;
use switch::{Offloads, PortConfig, PortId, PortKind, Switch, SwitchConfig};
use uring_net::{Dataplane, DataplaneConfig};
use vring_engine::{NetDevice, PortOptions, VhostUserPort};

pub struct Harness {
    pub sw: Arc<Switch>,
    pub dp: Arc<Dataplane>,
    pub glue: Arc<Glue>,
    pub ports: Vec<VhostUserPort>,
}

impl Harness {
    pub fn new(opts: Vec<PortOptions>) -> Harness {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let sw = Arc::new(Switch::new(SwitchConfig::default()));
        // The daemon's defaults (bin/runtime.rs without --workers / --poll-us).
        let dp = Dataplane::new(
            sw.clone(),
            DataplaneConfig {
                auto_poll: true,
                ..Default::default()
            },
        )
        .unwrap();
        let dp = Arc::new(dp);
        let glue = Arc::new(Glue::new(sw.clone()));
        glue.set_dataplane(Some(dp.clone()));
        let ports = opts
            .into_iter()
            .map(|o| {
                // As bin/runtime.rs: the port is named by its socket path.
                let mut cfg = PortConfig::new(o.socket.display().to_string(), PortKind::VhostUser);
                if let Some(m) = o.mac {
                    cfg = cfg.with_mac(m);
                }
                glue.add_vhost_user_port(&dp, cfg, o).unwrap().1
            })
            .collect();
        Harness {
            sw,
            dp,
            glue,
            ports,
        }
    }

    pub fn dev(&self, i: usize) -> &NetDevice {
        self.ports[i].device()
    }

    /// The switch's view of the port's link (what `PortEvents::link_changed` set).
    pub fn link_up(&self, port: PortId) -> bool {
        self.sw
            .ports()
            .into_iter()
            .any(|(p, _, up)| p == port && up)
    }

    /// What the switch delivers to the port (what `PortEvents::offloads_changed` set).
    pub fn offloads(&self, port: PortId) -> Offloads {
        self.sw
            .ports()
            .into_iter()
            .find(|(p, _, _)| *p == port)
            .map(|(_, c, _)| c.offloads)
            .unwrap()
    }
}

impl Drop for Harness {
    /// As the daemon's shutdown: ports stop (their TX rings come back from the workers)
    /// before the data plane goes.
    fn drop(&mut self) {
        for p in self.ports.drain(..) {
            let id = p.device().port();
            p.stop();
            self.glue.set_device(id, None);
        }
        self.glue.set_dataplane(None);
    }
}
