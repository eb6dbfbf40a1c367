//! Control virtqueue commands (virtio 1.2 §5.1.6.5 "Control Virtqueue"): parsing, checking
//! against the negotiated features, and applying them to the port's state. Pure: the device
//! reads the command bytes out of the chain, calls [`apply`], writes the ack and then tells
//! the switch what changed ([`Effect`]).
//!
//! ```text
//! struct virtio_net_ctrl { u8 class; u8 command; u8 command-specific-data[]; u8 ack; }
//! ```

use switch::{Mac, RxFilter};
use virtio_bindings::virtio_net::*;

use crate::config_space::S_ANNOUNCE;
use crate::features::{bit, GUEST_OFFLOAD_BITS};

/// VIRTIO_NET_OK.
// VIRTIO_NET_OK and VIRTIO_NET_ERR are 0 and 1.
#[allow(clippy::cast_possible_truncation)]
pub const OK: u8 = VIRTIO_NET_OK as u8;
/// VIRTIO_NET_ERR.
#[allow(clippy::cast_possible_truncation)]
pub const ERR: u8 = VIRTIO_NET_ERR as u8;

/// Port state the control queue can change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtrlState {
    pub filter: RxFilter,
    /// GUEST_* offload bits currently enabled (§5.1.6.5.6).
    pub guest_offloads: u64,
    /// Queue pairs in use (§5.1.6.5.5); 1 until the driver sets more.
    pub active_pairs: u16,
    /// Config-space status (LINK_UP, ANNOUNCE).
    pub status: u16,
}

/// What a successful command changed, so the device notifies only what is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Filter,
    Mac(Mac),
    Offloads,
    Pairs,
    Announce,
}

/// Why a command was answered VIRTIO_NET_ERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CtrlError {
    #[error("command shorter than its class/command header")]
    Short,
    #[error("class {0} command {1} unknown")]
    Unknown(u8, u8),
    #[error("class {0} command {1} needs a feature that was not negotiated")]
    NotNegotiated(u8, u8),
    #[error("command data has the wrong length")]
    BadLength,
    #[error("command value out of range")]
    BadValue,
}

