//! Devices without a data plane, for tests of the device alone (QEMU's negotiation with
//! it): port events are recorded, lent TX rings are dropped at once (nothing pops them).
//! Tests that move frames between ports use crates/datapath's harness, which wires ports
//! exactly as the daemon does.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

use std::sync::Arc;

use parking_lot::Mutex;
use switch::{Offloads, PortId, RxFilter};
use vring_engine::{NetDevice, PortEvents, PortOptions, TxRing, VhostUserPort};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Filter(PortId, RxFilter),
    Offloads(PortId, Offloads),
    Link(PortId, bool),
}

#[derive(Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl PortEvents for Recorder {
    fn rx_filter_changed(&self, port: PortId, filter: &RxFilter) {
        self.0.lock().push(Event::Filter(port, filter.clone()));
    }
    fn offloads_changed(&self, port: PortId, offloads: Offloads) {
        self.0.lock().push(Event::Offloads(port, offloads));
    }
    fn link_changed(&self, port: PortId, up: bool) {
        self.0.lock().push(Event::Link(port, up));
    }
    fn tx_ring_started(&self, _: PortId, ring: TxRing) {
        drop(ring);
    }
}

/// Vhost-user devices, each served on its own socket.
pub struct Harness {
    pub events: Arc<Recorder>,
    pub ports: Vec<VhostUserPort>,
}

impl Harness {
    pub fn new(opts: Vec<PortOptions>) -> Harness {
        let events = Arc::new(Recorder::default());
        let ports = opts
            .into_iter()
            .enumerate()
            .map(|(i, o)| {
                let dev = NetDevice::new(PortId(i as u16), o, events.clone()).unwrap();
                VhostUserPort::start(dev).unwrap()
            })
            .collect();
        Harness { events, ports }
    }

    pub fn dev(&self, i: usize) -> &NetDevice {
        self.ports[i].device()
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.0.lock().clone()
    }
}
