//! The running daemon's control socket: one JSON request line, one response line (the
//! protocol of `ringswitch ctl`, bin/control.rs `Request`/`Response`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{code, CniError, Result};

/// Every request is answered from the daemon's memory; adding a port opens sockets.
const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Daemon {
    socket: PathBuf,
}

impl Daemon {
    pub fn new(socket: PathBuf) -> Daemon {
        Daemon { socket }
    }

    /// Sends `request`, returns the response object; an `error` response is
    /// DAEMON_REFUSED with the daemon's message, an unreachable daemon TRY_AGAIN_LATER.
    fn call(&self, request: &Value) -> Result<Value> {
        let path = self.socket.display().to_string();
        let io = |e: std::io::Error| {
            CniError::new(code::IO_FAILURE, format!("control socket {path}"))
                .with_details(e.to_string())
        };
        let mut s = UnixStream::connect(&self.socket).map_err(|e| {
            CniError::new(
                code::TRY_AGAIN_LATER,
                format!("ringswitch is not reachable on {path}"),
            )
            .with_details(format!(
                "{e}: is `ringswitch run` running with --ctl {path}?"
            ))
        })?;
        s.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
        s.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
        let mut line = request.to_string();
        line.push('\n');
        s.write_all(line.as_bytes()).map_err(io)?;
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).map_err(io)?;
        let v: Value = serde_json::from_str(&answer).map_err(|e| {
            CniError::new(code::DECODE_FAILURE, format!("unreadable answer on {path}"))
                .with_details(format!("{e}: {}", answer.trim_end()))
        })?;
        if v["result"] == "error" {
            return Err(CniError::new(
                code::DAEMON_REFUSED,
                format!(
                    "ringswitch refused: {}",
                    v["message"].as_str().unwrap_or("?")
                ),
            ));
        }
        Ok(v)
    }

    /// `ctl add-port SPEC` with the `--port` syntax; the daemon validates every option.
    /// A refused spec is a configuration error (code 7).
    pub fn add_port(&self, spec: &str) -> Result<()> {
        match self.call(&json!({"cmd": "add-port", "spec": spec})) {
            Err(e) if e.code == code::DAEMON_REFUSED => Err(CniError {
                code: code::INVALID_CONFIG,
                details: Some(format!("port {spec}")),
                ..e
            }),
            r => r.map(|_| ()),
        }
    }

    /// Every port as `ctl ports` shows it.
    pub fn ports(&self) -> Result<Vec<Value>> {
        let v = self.call(&json!({"cmd": "ports"}))?;
        Ok(v["ports"].as_array().cloned().unwrap_or_default())
    }

    /// The port named `name` as `ctl ports` shows it, if there is one.
    pub fn port(&self, name: &str) -> Result<Option<Value>> {
        Ok(self.ports()?.into_iter().find(|p| p["name"] == name))
    }

    /// `ctl del-port NAME`; Ok(false) when there was no such port or no daemon (a daemon
    /// that is not running has no ports: it starts with its configured ones only).
    pub fn remove_port(&self, name: &str) -> Result<bool> {
        match self.port(name) {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(false),
            Err(e) if e.code == code::TRY_AGAIN_LATER => return Ok(false),
            Err(e) => return Err(e),
        }
        self.call(&json!({"cmd": "del-port", "name": name}))
            .map(|_| true)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// Answers each connection's request line with the next canned answer and records
    /// the requests.
    fn serve(answers: Vec<&'static str>) -> (PathBuf, std::thread::JoinHandle<Vec<Value>>) {
        let dir =
            std::env::temp_dir().join(format!("rs-cni-d-{}-{}", std::process::id(), answers.len()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ctl.sock");
        let l = UnixListener::bind(&path).unwrap();
        let h = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for a in answers {
                let (s, _) = l.accept().unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                seen.push(serde_json::from_str(&line).unwrap());
                (&s).write_all(format!("{a}\n").as_bytes()).unwrap();
            }
            let _ = std::fs::remove_dir_all(&dir);
            seen
        });
        (path, h)
    }

    #[test]
    fn requests_and_answers() {
        let (path, h) = serve(vec![
            r#"{"result":"port","port":{"name":"rs1"}}"#,
            r#"{"result":"error","message":"unknown key `x`"}"#,
            r#"{"result":"ports","ports":[{"name":"rs1","state":"up"}]}"#,
            r#"{"result":"ok"}"#,
            r#"{"result":"ports","ports":[]}"#,
        ]);
        let d = Daemon::new(path);
        d.add_port("afpacket:ifname=rs1,vlan=10").unwrap();
        let e = d.add_port("afpacket:ifname=rs1,x=1").unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("unknown key `x`"), "{e}");
        assert!(d.remove_port("rs1").unwrap());
        assert!(
            !d.remove_port("rs1").unwrap(),
            "second removal finds nothing"
        );
        let seen = h.join().unwrap();
        assert_eq!(
            seen[0],
            json!({"cmd":"add-port","spec":"afpacket:ifname=rs1,vlan=10"})
        );
        assert_eq!(seen[2], json!({"cmd":"ports"}));
        assert_eq!(seen[3], json!({"cmd":"del-port","name":"rs1"}));
    }

    #[test]
    fn no_daemon_is_try_again_later_and_nothing_to_remove() {
        let d = Daemon::new(PathBuf::from("/nonexistent/ctl.sock"));
        assert_eq!(
            d.add_port("afpacket:ifname=x").unwrap_err().code,
            code::TRY_AGAIN_LATER
        );
        assert!(!d.remove_port("x").unwrap());
    }
}
