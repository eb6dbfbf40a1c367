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
        let sockets: Vec<PathBuf> = (0..ports)
            .map(|i| dir.join(format!("vhost{i}.sock")))
            .collect();
        Testpmd::vhost_backend_at(&sockets, queues, false)
    }

    /// Starts testpmd on the given socket paths. `client`: testpmd connects to sockets
    /// QEMU listens on (`SocketMode::Server` guests); otherwise it creates them (removing
    /// stale files first, e.g. after a killed predecessor) and returns once they exist.
    pub fn vhost_backend_at(sockets: &[PathBuf], queues: u16, client: bool) -> Result<Testpmd> {
        let prefix = unique("testpmd");
        let mut cmd = Command::new("dpdk-testpmd");
        cmd.args(["--no-huge", "-m", "512", "--no-pci", "--no-telemetry"])
            .args(["--file-prefix", &prefix, "-l", "0,1"]);
        for (i, s) in sockets.iter().enumerate() {
            if !client {
                let _ = std::fs::remove_file(s);
            }
            cmd.arg("--vdev").arg(format!(
                "net_vhost{i},iface={},client={},queues={queues}",
                s.display(),
                u8::from(client)
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
        while !client && !sockets.iter().all(|s| s.exists()) {
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
            sockets: sockets.to_vec(),
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