/// Applies one command (`class`, `command`, data — without the ack byte).
pub fn apply(
    cmd: &[u8],
    acked: u64,
    max_pairs: u16,
    st: &mut CtrlState,
) -> Result<Effect, CtrlError> {
    let [class, command, data @ ..] = cmd else {
        return Err(CtrlError::Short);
    };
    let (class, command) = (*class, *command);
    let has = |b: u32| acked & bit(b) != 0;
    let need = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(CtrlError::NotNegotiated(class, command))
        }
    };
    match (u32::from(class), u32::from(command)) {
        // §5.1.6.5.1 Packet Receive Filtering.
        (VIRTIO_NET_CTRL_RX, c @ VIRTIO_NET_CTRL_RX_PROMISC..=VIRTIO_NET_CTRL_RX_NOBCAST) => {
            need(has(VIRTIO_NET_F_CTRL_RX))?;
            if c >= VIRTIO_NET_CTRL_RX_ALLUNI {
                need(has(VIRTIO_NET_F_CTRL_RX_EXTRA))?;
            }
            let [on] = data else {
                return Err(CtrlError::BadLength);
            };
            let on = *on != 0;
            let f = &mut st.filter;
            match c {
                VIRTIO_NET_CTRL_RX_PROMISC => f.promisc = on,
                VIRTIO_NET_CTRL_RX_ALLMULTI => f.allmulti = on,
                VIRTIO_NET_CTRL_RX_ALLUNI => f.alluni = on,
                VIRTIO_NET_CTRL_RX_NOMULTI => f.nomulti = on,
                VIRTIO_NET_CTRL_RX_NOUNI => f.nouni = on,
                _ => f.nobcast = on,
            }
            Ok(Effect::Filter)
        }
        // §5.1.6.5.2 Setting MAC Address Filtering.
        (VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET) => {
            need(has(VIRTIO_NET_F_CTRL_RX))?;
            let (uni, rest) = mac_table(data)?;
            let (multi, rest) = mac_table(rest)?;
            if !rest.is_empty() {
                return Err(CtrlError::BadLength);
            }
            st.filter.set_mac_tables(&uni, &multi);
            Ok(Effect::Filter)
        }
        (VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_ADDR_SET) => {
            need(has(VIRTIO_NET_F_CTRL_MAC_ADDR))?;
            if data.len() != 6 {
                return Err(CtrlError::BadLength);
            }
            let mac = Mac::from_slice(data).ok_or(CtrlError::BadLength)?;
            if mac.is_multicast() || mac == Mac::ZERO {
                return Err(CtrlError::BadValue);
            }
            st.filter.mac = Some(mac);
            Ok(Effect::Mac(mac))
        }
        // §5.1.6.5.3 VLAN Filtering.
        (VIRTIO_NET_CTRL_VLAN, c @ (VIRTIO_NET_CTRL_VLAN_ADD | VIRTIO_NET_CTRL_VLAN_DEL)) => {
            need(has(VIRTIO_NET_F_CTRL_VLAN))?;
            let [lo, hi] = data else {
                return Err(CtrlError::BadLength);
            };
            let vid = u16::from_le_bytes([*lo, *hi]);
            if vid > switch::vlan::VID_MAX {
                return Err(CtrlError::BadValue);
            }
            let set = st
                .filter
                .vlans
                .get_or_insert_with(|| Box::new(switch::VlanSet::empty()));
            if c == VIRTIO_NET_CTRL_VLAN_ADD {
                set.insert(vid);
            } else {
                set.remove(vid);
            }
            Ok(Effect::Filter)
        }
        // §5.1.6.5.4 Gratuitous Packet Sending.
        (VIRTIO_NET_CTRL_ANNOUNCE, VIRTIO_NET_CTRL_ANNOUNCE_ACK) => {
            need(has(VIRTIO_NET_F_GUEST_ANNOUNCE))?;
            if !data.is_empty() {
                return Err(CtrlError::BadLength);
            }
            st.status &= !S_ANNOUNCE;
            Ok(Effect::Announce)
        }
        // §5.1.6.5.5 Device operation in multiqueue mode.
        (VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET) => {
            need(has(VIRTIO_NET_F_MQ))?;
            let [lo, hi] = data else {
                return Err(CtrlError::BadLength);
            };
            let n = u16::from_le_bytes([*lo, *hi]);
            if n == 0 || n > max_pairs {
                return Err(CtrlError::BadValue);
            }
            st.active_pairs = n;
            Ok(Effect::Pairs)
        }
        (VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_RSS_CONFIG | VIRTIO_NET_CTRL_MQ_HASH_CONFIG) => {
            // RSS and HASH_REPORT are not offered.
            Err(CtrlError::NotNegotiated(class, command))
        }
        // §5.1.6.5.6 Offloads State Configuration.
        (VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET) => {
            need(has(VIRTIO_NET_F_CTRL_GUEST_OFFLOADS))?;
            let v: [u8; 8] = data.try_into().map_err(|_| CtrlError::BadLength)?;
            let v = u64::from_le_bytes(v);
            // §5.1.6.5.6.2: only offloads that were negotiated may be enabled.
            if v & !(acked & GUEST_OFFLOAD_BITS) != 0 {
                return Err(CtrlError::BadValue);
            }
            st.guest_offloads = v;
            Ok(Effect::Offloads)
        }
        _ => Err(CtrlError::Unknown(class, command)),
    }
}

