//! What the running kernel's io_uring offers, checked once when the data plane starts.
//!
//! Why: the workers use io_uring features from many kernel releases (the newest,
//! `min_wait`, is from Linux 6.12). On an older kernel they would fail late and obscurely
//! — a worker ring that cannot be built, or EINVAL on the first multishot read. [`probe`] tries each feature the way the workers use it, on throw-away rings in
//! the calling thread, and returns either the [`Features`] the data plane may use or a
//! [`ProbeError::Missing`] naming the first required feature that is absent and the
//! kernel release that added it.
//!
//! Required (no fallback), with the release that added each:
//! - a ring with SINGLE_ISSUER (6.0) | DEFER_TASKRUN (6.1) | TASKRUN_FLAG (5.19), the
//!   worker's setup; IORING_FEAT_EXT_ARG (5.11, timed waits); IORING_REGISTER_PROBE (5.6);
//! - provided-buffer rings (IORING_REGISTER_PBUF_RING, 5.19);
//! - the opcodes READ_MULTISHOT (6.7, tap receive), RECVMSG (5.3; its multishot form,
//!   AF_PACKET receive, is from 6.0 and so implied by READ_MULTISHOT), READ/WRITE (5.6),
//!   WRITEV (5.1), ASYNC_CANCEL (5.5).
//!
//! Optional (the data plane falls back, and [`Features`] says which):
//! - IORING_FEAT_MIN_TIMEOUT (6.12, `min_wait` batching waits) → workers wake for every
//!   completion (`batch_us` treated as 0).
//!
//! No registered (fixed) buffers: guest frames are written with writev from our header
//! and head copy plus the guest's pages, and guest memory is never pinned.
//!
//! So the minimum kernel is [`MIN_KERNEL`] (6.7); all features need [`FULL_KERNEL`] (6.12).

use io_uring::{opcode, IoUring, Probe};
use std::io;

use crate::sys::mmap::Mapping;

/// The oldest kernel the data plane runs on (with the fallbacks below).
pub const MIN_KERNEL: &str = "6.7";
/// The oldest kernel with every feature the data plane can use.
pub const FULL_KERNEL: &str = "6.12";

/// An io_uring feature the data plane uses, with the kernel release that added it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// io_uring_setup itself.
    IoUring,
    /// IORING_SETUP_TASKRUN_FLAG: a poll pass sees whether entering would run anything.
    TaskrunFlag,
    /// IORING_SETUP_SINGLE_ISSUER.
    SingleIssuer,
    /// IORING_SETUP_DEFER_TASKRUN.
    DeferTaskrun,
    /// IORING_FEAT_EXT_ARG: waits with a timeout.
    ExtArg,
    /// IORING_REGISTER_PROBE: which opcodes exist.
    Probe,
    /// Provided-buffer rings (IORING_REGISTER_PBUF_RING).
    BufRing,
    /// An opcode, by name.
    Opcode(&'static str),
    /// IORING_FEAT_MIN_TIMEOUT: `min_wait` in io_uring_enter's extended argument.
    MinWait,
}

impl Feature {
    /// The Linux release that added the feature.
    pub fn since(self) -> &'static str {
        match self {
            Feature::IoUring => "5.1",
            Feature::TaskrunFlag => "5.19",
            Feature::SingleIssuer => "6.0",
            Feature::DeferTaskrun => "6.1",
            Feature::ExtArg => "5.11",
            Feature::Probe => "5.6",
            Feature::BufRing => "5.19",
            Feature::Opcode(name) => OPCODES
                .iter()
                .find(|o| o.name == name)
                .map_or("?", |o| o.since),
            Feature::MinWait => "6.12",
        }
    }
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match *self {
            Feature::IoUring => "io_uring",
            Feature::TaskrunFlag => "IORING_SETUP_TASKRUN_FLAG",
            Feature::SingleIssuer => "IORING_SETUP_SINGLE_ISSUER",
            Feature::DeferTaskrun => "IORING_SETUP_DEFER_TASKRUN",
            Feature::ExtArg => "IORING_FEAT_EXT_ARG",
            Feature::Probe => "IORING_REGISTER_PROBE",
            Feature::BufRing => "provided-buffer rings (IORING_REGISTER_PBUF_RING)",
            Feature::Opcode(name) => name,
            Feature::MinWait => "min_wait (IORING_FEAT_MIN_TIMEOUT)",
        };
        f.write_str(name)
    }
}

