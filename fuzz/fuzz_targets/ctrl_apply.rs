//! Fuzz `vring_engine::ctrl::apply`, the control-virtqueue command parser (virtio 1.2
//! §5.1.6.5) with any class, command and payload, under any negotiated features.
//!
//! Input: 8 bytes acked features, 2 bytes max queue pairs, then the command
//! (`class, command, data...`, without the ack byte).
//!
//! Invariants: a refused command leaves the state unchanged; a successful one changes
//! only what its [`Effect`] names, and the pair count stays within 1..=max (§5.1.6.5.5).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switch::RxFilter;
use vring_engine::ctrl::{apply, CtrlState, Effect};
use vring_engine::features::GUEST_OFFLOAD_BITS;

fuzz_target!(|data: &[u8]| {
    if data.len() < 10 {
        return;
    }
    let mut f = [0u8; 8];
    f.copy_from_slice(&data[..8]);
    let acked = u64::from_le_bytes(f);
    let max_pairs = u16::from_le_bytes([data[8], data[9]]).max(1);
    let cmd = &data[10..];
    let start = CtrlState {
        filter: RxFilter::default(),
        guest_offloads: 0,
        active_pairs: 1,
        status: 1,
    };
    let mut st = start.clone();
    match apply(cmd, acked, max_pairs, &mut st) {
        Err(_) => assert_eq!(st, start, "a refused command changed the state"),
        Ok(effect) => {
            match effect {
                Effect::Filter | Effect::Mac(_) => {
                    assert_eq!(
                        (st.guest_offloads, st.active_pairs, st.status),
                        (start.guest_offloads, start.active_pairs, start.status)
                    );
                }
                Effect::Offloads => assert_eq!(
                    (&st.filter, st.active_pairs, st.status),
                    (&start.filter, start.active_pairs, start.status)
                ),
                Effect::Pairs => {
                    assert!((1..=max_pairs).contains(&st.active_pairs));
                    assert_eq!(
                        (&st.filter, st.guest_offloads),
                        (&start.filter, start.guest_offloads)
                    );
                }
                Effect::Announce => assert_eq!(
                    (&st.filter, st.guest_offloads, st.active_pairs),
                    (&start.filter, start.guest_offloads, start.active_pairs)
                ),
            }
            if let Effect::Mac(m) = effect {
                assert_eq!(st.filter.mac, Some(m));
                assert!(!m.is_multicast() && m != switch::Mac::ZERO);
            }
            // §5.1.6.5.6.2: only negotiated offloads can be on.
            assert_eq!(st.guest_offloads & !(acked & GUEST_OFFLOAD_BITS), 0);
        }
    }
    // A second command on the changed state must not panic either.
    let _ = apply(cmd, acked, max_pairs, &mut st);
});
