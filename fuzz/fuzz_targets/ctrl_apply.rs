//! Fuzz the control-virtqueue command interpreter (virtio 1.2 §5.1.6.5) with any class,
//! command, payload and negotiated feature set, applied in sequence to one port's state:
//! never a panic, and the state stays inside its invariants (active pairs within
//! 1..=max_pairs, only negotiated GUEST_* offloads enabled).
//!
//! Input: 8 bytes acked features (LE), 1 byte max pairs, then commands, each as a length
//! byte followed by that many bytes (class, command, data).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vring_engine::ctrl::{apply, CtrlState};

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let acked = u64::from_le_bytes(data[..8].try_into().unwrap_or([0; 8]));
    let max_pairs = u16::from(data[8]).max(1);
    let mut st = CtrlState {
        filter: switch::RxFilter::for_mac(switch::Mac([0x52, 0x54, 0, 0, 0, 1])),
        guest_offloads: 0,
        active_pairs: 1,
        status: 1,
    };
    let mut rest = &data[9..];
    while let [len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (cmd, next) = tail.split_at(n);
        let before = st.clone();
        match apply(cmd, acked, max_pairs, &mut st) {
            Ok(_) => {}
            Err(_) => assert_eq!(st, before, "a refused command changed the state"),
        }
        assert!(st.active_pairs >= 1 && st.active_pairs <= max_pairs);
        assert_eq!(st.guest_offloads & !acked, 0, "offload not negotiated");
        rest = next;
    }
});
