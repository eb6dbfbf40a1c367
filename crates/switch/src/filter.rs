//! Per-port receive filter, exactly as a virtio-net device applies what the driver set
//! through the control virtqueue (virtio 1.2 §5.1.6.5.1 "Packet Receive Filtering",
//! §5.1.6.5.2 "Setting MAC Address Filtering", §5.1.6.5.3 "VLAN Filtering").
//!
//! The spec leaves the precedence of the flags to the device; we follow QEMU's
//! `receive_filter()` (hw/net/virtio-net.c), which is what guests are tested against:
//! promisc wins; a tagged frame must pass the VLAN filter; broadcast obeys `nobcast`;
//! multicast obeys `nomulti`, then `allmulti`/overflow, then the multicast table; unicast
//! obeys `nouni`, then `alluni`/overflow, then the device MAC, then the unicast table.

use crate::mac::Mac;
use crate::vlan::{Vid, VlanSet};

/// Entries a MAC table may hold in total (unicast + multicast), as in QEMU. A driver that
/// sends more sets the matching overflow flag, which behaves like alluni/allmulti.
pub const MAC_TABLE_ENTRIES: usize = 64;

/// The receive filter of one port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxFilter {
    /// VIRTIO_NET_CTRL_RX_PROMISC.
    pub promisc: bool,
    /// VIRTIO_NET_CTRL_RX_ALLMULTI.
    pub allmulti: bool,
    /// VIRTIO_NET_CTRL_RX_ALLUNI (CTRL_RX_EXTRA).
    pub alluni: bool,
    /// VIRTIO_NET_CTRL_RX_NOMULTI (CTRL_RX_EXTRA).
    pub nomulti: bool,
    /// VIRTIO_NET_CTRL_RX_NOUNI (CTRL_RX_EXTRA).
    pub nouni: bool,
    /// VIRTIO_NET_CTRL_RX_NOBCAST (CTRL_RX_EXTRA).
    pub nobcast: bool,
    /// The device's own address (config space `mac`, VIRTIO_NET_CTRL_MAC_ADDR_SET).
    pub mac: Option<Mac>,
    /// VIRTIO_NET_CTRL_MAC_TABLE_SET, first table.
    pub uni: Vec<Mac>,
    /// VIRTIO_NET_CTRL_MAC_TABLE_SET, second table.
    pub multi: Vec<Mac>,
    pub uni_overflow: bool,
    pub multi_overflow: bool,
    /// VIRTIO_NET_CTRL_VLAN_ADD/DEL. `None`: VLAN filtering not negotiated, all pass.
    pub vlans: Option<Box<VlanSet>>,
}

impl Default for RxFilter {
    /// Accept everything: what a tap or AF_PACKET port (or a guest without CTRL_RX) gets.
    fn default() -> Self {
        RxFilter::promiscuous()
    }
}

impl RxFilter {
    /// Accepts every frame.
    pub fn promiscuous() -> RxFilter {
        RxFilter {
            promisc: true,
            allmulti: true,
            alluni: false,
            nomulti: false,
            nouni: false,
            nobcast: false,
            mac: None,
            uni: Vec::new(),
            multi: Vec::new(),
            uni_overflow: false,
            multi_overflow: false,
            vlans: None,
        }
    }

    /// A port that owns `mac`: unicast to it, broadcast and all multicast, until the
    /// driver says otherwise.
    pub fn for_mac(mac: Mac) -> RxFilter {
        RxFilter {
            promisc: false,
            mac: Some(mac),
            ..RxFilter::promiscuous()
        }
    }

    /// VIRTIO_NET_CTRL_MAC_TABLE_SET: replaces both tables. Over-long tables set the
    /// overflow flags instead of being stored (QEMU semantics).
    pub fn set_mac_tables(&mut self, uni: &[Mac], multi: &[Mac]) {
        self.uni.clear();
        self.multi.clear();
        self.uni_overflow = false;
        self.multi_overflow = false;
        if uni.len() <= MAC_TABLE_ENTRIES {
            self.uni.extend_from_slice(uni);
        } else {
            self.uni_overflow = true;
        }
        if self.uni.len() + multi.len() <= MAC_TABLE_ENTRIES {
            self.multi.extend_from_slice(multi);
        } else {
            self.multi_overflow = true;
        }
    }

