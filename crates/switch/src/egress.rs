//! Egress L2 rewriting: push, pop or keep the VLAN tag for one destination port without
//! copying the frame. The data plane writes `head` and then the source frame from
//! `body_offset` (gather write or one copy into guest RX buffers).

use crate::frame::{FrameView, VLAN_TAG_LEN};
use crate::vlan::Vid;
use crate::vnet::VnetHdr;

/// Longest rewritten head: dst + src + one tag (the EtherType stays in the body).
pub const MAX_HEAD: usize = 16;

/// How one frame leaves through one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    head: [u8; MAX_HEAD],
    head_len: u8,
    /// Where the unchanged rest of the source frame starts (at its inner EtherType).
    pub body_offset: u16,
    /// Bytes the frame grows (+4), shrinks (−4) or 0.
    pub delta: i8,
}

impl Egress {
    /// Builds the egress form of `frame` (described by `view`) for a port that sends
    /// `out_tag` (`None`: untagged; `Some((tpid, vid))`: tagged). PCP/DEI of an incoming
    /// tag are kept when the frame leaves tagged.
    #[inline]
    // `len` is 12 or 16 and `body_offset` 12 + a tag length (at most 20): no cast truncates.
    #[allow(clippy::cast_possible_truncation)]
    pub fn new(frame: &[u8], view: &FrameView, out_tag: Option<(u16, Vid)>) -> Egress {
        let mut head = [0u8; MAX_HEAD];
        head[..12].copy_from_slice(&frame[..12]);
        let mut len = 12;
        if let Some((tpid, vid)) = out_tag {
            let prio = view.tag.map(|t| t.tci & 0xf000).unwrap_or(0);
            head[12..14].copy_from_slice(&tpid.to_be_bytes());
            head[14..16].copy_from_slice(&(prio | (vid & 0x0fff)).to_be_bytes());
            len += VLAN_TAG_LEN;
        }
        let body_offset = 12 + view.tag_len();
        Egress {
            head,
            head_len: len as u8,
            body_offset: body_offset as u16,
            delta: (len as i16 - body_offset as i16) as i8,
        }
    }

    /// The rewritten head bytes.
    #[inline]
    pub fn head(&self) -> &[u8] {
        &self.head[..usize::from(self.head_len)]
    }

    /// True when the frame leaves byte-for-byte as it came (no tag change): the data plane
    /// may write the source frame as is.
    #[inline]
    pub fn is_identity(&self, frame: &[u8]) -> bool {
        if self.delta != 0 {
            return false;
        }
        // Fixed-size compares: a slice `==` of runtime length is a libc memcmp call, a
        // measurable share of a small frame's time.
        let Some(f) = frame.get(..MAX_HEAD) else {
            return frame.get(..usize::from(self.head_len)) == Some(self.head());
        };
        let (a, b): (&[u8; MAX_HEAD], &[u8; MAX_HEAD]) = match f.try_into() {
            Ok(a) => (a, &self.head),
            Err(_) => return false,
        };
        let addrs = a[..12] == b[..12];
        if self.head_len == 12 {
            addrs
        } else {
            addrs && a[12..] == b[12..]
        }
    }

    /// Length of the frame as it leaves.
    #[inline]
    pub fn out_len(&self, frame_len: usize) -> usize {
        (frame_len as isize + isize::from(self.delta)) as usize
    }

    /// The virtio-net header with `csum_start`/`hdr_len` moved by the tag change
    /// (virtio 1.2 §5.1.6.2: both count from the start of the Ethernet frame).
    #[inline]
    pub fn adjust_hdr(&self, hdr: &VnetHdr) -> VnetHdr {
        let mut h = *hdr;
        if self.delta != 0 {
            let d = i32::from(self.delta);
            if h.needs_csum() {
                // A moved offset past u16::MAX saturates (it then lies past any frame and
                // is refused as such) instead of wrapping to a small, plausible offset.
                h.csum_start =
                    u16::try_from((i32::from(h.csum_start) + d).max(0)).unwrap_or(u16::MAX);
            }
            if h.hdr_len != 0 {
                h.hdr_len = u16::try_from((i32::from(h.hdr_len) + d).max(0)).unwrap_or(u16::MAX);
            }
        }
        h
    }

