//! DPDK testpmd as an independent vhost-user *backend*: a peer we did not write, to prove
//! the harness and the guests (and later to compare ringswitch against).
//!
//! N `net_vhost` ports in server mode (testpmd creates the sockets, QEMU connects), io
//! forwarding, which pairs port 0 with 1, 2 with 3, ... — two guests on a pair see each
//! other as on a wire. Options measured on this machine (shared/notes/machine.md): no
//! hugepages, `-m 512 --total-num-mbufs=16384`, a unique `--file-prefix`, no PCI, no
//! telemetry, `--stats-period 1` to run without a terminal.

use super::error::{HarnessError, Result};
use super::process::Process;
use super::scope::unique;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One `net_vhost` port: its socket path and who listens on it.
#[derive(Clone, Debug)]
pub struct VhostPort {
    pub socket: PathBuf,
    /// testpmd connects (the guest uses `SocketMode::Server`); otherwise testpmd listens.
    pub client: bool,
}

impl VhostPort {
    pub fn server(socket: PathBuf) -> VhostPort {
        VhostPort {
            socket,
            client: false,
        }
    }

    pub fn client(socket: PathBuf) -> VhostPort {
        VhostPort {
            socket,
            client: true,
        }
    }
}

pub struct Testpmd {
    sockets: Vec<PathBuf>,
    prefix: String,
    // Dropped after the fields above are read; the guard kills testpmd.
    process: Process,
}

impl Testpmd {
    /// Starts testpmd with `ports` vhost-user server sockets `vhost<i>.sock` in `dir`
    /// (each with `queues` queue pairs) and waits until all sockets exist.
    pub fn vhost_backend(dir: &Path, ports: usize, queues: u16) -> Result<Testpmd> {
        let ports: Vec<VhostPort> = (0..ports)
            .map(|i| VhostPort::server(dir.join(format!("vhost{i}.sock"))))
            .collect();
        Testpmd::vhost_backend_at(&ports, queues)
    }

    /// Starts testpmd on the given ports. Server ports: stale socket files (a killed
    /// predecessor's) are removed first, and this returns once testpmd created them all.
    pub fn vhost_backend_at(ports: &[VhostPort], queues: u16) -> Result<Testpmd> {
        let prefix = unique("testpmd");
        let mut cmd = Command::new("dpdk-testpmd");
        cmd.args(["--no-huge", "-m", "512", "--no-pci", "--no-telemetry"])
            .args(["--file-prefix", &prefix, "-l", "0,1"]);
        for (i, p) in ports.iter().enumerate() {
            if !p.client {
                let _ = std::fs::remove_file(&p.socket);
            }
            cmd.arg("--vdev").arg(format!(
                "net_vhost{i},iface={},client={},queues={queues}",
                p.socket.display(),
                u8::from(p.client)
            ));
        }
        cmd.args([
            "--",
            "--forward-mode=io",
            "--total-num-mbufs=16384",
            "--stats-period",
            "1",
            "--nb-cores=1",
        ]);
        if queues > 1 {
            cmd.arg(format!("--rxq={queues}"))
                .arg(format!("--txq={queues}"));
        }
        let mut process = Process::spawn("testpmd", cmd)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ports.iter().all(|p| p.client || p.socket.exists()) {
            if process.try_status()?.is_some() || Instant::now() >= deadline {
                return Err(HarnessError::Exited {
                    what: "testpmd".into(),
                    pattern: "vhost-user sockets created".into(),
                    tail: process.output().tail(40),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Testpmd {
            sockets: ports.iter().map(|p| p.socket.clone()).collect(),
            prefix,
            process,
        })
    }

    pub fn socket(&self, port: usize) -> &Path {
        &self.sockets[port]
    }

    pub fn process(&self) -> &Process {
        &self.process
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        // testpmd removes its sockets on SIGTERM; its EAL runtime directory stays.
        let _ = self.process.stop(Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(&self.prefix));
    }
}
