//! IGMP/MLD snooping (RFC 4541) for the switch: which ports a multicast data frame goes
//! to, learnt from IGMPv1/v2/v3 (RFC 1112, 2236, 3376) and MLDv1/v2 (RFC 2710, 3810)
//! reports and leaves; router ports from queries, PIM hellos (RFC 7761) and MRD
//! advertisements (RFC 4286) or configuration; an optional querier with election.
//!
//! Sans-I/O like the rest of the crate: time comes in as [`Millis`](crate::Millis), queries
//! go out as frames for the caller to send. See docs/design/mcast.md for the design and
//! the exact calls the decision path makes.
//!
//! Modules: [`addr`] (group classes), [`csum`] (RFC 1071), [`wire`] (parsing),
//! [`build`] (queries and test reports), [`config`], `querier` (election), `mdb` (state
//! machine), `snooper` (sharing between workers).

pub mod addr;
pub mod build;
pub mod config;
pub mod csum;
mod mdb;
mod querier;
mod snooper;
pub mod wire;

#[cfg(test)]
mod tests;

pub use addr::{Family, GroupAddr, NodeAddr};
pub use build::QueryKind;
pub use config::{
    QuerierConfig, RouterMode, SnoopConfig, Timers, UnregisteredPolicy, VlanSnoopConfig,
};
pub use mdb::{
    ControlForward, McastEgress, MdbEntry, QuerierStatus, QueryToSend, RouterEntry, SnoopAction,
    SnoopStats, MAX_INCLUDE_SOURCES, PUBLISH_BURST, PUBLISH_REFILL_MS,
};
pub use snooper::{McastView, SnoopDrop, Snooper};
pub use wire::{dst_group, is_control, WireError};
