//! # ringswitch-switch: the sans-I/O L2 switch
//!
//! No sockets, no threads, no clock: callers hand in frames (virtio-net header + Ethernet
//! bytes) and the current time, and get back a [`Decision`]. Everything a forwarding rule
//! does is therefore testable with plain byte slices (quinn-proto / smoltcp style).
//!
//! Modules, one concern each:
//! - [`mac`], [`vnet`], [`vlan`]: addresses, the virtio-net header, VLAN sets and modes;
//! - [`filter`]: per-port receive filter as set through the virtio-net ctrl vq;
//! - [`port`]: port identity, kind, offload capabilities and configuration;
//! - [`portset`]: fixed-size port bitmaps for flooding;
//! - [`time`]: the caller's clock as plain milliseconds.

pub mod filter;
pub mod mac;
pub mod port;
pub mod portset;
pub mod time;
pub mod vlan;
pub mod vnet;

pub use filter::RxFilter;
pub use mac::Mac;
pub use port::{Offloads, PortConfig, PortId, PortKind, MAX_PORTS};
pub use portset::PortSet;
pub use time::Millis;
pub use vlan::{Vid, VlanMode, VlanSet};
pub use vnet::VnetHdr;
