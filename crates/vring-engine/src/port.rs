//! Serving a device's socket across frontend connections.
//!
//! vhost-user-backend's `VhostUserDaemon` serves one connection and keeps per-connection
//! state (owner flag, negotiated features, vrings) that a second frontend must not inherit.
//! So each connection gets a fresh daemon around the same [`NetDevice`]; between
//! connections the device is detached (link down, state reset) and the socket is served
//! again: re-listened in server mode, reconnected in client mode (QEMU `server=on`).
//! Every connection passes through the `relay` module on its way to the daemon.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use parking_lot::Mutex;
use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::device::NetDevice;
use crate::options::{PortOptions, SocketMode};
use crate::vring::collect_during;

/// How long client mode waits between connection attempts.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);

/// Why a port could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("cannot listen on {path}: {source}")]
    Listen { path: PathBuf, source: io::Error },
    #[error("cannot start the port thread: {0}")]
    Thread(std::io::Error),
}

/// A running vhost-user port: a thread that serves the socket, connection after connection.
pub struct VhostUserPort {
    device: NetDevice,
    stop: Arc<AtomicBool>,
    shutdown: Arc<Mutex<Option<ShutdownHandle>>>,
    thread: Option<JoinHandle<()>>,
}

impl VhostUserPort {
    /// Starts serving `device`'s socket. In server mode the socket exists when this returns.
    pub fn start(device: NetDevice) -> Result<VhostUserPort, PortError> {
        let opts = device.options().clone();
        let listen_err = |source: io::Error| PortError::Listen {
            path: opts.socket.clone(),
            source,
        };
        let public = match opts.mode {
            SocketMode::Server => {
                let _ = std::fs::remove_file(&opts.socket);
                Some(bind_restricted(&opts).map_err(listen_err)?)
            }
            SocketMode::Client => None,
        };
        let inner = InnerSocket::new(&device).map_err(PortError::Thread)?;
        let stop = Arc::new(AtomicBool::new(false));
        let shutdown = Arc::new(Mutex::new(None));
        let (d, s, sh) = (device.clone(), stop.clone(), shutdown.clone());
        let thread = thread::Builder::new()
            .name(format!("vhost-{}", device.port()))
            .spawn(move || serve(d, public, inner, s, sh))
            .map_err(PortError::Thread)?;
        Ok(VhostUserPort {
            device,
            stop,
            shutdown,
            thread: Some(thread),
        })
    }

    pub fn device(&self) -> &NetDevice {
        &self.device
    }

    /// Disconnects the frontend (if any), stops serving and waits for the thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.shutdown.lock().take() {
            h.shutdown();
        }
        // A server blocked in accept() is woken by a connection of our own.
        if self.device.options().mode == SocketMode::Server {
            let _ = UnixStream::connect(&self.device.options().socket);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.device.options().mode == SocketMode::Server {
            let _ = std::fs::remove_file(&self.device.options().socket);
        }
    }
}

/// The socket vhost-user-backend serves, in a private (0700) directory: only our relay
/// connects to it (see [`crate::relay`]).
struct InnerSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: Listener,
}

impl InnerSocket {
    fn new(device: &NetDevice) -> io::Result<InnerSocket> {
        use std::os::unix::fs::DirBuilderExt;
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(remove_stale_dirs);
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        // A directory of a killed process whose pid we reuse may still exist (Drop never
        // ran there): take the next name instead of failing the port.
        let mut tries = 0;
        let dir = loop {
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "ringswitch-vu-{}-{}-{n}",
                std::process::id(),
                device.port().0
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 64 => tries += 1,
                Err(e) => return Err(e),
            }
        };
        let path = dir.join("backend.sock");
        let listener = Listener::from(UnixListener::bind(&path)?);
        Ok(InnerSocket {
            dir,
            path,
            listener,
        })
    }
}

/// Removes the private socket directories of ringswitch processes that no longer exist
/// (killed before their Drop ran): `ringswitch-vu-<pid>-…` holding at most `backend.sock`.
fn remove_stale_dirs() {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("ringswitch-vu-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        let _ = std::fs::remove_file(dir.join("backend.sock"));
        // Fails (and leaves it) if anything else is inside: not ours to delete.
        let _ = std::fs::remove_dir(&dir);
    }
}

impl Drop for InnerSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

impl Drop for VhostUserPort {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_inner();
        }
    }
}

/// Creates the server socket with `socket_perm` and `socket_gid` and no window in which
/// anyone else could connect: the socket inode's mode is set (fchmod) before bind, which
/// Linux uses for the new file (masked by the umask, so at most as wide as asked); with a
/// group it is created owner-only, chowned, then widened to `socket_perm`.
fn bind_restricted(opts: &PortOptions) -> io::Result<UnixListener> {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};
    use nix::sys::stat::{fchmod, Mode};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let first = if opts.socket_gid.is_some() {
        opts.socket_perm & 0o700
    } else {
        opts.socket_perm
    };
    fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(first))?;
    let addr = nix::sys::socket::UnixAddr::new(&opts.socket)?;
    bind(fd.as_raw_fd(), &addr)?;
    if let Some(gid) = opts.socket_gid {
        std::os::unix::fs::chown(&opts.socket, None, Some(gid))?;
    }
    // Exactly the mode asked for (the umask may have narrowed it).
    std::fs::set_permissions(
        &opts.socket,
        std::os::unix::fs::PermissionsExt::from_mode(opts.socket_perm),
    )?;
    listen(&fd, Backlog::MAXCONN)?;
    Ok(UnixListener::from(fd))
}

