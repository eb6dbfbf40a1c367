//! Feature bits this device offers and what negotiating them means.
//!
//! virtio 1.2 §5.1.3 "Feature bits" lists the virtio-net features, §5.1.3.1 "Feature bit
//! requirements" the dependencies a driver must respect (e.g. GUEST_TSO4 needs GUEST_CSUM,
//! CTRL_RX needs CTRL_VQ). §6 "Reserved Feature Bits" defines VERSION_1, RING_EVENT_IDX,
//! INDIRECT_DESC and RING_PACKED.
//!
//! The packed ring (§2.8) is offered only on ports with `packed` set
//! ([`crate::PortOptions::packed`]; rings in [`crate::packed`]). Elsewhere a frontend that
//! asks for it anyway (a feature set with RING_PACKED) is refused in SET_FEATURES by
//! vhost-user-backend (`InvalidParam`) — QEMU with `packed=on` masks the bit with our
//! offer and falls back to the split ring instead of hanging.

use switch::Offloads;
use virtio_bindings::virtio_config::{VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// `1 << bit` as u64.
#[inline]
pub const fn bit(b: u32) -> u64 {
    1u64 << b
}

/// One offerable feature: its bit and the name used in configuration (`features-off=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    pub bit: u32,
    pub name: &'static str,
}

/// Every feature this device can offer, in the spelling of the spec without prefixes.
/// Each one can be switched off per port ([`crate::PortOptions::features_off`]).
pub const OFFERABLE: &[Feature] = &[
    Feature {
        bit: VIRTIO_F_VERSION_1,
        name: "VERSION_1",
    },
    Feature {
        bit: VIRTIO_NET_F_MAC,
        name: "MAC",
    },
    Feature {
        bit: VIRTIO_NET_F_MTU,
        name: "MTU",
    },
    Feature {
        bit: VIRTIO_NET_F_STATUS,
        name: "STATUS",
    },
    Feature {
        bit: VIRTIO_NET_F_CTRL_VQ,
        name: "CTRL_VQ",
    },
    Feature {
        bit: VIRTIO_NET_F_CTRL_RX,
        name: "CTRL_RX",
    },
    Feature {
        bit: VIRTIO_NET_F_CTRL_RX_EXTRA,
        name: "CTRL_RX_EXTRA",
    },
    Feature {
        bit: VIRTIO_NET_F_CTRL_VLAN,
        name: "CTRL_VLAN",
    },
    Feature {
        bit: VIRTIO_NET_F_CTRL_MAC_ADDR,
        name: "CTRL_MAC_ADDR",
    },
    Feature {
        bit: VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
        name: "CTRL_GUEST_OFFLOADS",
    },
    Feature {
        bit: VIRTIO_NET_F_GUEST_ANNOUNCE,
        name: "GUEST_ANNOUNCE",
    },
    Feature {
        bit: VIRTIO_NET_F_MQ,
        name: "MQ",
    },
    Feature {
        bit: VIRTIO_NET_F_MRG_RXBUF,
        name: "MRG_RXBUF",
    },
    Feature {
        bit: VIRTIO_NET_F_CSUM,
        name: "CSUM",
    },
    Feature {
        bit: VIRTIO_NET_F_GUEST_CSUM,
        name: "GUEST_CSUM",
    },
    Feature {
        bit: VIRTIO_NET_F_HOST_TSO4,
        name: "HOST_TSO4",
    },
    Feature {
        bit: VIRTIO_NET_F_HOST_TSO6,
        name: "HOST_TSO6",
    },
    Feature {
        bit: VIRTIO_NET_F_HOST_ECN,
        name: "HOST_ECN",
    },
    Feature {
        bit: VIRTIO_NET_F_HOST_UFO,
        name: "HOST_UFO",
    },
    Feature {
        bit: VIRTIO_NET_F_HOST_USO,
        name: "HOST_USO",
    },
    Feature {
        bit: VIRTIO_NET_F_GUEST_TSO4,
        name: "GUEST_TSO4",
    },
    Feature {
        bit: VIRTIO_NET_F_GUEST_TSO6,
        name: "GUEST_TSO6",
    },
    Feature {
        bit: VIRTIO_NET_F_GUEST_ECN,
        name: "GUEST_ECN",
    },
    Feature {
        bit: VIRTIO_NET_F_GUEST_UFO,
        name: "GUEST_UFO",
    },
    Feature {
        bit: VIRTIO_NET_F_GUEST_USO4,
        name: "GUEST_USO4",
    },
    Feature {
        bit: VIRTIO_NET_F_GUEST_USO6,
        name: "GUEST_USO6",
    },
    Feature {
        bit: VIRTIO_RING_F_EVENT_IDX,
        name: "RING_EVENT_IDX",
    },
    Feature {
        bit: VIRTIO_RING_F_INDIRECT_DESC,
        name: "RING_INDIRECT_DESC",
    },
];

