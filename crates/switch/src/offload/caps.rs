//! Port capabilities ([`Offloads`]) from what each kind of port negotiated.
//!
//! `Offloads` says what a port can *receive* from the switch without software checksum
//! completion or segmentation; these constructors derive it from the port's own
//! negotiation so the data plane never guesses.

use crate::port::Offloads;

/// virtio-net feature bits (virtio 1.2 §5.1.3) that describe what the *driver* accepts on
/// its receive queues.
pub mod virtio {
    pub const GUEST_CSUM: u32 = 1;
    pub const GUEST_TSO4: u32 = 7;
    pub const GUEST_TSO6: u32 = 8;
    pub const GUEST_ECN: u32 = 9;
    pub const GUEST_UFO: u32 = 10;
    pub const GUEST_USO4: u32 = 54;
    pub const GUEST_USO6: u32 = 55;
}

/// `TUNSETOFFLOAD` flags (linux/if_tun.h).
pub mod tun {
    pub const TUN_F_CSUM: u32 = 0x01;
    pub const TUN_F_TSO4: u32 = 0x02;
    pub const TUN_F_TSO6: u32 = 0x04;
    pub const TUN_F_TSO_ECN: u32 = 0x08;
    pub const TUN_F_UFO: u32 = 0x10;
    pub const TUN_F_USO4: u32 = 0x20;
    pub const TUN_F_USO6: u32 = 0x40;
}

impl Offloads {
    /// What a guest accepts on RX, from the negotiated feature bits.
    ///
    /// virtio 1.2 §5.1.3.1 makes every GUEST_TSO*/UFO/USO* depend on GUEST_CSUM and
    /// GUEST_ECN on a GUEST_TSO*; a feature set violating that cannot have been
    /// negotiated correctly, so the dependent bits are ignored rather than trusted.
    /// DATA_VALID may be set by the device only when GUEST_CSUM was negotiated
    /// (§5.1.6.4.1: otherwise "the device MUST set flags to zero").
    pub fn from_virtio_guest_features(features: u64) -> Offloads {
        let has = |bit: u32| features & (1u64 << bit) != 0;
        let csum = has(virtio::GUEST_CSUM);
        let tso4 = csum && has(virtio::GUEST_TSO4);
        let tso6 = csum && has(virtio::GUEST_TSO6);
        Offloads {
            csum,
            data_valid: csum,
            tso4,
            tso6,
            tso_ecn: (tso4 || tso6) && has(virtio::GUEST_ECN),
            ufo: csum && has(virtio::GUEST_UFO),
            uso4: csum && has(virtio::GUEST_USO4),
            uso6: csum && has(virtio::GUEST_USO6),
        }
    }

    /// What a tap opened with IFF_VNET_HDR was configured for with `TUNSETOFFLOAD`.
    ///
    /// The kernel's tap write path (`tun_get_user` → `virtio_net_hdr_to_skb`) accepts
    /// every GSO type whatever these flags say; the flags bound what the kernel hands
    /// *us*. Using them for our writes too is the conservative, symmetric choice: a port
    /// configured without TSO gets no TSO frames. DATA_VALID is always understood by a
    /// vnet-header reader.
    pub fn from_tun_flags(flags: u32) -> Offloads {
        let has = |f: u32| flags & f != 0;
        let csum = has(tun::TUN_F_CSUM);
        let tso4 = csum && has(tun::TUN_F_TSO4);
        let tso6 = csum && has(tun::TUN_F_TSO6);
        Offloads {
            csum,
            data_valid: true,
            tso4,
            tso6,
            tso_ecn: (tso4 || tso6) && has(tun::TUN_F_TSO_ECN),
            ufo: csum && has(tun::TUN_F_UFO),
            uso4: csum && has(tun::TUN_F_USO4),
            uso6: csum && has(tun::TUN_F_USO6),
        }
    }