    /// Turns VLAN filtering on with an empty set (VIRTIO_NET_F_CTRL_VLAN negotiated).
    pub fn enable_vlan_filter(&mut self) {
        self.vlans = Some(Box::new(VlanSet::empty()));
    }

    /// Would the port accept a frame to `dst`, delivered with tag `tag_vid` (None when it
    /// leaves untagged toward this port)?
    #[inline]
    pub fn accepts(&self, dst: &Mac, tag_vid: Option<Vid>) -> bool {
        if self.promisc {
            return true;
        }
        if let (Some(vid), Some(set)) = (tag_vid, self.vlans.as_deref()) {
            if !set.contains(vid) {
                return false;
            }
        }
        if dst.is_multicast() {
            if dst.is_broadcast() {
                !self.nobcast
            } else if self.nomulti {
                false
            } else if self.allmulti || self.multi_overflow {
                true
            } else {
                self.multi.contains(dst)
            }
        } else if self.nouni {
            false
        } else if self.alluni || self.uni_overflow || self.mac.as_ref() == Some(dst) {
            true
        } else {
            self.uni.contains(dst)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
    const OTHER: Mac = Mac([0x52, 0x54, 0, 0, 0, 2]);
    const MC: Mac = Mac([0x01, 0, 0x5e, 0, 0, 1]);

    #[test]
    fn promisc_accepts_all() {
        let f = RxFilter::promiscuous();
        assert!(f.accepts(&OTHER, None) && f.accepts(&MC, Some(7)));
    }

    #[test]
    fn own_mac_bcast_multicast() {
        let f = RxFilter::for_mac(ME);
        assert!(f.accepts(&ME, None));
        assert!(!f.accepts(&OTHER, None));
        assert!(f.accepts(&Mac::BROADCAST, None));
        assert!(f.accepts(&MC, None));
    }

    #[test]
    fn flags() {
        let mut f = RxFilter::for_mac(ME);
        f.nobcast = true;
        assert!(!f.accepts(&Mac::BROADCAST, None));
        f.allmulti = false;
        assert!(!f.accepts(&MC, None));
        f.set_mac_tables(&[OTHER], &[MC]);
        assert!(f.accepts(&MC, None) && f.accepts(&OTHER, None));
        f.nomulti = true;
        assert!(!f.accepts(&MC, None));
        f.nouni = true;
        assert!(!f.accepts(&ME, None));
        f.nouni = false;
        f.alluni = true;
        assert!(f.accepts(&Mac([2, 0, 0, 0, 0, 9]), None));
    }

    #[test]
    fn overflow_behaves_like_all() {
        let mut f = RxFilter::for_mac(ME);
        f.allmulti = false;
        let many: Vec<Mac> = (0..65u8).map(|i| Mac([2, 0, 0, 0, 0, i])).collect();
        f.set_mac_tables(&many, &[]);
        assert!(f.uni_overflow && f.uni.is_empty());
        assert!(f.accepts(&Mac([2, 0, 0, 0, 1, 1]), None));
        let mcs: Vec<Mac> = (0..64u8).map(|i| Mac([1, 0, 0x5e, 0, 0, i])).collect();
        f.set_mac_tables(&[OTHER], &mcs);
        assert!(f.multi_overflow && !f.uni_overflow);
        assert!(f.accepts(&Mac([1, 0, 0x5e, 9, 9, 9]), None));
    }

    #[test]
    fn vlan_filter_applies_to_tagged_only() {
        let mut f = RxFilter::for_mac(ME);
        f.enable_vlan_filter();
        assert!(f.accepts(&ME, None));
        assert!(!f.accepts(&ME, Some(5)));
        if let Some(s) = f.vlans.as_deref_mut() {
            s.insert(5);
        }
        assert!(f.accepts(&ME, Some(5)));
    }
}