/// Looks a feature up by its configuration name (case-insensitive, with or without the
/// `VIRTIO_NET_F_` / `VIRTIO_F_` / `VIRTIO_` prefix).
pub fn by_name(name: &str) -> Option<Feature> {
    let up = name.to_ascii_uppercase();
    let short = up
        .strip_prefix("VIRTIO_NET_F_")
        .or_else(|| up.strip_prefix("VIRTIO_F_"))
        .or_else(|| up.strip_prefix("VIRTIO_"))
        .unwrap_or(&up);
    OFFERABLE.iter().copied().find(|f| f.name == short)
}

/// The packed-ring bit (§2.8), offered only with [`crate::PortOptions::packed`].
pub const RING_PACKED: u64 = bit(VIRTIO_F_RING_PACKED);

/// Drops features whose prerequisites (§5.1.3.1) are switched off, so a feature mask can
/// never produce an offer a conforming driver must not accept.
pub fn close_dependencies(mut f: u64) -> u64 {
    let has = |f: u64, b: u32| f & bit(b) != 0;
    // Iterate to a fixed point: removing one feature may orphan another.
    loop {
        let before = f;
        let deps: &[(u32, &[u32])] = &[
            (VIRTIO_NET_F_GUEST_TSO4, &[VIRTIO_NET_F_GUEST_CSUM]),
            (VIRTIO_NET_F_GUEST_TSO6, &[VIRTIO_NET_F_GUEST_CSUM]),
            (VIRTIO_NET_F_GUEST_ECN, &[VIRTIO_NET_F_GUEST_CSUM]),
            (VIRTIO_NET_F_GUEST_UFO, &[VIRTIO_NET_F_GUEST_CSUM]),
            (VIRTIO_NET_F_GUEST_USO4, &[VIRTIO_NET_F_GUEST_CSUM]),
            (VIRTIO_NET_F_GUEST_USO6, &[VIRTIO_NET_F_GUEST_CSUM]),
            (VIRTIO_NET_F_HOST_TSO4, &[VIRTIO_NET_F_CSUM]),
            (VIRTIO_NET_F_HOST_TSO6, &[VIRTIO_NET_F_CSUM]),
            (VIRTIO_NET_F_HOST_ECN, &[VIRTIO_NET_F_CSUM]),
            (VIRTIO_NET_F_HOST_UFO, &[VIRTIO_NET_F_CSUM]),
            (VIRTIO_NET_F_HOST_USO, &[VIRTIO_NET_F_CSUM]),
            (VIRTIO_NET_F_CTRL_RX, &[VIRTIO_NET_F_CTRL_VQ]),
            (VIRTIO_NET_F_CTRL_VLAN, &[VIRTIO_NET_F_CTRL_VQ]),
            (VIRTIO_NET_F_GUEST_ANNOUNCE, &[VIRTIO_NET_F_CTRL_VQ]),
            (VIRTIO_NET_F_MQ, &[VIRTIO_NET_F_CTRL_VQ]),
            (VIRTIO_NET_F_CTRL_MAC_ADDR, &[VIRTIO_NET_F_CTRL_VQ]),
            (VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, &[VIRTIO_NET_F_CTRL_VQ]),
            (VIRTIO_NET_F_CTRL_RX_EXTRA, &[VIRTIO_NET_F_CTRL_RX]),
        ];
        for (feat, needs) in deps {
            if has(f, *feat) && !needs.iter().all(|n| has(f, *n)) {
                f &= !bit(*feat);
            }
        }
        // ECN needs at least one TSO on the same side.
        if has(f, VIRTIO_NET_F_GUEST_ECN)
            && !has(f, VIRTIO_NET_F_GUEST_TSO4)
            && !has(f, VIRTIO_NET_F_GUEST_TSO6)
        {
            f &= !bit(VIRTIO_NET_F_GUEST_ECN);
        }
        if has(f, VIRTIO_NET_F_HOST_ECN)
            && !has(f, VIRTIO_NET_F_HOST_TSO4)
            && !has(f, VIRTIO_NET_F_HOST_TSO6)
        {
            f &= !bit(VIRTIO_NET_F_HOST_ECN);
        }
        if f == before {
            return f;
        }
    }
}

