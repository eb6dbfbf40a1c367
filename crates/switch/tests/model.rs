//! Property test: random frame sequences through the switch and through a small,
//! independently written reference model must give identical decisions.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

use proptest::prelude::*;
use std::collections::HashMap;
use switch::{
    Decision, DropReason, Mac, Millis, PortConfig, PortId, PortKind, RxFilter, Switch,
    SwitchConfig, VlanMode, VlanSet, VnetHdr,
};

const AGING: u64 = 300_000;

#[derive(Debug, Clone)]
enum Mode {
    Access(u16),
    Trunk {
        native: Option<u16>,
        allowed: Vec<u16>,
    },
}

#[derive(Debug, Clone)]
struct ModelPort {
    mode: Mode,
    /// None: promiscuous; Some(mac): own MAC + broadcast + all multicast.
    own: Option<[u8; 6]>,
    up: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Frame {
        ingress: usize,
        dst: usize,
        src: usize,
        tag: Option<u16>,
    },
    Advance(u64),
    Age,
    Link {
        port: usize,
        up: bool,
    },
}

/// Address pool: unicast 0..6, broadcast, IPv4 multicast, 802.1D reserved, zero.
fn addr(i: usize) -> [u8; 6] {
    match i {
        0..=5 => [2, 0, 0, 0, 0, i as u8 + 1],
        6 => [0xff; 6],
        7 => [1, 0, 0x5e, 0, 0, 9],
        8 => [1, 0x80, 0xc2, 0, 0, 2],
        _ => [0; 6],
    }
}

fn frame(dst: [u8; 6], src: [u8; 6], tag: Option<u16>) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(v) = tag {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&[0x88, 0xb5]); // IEEE local experimental EtherType
    f.extend_from_slice(&[0u8; 46]);
    f
}

struct Model {
    ports: Vec<ModelPort>,
    fdb: HashMap<([u8; 6], u16), (usize, u64)>,
    now: u64,
}

impl Model {
    fn classify(&self, p: usize, tag: Option<u16>) -> Result<u16, DropReason> {
        let tag = tag.filter(|v| *v != 0);
        if tag == Some(4095) {
            return Err(DropReason::ReservedVid);
        }
        match (&self.ports[p].mode, tag) {
            (Mode::Access(v), None) => Ok(*v),
            (Mode::Access(_), Some(_)) => Err(DropReason::TaggedOnAccess),
            (Mode::Trunk { native, .. }, None) => native.ok_or(DropReason::UntaggedNotAllowed),
            (Mode::Trunk { allowed, .. }, Some(v)) => {
                if allowed.contains(&v) {
                    Ok(v)
                } else {
                    Err(DropReason::VlanNotAllowed)
                }
            }
        }
    }

    fn member(&self, p: usize, vid: u16) -> bool {
        match &self.ports[p].mode {
            Mode::Access(v) => *v == vid,
            Mode::Trunk { native, allowed } => *native == Some(vid) || allowed.contains(&vid),
        }
    }

    fn accepts(&self, p: usize, dst: [u8; 6]) -> bool {
        match self.ports[p].own {
            None => true,
            Some(own) => dst[0] & 1 == 1 || dst == own,
        }
    }

    fn deliverable(&self, p: usize, vid: u16, dst: [u8; 6]) -> Result<(), DropReason> {
        if !self.ports[p].up || !self.member(p, vid) {
            Err(DropReason::DestinationDown)
        } else if !self.accepts(p, dst) {
            Err(DropReason::Filtered)
        } else {
            Ok(())
        }
    }

    fn decide(
        &mut self,
        ing: usize,
        dst: [u8; 6],
        src: [u8; 6],
        tag: Option<u16>,
    ) -> Result<Vec<u16>, DropReason> {
        if !self.ports[ing].up {
            return Err(DropReason::IngressDown);
        }
        if src[0] & 1 == 1 || src == [0; 6] {
            return Err(DropReason::InvalidSource);
        }
        let vid = self.classify(ing, tag)?;
        self.fdb.insert((src, vid), (ing, self.now));
        if dst[..5] == [1, 0x80, 0xc2, 0, 0] && dst[5] < 16 {
            return Err(DropReason::ReservedGroup);
        }
        if dst[0] & 1 == 0 {
            if let Some((p, _)) = self.fdb.get(&(dst, vid)).copied() {
                if p == ing {
                    return Err(DropReason::SameSegment);
                }
                self.deliverable(p, vid, dst)?;
                return Ok(vec![p as u16]);
            }
        }
        let out: Vec<u16> = (0..self.ports.len())
            .filter(|p| *p != ing && self.deliverable(*p, vid, dst).is_ok())
            .map(|p| p as u16)
            .collect();
        if out.is_empty() {
            Err(DropReason::NoDestination)
        } else {
            Ok(out)
        }
    }

