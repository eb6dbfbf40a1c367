//! The `ringswitch ctl` client: one request line out, one response line back.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::control::{Request, Response};

/// How long to wait for the daemon's answer; every request is answered from memory.
pub const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no control socket at {0}: is `ringswitch run` running? (use --ctl PATH for \
         another socket)"
    )]
    NotFound(PathBuf),
    #[error("{0}: nothing listens on this control socket (the daemon is gone; remove the file)")]
    Refused(PathBuf),
    #[error(
        "{0}: permission denied: the control socket is mode 0600, run ctl as the daemon's \
         user (root)"
    )]
    Denied(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}: the daemon closed the connection without answering")]
    NoAnswer(PathBuf),
    #[error("{path}: unreadable answer from the daemon ({error}): {line}")]
    BadAnswer {
        path: PathBuf,
        error: String,
        line: String,
    },
}

/// Sends `req` and returns the raw response line (for `--json`) and its parsed form.
pub fn call(path: &Path, req: &Request) -> Result<(String, Response), ClientError> {
    let p = || path.to_path_buf();
    let io_err = |source| ClientError::Io { path: p(), source };
    let mut s = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ClientError::NotFound(p()),
        io::ErrorKind::ConnectionRefused => ClientError::Refused(p()),
        io::ErrorKind::PermissionDenied => ClientError::Denied(p()),
        _ => io_err(e),
    })?;
    s.set_read_timeout(Some(TIMEOUT)).map_err(io_err)?;
    s.set_write_timeout(Some(TIMEOUT)).map_err(io_err)?;
    let mut line = serde_json::to_string(req).map_err(|e| io_err(io::Error::other(e)))?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io_err)?;
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).map_err(io_err)?;
    if answer.is_empty() {
        return Err(ClientError::NoAnswer(p()));
    }
    let answer = answer.trim_end().to_string();
    let parsed = serde_json::from_str(&answer).map_err(|e| ClientError::BadAnswer {
        path: p(),
        error: e.to_string(),
        line: answer.chars().take(200).collect(),
    })?;
    Ok((answer, parsed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::server::tests::{tmpdir, Fake};
    use crate::ctl::server::{CtlListener, CtlServer};
    use std::sync::Arc;

    #[test]
    fn connect_errors_say_what_to_do() {
        let dir = tmpdir("client");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.sock");
        let e = call(&path, &Request::Ports).unwrap_err().to_string();
        assert!(e.contains("is `ringswitch run` running?"), "{e}");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let e = call(&path, &Request::Ports).unwrap_err().to_string();
        assert!(e.contains("nothing listens"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn call_round_trip() {
        let dir = tmpdir("call");
        let path = dir.join("ctl.sock");
        let _server = CtlServer::start(
            CtlListener::bind(&path).unwrap(),
            Arc::new(Fake::with_port("rs0")),
        )
        .unwrap();
        let (line, r) = call(&path, &Request::Fdb).unwrap();
        assert!(line.starts_with("{\"result\":\"fdb\""), "{line}");
        assert!(matches!(r, Response::Fdb { entries } if entries.len() == 1));
        let (_, r) = call(&path, &Request::DelPort { name: "rs0".into() }).unwrap();
        assert_eq!(r, Response::Ok);
        let (_, r) = call(&path, &Request::Ports).unwrap();
        assert!(matches!(r, Response::Ports { ports } if ports.is_empty()));
        drop(_server);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
