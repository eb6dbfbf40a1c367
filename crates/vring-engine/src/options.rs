//! Per-port options: what the daemon's `--port vhost-user:...` turns into.

use std::path::PathBuf;

use switch::Mac;

use crate::features::{self, bit, close_dependencies, OFFERABLE};

/// Who opens the unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketMode {
    /// We listen; QEMU connects (`-chardev socket,path=P` without `server=on`). After a
    /// disconnect we listen again.
    #[default]
    Server,
    /// QEMU listens (`server=on`); we connect, and reconnect after it goes away.
    Client,
}

/// Configuration of one vhost-user port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortOptions {
    pub socket: PathBuf,
    pub mode: SocketMode,
    /// Queue pairs offered (config `max_virtqueue_pairs`, §5.1.4). At least 1.
    pub queue_pairs: u16,
    /// Device MAC for config space (§5.1.4); without it VIRTIO_NET_F_MAC is not offered.
    pub mac: Option<Mac>,
    /// Device MTU for config space; without it VIRTIO_NET_F_MTU is not offered.
    pub mtu: Option<u16>,
    /// Largest ring size we accept in SET_VRING_NUM (a power of two ≤ 32768, §2.7).
    /// Default [`MAX_QUEUE_SIZE`]: what a ring costs depends on the size the driver sets,
    /// not on this bound (the device sizes everything per ring by its actual size).
    pub max_queue_size: u16,
    /// Feature bits switched off for this port (see [`PortOptions::features_off_by_name`]).
    pub features_off: u64,
    /// Most guest memory regions one frontend may have mapped at once (SET_MEM_TABLE
    /// entries, or the regions after an ADD_MEM_REG); a table beyond it is refused.
    /// Default [`MAX_MEM_REGIONS`].
    pub max_mem_regions: u32,
    /// Permission bits of the server-mode socket, set at creation (`socket-mode=`).
    /// Default [`SOCKET_PERM`]: only the daemon's user may connect.
    pub socket_perm: u32,
    /// Group the server-mode socket belongs to (`socket-group=`): how a QEMU running as
    /// another user (libvirt) is allowed in, together with a `socket_perm` like 0o660.
    pub socket_gid: Option<u32>,
    /// Offer VIRTIO_F_RING_PACKED (virtio 1.2 §2.8) on this port (`packed=on`).
    /// Experimental, off by default: without it a frontend asking for packed rings
    /// (QEMU `packed=on`, DPDK `packed_vq=1`) falls back to split rings.
    pub packed: bool,
}

/// Default memory-region limit: what vhost-user-backend (0.24) answers to
/// VHOST_USER_GET_MAX_MEM_SLOTS (509; QEMU's VHOST_USER_MAX_RAM_SLOTS is 512), so a QEMU
/// with memory hotplug is never refused below what it was told.
pub const MAX_MEM_REGIONS: u32 = 509;

/// Default socket permissions: owner only.
pub const SOCKET_PERM: u32 = 0o600;

/// Why port options were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("queue_pairs must be between 1 and {max}, got {got}")]
    QueuePairs { got: u16, max: u16 },
    #[error("max_queue_size must be a power of two between 1 and 32768, got {0}")]
    QueueSize(u16),
    #[error("mtu must be between 68 and 65535, got {0}")]
    Mtu(u16),
    #[error("unknown feature {0:?}; known: VERSION_1, MAC, MTU, STATUS, CTRL_VQ, …")]
    UnknownFeature(String),
    #[error("max_mem_regions must be between 1 and {MAX_MEM_REGIONS}, got {0}")]
    MemRegions(u32),
    #[error("socket mode must be an octal mode of at most 0777, got {0:#o}")]
    SocketPerm(u32),
}

/// Most queue pairs per port: vhost-user-backend maps queues to worker threads with u64
/// bitmasks, so 2 × pairs + 1 (ctrl vq) must fit into 64 queues.
pub const MAX_QUEUE_PAIRS: u16 = 31;

/// The largest split ring virtio allows (virtio 1.2 §2.7: "Queue Size ... 32768"), and the
/// default bound: QEMU's `rx_queue_size`/`tx_queue_size` (up to 1024) and DPDK
/// virtio-user's `queue_size` are all accepted.
pub const MAX_QUEUE_SIZE: u16 = 32768;

impl PortOptions {
    /// One queue pair, rings up to [`MAX_QUEUE_SIZE`], server mode, every feature on.
    pub fn new(socket: impl Into<PathBuf>) -> PortOptions {
        PortOptions {
            socket: socket.into(),
            mode: SocketMode::Server,
            queue_pairs: 1,
            mac: None,
            mtu: None,
            max_queue_size: MAX_QUEUE_SIZE,
            features_off: 0,
            max_mem_regions: MAX_MEM_REGIONS,
            socket_perm: SOCKET_PERM,
            socket_gid: None,
            packed: false,
        }
    }

