//! VLAN identifiers, sets and per-port VLAN modes (IEEE 802.1Q-2018 §9.6).

/// A VLAN identifier 1..=4094 (0 means "priority tag only", 4095 is reserved).
pub type Vid = u16;

/// The highest usable VLAN id.
pub const VID_MAX: Vid = 4094;

/// The 802.1Q customer tag TPID.
pub const TPID_8021Q: u16 = 0x8100;
/// The 802.1ad service tag TPID.
pub const TPID_8021AD: u16 = 0x88a8;

/// A set of VLAN ids as a 4096-bit bitmap (512 bytes, no allocation per lookup).
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet([u64; 64]);

impl VlanSet {
    pub const fn empty() -> VlanSet {
        VlanSet([0; 64])
    }

    /// Every id 1..=4094.
    pub fn all() -> VlanSet {
        let mut s = VlanSet([!0; 64]);
        s.remove(0);
        s.remove(4095);
        s
    }

    #[inline]
    pub fn contains(&self, vid: Vid) -> bool {
        let v = (vid & 0xfff) as usize;
        self.0[v >> 6] & (1 << (v & 63)) != 0
    }

    #[inline]
    pub fn insert(&mut self, vid: Vid) {
        let v = (vid & 0xfff) as usize;
        self.0[v >> 6] |= 1 << (v & 63);
    }

    #[inline]
    pub fn remove(&mut self, vid: Vid) {
        let v = (vid & 0xfff) as usize;
        self.0[v >> 6] &= !(1 << (v & 63));
    }

    pub fn iter(&self) -> impl Iterator<Item = Vid> + '_ {
        (0u16..4096).filter(|v| self.contains(*v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
}

impl Default for VlanSet {
    fn default() -> Self {
        VlanSet::empty()
    }
}

impl core::fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let v: Vec<Vid> = self.iter().collect();
        if v.len() == 4094 {
            return f.write_str("VlanSet(all)");
        }
        write!(f, "VlanSet({v:?})")
    }
}

/// How a port maps frames on its wire to VLANs inside the switch.
///
/// The default is what OVS does for a port with neither `tag` nor `trunks`: every VLAN is
/// carried tagged, untagged frames belong to the native VLAN 1 and leave untagged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VlanMode {
    /// Untagged on the wire, member of exactly one VLAN. Frames arriving tagged with a
    /// non-zero VID are dropped (priority-tagged frames, VID 0, are accepted).
    Access(Vid),
    /// Tagged on the wire for `allowed` VLANs. `native` is the VLAN of untagged and
    /// priority-tagged frames; it leaves untagged. `None`: untagged frames are dropped.
    Trunk {
        native: Option<Vid>,
        allowed: Box<VlanSet>,
    },
}

impl Default for VlanMode {
    fn default() -> Self {
        VlanMode::Trunk {
            native: Some(1),
            allowed: Box::new(VlanSet::all()),
        }
    }
}

/// Why ingress VLAN classification refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VlanReject {
    TaggedOnAccess,
    UntaggedNotAllowed,
    NotAllowed,
    ReservedVid,
}

impl VlanMode {
    /// IEEE 802.1Q §6.9 ingress classification: the VLAN a frame with the given tag VID
    /// (`None` = untagged) belongs to on this port.
    #[inline]
    pub fn classify(&self, tag_vid: Option<Vid>) -> Result<Vid, VlanReject> {
        match (self, tag_vid) {
            (_, Some(4095)) => Err(VlanReject::ReservedVid),
            (VlanMode::Access(v), None | Some(0)) => Ok(*v),
            (VlanMode::Access(_), Some(_)) => Err(VlanReject::TaggedOnAccess),
            (VlanMode::Trunk { native, .. }, None | Some(0)) => {
                native.ok_or(VlanReject::UntaggedNotAllowed)
            }
            (VlanMode::Trunk { allowed, .. }, Some(v)) => {
                if allowed.contains(v) {
                    Ok(v)
                } else {
                    Err(VlanReject::NotAllowed)
                }
            }
        }
    }

    /// Egress: `None` if the port is not a member of `vid`, `Some(None)` to send untagged,
    /// `Some(Some(vid))` to send tagged.
    #[inline]
    pub fn egress(&self, vid: Vid) -> Option<Option<Vid>> {
        match self {
            VlanMode::Access(v) => (*v == vid).then_some(None),
            VlanMode::Trunk { native, allowed } => {
                if *native == Some(vid) {
                    Some(None)
                } else if allowed.contains(vid) {
                    Some(Some(vid))
                } else {
                    None
                }
            }
        }
    }

    /// Is the port a member of `vid` at all?
    #[inline]
    pub fn is_member(&self, vid: Vid) -> bool {
        self.egress(vid).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_ops() {
        let mut s = VlanSet::empty();
        assert!(s.is_empty());
        s.insert(10);
        s.insert(4094);
        assert!(s.contains(10) && s.contains(4094) && !s.contains(11));
        s.remove(10);
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![4094]);
        let a = VlanSet::all();
        assert!(!a.contains(0) && !a.contains(4095) && a.contains(1) && a.contains(4094));
    }

    #[test]
    fn access_port() {
        let m = VlanMode::Access(20);
        assert_eq!(m.classify(None), Ok(20));
        assert_eq!(m.classify(Some(0)), Ok(20));
        assert_eq!(m.classify(Some(20)), Err(VlanReject::TaggedOnAccess));
        assert_eq!(m.egress(20), Some(None));
        assert_eq!(m.egress(21), None);
    }

    #[test]
    fn trunk_port() {
        let mut allowed = VlanSet::empty();
        allowed.insert(10);
        allowed.insert(20);
        let m = VlanMode::Trunk {
            native: Some(10),
            allowed: Box::new(allowed),
        };
        assert_eq!(m.classify(None), Ok(10));
        assert_eq!(m.classify(Some(20)), Ok(20));
        assert_eq!(m.classify(Some(30)), Err(VlanReject::NotAllowed));
        assert_eq!(m.classify(Some(4095)), Err(VlanReject::ReservedVid));
        assert_eq!(m.egress(10), Some(None));
        assert_eq!(m.egress(20), Some(Some(20)));
        assert_eq!(m.egress(30), None);
        let no_native = VlanMode::Trunk {
            native: None,
            allowed: Box::new(VlanSet::all()),
        };
        assert_eq!(
            no_native.classify(None),
            Err(VlanReject::UntaggedNotAllowed)
        );
    }
}
