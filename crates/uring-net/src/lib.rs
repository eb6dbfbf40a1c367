//! # uring-net: the io_uring data plane of ringswitch
//!
//! Worker threads, each with one io_uring (SINGLE_ISSUER|DEFER_TASKRUN), move frames
//! between tap devices, AF_PACKET sockets and (through [`guest::GuestTxQueue`]) guest
//! queues, asking the sans-I/O [`switch::Switch`] where each frame goes. A worker sleeps in
//! exactly one `io_uring_enter` per batch; see docs/design/uring-net.md for the shape and
//! the measured syscalls per packet.
//!
//! ```no_run
//! use std::sync::Arc;
//! use switch::{Switch, SwitchConfig};
//! use uring_net::{Dataplane, DataplaneConfig, PortSpec};
//! let sw = Arc::new(Switch::new(SwitchConfig::default()));
//! let dp = Dataplane::new(sw, DataplaneConfig::default()).unwrap();
//! let a = dp.add_port(PortSpec::afpacket("veth-a")).unwrap();
//! let b = dp.add_port(PortSpec::tap("rs-tap0")).unwrap();
//! println!("{:?}", dp.stats());
//! dp.shutdown().unwrap();
//! ```
//!
//! Modules, one concern each:
//! - [`dataplane`]: public API (workers, ports, guest queues, stats);
//! - `worker`: the per-thread ring loop and forwarding;
//! - [`bufring`]: provided-buffer rings for multishot receive;
//! - [`guest`]: the seam a vhost-user TX queue plugs into;
//! - [`probe`]: the kernel's io_uring features, checked at start-up (minimum Linux 6.7);
//! - [`sockstats`]: kernel-side drop counters of host ports, read by the stats reader;
//! - [`sys`]: tap, AF_PACKET, ifreq, mmap wrappers;
//! - [`stats`]: single-writer counters and snapshots;
//! - [`vxlan`]: VXLAN ports' sockets, shared state, decapsulation and encapsulation
//!   (RFC 7348).

pub mod bufring;
pub mod dataplane;
pub mod error;
pub mod flow;
pub mod guest;
pub mod probe;
mod share;
pub mod sockstats;
mod stage;
pub mod stats;
pub mod sys;
pub mod vxlan;
mod worker;

pub use dataplane::{Dataplane, DataplaneConfig, PortSpec};
pub use error::{Error, Result};
pub use guest::{Delivery, FrameBatch, GuestFrame, GuestRx, GuestTxQueue, RxFrame};
pub use probe::{Features, ProbeError};
pub use stats::{PortStats, Stats, WorkerStatsSnapshot};
pub use vxlan::{VxlanConfig, VxlanPort, VxlanStats};
pub use worker::QueueKind;
