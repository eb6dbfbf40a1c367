//! Parser + forwarding decision + egress rewrite on arbitrary bytes: must never panic,
//! and a forward never goes back out of its ingress port.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use switch::{
    Decision, Mac, Millis, PortConfig, PortId, PortKind, RxFilter, Switch, SwitchConfig,
    VlanMode, VlanSet, VnetHdr,
};

fn switch() -> &'static (Switch, Vec<PortId>) {
    static SW: OnceLock<(Switch, Vec<PortId>)> = OnceLock::new();
    SW.get_or_init(|| {
        let sw = Switch::new(SwitchConfig {
            fdb: switch::FdbConfig { max_entries: 256, aging_ms: 300_000 },
            ..Default::default()
        });
        let mut ids = vec![];
        let mut c = PortConfig::new("access", PortKind::VhostUser).with_mac(Mac([2, 0, 0, 0, 0, 1]));
        c.vlan = VlanMode::Access(10);
        ids.push(sw.add_port(c).unwrap());
        let mut c = PortConfig::new("trunk", PortKind::Tap);
        let mut allowed = VlanSet::empty();
        allowed.insert(10);
        allowed.insert(20);
        c.vlan = VlanMode::Trunk { native: Some(20), allowed: Box::new(allowed) };
        ids.push(sw.add_port(c).unwrap());
        ids.push(sw.add_port(PortConfig::new("plain", PortKind::AfPacket)).unwrap());
        let mut c = PortConfig::new("filtering", PortKind::VhostUser);
        let mut f = RxFilter::for_mac(Mac([2, 0, 0, 0, 0, 4]));
        f.enable_vlan_filter();
        c.rx_filter = f;
        c.mac_limit = 4;
        ids.push(sw.add_port(c).unwrap());
        (sw, ids)
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 13 {
        return;
    }
    let (sw, ids) = switch();
    let ingress = ids[usize::from(data[0]) % ids.len()];
    let Ok(hdr) = VnetHdr::parse(&data[1..13], 12) else { return };
    let frame = &data[13..];
    // Sometimes parse only a prefix, as the data plane does for split chains.
    let prefix = if data[0] & 0x80 != 0 { &frame[..frame.len().min(64)] } else { frame };
    let view = sw.view();
    view.prefetch(ingress, prefix);
    match view.decide(ingress, &hdr, prefix, frame.len(), Millis(u64::from(data[0]) * 1000)) {
        Decision::Drop(_) => {}
        Decision::Forward(f) => {
            assert!(!f.ports.contains(ingress));
            let mut out = vec![0u8; frame.len() + 4];
            for p in f.ports.iter() {
                let e = view.egress(p, &f, frame);
                let _ = e.adjust_hdr(&hdr);
                let n = e.write_into(frame, &mut out).expect("egress fits");
                assert_eq!(n, e.out_len(frame.len()));
            }
        }
    }
    if data[0] == 0xff {
        sw.age(Millis(1 << 40));
    }
});
