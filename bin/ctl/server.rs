//! The control socket server: a Unix stream socket (mode 0600) speaking JSON lines, one
//! [`Request`] per line in, one [`Response`] per line out, answered by calling the
//! running daemon's [`Control`].
//!
//! Why a Unix socket with file permissions rather than TCP: adding ports creates sockets
//! and taps, so the caller must be as privileged as the daemon; 0600 makes the kernel
//! check that (only the owner — root — may connect), with no authentication of our own.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{self, socket};
use crate::control::{Control, Request, Response};

/// Longest request line; a `PortSpec` is well under 1 KiB.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Concurrent ctl connections; more are answered with an error and closed.
pub const MAX_CONNECTIONS: usize = 16;
/// An idle connection is closed after this long, so a stuck client holds no thread.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Socket(#[from] socket::SocketError),
}

/// A bound control socket that does not accept yet (bound before the runtime starts so
/// a second daemon fails before touching any port).
pub struct CtlListener {
    /// Taken by [`CtlServer::start`]; while it is still here, Drop removes the socket
    /// (the daemon failed between binding and serving).
    listener: Option<UnixListener>,
    path: PathBuf,
    ino: (u64, u64),
}

impl CtlListener {
    /// Creates the directory, refuses a live socket, removes a stale one, then binds
    /// with mode 0600. The socket is bound under a temporary name, chmod-ed, then renamed
    /// into place, so nobody can connect during the moment it has umask permissions.
    pub fn bind(path: &Path) -> Result<CtlListener, CtlError> {
        let io_err = |source| CtlError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(io_err)?;
        }
        socket::prepare_listen_path(path, config::CTL_SOCKET)?;
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let tmp = path.with_file_name(format!(
            ".{}.{}.tmp",
            file_name.unwrap_or_default(),
            std::process::id()
        ));
        let listener = if tmp.as_os_str().len() <= config::port::SUN_PATH_MAX {
            let _ = std::fs::remove_file(&tmp);
            let l = UnixListener::bind(&tmp).map_err(io_err)?;
            let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .and_then(|()| std::fs::rename(&tmp, path));
            if let Err(e) = placed {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_err(e));
            }
            l
        } else {
            // No room for a temporary name: bind in place and chmod at once.
            let l = UnixListener::bind(path).map_err(io_err)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(io_err)?;
            l
        };
        let meta = std::fs::symlink_metadata(path).map_err(io_err)?;
        Ok(CtlListener {
            listener: Some(listener),
            path: path.to_path_buf(),
            ino: (meta.dev(), meta.ino()),
        })
    }
}

impl Drop for CtlListener {
    fn drop(&mut self) {
        if self.listener.take().is_some() {
            remove_if_ours(&self.path, self.ino);
        }
    }
}

/// Removes `path` if it is still the socket we bound (same device and inode): another
/// daemon may have replaced a path we were told to use.
fn remove_if_ours(path: &Path, ino: (u64, u64)) {
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if (m.dev(), m.ino()) == ino {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[derive(Default)]
struct Connections {
    next: u64,
    open: Vec<(u64, UnixStream)>,
}

/// The running server; [`CtlServer::shutdown`] (or Drop) stops it and removes the socket.
pub struct CtlServer {
    path: PathBuf,
    ino: (u64, u64),
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Connections>>,
    thread: Option<JoinHandle<()>>,
}

impl CtlServer {
    /// Starts accepting on a thread named `ctl`.
    pub fn start(mut l: CtlListener, control: Arc<dyn Control>) -> Result<CtlServer, CtlError> {
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Connections::default()));
        let (s, c) = (stop.clone(), conns.clone());
        let Some(listener) = l.listener.take() else {
            return Err(CtlError::Io {
                path: l.path.clone(),
                source: io::Error::other("listener already served"),
            });
        };
        let path = l.path.clone();
        let thread = std::thread::Builder::new()
            .name("ctl".into())
            .spawn(move || accept_loop(listener, control, s, c))
            .map_err(|source| CtlError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(CtlServer {
            path,
            ino: l.ino,
            stop,
            conns,
            thread: Some(thread),
        })
    }

    /// Stops accepting, closes open connections and removes the socket file (only if it
    /// is still ours: another daemon may have replaced a path we were told to use).
    pub fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept(2).
        let _ = UnixStream::connect(&self.path);
        let _ = thread.join();
        for (_, s) in lock(&self.conns).open.drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        remove_if_ours(&self.path, self.ino);
    }
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock(c: &Mutex<Connections>) -> std::sync::MutexGuard<'_, Connections> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(
    listener: UnixListener,
    control: Arc<dyn Control>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Connections>>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "ctl: accept failed");
                // EMFILE and friends: do not spin.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let id = {
            let mut c = lock(&conns);
            if c.open.len() >= MAX_CONNECTIONS {
                drop(c);
                let _ = write_response(
                    &mut stream,
                    &Response::Error {
                        message: format!(
                            "too many control connections (at most {MAX_CONNECTIONS}); retry"
                        ),
                    },
                );
                continue;
            }
            let Ok(clone) = stream.try_clone() else {
                continue;
            };
            c.next += 1;
            let id = c.next;
            c.open.push((id, clone));
            id
        };
        let control = control.clone();
        let conns2 = conns.clone();
        let spawned = std::thread::Builder::new()
            .name("ctl-conn".into())
            .spawn(move || {
                if let Err(e) = serve_connection(stream, &*control) {
                    tracing::debug!(error = %e, "ctl: connection ended");
                }
                lock(&conns2).open.retain(|(i, _)| *i != id);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "ctl: cannot start a connection thread");
            lock(&conns).open.retain(|(i, _)| *i != id);
        }
    }
}

