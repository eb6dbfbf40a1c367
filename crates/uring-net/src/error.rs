//! Errors of the data plane's control surface. The datapath itself never returns errors:
//! everything that goes wrong with a frame is a counted drop (see [`crate::stats`]).

use std::io;

/// Why a data plane operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("io_uring setup failed: {0}")]
    Ring(#[source] io::Error),
    /// The kernel lacks an io_uring feature the data plane needs (see [`crate::probe`]).
    #[error(transparent)]
    Kernel(#[from] crate::probe::ProbeError),
    #[error("tap {name}: {op} failed: {source}")]
    Tap {
        name: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("afpacket {ifname}: {op} failed: {source}")]
    AfPacket {
        ifname: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("vxlan port {name}: {op} failed: {source}")]
    Vxlan {
        name: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("interface name {0:?} is empty or longer than 15 bytes")]
    BadIfName(String),
    #[error("buffer ring: {0}")]
    BufRing(#[source] io::Error),
    #[error("switch refused the port: {0}")]
    Switch(String),
    #[error("unknown port {0}")]
    UnknownPort(switch::PortId),
    #[error("worker thread: {0}")]
    Worker(String),
    #[error("data plane is shut down")]
    Shutdown,
    #[error("a guest TX queue still had frames in flight after {0:?}")]
    Timeout(std::time::Duration),
}

pub type Result<T> = std::result::Result<T, Error>;
