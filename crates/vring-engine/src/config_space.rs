//! The device configuration space (virtio 1.2 §5.1.4 "Device configuration layout"):
//!
//! ```text
//! u8  mac[6];               // VIRTIO_NET_F_MAC
//! le16 status;              // VIRTIO_NET_F_STATUS: LINK_UP (1), ANNOUNCE (2)
//! le16 max_virtqueue_pairs; // VIRTIO_NET_F_MQ
//! le16 mtu;                 // VIRTIO_NET_F_MTU
//! ```
//!
//! Served through VHOST_USER_GET_CONFIG (protocol feature CONFIG). The driver may write
//! `mac` only on legacy devices without CTRL_MAC_ADDR (§5.1.4.2: "the driver SHOULD NOT
//! write to mac" otherwise); we accept that write and treat it like MAC_ADDR_SET.

use switch::Mac;

/// Bytes of configuration space we expose.
pub const CONFIG_LEN: usize = 12;
/// Offset of `mac`.
pub const OFF_MAC: usize = 0;
/// Offset of `status`.
pub const OFF_STATUS: usize = 6;
/// Offset of `max_virtqueue_pairs`.
pub const OFF_MAX_PAIRS: usize = 8;
/// Offset of `mtu`.
pub const OFF_MTU: usize = 10;

/// VIRTIO_NET_S_LINK_UP.
pub const S_LINK_UP: u16 = 1;
/// VIRTIO_NET_S_ANNOUNCE.
pub const S_ANNOUNCE: u16 = 2;

/// The values behind the configuration space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigSpace {
    pub mac: Mac,
    pub status: u16,
    pub max_pairs: u16,
    pub mtu: u16,
}

impl ConfigSpace {
    pub fn bytes(&self) -> [u8; CONFIG_LEN] {
        let mut b = [0u8; CONFIG_LEN];
        b[OFF_MAC..OFF_MAC + 6].copy_from_slice(&self.mac.0);
        b[OFF_STATUS..OFF_STATUS + 2].copy_from_slice(&self.status.to_le_bytes());
        b[OFF_MAX_PAIRS..OFF_MAX_PAIRS + 2].copy_from_slice(&self.max_pairs.to_le_bytes());
        b[OFF_MTU..OFF_MTU + 2].copy_from_slice(&self.mtu.to_le_bytes());
        b
    }

    /// GET_CONFIG: `size` bytes from `offset`. QEMU asks for the whole `virtio_net_config`
    /// (which is longer than ours: speed, duplex, RSS fields); bytes past our layout read as
    /// zero, which is what the spec says for fields of features not offered. A range outside
    /// u32 arithmetic or larger than a page is refused with an empty reply.
    pub fn read(&self, offset: u32, size: u32) -> Vec<u8> {
        const MAX_READ: u32 = 4096;
        let Some(end) = offset.checked_add(size) else {
            return Vec::new();
        };
        if size > MAX_READ || end > MAX_READ {
            return Vec::new();
        }
        let all = self.bytes();
        (offset..end)
            .map(|i| all.get(i as usize).copied().unwrap_or(0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_partial_reads() {
        let c = ConfigSpace {
            mac: Mac([0x52, 0x54, 0, 1, 2, 3]),
            status: S_LINK_UP,
            max_pairs: 4,
            mtu: 9000,
        };
        let b = c.read(0, 12);
        assert_eq!(&b[..6], &[0x52, 0x54, 0, 1, 2, 3]);
        assert_eq!(u16::from_le_bytes([b[6], b[7]]), 1);
        assert_eq!(u16::from_le_bytes([b[8], b[9]]), 4);
        assert_eq!(u16::from_le_bytes([b[10], b[11]]), 9000);
        assert_eq!(c.read(8, 2), vec![4, 0]);
        assert_eq!(c.read(10, 8), vec![0x28, 0x23, 0, 0, 0, 0, 0, 0]);
        assert!(c.read(u32::MAX, 2).is_empty());
        assert!(c.read(0, 1 << 20).is_empty());
    }
}
