//! Test support shared by this crate's tests and, through `#[path]`, by
//! crates/datapath's: the guest driver ([`guest`]), test frames, and (here) a device-only
//! harness.
#![allow(dead_code)]

pub mod frames;
mod guest;
pub mod harness;

pub use guest::*;
