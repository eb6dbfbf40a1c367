//! VLAN tags the kernel carries out of band.
//!
//! When a VLAN tag is offloaded (veth and most NICs do: NETIF_F_HW_VLAN_CTAG_TX/RX), the
//! skb holds the tag in metadata, not in the frame bytes, and an AF_PACKET socket receives
//! the frame *without* it; the tag is only reported in PACKET_AUXDATA (packet(7),
//! `struct tpacket_auxdata`, TP_STATUS_VLAN_VALID). A switch port that ignored it would turn
//! tagged frames into untagged ones — a VLAN leak — so the tag is put back into the frame
//! before the switch sees it (IEEE 802.1Q §9.3 tag format: TPID, then PCP/DEI/VID).

/// `struct tpacket_auxdata` status bits (include/uapi/linux/if_packet.h).
pub const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
pub const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// The tag reported in a PACKET_AUXDATA control message, if any: (TPID, TCI).
pub fn vlan_from_control(control: &[u8]) -> Option<(u16, u16)> {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    let mut off = 0usize;
    while off + HDR <= control.len() {
        let len = usize::from_ne_bytes(control[off..off + 8].try_into().ok()?);
        let level = i32::from_ne_bytes(control[off + 8..off + 12].try_into().ok()?);
        let ty = i32::from_ne_bytes(control[off + 12..off + 16].try_into().ok()?);
        if len < HDR || off + len > control.len() {
            return None;
        }
        if level == libc::SOL_PACKET && ty == libc::PACKET_AUXDATA {
            let d = &control[off + HDR..off + len];
            // tp_status u32, tp_len u32, tp_snaplen u32, tp_mac u16, tp_net u16,
            // tp_vlan_tci u16, tp_vlan_tpid u16
            if d.len() < 20 {
                return None;
            }
            let status = u32::from_ne_bytes(d[0..4].try_into().ok()?);
            if status & TP_STATUS_VLAN_VALID == 0 {
                return None;
            }
            let tci = u16::from_ne_bytes(d[16..18].try_into().ok()?);
            let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
                u16::from_ne_bytes(d[18..20].try_into().ok()?)
            } else {
                0x8100
            };
            return Some((tpid, tci));
        }
        // CMSG_ALIGN
        off += (len + 7) & !7;
    }
    None
}

/// Re-inserts a tag in front of the EtherType of the frame at `buf[start..start+len]`,
/// which begins with a 12-byte virtio_net_hdr. Uses the 4 bytes *before* `start` (the
/// recvmsg header area, already parsed), so only the 24 bytes of vnet header + MAC
/// addresses move, never the payload. Header offsets that count from the frame start
/// (virtio 1.2 §5.1.6.2: csum_start, hdr_len) grow by 4. Returns the new (start, len).
pub fn reinsert_vlan(
    buf: &mut [u8],
    start: usize,
    len: usize,
    tpid: u16,
    tci: u16,
) -> Option<(usize, usize)> {
    const VNET: usize = 12;
    if start < 4 || len < VNET + 12 || start.checked_add(len)? > buf.len() {
        return None;
    }
    let ns = start - 4;
    buf.copy_within(start..start + VNET + 12, ns);
    buf[ns + VNET + 12..ns + VNET + 14].copy_from_slice(&tpid.to_be_bytes());
    buf[ns + VNET + 14..ns + VNET + 16].copy_from_slice(&tci.to_be_bytes());
    let mut h = switch::VnetHdr::parse(&buf[ns..], VNET).ok()?;
    if h.needs_csum() {
        h.csum_start = h.csum_start.checked_add(4)?;
    }
    if h.hdr_len != 0 {
        h.hdr_len = h.hdr_len.checked_add(4)?;
    }
    h.emit(&mut buf[ns..], VNET)?;
    Some((ns, len + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmsg(level: i32, ty: i32, data: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(16 + data.len()).to_ne_bytes());
        v.extend_from_slice(&level.to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(data);
        while v.len() % 8 != 0 {
            v.push(0);
        }
        v
    }

    fn aux(status: u32, tci: u16, tpid: u16) -> Vec<u8> {
        let mut d = Vec::new();
        d.extend_from_slice(&status.to_ne_bytes());
        d.extend_from_slice(&[0; 12]);
        d.extend_from_slice(&tci.to_ne_bytes());
        d.extend_from_slice(&tpid.to_ne_bytes());
        d
    }

    #[test]
    fn finds_the_tag_and_ignores_the_rest() {
        let mut c = cmsg(1, 1, &[0; 4]);
        c.extend(cmsg(
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            &aux(
                TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID,
                0x2005,
                0x88a8,
            ),
        ));
        assert_eq!(vlan_from_control(&c), Some((0x88a8, 0x2005)));
        let c = cmsg(libc::SOL_PACKET, libc::PACKET_AUXDATA, &aux(0, 5, 0x8100));
        assert_eq!(vlan_from_control(&c), None, "no VLAN_VALID: untagged");
        let c = cmsg(
            libc::SOL_PACKET,
            libc::PACKET_AUXDATA,
            &aux(TP_STATUS_VLAN_VALID, 7, 0),
        );
        assert_eq!(vlan_from_control(&c), Some((0x8100, 7)));
        // Hostile lengths: never panic, never read past the end.
        let mut bad = cmsg(libc::SOL_PACKET, libc::PACKET_AUXDATA, &aux(16, 1, 1));
        bad[0] = 200;
        assert_eq!(vlan_from_control(&bad), None);
        assert_eq!(vlan_from_control(&bad[..10]), None);
        let mut zero = bad.clone();
        zero[..8].copy_from_slice(&0usize.to_ne_bytes());
        assert_eq!(vlan_from_control(&zero), None);
    }

    #[test]
    fn reinserts_in_front_without_moving_the_payload() {
        let mut buf = vec![0u8; 8];
        let mut hdr = [0u8; 12];
        switch::VnetHdr {
            flags: switch::vnet::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            hdr_len: 54,
            ..Default::default()
        }
        .emit(&mut hdr, 12)
        .unwrap();
        buf.extend_from_slice(&hdr);
        buf.extend_from_slice(&[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0x08, 0x00, 0x45]);
        let len = buf.len() - 8;
        let (s, l) = reinsert_vlan(&mut buf, 8, len, 0x8100, 10).unwrap();
        assert_eq!((s, l), (4, len + 4));
        let f = &buf[s..s + l];
        assert_eq!(&f[12..24], &[1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
        assert_eq!(&f[24..30], &[0x81, 0x00, 0x00, 0x0a, 0x08, 0x00]);
        let h = switch::VnetHdr::parse(f, 12).unwrap();
        assert_eq!((h.csum_start, h.hdr_len, h.csum_offset), (38, 58, 16));
        assert!(reinsert_vlan(&mut buf, 2, 20, 0x8100, 1).is_none());
        let n = buf.len();
        assert!(reinsert_vlan(&mut buf, 8, n, 0x8100, 1).is_none());
    }
}
