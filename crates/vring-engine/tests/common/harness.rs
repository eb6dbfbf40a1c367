//! Ports wired through the real switch core (`switch::Switch`): the device's Forwarder asks
//! the switch for a decision and delivers to the destination devices, as the daemon will.

use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use switch::{
    Decision, Millis, Offloads, PortConfig, PortId, PortKind, RxFilter, Switch, SwitchConfig,
    VnetHdr,
};
use vring_engine::{Forwarder, NetDevice, PortEvents, PortOptions, TxFrame, TxPath, VhostUserPort};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Filter(PortId, RxFilter),
    Offloads(PortId, Offloads),
    Link(PortId, bool),
    Pairs(PortId, u16),
    Memory(PortId),
}

#[derive(Default)]
pub struct Shared {
    pub sw: Option<Arc<Switch>>,
    pub devs: RwLock<Vec<Option<NetDevice>>>,
    pub events: Mutex<Vec<Event>>,
    pending: Mutex<Vec<PortId>>,
    /// Deliveries refused by devices, for assertions.
    pub rx_drops: Mutex<Vec<(PortId, vring_engine::RxDrop)>>,
}

pub struct Fwd(pub Arc<Shared>);

/// Splits `segs` after skipping `skip` bytes.
fn body<'a>(segs: &[&'a [u8]], mut skip: usize) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    for s in segs {
        if skip >= s.len() {
            skip -= s.len();
            continue;
        }
        out.push(&s[skip..]);
        skip = 0;
    }
    out
}

impl Forwarder for Fwd {
    fn forward(&self, ingress: PortId, hdr: &VnetHdr, frame: &TxFrame<'_>) {
        let Some(sw) = self.0.sw.as_ref() else { return };
        let view = sw.view();
        let Decision::Forward(f) = view.decide(ingress, hdr, frame.head(), frame.len(), Millis(0))
        else {
            return;
        };
        let devs = self.0.devs.read();
        for p in f.ports.iter() {
            let Some(Some(dev)) = devs.get(p.index()) else {
                continue;
            };
            let eg = view.egress(p, &f, frame.head());
            let mut parts = vec![eg.head()];
            parts.extend(body(frame.segments(), eg.body_offset as usize));
            let h = eg.adjust_hdr(hdr);
            match dev.deliver(0, &h, &parts) {
                Ok(()) => self.0.pending.lock().push(p),
                Err(e) => self.0.rx_drops.lock().push((p, e)),
            }
        }
    }

    fn flush(&self) {
        let pending: Vec<PortId> = std::mem::take(&mut *self.0.pending.lock());
        let devs = self.0.devs.read();
        for p in pending {
            if let Some(Some(d)) = devs.get(p.index()) {
                d.flush_rx(0);
            }
        }
    }
}

pub struct Ev(pub Arc<Shared>);

impl PortEvents for Ev {
    fn rx_filter_changed(&self, port: PortId, filter: &RxFilter) {
        if let Some(sw) = &self.0.sw {
            let _ = sw.set_rx_filter(port, filter.clone());
        }
        self.0
            .events
            .lock()
            .push(Event::Filter(port, filter.clone()));
    }
    fn offloads_changed(&self, port: PortId, offloads: Offloads) {
        if let Some(sw) = &self.0.sw {
            let _ = sw.set_offloads(port, offloads);
        }
        self.0.events.lock().push(Event::Offloads(port, offloads));
    }
    fn link_changed(&self, port: PortId, up: bool) {
        if let Some(sw) = &self.0.sw {
            let _ = sw.set_link(port, up);
        }
        self.0.events.lock().push(Event::Link(port, up));
    }
    fn queue_pairs_changed(&self, port: PortId, pairs: u16) {
        self.0.events.lock().push(Event::Pairs(port, pairs));
    }
    fn memory_changed(&self, port: PortId) {
        self.0.events.lock().push(Event::Memory(port));
    }
}

/// A switch with vhost-user ports, each served on its own socket.
pub struct Harness {
    pub shared: Arc<Shared>,
    pub ports: Vec<VhostUserPort>,
}

impl Harness {
    pub fn new(opts: Vec<PortOptions>) -> Harness {
        let sw = Arc::new(Switch::new(SwitchConfig::default()));
        let shared = Arc::new(Shared {
            sw: Some(sw.clone()),
            ..Default::default()
        });
        let mut ports = Vec::new();
        for (i, o) in opts.into_iter().enumerate() {
            let mut cfg = PortConfig::new(format!("vu{i}"), PortKind::VhostUser);
            if let Some(m) = o.mac {
                cfg = cfg.with_mac(m);
            }
            let id = sw.add_port(cfg).unwrap();
            let dev = NetDevice::new(
                id,
                o,
                TxPath::Forward(Arc::new(Fwd(shared.clone()))),
                Arc::new(Ev(shared.clone())),
            )
            .unwrap();
            {
                let mut d = shared.devs.write();
                if d.len() <= id.index() {
                    d.resize(id.index() + 1, None);
                }
                d[id.index()] = Some(dev.clone());
            }
            ports.push(VhostUserPort::start(dev).unwrap());
        }
        Harness { shared, ports }
    }

    pub fn dev(&self, i: usize) -> &NetDevice {
        self.ports[i].device()
    }

    pub fn events(&self) -> Vec<Event> {
        self.shared.events.lock().clone()
    }
}