    /// Copies the egress frame into `out` (head + body); returns the bytes written, or
    /// `None` if `out` is too small. For tests and copy-based paths.
    pub fn write_into(&self, frame: &[u8], out: &mut [u8]) -> Option<usize> {
        let body = frame.get(usize::from(self.body_offset)..)?;
        let n = self.head().len() + body.len();
        let dst = out.get_mut(..n)?;
        dst[..self.head().len()].copy_from_slice(self.head());
        dst[self.head().len()..].copy_from_slice(body);
        Some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::{eth, ipv4};
    use crate::frame::{FrameView, ETHERTYPE_IPV4};
    use crate::vlan::TPID_8021Q;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn push_pop_keep() {
        let untagged = eth(B, A, None, ETHERTYPE_IPV4, &ipv4(6, 20));
        let tagged = eth(B, A, Some(0xa000 | 9), ETHERTYPE_IPV4, &ipv4(6, 20));
        let vu = FrameView::parse(&untagged, untagged.len(), TPID_8021Q, false).unwrap();
        let vt = FrameView::parse(&tagged, tagged.len(), TPID_8021Q, false).unwrap();
        let mut out = [0u8; 128];

        // push
        let e = Egress::new(&untagged, &vu, Some((TPID_8021Q, 9)));
        let n = e.write_into(&untagged, &mut out).unwrap();
        assert_eq!(
            &out[..n],
            &eth(B, A, Some(9), ETHERTYPE_IPV4, &ipv4(6, 20))[..]
        );
        assert_eq!(e.delta, 4);
        // pop
        let e = Egress::new(&tagged, &vt, None);
        let n = e.write_into(&tagged, &mut out).unwrap();
        assert_eq!(&out[..n], &untagged[..]);
        assert_eq!(e.out_len(tagged.len()), untagged.len());
        // keep, with priority preserved
        let e = Egress::new(&tagged, &vt, Some((TPID_8021Q, 9)));
        assert!(e.is_identity(&tagged));
        // retag to another VID keeps PCP
        let e = Egress::new(&tagged, &vt, Some((TPID_8021Q, 10)));
        assert_eq!(&e.head()[14..16], &(0xa000u16 | 10).to_be_bytes());
        assert!(!e.is_identity(&tagged), "same length, other VID");
        // untagged in and out
        let e = Egress::new(&untagged, &vu, None);
        assert!(e.is_identity(&untagged));
        let mut other = untagged.clone();
        other[0] ^= 1;
        assert!(!e.is_identity(&other), "another frame's addresses");
        assert!(
            e.is_identity(&untagged[..12]),
            "a 12-byte frame: the short path"
        );
        assert!(!e.is_identity(&untagged[..11]));
    }

    #[test]
    fn header_offsets_follow_the_tag() {
        let f = eth(B, A, None, ETHERTYPE_IPV4, &ipv4(6, 20));
        let v = FrameView::parse(&f, f.len(), TPID_8021Q, false).unwrap();
        let e = Egress::new(&f, &v, Some((TPID_8021Q, 3)));
        let h = VnetHdr {
            flags: crate::vnet::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            hdr_len: 54,
            ..Default::default()
        };
        let a = e.adjust_hdr(&h);
        assert_eq!((a.csum_start, a.hdr_len, a.csum_offset), (38, 58, 16));
    }

    #[test]
    fn guest_offsets_near_u16_max_saturate_instead_of_wrapping() {
        // A guest's csum_start/hdr_len of 0xfffe moved by a pushed tag (+4) must not wrap
        // to 2, an offset inside the frame.
        let f = eth(B, A, None, ETHERTYPE_IPV4, &ipv4(6, 20));
        let v = FrameView::parse(&f, f.len(), TPID_8021Q, false).unwrap();
        let e = Egress::new(&f, &v, Some((TPID_8021Q, 3)));
        let h = VnetHdr {
            flags: crate::vnet::F_NEEDS_CSUM,
            csum_start: 0xfffe,
            csum_offset: 16,
            hdr_len: 0xfffe,
            ..Default::default()
        };
        let a = e.adjust_hdr(&h);
        assert_eq!((a.csum_start, a.hdr_len), (u16::MAX, u16::MAX));
    }
}