    fn age(&mut self) {
        let now = self.now;
        self.fdb.retain(|_, (_, seen)| now - *seen < AGING);
    }

    fn link(&mut self, p: usize, up: bool) {
        self.ports[p].up = up;
        if !up {
            self.fdb.retain(|_, (q, _)| *q != p);
        }
    }
}

fn mode_strategy() -> impl Strategy<Value = Mode> {
    prop_oneof![
        prop::sample::select(vec![10u16, 20]).prop_map(Mode::Access),
        (
            prop::option::of(prop::sample::select(vec![10u16, 20])),
            prop::sample::subsequence(vec![10u16, 20, 30], 0..=3)
        )
            .prop_map(|(native, allowed)| Mode::Trunk { native, allowed }),
    ]
}

fn port_strategy() -> impl Strategy<Value = ModelPort> {
    (mode_strategy(), prop::option::of(0usize..6)).prop_map(|(mode, own)| ModelPort {
        mode,
        own: own.map(addr),
        up: true,
    })
}

fn op_strategy(nports: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..nports, 0usize..10, 0usize..10, prop::option::of(prop::sample::select(vec![0u16, 10, 20, 30, 4095])))
            .prop_map(|(ingress, dst, src, tag)| Op::Frame { ingress, dst, src, tag }),
        1 => (1u64..400).prop_map(|s| Op::Advance(s * 1000)),
        1 => Just(Op::Age),
        1 => (0..nports, any::<bool>()).prop_map(|(port, up)| Op::Link { port, up }),
    ]
}

fn scenario() -> impl Strategy<Value = (Vec<ModelPort>, Vec<Op>)> {
    (2usize..6).prop_flat_map(|n| {
        (
            prop::collection::vec(port_strategy(), n),
            prop::collection::vec(op_strategy(n), 1..120),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn switch_matches_reference_model((ports, ops) in scenario()) {
        let sw = Switch::new(SwitchConfig::default());
        let mut ids = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let mut c = PortConfig::new(format!("p{i}"), PortKind::VhostUser);
            c.vlan = match &p.mode {
                Mode::Access(v) => VlanMode::Access(*v),
                Mode::Trunk { native, allowed } => {
                    let mut s = VlanSet::empty();
                    for v in allowed { s.insert(*v); }
                    VlanMode::Trunk { native: *native, allowed: Box::new(s) }
                }
            };
            if let Some(own) = p.own {
                c.rx_filter = RxFilter::for_mac(Mac(own));
            }
            ids.push(sw.add_port(c).unwrap());
        }
        let mut model = Model { ports, fdb: HashMap::new(), now: 0 };
        for op in ops {
            match op {
                Op::Frame { ingress, dst, src, tag } => {
                    let f = frame(addr(dst), addr(src), tag);
                    let got = match sw.view().decide(ids[ingress], &VnetHdr::default(), &f, f.len(), Millis(model.now)) {
                        Decision::Forward(fw) => Ok(fw.ports.iter().map(|p: PortId| p.0).collect::<Vec<_>>()),
                        Decision::Drop(r) => Err(r),
                    };
                    let want = model.decide(ingress, addr(dst), addr(src), tag);
                    prop_assert_eq!(got, want, "frame {:?}", (ingress, dst, src, tag));
                }
                Op::Advance(ms) => model.now += ms,
                Op::Age => {
                    sw.age(Millis(model.now));
                    model.age();
                }
                Op::Link { port, up } => {
                    sw.set_link(ids[port], up).unwrap();
                    model.link(port, up);
                }
            }
        }
    }
}