/// One `struct virtio_net_ctrl_mac { le32 entries; u8 macs[entries][6]; }`.
fn mac_table(b: &[u8]) -> Result<(Vec<Mac>, &[u8]), CtrlError> {
    let (n, rest) = b.split_first_chunk::<4>().ok_or(CtrlError::BadLength)?;
    let n = u32::from_le_bytes(*n) as usize;
    let bytes = n.checked_mul(6).ok_or(CtrlError::BadLength)?;
    if bytes > rest.len() {
        return Err(CtrlError::BadLength);
    }
    let (macs, rest) = rest.split_at(bytes);
    let macs = macs.chunks_exact(6).filter_map(Mac::from_slice).collect();
    Ok((macs, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;

    const ME: Mac = Mac([0x52, 0x54, 0, 0, 0, 1]);

    fn st() -> CtrlState {
        CtrlState {
            filter: RxFilter::for_mac(ME),
            guest_offloads: 0,
            active_pairs: 1,
            status: 1,
        }
    }

    fn all() -> u64 {
        crate::features::OFFERABLE
            .iter()
            .fold(bit(VIRTIO_F_VERSION_1), |a, f| a | bit(f.bit))
    }

    #[test]
    fn rx_modes_need_their_features() {
        let mut s = st();
        assert_eq!(apply(&[0, 0, 1], all(), 4, &mut s), Ok(Effect::Filter));
        assert!(s.filter.promisc);
        assert_eq!(apply(&[0, 5, 1], all(), 4, &mut s), Ok(Effect::Filter));
        assert!(s.filter.nobcast);
        let no_extra = all() & !bit(VIRTIO_NET_F_CTRL_RX_EXTRA);
        assert_eq!(
            apply(&[0, 2, 1], no_extra, 4, &mut s),
            Err(CtrlError::NotNegotiated(0, 2))
        );
        assert_eq!(apply(&[0, 1, 1], no_extra, 4, &mut s), Ok(Effect::Filter));
        assert_eq!(apply(&[0, 1], all(), 4, &mut s), Err(CtrlError::BadLength));
        assert_eq!(
            apply(&[0, 6, 1], all(), 4, &mut s),
            Err(CtrlError::Unknown(0, 6))
        );
        assert_eq!(apply(&[0], all(), 4, &mut s), Err(CtrlError::Short));
    }

    #[test]
    fn mac_table_set_and_addr_set() {
        let mut s = st();
        let mut cmd = vec![1, 0];
        cmd.extend_from_slice(&1u32.to_le_bytes());
        cmd.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
        cmd.extend_from_slice(&2u32.to_le_bytes());
        cmd.extend_from_slice(&[1, 0, 0x5e, 0, 0, 1, 1, 0, 0x5e, 0, 0, 2]);
        assert_eq!(apply(&cmd, all(), 1, &mut s), Ok(Effect::Filter));
        assert_eq!(s.filter.uni, vec![Mac([2, 0, 0, 0, 0, 9])]);
        assert_eq!(s.filter.multi.len(), 2);
        // a count that claims more entries than the data holds
        let mut bad = vec![1, 0];
        bad.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(apply(&bad, all(), 1, &mut s), Err(CtrlError::BadLength));
        // trailing garbage
        let mut trailing = cmd.clone();
        trailing.push(0);
        assert_eq!(
            apply(&trailing, all(), 1, &mut s),
            Err(CtrlError::BadLength)
        );
        let new = [2, 0, 0, 0, 0, 7];
        let mut set = vec![1, 1];
        set.extend_from_slice(&new);
        assert_eq!(apply(&set, all(), 1, &mut s), Ok(Effect::Mac(Mac(new))));
        assert_eq!(s.filter.mac, Some(Mac(new)));
        let mut mc = vec![1, 1];
        mc.extend_from_slice(&[1, 0, 0, 0, 0, 1]);
        assert_eq!(apply(&mc, all(), 1, &mut s), Err(CtrlError::BadValue));
    }

    #[test]
    fn vlan_announce_mq_offloads() {
        let mut s = st();
        assert_eq!(apply(&[2, 0, 5, 0], all(), 4, &mut s), Ok(Effect::Filter));
        assert!(s.filter.accepts(&ME, Some(5)));
        assert_eq!(apply(&[2, 1, 5, 0], all(), 4, &mut s), Ok(Effect::Filter));
        assert!(!s.filter.accepts(&ME, Some(5)));
        assert_eq!(
            apply(&[2, 0, 0xff, 0x0f], all(), 4, &mut s),
            Err(CtrlError::BadValue)
        );
        s.status |= S_ANNOUNCE;
        assert_eq!(apply(&[3, 0], all(), 4, &mut s), Ok(Effect::Announce));
        assert_eq!(s.status & S_ANNOUNCE, 0);
        assert_eq!(apply(&[4, 0, 3, 0], all(), 4, &mut s), Ok(Effect::Pairs));
        assert_eq!(s.active_pairs, 3);
        assert_eq!(
            apply(&[4, 0, 5, 0], all(), 4, &mut s),
            Err(CtrlError::BadValue)
        );
        assert_eq!(
            apply(&[4, 0, 0, 0], all(), 4, &mut s),
            Err(CtrlError::BadValue)
        );
        assert_eq!(
            apply(&[4, 1], all(), 4, &mut s),
            Err(CtrlError::NotNegotiated(4, 1))
        );
        let csum_tso4 = bit(VIRTIO_NET_F_GUEST_CSUM) | bit(VIRTIO_NET_F_GUEST_TSO4);
        let mut cmd = vec![5, 0];
        cmd.extend_from_slice(&csum_tso4.to_le_bytes());
        assert_eq!(apply(&cmd, all(), 4, &mut s), Ok(Effect::Offloads));
        assert_eq!(s.guest_offloads, csum_tso4);
        let acked = all() & !bit(VIRTIO_NET_F_GUEST_TSO4);
        assert_eq!(apply(&cmd, acked, 4, &mut s), Err(CtrlError::BadValue));
        let mut mrg = vec![5, 0];
        mrg.extend_from_slice(&bit(VIRTIO_NET_F_MRG_RXBUF).to_le_bytes());
        assert_eq!(apply(&mrg, all(), 4, &mut s), Err(CtrlError::BadValue));
    }
}