    /// An AF_PACKET socket with PACKET_VNET_HDR on Linux ≥ 6.2: `packet_snd` hands the
    /// header to `virtio_net_hdr_to_skb` and the kernel segments in software for a device
    /// that cannot, so everything is accepted (the golden test sends every GSO type this
    /// way). Without vnet headers use [`Offloads::NONE`].
    pub fn af_packet_vnet() -> Offloads {
        Offloads::ALL
    }

    /// [`Offloads::af_packet_vnet`] for a given kernel release (`uname -r` major, minor):
    /// `virtio_net_hdr_to_skb` learned VIRTIO_NET_HDR_GSO_UDP_L4 in 6.2, so older kernels
    /// refuse USO frames with EINVAL and must get them segmented.
    pub fn af_packet_vnet_for_kernel(major: u32, minor: u32) -> Offloads {
        let uso = (major, minor) >= (6, 2);
        Offloads {
            uso4: uso,
            uso6: uso,
            ..Offloads::ALL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_features() {
        let f = |bits: &[u32]| bits.iter().fold(0u64, |a, b| a | 1u64 << b);
        assert_eq!(Offloads::from_virtio_guest_features(0), Offloads::NONE);
        let all = f(&[
            virtio::GUEST_CSUM,
            virtio::GUEST_TSO4,
            virtio::GUEST_TSO6,
            virtio::GUEST_ECN,
            virtio::GUEST_UFO,
            virtio::GUEST_USO4,
            virtio::GUEST_USO6,
        ]);
        assert_eq!(Offloads::from_virtio_guest_features(all), Offloads::ALL);
        // Dependencies: no CSUM → nothing; ECN without TSO → no ECN.
        let no_csum = all & !(1u64 << virtio::GUEST_CSUM);
        assert_eq!(
            Offloads::from_virtio_guest_features(no_csum),
            Offloads::NONE
        );
        let o = Offloads::from_virtio_guest_features(f(&[virtio::GUEST_CSUM, virtio::GUEST_ECN]));
        assert!(o.csum && o.data_valid && !o.tso_ecn && !o.tso4);
        let o = Offloads::from_virtio_guest_features(f(&[virtio::GUEST_CSUM, virtio::GUEST_TSO6]));
        assert!(o.tso6 && !o.tso4 && !o.uso6);
    }

    #[test]
    fn tun_constants_match_libc() {
        assert_eq!(tun::TUN_F_CSUM, libc::TUN_F_CSUM);
        assert_eq!(tun::TUN_F_TSO4, libc::TUN_F_TSO4);
        assert_eq!(tun::TUN_F_TSO6, libc::TUN_F_TSO6);
        assert_eq!(tun::TUN_F_TSO_ECN, libc::TUN_F_TSO_ECN);
        assert_eq!(tun::TUN_F_UFO, libc::TUN_F_UFO);
        assert_eq!(tun::TUN_F_USO4, libc::TUN_F_USO4);
        assert_eq!(tun::TUN_F_USO6, libc::TUN_F_USO6);
    }

    #[test]
    fn tun_flags() {
        assert_eq!(Offloads::from_tun_flags(0x7f), Offloads::ALL);
        let o = Offloads::from_tun_flags(0);
        assert_eq!(
            o,
            Offloads {
                data_valid: true,
                ..Offloads::NONE
            }
        );
        let o = Offloads::from_tun_flags(tun::TUN_F_TSO4 | tun::TUN_F_USO4);
        assert!(!o.tso4 && !o.uso4, "TSO needs CSUM");
        let o = Offloads::from_tun_flags(tun::TUN_F_CSUM | tun::TUN_F_USO4);
        assert!(o.csum && o.uso4 && !o.uso6 && !o.tso4);
        assert_eq!(Offloads::af_packet_vnet(), Offloads::ALL);
        assert_eq!(Offloads::af_packet_vnet_for_kernel(6, 18), Offloads::ALL);
        assert_eq!(Offloads::af_packet_vnet_for_kernel(7, 0), Offloads::ALL);
        let o = Offloads::af_packet_vnet_for_kernel(6, 1);
        assert!(!o.uso4 && !o.uso6 && o.tso4 && o.ufo && o.csum);
    }
}