/// Logs who connected (SO_PEERCRED, unix(7)): anyone who can open the socket is a
/// frontend, so the log says which process it was.
fn log_peer(s: &UnixStream, socket: &std::path::Path) {
    match nix::sys::socket::getsockopt(s, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(c) => tracing::info!(
            socket = %socket.display(),
            pid = c.pid(),
            uid = c.uid(),
            gid = c.gid(),
            "frontend connected"
        ),
        Err(e) => {
            tracing::info!(socket = %socket.display(), "frontend connected (no SO_PEERCRED: {e})")
        }
    }
}

/// Waits for the next frontend: accepted (server) or dialled until it answers (client).
fn next_frontend(
    public: &Option<UnixListener>,
    socket: &std::path::Path,
    stop: &AtomicBool,
) -> Option<UnixStream> {
    loop {
        if stop.load(Ordering::Acquire) {
            return None;
        }
        let r = match public {
            Some(l) => l.accept().map(|(s, _)| {
                log_peer(&s, socket);
                s
            }),
            None => UnixStream::connect(socket),
        };
        match r {
            Ok(s) if !stop.load(Ordering::Acquire) => return Some(s),
            Ok(_) => return None,
            Err(e) => {
                if public.is_some() {
                    tracing::error!(socket = %socket.display(), "accept failed: {e}");
                }
                thread::sleep(RECONNECT_INTERVAL);
            }
        }
    }
}

fn serve(
    device: NetDevice,
    public: Option<UnixListener>,
    mut inner: InnerSocket,
    stop: Arc<AtomicBool>,
    shutdown: Arc<Mutex<Option<ShutdownHandle>>>,
) {
    let opts = device.options().clone();
    let name = format!("vhost-user-net {}", device.port());
    while let Some(front) = next_frontend(&public, &opts.socket, &stop) {
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let (daemon, vrings) =
            collect_during(|| VhostUserDaemon::new(name.clone(), device.clone(), mem.clone()));
        let mut daemon = match daemon {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(port = %device.port(), "cannot create vhost-user daemon: {e}");
                device.inner.exit.reclaim();
                return;
            }
        };
        device.attach(vrings, mem);
        // connect() completes against the listen backlog; start() then accepts it.
        let back = match UnixStream::connect(&inner.path) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(port = %device.port(), "cannot reach the back-end socket: {e}");
                return;
            }
        };
        let front_ctl = front.try_clone().ok();
        let boundary = crate::frontend_checks::Boundary::of(&device.inner);
        let relay = thread::Builder::new()
            .name(format!("vhost-relay-{}", device.port()))
            .spawn(move || crate::relay::run(front, back, &boundary));
        match daemon.start(&mut inner.listener) {
            Ok(()) => {
                *shutdown.lock() = daemon.shutdown_handle();
                if stop.load(Ordering::Acquire) {
                    daemon.request_shutdown();
                }
                tracing::info!(port = %device.port(), socket = %opts.socket.display(), "frontend connected");
                if let Err(e) = daemon.wait() {
                    tracing::info!(port = %device.port(), "frontend connection ended: {e}");
                }
                shutdown.lock().take();
            }
            Err(e) => tracing::error!(port = %device.port(), "back-end start failed: {e}"),
        }
        if let Some(f) = front_ctl {
            let _ = f.shutdown(std::net::Shutdown::Both);
        }
        if let Ok(t) = relay {
            let _ = t.join();
        }
        for h in daemon.get_epoll_handlers() {
            h.send_exit_event();
        }
        drop(daemon);
        device.detach();
        if opts.mode == SocketMode::Client && !stop.load(Ordering::Acquire) {
            thread::sleep(RECONNECT_INTERVAL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A killed process's private socket directory is swept; a live process's is kept,
    /// and so is a directory holding anything but our socket.
    #[test]
    fn stale_socket_dirs_of_dead_processes_are_removed() {
        let tmp = std::env::temp_dir();
        // Above any pid_max Linux allows (4194304): never a live process.
        let dead = tmp.join("ringswitch-vu-4999999-0-0");
        let dead_other = tmp.join("ringswitch-vu-4999998-0-0");
        let live = tmp.join(format!("ringswitch-vu-{}-9-999999", std::process::id()));
        for d in [&dead, &dead_other, &live] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("backend.sock"), b"").unwrap();
        }
        std::fs::write(dead_other.join("keep"), b"").unwrap();
        remove_stale_dirs();
        assert!(!dead.exists());
        assert!(
            dead_other.join("keep").exists(),
            "foreign content is left alone"
        );
        assert!(live.exists(), "our own pid is alive");
        std::fs::remove_dir_all(&dead_other).unwrap();
        std::fs::remove_dir_all(&live).unwrap();
    }
}
