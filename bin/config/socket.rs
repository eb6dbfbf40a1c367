//! Unix socket paths we are about to listen on: refuse one that a live process holds,
//! remove a stale one left by a crash.
//!
//! "Live" is decided the only reliable way: connect(2) succeeds. A socket file whose
//! connect is refused has no listener (its owner died without unlinking it), so binding
//! over it after removal takes nothing away from anyone.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// What is at a socket path now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketState {
    Absent,
    /// A socket file nobody listens on.
    Stale,
    /// A socket a process accepts connections on.
    Live,
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "{path}: held by a live process (a test connection succeeded): stop that process \
         or choose another path for {what}"
    )]
    InUse { path: PathBuf, what: String },
    #[error("{path}: exists and is not a socket: remove it or choose another path for {what}")]
    NotASocket { path: PathBuf, what: String },
    #[error("{path}: {source} (checking the socket for {what})")]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: io::Error,
    },
}

/// Looks at `path` without changing anything.
pub fn probe(path: &Path, what: &str) -> Result<SocketState, SocketError> {
    let io_err = |source| SocketError::Io {
        path: path.to_path_buf(),
        what: what.to_string(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(SocketState::Absent),
        Err(e) => return Err(io_err(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket {
            path: path.to_path_buf(),
            what: what.to_string(),
        });
    }
    match UnixStream::connect(path) {
        Ok(_) => Ok(SocketState::Live),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(SocketState::Stale),
        Err(e) => Err(io_err(e)),
    }
}

/// Makes `path` ready to bind: error if live, removes it if stale. Returns what was
/// found so the caller can log a removal.
pub fn prepare_listen_path(path: &Path, what: &str) -> Result<SocketState, SocketError> {
    let state = probe(path, what)?;
    match state {
        SocketState::Live => Err(SocketError::InUse {
            path: path.to_path_buf(),
            what: what.to_string(),
        }),
        SocketState::Stale => {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(SocketError::Io {
                        path: path.to_path_buf(),
                        what: what.to_string(),
                        source,
                    })
                }
            }
            tracing::info!(path = %path.display(), "removed stale socket for {what}");
            Ok(state)
        }
        SocketState::Absent => Ok(state),
    }
}

/// Removes `path` if it is a socket nobody listens on any more; used at shutdown for
/// sockets we listened on. A live socket (e.g. QEMU's, for a client-mode port) stays.
pub fn remove_if_stale(path: &Path) {
    if let Ok(SocketState::Stale) = probe(path, "cleanup") {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rs-sock-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn absent_live_stale_and_not_a_socket() {
        let d = tmp("states");
        let p = d.join("a.sock");
        assert_eq!(probe(&p, "t").unwrap(), SocketState::Absent);

        let l = UnixListener::bind(&p).unwrap();
        assert_eq!(probe(&p, "t").unwrap(), SocketState::Live);
        let e = prepare_listen_path(&p, "port x").unwrap_err().to_string();
        assert!(e.contains("live process") && e.contains("port x"), "{e}");
        remove_if_stale(&p);
        assert!(p.exists(), "a live socket must not be removed");

        drop(l); // std does not unlink: the file stays, nobody listens
        assert_eq!(probe(&p, "t").unwrap(), SocketState::Stale);
        assert_eq!(prepare_listen_path(&p, "t").unwrap(), SocketState::Stale);
        assert!(!p.exists());

        let f = d.join("file");
        std::fs::write(&f, b"x").unwrap();
        let e = prepare_listen_path(&f, "t").unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert!(f.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