/// Frames the *guest* accepts on its RX queues, from the negotiated GUEST_* features
/// (§5.1.6.4 "Processing of Incoming Packets"), as the switch's [`Offloads`].
pub fn guest_offloads(acked: u64) -> Offloads {
    let has = |b: u32| acked & bit(b) != 0;
    let csum = has(VIRTIO_NET_F_GUEST_CSUM);
    Offloads {
        csum,
        // Any virtio-net driver reads DATA_VALID (§5.1.6.4.1); it is only a hint.
        data_valid: true,
        tso4: csum && has(VIRTIO_NET_F_GUEST_TSO4),
        tso6: csum && has(VIRTIO_NET_F_GUEST_TSO6),
        tso_ecn: csum && has(VIRTIO_NET_F_GUEST_ECN),
        ufo: csum && has(VIRTIO_NET_F_GUEST_UFO),
        uso4: csum && has(VIRTIO_NET_F_GUEST_USO4),
        uso6: csum && has(VIRTIO_NET_F_GUEST_USO6),
    }
}

/// The GUEST_* feature bits a VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET command may carry
/// (§5.1.6.5.6.1): offloads the driver can toggle at run time.
pub const GUEST_OFFLOAD_BITS: u64 = bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN)
    | bit(VIRTIO_NET_F_GUEST_UFO)
    | bit(VIRTIO_NET_F_GUEST_USO4)
    | bit(VIRTIO_NET_F_GUEST_USO6);

/// Size of the virtio-net header for a negotiated feature set (§5.1.6.1): 12 bytes with
/// VERSION_1 or MRG_RXBUF, the 10-byte legacy form otherwise.
pub fn vnet_hdr_len(acked: u64) -> usize {
    if acked & (bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF)) != 0 {
        switch::vnet::HDR_LEN
    } else {
        switch::vnet::HDR_LEN_LEGACY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_with_and_without_prefix() {
        assert_eq!(
            by_name("mrg_rxbuf").map(|f| f.bit),
            Some(VIRTIO_NET_F_MRG_RXBUF)
        );
        assert_eq!(
            by_name("VIRTIO_NET_F_MQ").map(|f| f.bit),
            Some(VIRTIO_NET_F_MQ)
        );
        assert_eq!(
            by_name("VIRTIO_F_VERSION_1").map(|f| f.bit),
            Some(VIRTIO_F_VERSION_1)
        );
        assert!(by_name("RING_PACKED").is_none());
    }

    #[test]
    fn dependencies_are_closed() {
        let all: u64 = OFFERABLE.iter().fold(0, |a, f| a | bit(f.bit));
        assert_eq!(close_dependencies(all), all);
        let no_ctrl = close_dependencies(all & !bit(VIRTIO_NET_F_CTRL_VQ));
        for b in [
            VIRTIO_NET_F_CTRL_RX,
            VIRTIO_NET_F_CTRL_RX_EXTRA,
            VIRTIO_NET_F_MQ,
        ] {
            assert_eq!(no_ctrl & bit(b), 0);
        }
        let no_gcsum = close_dependencies(all & !bit(VIRTIO_NET_F_GUEST_CSUM));
        assert_eq!(no_gcsum & bit(VIRTIO_NET_F_GUEST_TSO4), 0);
        assert_eq!(no_gcsum & bit(VIRTIO_NET_F_GUEST_ECN), 0);
        let no_tso =
            close_dependencies(all & !bit(VIRTIO_NET_F_HOST_TSO4) & !bit(VIRTIO_NET_F_HOST_TSO6));
        assert_eq!(no_tso & bit(VIRTIO_NET_F_HOST_ECN), 0);
        assert_eq!(all & RING_PACKED, 0);
    }

    #[test]
    fn offloads_follow_guest_features() {
        let o = guest_offloads(bit(VIRTIO_NET_F_GUEST_TSO4));
        assert!(!o.tso4, "TSO without GUEST_CSUM is not usable");
        let o = guest_offloads(bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO6));
        assert!(o.csum && o.tso6 && !o.tso4 && !o.ufo);
        assert_eq!(vnet_hdr_len(0), 10);
        assert_eq!(vnet_hdr_len(bit(VIRTIO_F_VERSION_1)), 12);
    }
}
