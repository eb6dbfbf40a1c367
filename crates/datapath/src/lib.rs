//! # datapath: vhost-user devices on the io_uring data plane
//!
//! The seam between [`vring_engine`] (the vhost-user virtio-net device) and [`uring_net`]
//! (the io_uring workers), with the switch deciding in between. It lives in a library,
//! not in the daemon, so that the one guest-memory data path the daemon runs is also the
//! one its tests run: a vhost-user port is wired by [`Glue::add_vhost_user_port`] here,
//! and the integration tests (tests/) drive guests through that same function and a real
//! [`uring_net::Dataplane`].
//!
//! - [`Glue`] (glue.rs): device events → switch port state; live TX rings lent to the
//!   workers; switch-originated frames flooded by [`Glue::inject`];
//! - [`GuestSink`] (sink.rs): a guest's RX side for the workers (`uring_net::GuestRx`);
//! - [`GuestTx`] (tx.rs): a lent TX ring as a worker's queue (`uring_net::GuestTxQueue`);
//! - port.rs: creating a vhost-user port, with undo on error.
//!
//! Offload adaptation of an outgoing frame is pure and lives in `switch::offload::adapt`.

mod glue;
mod port;
mod sink;
mod tx;

pub use glue::Glue;
pub use port::Error;
pub use sink::GuestSink;
pub use tx::GuestTx;
