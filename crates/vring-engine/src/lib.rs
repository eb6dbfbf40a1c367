//! # vring-engine: the vhost-user virtio-net device
//!
//! One [`NetDevice`] per vhost-user port (virtio 1.2 §5.1 "Network Device"), built on
//! rust-vmm: vhost-user-backend runs the protocol and the kick-reading worker threads,
//! virtio-queue the split rings, vm-memory the guest memory. The device validates every
//! descriptor chain itself ([`chain`]), lends its live TX rings to the data plane
//! ([`TxRing`]: popped, written from guest memory and completed there), writes frames
//! other ports [`NetDevice::deliver`] into its RX queues with one copy, and applies
//! control-queue commands to the port's [`switch::RxFilter`] and offloads through
//! [`PortEvents`]. [`VhostUserPort`] serves the socket (server or client
//! mode) and survives frontend reconnects. See docs/design/vring-engine.md.

pub mod api;
pub mod chain;
pub mod config_space;
pub mod counters;
pub mod ctrl;
mod ctrlq;
pub mod device;
pub mod dirtylog;
mod exitfd;
pub mod features;
pub mod frontend_checks;
pub mod options;
pub mod packed;
pub mod port;
mod relay;
mod rx;
mod sigbus;
mod split;
mod tx;
pub mod txring;
mod txwindow;
pub mod vring;

pub use api::{PortEvents, RxDrop};
pub use counters::{Drop as DropReason, FrontendStats, QueueStats};
pub use device::NetDevice;
pub use options::{OptionsError, PortOptions, SocketMode, MAX_QUEUE_SIZE};
pub use port::{PortError, VhostUserPort};
pub use rx::RxBurst;
pub use txring::{TxPopped, TxRing};