/// Why the data plane cannot run on this kernel.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "this kernel's io_uring lacks {feature}, added in Linux {since} (ringswitch needs \
         Linux ≥ {min}, ≥ {full} for every feature)",
        since = .feature.since(),
        min = MIN_KERNEL,
        full = FULL_KERNEL
    )]
    Missing {
        feature: Feature,
        #[source]
        source: Option<io::Error>,
    },
    #[error("io_uring is disabled on this system (sysctl kernel.io_uring_disabled): {0}")]
    Disabled(#[source] io::Error),
    #[error("probing io_uring: {what} failed: {source}")]
    Failed {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The optional features this kernel has (every required one is present, or [`probe`]
/// returned an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `min_wait` batching waits (6.12). Without: `batch_us` is treated as 0.
    pub min_wait: bool,
}

impl Features {
    /// Every feature present (what a kernel ≥ [`FULL_KERNEL`] reports).
    pub const ALL: Features = Features { min_wait: true };

    /// The optional features that are missing, i.e. the fallbacks in use.
    pub fn missing(&self) -> Vec<Feature> {
        let mut v = Vec::new();
        if !self.min_wait {
            v.push(Feature::MinWait);
        }
        v
    }
}

struct Op {
    code: u8,
    name: &'static str,
    since: &'static str,
}

/// The opcodes the workers submit, all required.
const OPCODES: [Op; 6] = [
    Op {
        code: opcode::Writev::CODE,
        name: "IORING_OP_WRITEV",
        since: "5.1",
    },
    Op {
        code: opcode::RecvMsg::CODE,
        name: "IORING_OP_RECVMSG",
        since: "5.3",
    },
    Op {
        code: opcode::AsyncCancel::CODE,
        name: "IORING_OP_ASYNC_CANCEL",
        since: "5.5",
    },
    Op {
        code: opcode::Read::CODE,
        name: "IORING_OP_READ",
        since: "5.6",
    },
    Op {
        code: opcode::Write::CODE,
        name: "IORING_OP_WRITE",
        since: "5.6",
    },
    Op {
        code: opcode::ReadMulti::CODE,
        name: "IORING_OP_READ_MULTISHOT",
        since: "6.7",
    },
];

fn missing(feature: Feature, source: Option<io::Error>) -> ProbeError {
    ProbeError::Missing { feature, source }
}

fn is_einval(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
    )
}

/// A ring set up as the workers set theirs up, or which flag the kernel refused.
fn worker_ring() -> Result<IoUring, ProbeError> {
    let full = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .build(8);
    let e = match full {
        Ok(r) => return Ok(r),
        Err(e) => e,
    };
    match e.raw_os_error() {
        Some(libc::ENOSYS) => return Err(missing(Feature::IoUring, Some(e))),
        Some(libc::EPERM) => return Err(ProbeError::Disabled(e)),
        Some(libc::EINVAL) => {}
        _ => {
            return Err(ProbeError::Failed {
                what: "io_uring_setup",
                source: e,
            })
        }
    }
    // Which flag? Each one alone, oldest first (DEFER_TASKRUN needs SINGLE_ISSUER).
    if let Err(e) = IoUring::<io_uring::squeue::Entry>::builder()
        .setup_taskrun_flag()
        .build(8)
    {
        return Err(missing(Feature::TaskrunFlag, Some(e)));
    }
    if let Err(e) = IoUring::<io_uring::squeue::Entry>::builder()
        .setup_single_issuer()
        .build(8)
    {
        return Err(missing(Feature::SingleIssuer, Some(e)));
    }
    Err(missing(Feature::DeferTaskrun, Some(e)))
}

/// Checks every io_uring feature the data plane uses; see the module documentation.
/// Runs in the calling thread and leaves nothing behind (a few throw-away rings).
pub fn probe() -> Result<Features, ProbeError> {
    let ring = worker_ring()?;
    if !ring.params().is_feature_ext_arg() {
        return Err(missing(Feature::ExtArg, None));
    }
    let submitter = ring.submitter();

    let mut ops = Probe::new();
    submitter
        .register_probe(&mut ops)
        .map_err(|e| missing(Feature::Probe, Some(e)))?;
    if let Some(op) = OPCODES.iter().find(|o| !ops.is_supported(o.code)) {
        return Err(missing(Feature::Opcode(op.name), None));
    }

    let page = Mapping::anonymous(4096).map_err(|source| ProbeError::Failed {
        what: "mmap",
        source,
    })?;
    // SAFETY: the mapping holds 8 entries of 16 bytes, is page-aligned and outlives the
    // registration (unregistered below, and the ring is dropped before `page`).
    let buf_ring = unsafe { submitter.register_buf_ring_with_flags(page.addr(), 8, 0, 0) };
    match buf_ring {
        Ok(()) => {
            let _ = submitter.unregister_buf_ring(0);
        }
        Err(e) if is_einval(&e) => return Err(missing(Feature::BufRing, Some(e))),
        Err(source) => {
            return Err(ProbeError::Failed {
                what: "a provided-buffer ring",
                source,
            })
        }
    }

    let features = Features {
        min_wait: ring.params().is_feature_min_timeout(),
    };
    drop(ring); // before the page its buffer ring was registered on
    drop(page);
    Ok(features)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The development and CI kernel (6.18) has everything.
    #[test]
    fn this_kernel_has_every_feature() {
        let f = probe().expect("probe");
        assert_eq!(f, Features::ALL, "missing: {:?}", f.missing());
        assert!(f.missing().is_empty());
    }

    #[test]
    fn fallbacks_and_messages() {
        let f = Features { min_wait: false };
        assert_eq!(f.missing(), vec![Feature::MinWait]);
        assert_eq!(Feature::Opcode("IORING_OP_READ_MULTISHOT").since(), "6.7");
        assert_eq!(Feature::Opcode("IORING_OP_WRITEV").since(), "5.1");
        assert_eq!(Feature::MinWait.since(), FULL_KERNEL);
        let e = missing(Feature::DeferTaskrun, None).to_string();
        assert_eq!(
            e,
            "this kernel's io_uring lacks IORING_SETUP_DEFER_TASKRUN, added in Linux 6.1 \
             (ringswitch needs Linux ≥ 6.7, ≥ 6.12 for every feature)"
        );
        // The newest required feature is the minimum kernel.
        let newest = OPCODES
            .iter()
            .map(|o| o.since)
            .max_by(|a, b| ver(a).cmp(&ver(b)));
        assert_eq!(newest, Some(MIN_KERNEL));
    }

    fn ver(s: &str) -> (u32, u32) {
        let (a, b) = s.split_once('.').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    }
}
