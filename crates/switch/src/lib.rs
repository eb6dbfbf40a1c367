//! # ringswitch-switch: the sans-I/O L2 switch
//!
//! No sockets, no threads, no clock: callers hand in frames (virtio-net header + Ethernet
//! bytes) and the current time, and get back a [`Decision`]. Everything a forwarding rule
//! does is therefore testable with plain byte slices (quinn-proto / smoltcp style).
//!
//! ```
//! use switch::{Decision, Millis, PortConfig, PortKind, Switch, SwitchConfig, VnetHdr};
//! let sw = Switch::new(SwitchConfig::default());
//! let a = sw.add_port(PortConfig::new("a", PortKind::Tap)).unwrap();
//! let b = sw.add_port(PortConfig::new("b", PortKind::Tap)).unwrap();
//! let mut frame = vec![0xff; 6]; // broadcast
//! frame.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x88, 0xb5]); // src, local EtherType
//! frame.extend_from_slice(&[0; 46]);
//! let view = sw.view(); // one per batch
//! match view.decide(a, &VnetHdr::default(), &frame, frame.len(), Millis(0)) {
//!     Decision::Forward(f) => assert_eq!(f.ports.only(), Some(b)),
//!     Decision::Drop(r) => panic!("dropped: {r}"),
//! }
//! ```
//!
//! Modules, one concern each:
//! - [`bytes`]: frame pieces that may be guest memory ([`Chunk`]: copied out, never
//!   borrowed), and a guest TX frame's pieces as the device hands them to the workers
//!   ([`bytes::Seg`], [`bytes::MAX_SEGS`], [`bytes::HEAD_COPY`], [`bytes::skip_segs`]);
//! - [`mac`], [`vnet`], [`vlan`]: addresses, the virtio-net header, VLAN sets and modes;
//! - [`frame`]: the one-pass frame view (L2/L3/L4 offsets);
//! - [`filter`]: per-port receive filter as set through the virtio-net ctrl vq;
//! - [`port`]: port identity, kind, offload capabilities and configuration;
//! - [`portset`]: fixed-size port bitmaps for flooding;
//! - [`fdb`]: the lock-free-read forwarding database;
//! - [`switch`](mod@switch): port table and the forwarding decision;
//! - [`egress`]: per-destination VLAN tag rewriting without copying the frame;
//! - [`mtu`]: whether a frame (or each of a GSO frame's segments) fits a port's MTU;
//! - [`mcast`]: IGMP/MLD snooping (RFC 4541): MDB, router ports, optional querier;
//! - [`offload`]: checksum completion and software GSO at egress;
//! - [`reason`]: counted drop reasons; [`ratelimit`]: log lines a peer can trigger;
//! - [`security`]: source binding (MAC and ARP sender) and flood limits per port;
//! - [`time`]: the caller's clock as plain milliseconds;
//! - [`vxlan`]: the VXLAN header, inner flow hash and MAC → VTEP table (RFC 7348).

pub mod bytes;
pub mod egress;
pub mod fdb;
pub mod filter;
pub mod frame;
pub mod mac;
pub mod mcast;
pub mod mtu;
pub mod offload;
pub mod port;
pub mod portset;
pub mod ratelimit;
pub mod reason;
pub mod security;
pub mod switch;
pub mod time;
pub mod vlan;
pub mod vnet;
pub mod vxlan;

pub use bytes::Chunk;
pub use egress::Egress;
pub use fdb::{Fdb, FdbConfig, FdbEntry};
pub use filter::RxFilter;
pub use frame::FrameView;
pub use mac::Mac;
pub use port::{Offloads, PortConfig, PortId, PortKind, MAX_PORTS};
pub use portset::PortSet;
pub use reason::DropReason;
pub use switch::{
    needs_whole_frame, Decision, DecisionCache, Forward, FrameRef, PortStats, Switch, SwitchConfig,
    SwitchError, SwitchView,
};
pub use time::Millis;
pub use vlan::{Vid, VlanMode, VlanSet};
pub use vnet::VnetHdr;