fn write_response(w: &mut impl Write, r: &Response) -> io::Result<()> {
    let mut line = serde_json::to_string(r).map_err(io::Error::other)?;
    line.push('\n');
    w.write_all(line.as_bytes())?;
    w.flush()
}

/// Serves requests on one connection until EOF, an I/O error or an over-long line.
pub fn serve_connection(stream: UnixStream, control: &dyn Control) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_REQUEST as u64 + 1)
            .read_line(&mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_REQUEST && !line.ends_with('\n') {
            write_response(
                &mut writer,
                &Response::Error {
                    message: format!("request longer than {MAX_REQUEST} bytes; closing"),
                },
            )?;
            return Ok(());
        }
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let response = match serde_json::from_str::<Request>(text) {
            Ok(req) => handle(control, req),
            Err(e) => Response::Error {
                message: format!(
                    "bad request: {e}; send one JSON object per line, e.g. {{\"cmd\":\"ports\"}}"
                ),
            },
        };
        write_response(&mut writer, &response)?;
    }
}

/// Answers one request. Port changes are validated here too: the socket accepts JSON
/// from any local root process, not only from our own client.
pub fn handle(control: &dyn Control, req: Request) -> Response {
    let err = |message: String| Response::Error { message };
    match req {
        Request::Ports => Response::Ports {
            ports: control.ports(),
        },
        Request::Fdb => Response::Fdb {
            entries: control.fdb(),
        },
        Request::Mdb => Response::Mdb {
            entries: control.mdb(),
        },
        Request::Stats => Response::Stats {
            stats: control.stats(),
        },
        Request::AddPort { spec } => {
            let spec = match config::port::normalize_spec(&spec) {
                Ok(s) => s,
                Err(e) => return err(format!("invalid port: {e}")),
            };
            // Before touching the file system: a stale-looking socket of an existing
            // port (between two frontend connections) must not be removed.
            if control.ports().iter().any(|p| p.name == spec.name()) {
                return err(format!(
                    "port `{}` already exists: see `ringswitch ctl ports`",
                    spec.name()
                ));
            }
            if let Err(e) = config::prepare_port_socket(&spec) {
                return err(e.to_string());
            }
            let name = spec.name().to_string();
            match control.add_port(spec) {
                Ok(port) => {
                    tracing::info!(port = %name, "ctl: port added");
                    Response::Port { port }
                }
                Err(e) => err(e.to_string()),
            }
        }
        Request::DelPort { name } => match control.del_port(&name) {
            Ok(()) => {
                tracing::info!(port = %name, "ctl: port deleted");
                Response::Ok
            }
            Err(e) => err(e.to_string()),
        },
        Request::SetPort { name, change } => {
            if let Err(e) = config::port::validate_change(&change) {
                return err(format!("set-port: {e}"));
            }
            match control.set_port(&name, change.clone()) {
                Ok(()) => {
                    tracing::info!(port = %name, ?change, "ctl: port changed");
                    Response::Ok
                }
                Err(e) => err(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::control::*;
    use std::io::BufRead;

    /// A small in-memory `Control` for protocol and rendering tests only; the real one
    /// is the runtime, exercised by tests/ctl_roundtrip.rs.
    #[derive(Default)]
    pub(crate) struct Fake {
        pub ports: Mutex<Vec<PortInfo>>,
    }

    impl Fake {
        pub(crate) fn with_port(name: &str) -> Fake {
            let f = Fake::default();
            f.add_port(crate::config::port::parse_port(&format!("tap:name={name}")).unwrap())
                .unwrap();
            f
        }
    }

    impl Control for Fake {
        fn ports(&self) -> Vec<PortInfo> {
            self.ports.lock().unwrap().clone()
        }
        fn fdb(&self) -> Vec<FdbRow> {
            vec![FdbRow {
                mac: "02:72:73:00:00:01".into(),
                vlan: 1,
                port: "rs0".into(),
                is_static: false,
                age_s: 1.5,
                vtep: None,
            }]
        }
        fn mdb(&self) -> Vec<MdbRow> {
            Vec::new()
        }
        fn stats(&self) -> StatsReport {
            StatsReport {
                uptime_s: 1.0,
                ports: self
                    .ports()
                    .iter()
                    .map(|p| PortCounters {
                        name: p.name.clone(),
                        rx_packets: 7,
                        drops: vec![("vlan_not_member".into(), 2)],
                        queues: vec![QueueCounters {
                            queue: 0,
                            rx_packets: 7,
                            ..Default::default()
                        }],
                        ..Default::default()
                    })
                    .collect(),
                workers: vec![WorkerCounters {
                    worker: 0,
                    packets: 7,
                    io_uring_enters: 2,
                    syscalls_per_packet: 2.0 / 7.0,
                }],
                fdb_entries: 1,
                mdb_entries: 0,
            }
        }
        fn add_port(&self, spec: PortSpec) -> Result<PortInfo, ControlError> {
            let mut ports = self.ports.lock().unwrap();
            let info = PortInfo {
                id: ports.len() as u16,
                name: spec.name().into(),
                kind: match spec {
                    PortSpec::VhostUser { .. } => "vhost-user",
                    PortSpec::Tap { .. } => "tap",
                    PortSpec::AfPacket { .. } => "afpacket",
                    PortSpec::Vxlan { .. } => "vxlan",
                }
                .into(),
                state: "up".into(),
                mac: None,
                vlan: "trunk native 1 allowed all".into(),
                queues: 1,
                queues_enabled: 1,
                features: vec![],
                max_queue_size: match spec {
                    PortSpec::VhostUser { max_queue_size, .. } => {
                        Some(max_queue_size.unwrap_or(32768))
                    }
                    _ => None,
                },
                connected: None,
                guest_memory_bytes: None,
                queue_sizes: vec![],
                offloads: vec![],
                rx_filter: "promisc".into(),
                port_security: spec.l2().port_security,
                flood_limit: spec.l2().flood_limit,
                mac_limit: spec.l2().mac_limit,
                mtu: spec.l2().mtu.unwrap_or(1500),
                vxlan: None,
            };
            ports.push(info.clone());
            Ok(info)
        }
        fn del_port(&self, name: &str) -> Result<(), ControlError> {
            let mut ports = self.ports.lock().unwrap();
            let before = ports.len();
            ports.retain(|p| p.name != name);
            if ports.len() == before {
                return Err(ControlError::NoSuchPort(name.into()));
            }
            Ok(())
        }
        fn set_port(&self, name: &str, change: PortChange) -> Result<(), ControlError> {
            let mut ports = self.ports.lock().unwrap();
            let p = ports
                .iter_mut()
                .find(|p| p.name == name)
                .ok_or_else(|| ControlError::NoSuchPort(name.into()))?;
            p.vlan = match change.vlan {
                Some(Some(v)) => format!("access {v}"),
                _ => "trunk native 1 allowed all".into(),
            };
            Ok(())
        }
    }

    pub(crate) fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rs-ctl-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn exchange(path: &Path, lines: &[&str]) -> Vec<String> {
        let mut s = UnixStream::connect(path).unwrap();
        // Write errors are fine: the server may close early (over-long request).
        for l in lines {
            let _ = s.write_all(l.as_bytes());
            let _ = s.write_all(b"\n");
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        BufReader::new(s).lines().map(|l| l.unwrap()).collect()
    }

    #[test]
    fn socket_protocol_round_trip() {
        let dir = tmpdir("proto");
        let path = dir.join("sub").join("ctl.sock");
        let l = CtlListener::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut server = CtlServer::start(l, Arc::new(Fake::with_port("rs0"))).unwrap();

        let add = serde_json::to_string(&Request::AddPort {
            spec: crate::config::port::parse_port("afpacket:ifname=veth0").unwrap(),
        })
        .unwrap();
        let out = exchange(
            &path,
            &[
                r#"{"cmd":"ports"}"#,
                "",
                "not json",
                r#"{"cmd":"del-port","name":"nope"}"#,
                &add,
                &add,
                r#"{"cmd":"add-port","spec":{"kind":"tap","name":"t","queues":0,"vlan":null}}"#,
                r#"{"cmd":"set-port","name":"veth0","change":{"vlan":4095}}"#,
                r#"{"cmd":"set-port","name":"veth0","change":{"vlan":10}}"#,
                r#"{"cmd":"set-port","name":"veth0","change":{}}"#,
                r#"{"cmd":"stats"}"#,
            ],
        );
        let resp: Vec<Response> = out
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(resp.len(), 10, "{out:?}");
        assert!(matches!(&resp[0], Response::Ports { ports } if ports.len() == 1));
        assert!(matches!(&resp[1], Response::Error { message } if message.contains("bad request")));
        assert!(
            matches!(&resp[2], Response::Error { message } if message.contains("no port named \"nope\""))
        );
        assert!(matches!(&resp[3], Response::Port { port } if port.name == "veth0"));
        assert!(
            matches!(&resp[4], Response::Error { message } if message.contains("already exists"))
        );
        assert!(matches!(&resp[5], Response::Error { message } if message.contains("queues=0")));
        assert!(matches!(&resp[6], Response::Error { message } if message.contains("4094")));
        assert_eq!(resp[7], Response::Ok);
        assert!(
            matches!(&resp[8], Response::Error { message } if message.contains("nothing to change"))
        );
        assert!(matches!(&resp[9], Response::Stats { stats } if stats.ports.len() == 2));

        server.shutdown();
        assert!(!path.exists(), "socket removed on shutdown");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn second_server_on_a_live_socket_is_refused_and_stale_is_replaced() {
        let dir = tmpdir("live");
        let path = dir.join("ctl.sock");
        let l = CtlListener::bind(&path).unwrap();
        let server = CtlServer::start(l, Arc::new(Fake::default())).unwrap();
        let e = CtlListener::bind(&path).err().unwrap().to_string();
        assert!(e.contains("live process"), "{e}");
        drop(server);

        // A crashed daemon leaves a socket file nobody listens on.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let l = CtlListener::bind(&path).unwrap();
        assert!(path.exists());
        drop(l);
        assert!(!path.exists(), "an unused listener removes its socket");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn port_kinds_on_the_wire_match_the_port_syntax() {
        for (spec, kind) in [
            ("vhost-user:path=/a", "vhost-user"),
            ("tap:name=t", "tap"),
            ("afpacket:ifname=v", "afpacket"),
        ] {
            let spec = crate::config::port::parse_port(spec).unwrap();
            let json = serde_json::to_value(&spec).unwrap();
            assert_eq!(json["kind"], kind, "{json}");
        }
    }

    #[test]
    fn port_change_keeps_none_apart_from_unchanged() {
        for change in [
            PortChange::default(),
            PortChange {
                vlan: Some(None),
                ..PortChange::default()
            },
            PortChange {
                vlan: Some(Some(10)),
                ..PortChange::default()
            },
            PortChange {
                trunk: Some(Some("10,20-30".into())),
                native: Some(None),
                mac: Some("02:00:00:00:00:01".into()),
                port_security: Some(true),
                flood_limit: Some(100),
                mac_limit: Some(0),
                ..PortChange::default()
            },
            PortChange {
                trunk: Some(None),
                native: Some(Some(5)),
                ..PortChange::default()
            },
        ] {
            let req = Request::SetPort {
                name: "p".into(),
                change: change.clone(),
            };
            let json = serde_json::to_string(&req).unwrap();
            let back: Request = serde_json::from_str(&json).unwrap();
            assert_eq!(back, req, "{json}");
        }
    }

    #[test]
    fn over_long_request_closes_the_connection() {
        let dir = tmpdir("long");
        let path = dir.join("ctl.sock");
        let server =
            CtlServer::start(CtlListener::bind(&path).unwrap(), Arc::new(Fake::default())).unwrap();
        let big = "x".repeat(MAX_REQUEST + 10);
        let out = exchange(&path, &[&big, r#"{"cmd":"ports"}"#]);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(out[0].contains("longer than"));
        drop(server);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
