//! Errors of the e2e harness. Every variant that comes from waiting on a child carries
//! the tail of that child's output, so a failing test shows what the guest or daemon said.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: no line matching {pattern:?} within {timeout:?}; output tail:\n{tail}")]
    Timeout {
        what: String,
        pattern: String,
        timeout: Duration,
        tail: String,
    },
    #[error("{what} exited before printing {pattern:?}; output tail:\n{tail}")]
    Exited {
        what: String,
        pattern: String,
        tail: String,
    },
    #[error("`{cmd}` failed ({status}):\n{output}")]
    Command {
        cmd: String,
        status: String,
        output: String,
    },
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
}

pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// Adds context to an io::Error.
pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HarnessError {
    let what = what.into();
    move |source| HarnessError::Io { what, source }
}
