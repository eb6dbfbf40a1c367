//! Why a frame's offload metadata was refused, and per-reason counters.
//!
//! Everything here is guest- or wire-controlled: bad metadata is a counted drop, never a
//! panic and never an access outside the frame.

/// A reason to drop a frame at egress offload adaptation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum OffloadDrop {
    #[error("unknown or unsupported gso_type")]
    UnknownGsoType = 0,
    #[error("gso_size is 0 with a GSO type")]
    GsoSizeZero,
    #[error("GSO frame without VIRTIO_NET_HDR_F_NEEDS_CSUM (virtio 1.2 §5.1.6.2)")]
    GsoWithoutCsum,
    #[error("hdr_len past the end of the frame")]
    HdrLenPastFrame,
    #[error("csum_start/csum_offset past the end of the frame")]
    CsumPastFrame,
    #[error("frame too short for its L2/L3/L4 headers")]
    Truncated,
    #[error("GSO frame is not IPv4/IPv6")]
    NotIp,
    #[error("malformed IP header")]
    BadIpHeader,
    #[error("IP length does not match the frame length")]
    IpLengthMismatch,
    #[error("GSO of an IP fragment, jumbogram or unsupported extension header")]
    IpUnsupported,
    #[error("GSO type does not match the packet's IP version or L4 protocol")]
    GsoTypeMismatch,
    #[error("csum_start is not the L4 header offset")]
    CsumStartMismatch,
    #[error("csum_offset is not the L4 checksum field")]
    CsumOffsetMismatch,
    #[error("malformed TCP header")]
    BadTcpHeader,
    #[error("headers longer than we segment")]
    HeadersTooLong,
    #[error("UFO gso_size not a multiple of 8, or IPv6 UFO with extension headers")]
    UfoUnsupported,
    #[error("more segments than allowed")]
    TooManySegments,
    #[error("destination buffer too small for the segment")]
    DstTooSmall,
}

impl OffloadDrop {
    /// Number of reasons (size of [`DropCounters`]).
    pub const COUNT: usize = OffloadDrop::DstTooSmall as usize + 1;

    /// Every reason, in counter order.
    pub const ALL: [OffloadDrop; OffloadDrop::COUNT] = [
        OffloadDrop::UnknownGsoType,
        OffloadDrop::GsoSizeZero,
        OffloadDrop::GsoWithoutCsum,
        OffloadDrop::HdrLenPastFrame,
        OffloadDrop::CsumPastFrame,
        OffloadDrop::Truncated,
        OffloadDrop::NotIp,
        OffloadDrop::BadIpHeader,
        OffloadDrop::IpLengthMismatch,
        OffloadDrop::IpUnsupported,
        OffloadDrop::GsoTypeMismatch,
        OffloadDrop::CsumStartMismatch,
        OffloadDrop::CsumOffsetMismatch,
        OffloadDrop::BadTcpHeader,
        OffloadDrop::HeadersTooLong,
        OffloadDrop::UfoUnsupported,
        OffloadDrop::TooManySegments,
        OffloadDrop::DstTooSmall,
    ];

    /// Counter index.
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable short name for stats output.
    pub fn name(self) -> &'static str {
        match self {
            OffloadDrop::UnknownGsoType => "unknown_gso_type",
            OffloadDrop::GsoSizeZero => "gso_size_zero",
            OffloadDrop::GsoWithoutCsum => "gso_without_csum",
            OffloadDrop::HdrLenPastFrame => "hdr_len_past_frame",
            OffloadDrop::CsumPastFrame => "csum_past_frame",
            OffloadDrop::Truncated => "truncated",
            OffloadDrop::NotIp => "not_ip",
            OffloadDrop::BadIpHeader => "bad_ip_header",
            OffloadDrop::IpLengthMismatch => "ip_length_mismatch",
            OffloadDrop::IpUnsupported => "ip_unsupported",
            OffloadDrop::GsoTypeMismatch => "gso_type_mismatch",
            OffloadDrop::CsumStartMismatch => "csum_start_mismatch",
            OffloadDrop::CsumOffsetMismatch => "csum_offset_mismatch",
            OffloadDrop::BadTcpHeader => "bad_tcp_header",
            OffloadDrop::HeadersTooLong => "headers_too_long",
            OffloadDrop::UfoUnsupported => "ufo_unsupported",
            OffloadDrop::TooManySegments => "too_many_segments",
            OffloadDrop::DstTooSmall => "dst_too_small",
        }
    }
}

/// Per-reason drop counters. One per worker (plain integers, no sharing on the hot
/// path); the stats reader sums them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; OffloadDrop::COUNT],
}

impl DropCounters {
    #[inline]
    pub fn record(&mut self, d: OffloadDrop) {
        self.counts[d.index()] += 1;
    }

    #[inline]
    pub fn get(&self, d: OffloadDrop) -> u64 {
        self.counts[d.index()]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(name, count)` for every reason.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        OffloadDrop::ALL
            .iter()
            .map(|d| (d.name(), self.counts[d.index()]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_named() {
        for (i, d) in OffloadDrop::ALL.iter().enumerate() {
            assert_eq!(d.index(), i);
            assert!(!d.name().is_empty());
        }
        let mut c = DropCounters::default();
        c.record(OffloadDrop::GsoSizeZero);
        c.record(OffloadDrop::GsoSizeZero);
        assert_eq!(c.get(OffloadDrop::GsoSizeZero), 2);
        assert_eq!(c.total(), 2);
        assert_eq!(c.iter().count(), OffloadDrop::COUNT);
    }
}
