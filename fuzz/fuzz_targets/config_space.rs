//! Fuzz the device configuration space as the frontend reaches it: a sequence of
//! VHOST_USER_GET_CONFIG / SET_CONFIG calls (virtio 1.2 §5.1.4) on a real [`NetDevice`]
//! through its `VhostUserBackend` methods, the ones vhost-user-backend calls.
//!
//! Input: records of 1 byte op (even: get, odd: set), 4 bytes offset, 2 bytes size (get)
//! or 1 byte length + data (set).
//!
//! Invariants: a read returns exactly `size` bytes or nothing (a refused range); a read
//! of `mac` returns what the last accepted write put there; only `mac` is writable (a
//! write anywhere else is refused and changes nothing).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use switch::{Mac, Offloads, PortId, RxFilter};
use vhost_user_backend::VhostUserBackend;
use vring_engine::{NetDevice, PortEvents, PortOptions};

struct Quiet;
impl PortEvents for Quiet {
    fn rx_filter_changed(&self, _: PortId, _: &RxFilter) {}
    fn offloads_changed(&self, _: PortId, _: Offloads) {}
    fn link_changed(&self, _: PortId, _: bool) {}
}

fuzz_target!(|data: &[u8]| {
    let mut opts = PortOptions::new("/nonexistent/fuzz.sock");
    opts.mac = Some(Mac([0x52, 0x54, 0, 0, 0, 1]));
    opts.mtu = Some(1500);
    opts.queue_pairs = 2;
    let dev = NetDevice::new(PortId(0), opts, Arc::new(Quiet)).expect("valid options");
    let mut mac = [0x52, 0x54, 0, 0, 0, 1];
    let mut rest = data;
    while let [op, a, b, c, d, tail @ ..] = rest {
        let offset = u32::from_le_bytes([*a, *b, *c, *d]);
        if op & 1 == 0 {
            let [s0, s1, tail @ ..] = tail else { break };
            let size = u32::from(u16::from_le_bytes([*s0, *s1]));
            let got = dev.get_config(offset, size);
            assert!(got.is_empty() || got.len() == size as usize);
            let whole = dev.get_config(0, 12);
            assert_eq!(&whole[..6], &mac, "mac field");
            assert_eq!(
                &whole[8..12],
                &[2, 0, 0xdc, 0x05],
                "max pairs and mtu are read-only"
            );
            rest = tail;
        } else {
            let [n, tail @ ..] = tail else { break };
            let n = usize::from(*n).min(tail.len());
            let (buf, tail) = tail.split_at(n);
            if dev.set_config(offset, buf).is_ok() {
                let off = offset as usize;
                assert!(off + buf.len() <= 6, "accepted a write outside mac");
                mac[off..off + buf.len()].copy_from_slice(buf);
            }
            assert_eq!(&dev.get_config(0, 6)[..], &mac);
            rest = tail;
        }
    }
});