    /// Switches features off by name (`["MRG_RXBUF", "GUEST_TSO4"]`, see
    /// [`crate::features::OFFERABLE`]).
    pub fn features_off_by_name<S: AsRef<str>>(
        mut self,
        names: &[S],
    ) -> Result<PortOptions, OptionsError> {
        for n in names {
            let f = features::by_name(n.as_ref())
                .ok_or_else(|| OptionsError::UnknownFeature(n.as_ref().to_string()))?;
            self.features_off |= bit(f.bit);
        }
        Ok(self)
    }

    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.queue_pairs == 0 || self.queue_pairs > MAX_QUEUE_PAIRS {
            return Err(OptionsError::QueuePairs {
                got: self.queue_pairs,
                max: MAX_QUEUE_PAIRS,
            });
        }
        let qs = self.max_queue_size;
        if !qs.is_power_of_two() || qs > MAX_QUEUE_SIZE {
            return Err(OptionsError::QueueSize(qs));
        }
        if let Some(m) = self.mtu {
            if m < 68 {
                return Err(OptionsError::Mtu(m));
            }
        }
        if self.max_mem_regions == 0 || self.max_mem_regions > MAX_MEM_REGIONS {
            return Err(OptionsError::MemRegions(self.max_mem_regions));
        }
        if self.socket_perm > 0o777 {
            return Err(OptionsError::SocketPerm(self.socket_perm));
        }
        Ok(())
    }

    /// The virtio feature bits offered to the driver: everything in
    /// [`OFFERABLE`] minus the port's off switches, minus MAC/MTU when not configured and MQ
    /// with a single pair, closed under the §5.1.3.1 dependencies.
    pub fn offered_features(&self) -> u64 {
        use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MTU};
        let mut f: u64 = OFFERABLE.iter().fold(0, |a, f| a | bit(f.bit));
        f &= !self.features_off;
        if self.mac.is_none() {
            f &= !bit(VIRTIO_NET_F_MAC);
        }
        if self.mtu.is_none() {
            f &= !bit(VIRTIO_NET_F_MTU);
        }
        if self.queue_pairs < 2 {
            f &= !bit(VIRTIO_NET_F_MQ);
        }
        if self.packed {
            f |= features::RING_PACKED;
        }
        close_dependencies(f)
    }

    /// Virtqueues the device exposes: RX/TX per pair plus the control queue (§5.1.2).
    pub fn num_queues(&self) -> usize {
        2 * self.queue_pairs as usize + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_net::*;

    #[test]
    fn validation() {
        let mut o = PortOptions::new("/tmp/x");
        assert!(o.validate().is_ok());
        o.queue_pairs = 0;
        assert!(o.validate().is_err());
        o.queue_pairs = 32;
        assert!(o.validate().is_err());
        o.queue_pairs = 2;
        o.max_queue_size = 300;
        assert_eq!(o.validate(), Err(OptionsError::QueueSize(300)));
        o.max_queue_size = 0;
        assert_eq!(o.validate(), Err(OptionsError::QueueSize(0)));
        for ok in [1, 2, 256, 1024, 32768] {
            o.max_queue_size = ok;
            assert_eq!(o.validate(), Ok(()), "{ok}");
        }
        assert_eq!(PortOptions::new("/x").max_queue_size, 32768);
    }

    #[test]
    fn frontend_boundary_options_are_validated() {
        let o = PortOptions::new("/x");
        assert_eq!(
            (o.max_mem_regions, o.socket_perm, o.socket_gid),
            (509, 0o600, None)
        );
        assert!(o.validate().is_ok());
        let bad = |o: PortOptions| o.validate().unwrap_err();
        let n = PortOptions::new("/x");
        assert_eq!(
            bad(PortOptions {
                max_mem_regions: 0,
                ..n.clone()
            }),
            OptionsError::MemRegions(0)
        );
        assert_eq!(
            bad(PortOptions {
                max_mem_regions: 510,
                ..n.clone()
            }),
            OptionsError::MemRegions(510)
        );
        assert_eq!(
            bad(PortOptions {
                socket_perm: 0o1777,
                ..n.clone()
            }),
            OptionsError::SocketPerm(0o1777)
        );
        assert!(PortOptions {
            socket_perm: 0o660,
            socket_gid: Some(0),
            ..n
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn offer_respects_off_switches_and_config() {
        let o = PortOptions::new("/tmp/x");
        let f = o.offered_features();
        assert_eq!(f & bit(VIRTIO_NET_F_MAC), 0, "no MAC configured");
        assert_eq!(f & bit(VIRTIO_NET_F_MQ), 0, "single pair");
        let o = PortOptions {
            mac: Some(Mac([2, 0, 0, 0, 0, 1])),
            queue_pairs: 4,
            ..o
        }
        .features_off_by_name(&["mrg_rxbuf", "CTRL_VQ"])
        .unwrap();
        let f = o.offered_features();
        assert_ne!(f & bit(VIRTIO_NET_F_MAC), 0);
        assert_eq!(f & bit(VIRTIO_NET_F_MRG_RXBUF), 0);
        assert_eq!(f & bit(VIRTIO_NET_F_MQ), 0, "MQ needs CTRL_VQ");
        assert!(PortOptions::new("/x")
            .features_off_by_name(&["BOGUS"])
            .is_err());
    }
}
