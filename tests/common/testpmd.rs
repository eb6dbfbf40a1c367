//! DPDK testpmd as an independent vhost-user peer we did not write: to prove the harness
//! and the guests, and to compare ringswitch against.
//!
//! - `vhost_backend*`: N `net_vhost` ports (testpmd is the backend, guests or ringswitch
//!   are frontends) in io forwarding, which pairs port 0 with 1, 2 with 3, ... — two guests
//!   on a pair see each other as on a wire.
//! - `virtio_user`: one `net_virtio_user` port (testpmd is a frontend: a guest without a
//!   VM) that sends (txonly), counts (rxonly) or echoes (io/macswap).
//! - `spawn`: any other combination, with the same common options and cleanup.
//!
//! Options measured on this machine (docs/environment.md): no hugepages,
//! `-m 512 --total-num-mbufs=16384`, a unique `--file-prefix` (its EAL runtime directory
//! is removed in Drop), no PCI, no telemetry, `--stats-period 1` to run without a
//! terminal. Each testpmd busy-polls one core: more than two at once on 2 cores collapse.

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
        let mut eal = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            if !p.client {
                let _ = std::fs::remove_file(&p.socket);
            }
            eal.push("--vdev".to_string());
            eal.push(format!(
                "net_vhost{i},iface={},client={},queues={queues}",
                p.socket.display(),
                u8::from(p.client)
            ));
        }
        let mut app = vec!["--forward-mode=io".to_string()];
        if queues > 1 {
            app.push(format!("--rxq={queues}"));
            app.push(format!("--txq={queues}"));
        }
        let mut pmd = Testpmd::spawn(&eal, &app)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ports.iter().all(|p| p.client || p.socket.exists()) {
            if pmd.process.try_status()?.is_some() || Instant::now() >= deadline {
                return Err(HarnessError::Exited {
                    what: "testpmd".into(),
                    pattern: "vhost-user sockets created".into(),
                    tail: pmd.process.output().tail(40),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        pmd.sockets = ports.iter().map(|p| p.socket.clone()).collect();
        Ok(pmd)
    }

    /// testpmd as a vhost-user frontend on `socket` (which a backend must be listening
    /// on) with `queues` queue pairs, in forwarding `mode` (txonly, rxonly, io, macswap, …)
    /// plus `app` options (e.g. `--eth-peer=0,02:…`, `--txpkts=1500`).
    pub fn virtio_user(socket: &Path, queues: u16, mode: &str, app: &[&str]) -> Result<Testpmd> {
        let eal = [
            "--vdev".to_string(),
            format!("net_virtio_user0,path={},queues={queues}", socket.display()),
        ];
        let mut a = vec![format!("--forward-mode={mode}")];
        if queues > 1 {
            a.push(format!("--rxq={queues}"));
            a.push(format!("--txq={queues}"));
        }
        a.extend(app.iter().map(|s| s.to_string()));
        let mut pmd = Testpmd::spawn(&eal, &a)?;
        pmd.sockets = vec![socket.to_path_buf()];
        Ok(pmd)
    }

    /// testpmd with the common options, `eal` options (the `--vdev`s) and `app` options
    /// (after `--`); forwarding starts at once (no interactive prompt).
    pub fn spawn(eal: &[String], app: &[String]) -> Result<Testpmd> {
        let prefix = unique("testpmd");
        let mut cmd = Command::new("dpdk-testpmd");
        cmd.args(["--no-huge", "-m", "512", "--no-pci", "--no-telemetry"])
            .args(["--file-prefix", &prefix, "-l", "0,1"])
            .args(eal)
            .args([
                "--",
                "--total-num-mbufs=16384",
                "--stats-period",
                "1",
                "--nb-cores=1",
            ])
            .args(app);
        let process = Process::spawn("testpmd", cmd)?;
        Ok(Testpmd {
            sockets: Vec::new(),
            prefix,
            process,
        })
    }

    /// Waits until the periodic statistics show more than `min` packets received on
    /// `port` (the `RX-packets:` of its "NIC statistics for port N" block).
    pub fn wait_rx(&self, port: usize, min: u64, timeout: Duration) -> Result<u64> {
        let header = format!("NIC statistics for port {port} ");
        let out = self.process.output();
        let deadline = Instant::now() + timeout;
        loop {
            let text = out.text();
            let best = rx_counts(&text, &header).into_iter().max().unwrap_or(0);
            if best > min {
                return Ok(best);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HarnessError::Timeout {
                    what: "testpmd".into(),
                    pattern: format!("port {port} RX-packets > {min}"),
                    timeout,
                    tail: out.tail(30),
                });
            }
            // The next statistics block comes within a second; a dead testpmd is an error.
            if let Err(e @ HarnessError::Exited { .. }) =
                out.wait_line("statistics", left.min(Duration::from_millis(1100)), |_| {
                    false
                })
            {
                return Err(e);
            }
        }
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

/// Every `RX-packets:` value printed in the blocks whose header contains `header`.
fn rx_counts(text: &str, header: &str) -> Vec<u64> {
    let mut in_block = false;
    let mut counts = Vec::new();
    for line in text.lines() {
        if line.contains("statistics for port") {
            in_block = line.contains(header);
        } else if in_block {
            if let Some(rest) = line.trim().strip_prefix("RX-packets:") {
                if let Some(Ok(n)) = rest.split_whitespace().next().map(str::parse) {
                    counts.push(n);
                }
            }
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rx_counts_are_read_per_port() {
        let text = "\
  ######################## NIC statistics for port 0  ########################
  RX-packets: 12         RX-missed: 0          RX-bytes:  768
  ######################## NIC statistics for port 1  ########################
  RX-packets: 7          RX-missed: 0          RX-bytes:  448
  ######################## NIC statistics for port 0  ########################
  RX-packets: 40         RX-missed: 0          RX-bytes:  2560";
        assert_eq!(rx_counts(text, "NIC statistics for port 0 "), [12, 40]);
        assert_eq!(rx_counts(text, "NIC statistics for port 1 "), [7]);
        assert!(rx_counts(text, "NIC statistics for port 2 ").is_empty());
    }
}
