//! Serving a device's socket across frontend connections.
//!
//! vhost-user-backend's `VhostUserDaemon` serves one connection and keeps per-connection
//! state (owner flag, negotiated features, vrings) that a second frontend must not inherit.
//! So each connection gets a fresh daemon around the same [`NetDevice`]; between
//! connections the device is detached (link down, state reset) and the socket is served
//! again: re-listened in server mode, reconnected in client mode (QEMU `server=on`).

use std::os::unix::net::UnixStream;
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
use crate::options::SocketMode;
use crate::vring::collect_during;

/// How long client mode waits between connection attempts.
const RECONNECT_INTERVAL: Duration = Duration::from_millis(100);

/// Why a port could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: vhost::vhost_user::Error,
    },
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
        let listener =
            match opts.mode {
                SocketMode::Server => Some(Listener::new(&opts.socket, true).map_err(
                    |source| PortError::Listen {
                        path: opts.socket.clone(),
                        source,
                    },
                )?),
                SocketMode::Client => None,
            };
        let stop = Arc::new(AtomicBool::new(false));
        let shutdown = Arc::new(Mutex::new(None));
        let (d, s, sh) = (device.clone(), stop.clone(), shutdown.clone());
        let thread = thread::Builder::new()
            .name(format!("vhost-{}", device.port()))
            .spawn(move || serve(d, listener, s, sh))
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

impl Drop for VhostUserPort {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop_inner();
        }
    }
}

fn serve(
    device: NetDevice,
    mut listener: Option<Listener>,
    stop: Arc<AtomicBool>,
    shutdown: Arc<Mutex<Option<ShutdownHandle>>>,
) {
    let opts = device.options().clone();
    let name = format!("vhost-user-net {}", device.port());
    while !stop.load(Ordering::Acquire) {
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let (daemon, vrings) =
            collect_during(|| VhostUserDaemon::new(name.clone(), device.clone(), mem.clone()));
        let mut daemon = match daemon {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(port = %device.port(), "cannot create vhost-user daemon: {e}");
                return;
            }
        };
        device.attach(vrings, mem);
        let started = match (&mut listener, opts.mode) {
            (Some(l), _) => daemon.start(l),
            (None, _) => daemon.start_client(&opts.socket.to_string_lossy()),
        };
        match started {
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
            Err(e) => {
                if opts.mode == SocketMode::Server {
                    tracing::error!(port = %device.port(), "accept failed: {e}");
                }
            }
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
