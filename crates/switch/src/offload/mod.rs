//! Offload adaptation at egress: per frame and destination port, pass the virtio-net
//! header through, complete the checksum, or segment in software — producing the same wire
//! bytes Linux's own GSO would (see `docs/design/offload.md`).
//!
//! Flow for one frame (header `hdr`, bytes `frame`) toward a port with [`Offloads`](crate::port::Offloads) `dest`:
//!
//! ```
//! use switch::offload::{plan, Egress, Frame, MAX_HDR};
//! use switch::{Chunk, Offloads, VnetHdr};
//! # let bytes = vec![0u8; 60];
//! let parts = [Chunk::from(&bytes[..])];
//! let frame = Frame::new(&parts);
//! match plan(&VnetHdr::default(), &frame, &Offloads::NONE) {
//!     Ok(Egress::PassThrough { hdr }) => { /* write hdr + frame as is */ let _ = hdr; }
//!     Ok(Egress::CompleteCsum(job)) => { /* write with job.value(&frame) at job.at */ let _ = job; }
//!     Ok(Egress::Segment(p)) => {
//!         let mut seg = p.segments(frame).unwrap();
//!         let mut h = [0u8; MAX_HDR];
//!         while let Some(s) = seg.next_into(&mut h) {
//!             // iovecs: &h[..s.hdr_len], then frame.slices(s.payload)
//!             let _ = s;
//!         }
//!     }
//!     Err(reason) => { /* count the drop */ let _ = reason; }
//! }
//! ```
//!
//! Modules: [`adapt`] (one frame toward one destination, the entry point of every
//! delivery path), [`csum`] (RFC 1071), [`frame`] (multi-slice source), [`caps`] (capabilities
//! from negotiation), [`plan`](mod@plan) (validation and decision), [`gso`] (segmenter),
//! [`drop`](mod@drop) (drop reasons and counters).

pub mod adapt;
pub mod caps;
pub mod csum;
pub mod drop;
pub mod frame;
pub mod gso;
pub mod plan;

pub use adapt::{adapt, patched, Parts, Undelivered, MAX_PARTS};
pub use csum::{checksum, Csum};
pub use drop::{DropCounters, OffloadDrop};
pub use frame::Frame;
pub use gso::{segment_to_vecs, GsoKind, GsoPlan, Segment, Segmenter};
pub use plan::{
    passes_unchanged, plan, CsumJob, Egress, GSO_MAX_SEGMENTS, MAX_HDR, USO_MAX_SEGMENTS,
};

#[cfg(test)]
mod tests;
