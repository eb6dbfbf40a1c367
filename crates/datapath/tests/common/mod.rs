//! Test support: the guest driver and test frames are vring-engine's (one copy, shared by
//! `#[path]`: crates/vring-engine/tests/common), the harness is this crate's.
#![allow(dead_code)]

#[path = "../../../vring-engine/tests/common/frames.rs"]
pub mod frames;
#[path = "../../../vring-engine/tests/common/guest.rs"]
mod guest;
pub mod harness;

pub use guest::*;
