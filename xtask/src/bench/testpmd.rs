//! dpdk-testpmd command lines (virtio-user traffic generator/sink, vhost "switch") and the
//! parser of its periodic port statistics.
//!
//! Options measured on this machine (docs/environment.md): no hugepages with
//! `-m 512 --total-num-mbufs=16384`, a unique `--file-prefix` per process, no PCI, no
//! telemetry, `--stats-period 1` instead of the interactive prompt. Placement uses EAL's
//! `--lcores` map so that testpmd's main lcore (which only prints statistics) and its one
//! forwarding lcore share the CPU(s) we give the process: that is "one forwarding core".

use std::path::Path;
use std::process::Command;

/// Where a process may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cpus {
    /// Pinned to this one core.
    Core(u32),
    /// Any of the machine's first two cores (the oversubscribed runs).
    Shared,
}

impl Cpus {
    /// EAL `--lcores` value: main lcore 0 and forwarding lcore 1 on these CPUs.
    pub fn lcores(self) -> String {
        match self {
            Cpus::Core(c) => format!("0@{c},1@{c}"),
            Cpus::Shared => "0@(0,1),1@(0,1)".to_string(),
        }
    }

    /// `taskset -c` list for non-DPDK processes.
    pub fn taskset(self) -> String {
        match self {
            Cpus::Core(c) => c.to_string(),
            Cpus::Shared => "0,1".to_string(),
        }
    }
}

fn eal(prefix: &str, cpus: Cpus) -> Command {
    // stdbuf: the statistics go to a pipe; without line buffering they would arrive in
    // 4 KiB chunks, long after the interval they describe.
    let mut c = Command::new("stdbuf");
    c.args(["-oL", "dpdk-testpmd", "--no-huge", "-m", "512", "--no-pci"])
        .args(["--no-telemetry", "--file-prefix", prefix])
        .args(["--lcores", &cpus.lcores()]);
    c
}

fn app_args(c: &mut Command, mode: &str, queues: u16) {
    c.args(["--", "--total-num-mbufs=16384", "--stats-period", "1"])
        .arg(format!("--forward-mode={mode}"))
        .args(["--auto-start", "--nb-cores=1"])
        .arg(format!("--rxq={queues}"))
        .arg(format!("--txq={queues}"));
}

/// A virtio-user frontend ("a guest without a VM") on `sock`: `txonly` sending frames of
/// `frame_len` bytes (Ethernet header to end of payload, no FCS), or `rxonly` counting.
pub fn frontend(
    prefix: &str,
    cpus: Cpus,
    sock: &Path,
    queues: u16,
    tx_frame_len: Option<u32>,
) -> Command {
    let mut c = eal(prefix, cpus);
    c.arg("--vdev").arg(format!(
        "net_virtio_user0,path={},queues={queues}",
        sock.display()
    ));
    match tx_frame_len {
        Some(len) => {
            app_args(&mut c, "txonly", queues);
            c.arg(format!("--txpkts={len}"));
        }
        None => app_args(&mut c, "rxonly", queues),
    }
    c
}

/// Both frontends in one process: `net_virtio_user0` on `socks[0]`, `net_virtio_user1` on
/// `socks[1]`, in flowgen mode — each port transmits frames of `frame_len` bytes towards the
/// other and discards what it receives, from one polling loop.
///
/// Why not a txonly and an rxonly process on the frontends' one core: measured here, two
/// busy-polling processes on one core take turns per scheduler slice; while the sink is
/// off the CPU its ring fills and everything after that is dropped, and while it runs the
/// source is off the CPU — the sink saw ~10 kpps of ~250 kpps sent, whatever the switch.
///
/// `queue_size`: every virtqueue that many entries long (virtio-user's `queue_size=`
/// devarg; its default is 256), when given. `packed`: packed virtqueues (`packed_vq=1`).
pub fn frontend_pair(
    prefix: &str,
    cpus: Cpus,
    socks: [&Path; 2],
    queues: u16,
    frame_len: u32,
    queue_size: Option<u16>,
    packed: bool,
) -> Command {
    let mut c = eal(prefix, cpus);
    for (i, s) in socks.iter().enumerate() {
        let mut dev = format!("net_virtio_user{i},path={},queues={queues}", s.display());
        if let Some(n) = queue_size {
            dev += &format!(",queue_size={n}");
        }
        if packed {
            dev += ",packed_vq=1";
        }
        c.arg("--vdev").arg(dev);
    }
    app_args(&mut c, "flowgen", queues);
    c.arg(format!("--txpkts={frame_len}"));
    if let Some(n) = queue_size {
        // testpmd's own ring sizes follow the device's: ask for the whole ring.
        c.arg(format!("--rxd={n}")).arg(format!("--txd={n}"));
    }
    c
}

/// testpmd as the vhost-user backend that ringswitch is compared with: two `net_vhost`
/// ports (listening on `socks`) in io forwarding, which pairs port 0 with port 1.
pub fn vhost_switch(prefix: &str, cpus: Cpus, socks: [&Path; 2], queues: u16) -> Command {
    let mut c = eal(prefix, cpus);
    for (i, s) in socks.iter().enumerate() {
        c.arg("--vdev").arg(format!(
            "net_vhost{i},iface={},client=0,queues={queues}",
            s.display()
        ));
    }
    app_args(&mut c, "io", queues);
    c
}

/// One block of testpmd's periodic statistics for one port.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PortSample {
    pub port: u16,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_pps: u64,
    pub tx_pps: u64,
}

/// Parses every complete statistics block in `lines` (a block ends with its `Tx-pps`
/// line). Lines outside blocks (EAL logs, screen-clear escapes) are ignored.
pub fn parse_samples<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<PortSample> {
    let mut out = Vec::new();
    let mut cur: Option<PortSample> = None;
    for line in lines {
        if let Some(rest) = line.split("NIC statistics for port").nth(1) {
            let port = rest
                .trim()
                .trim_end_matches('#')
                .trim()
                .parse()
                .unwrap_or(0);
            cur = Some(PortSample {
                port,
                ..Default::default()
            });
            continue;
        }
        let Some(s) = cur.as_mut() else { continue };
        if let Some(v) = field(line, "RX-packets:") {
            s.rx_packets = v;
        }
        if let Some(v) = field(line, "TX-packets:") {
            s.tx_packets = v;
        }
        if let Some(v) = field(line, "Rx-pps:") {
            s.rx_pps = v;
        }
        if let Some(v) = field(line, "Tx-pps:") {
            s.tx_pps = v;
            out.extend(cur.take());
        }
    }
    out
}

/// The number after `key` on a line like `  RX-packets: 123   RX-missed: 0`.
fn field(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = "\x1b[2J\x1b[1;1H
Port statistics ====================================
  ######################## NIC statistics for port 0  ########################
  RX-packets: 0          RX-missed: 0          RX-bytes:  0
  RX-errors: 0
  RX-nombuf:  0
  TX-packets: 123456789  TX-errors: 0          TX-bytes:  7901234496

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:      4012345          Tx-bps:   2054320640
  ############################################################################
  ######################## NIC statistics for port 1  ########################
  RX-packets: 42         RX-missed: 0          RX-bytes:  2688
  TX-packets: 0          TX-errors: 0          TX-bytes:  0
  Rx-pps:           17          Rx-bps:         8704
  Tx-pps:            0          Tx-bps:            0
";

    #[test]
    fn parses_blocks_per_port() {
        let s = parse_samples(BLOCK.lines());
        assert_eq!(s.len(), 2);
        assert_eq!(
            s[0],
            PortSample {
                port: 0,
                rx_packets: 0,
                tx_packets: 123_456_789,
                rx_pps: 0,
                tx_pps: 4_012_345
            }
        );
        assert_eq!((s[1].port, s[1].rx_packets, s[1].rx_pps), (1, 42, 17));
    }

    #[test]
    fn incomplete_block_and_noise_are_ignored() {
        let s = parse_samples([
            "EAL: Detected CPU lcores: 2",
            "Rx-pps: 5",
            "  ######## NIC statistics for port 0 ####",
            "  RX-packets: 9",
        ]);
        assert!(s.is_empty());
    }

    #[test]
    fn placement() {
        assert_eq!(Cpus::Core(1).lcores(), "0@1,1@1");
        assert_eq!(Cpus::Shared.lcores(), "0@(0,1),1@(0,1)");
        let c = frontend("p", Cpus::Core(1), Path::new("/tmp/s"), 2, Some(64));
        let r = super::super::proc::render(&c);
        assert!(r.contains("net_virtio_user0,path=/tmp/s,queues=2"), "{r}");
        assert!(r.contains("--forward-mode=txonly") && r.contains("--txpkts=64"));
        assert!(r.contains("--rxq=2") && r.contains("--txq=2"));
        let p = [Path::new("/tmp/a"), Path::new("/tmp/b")];
        let r = super::super::proc::render(&frontend_pair(
            "p",
            Cpus::Core(1),
            p,
            1,
            64,
            Some(1024),
            true,
        ));
        assert!(
            r.contains("net_virtio_user1,path=/tmp/b,queues=1,queue_size=1024,packed_vq=1"),
            "{r}"
        );
        assert!(r.contains("--rxd=1024") && r.contains("--txd=1024"), "{r}");
        let r =
            super::super::proc::render(&frontend_pair("p", Cpus::Core(1), p, 1, 64, None, false));
        assert!(!r.contains("queue_size") && !r.contains("--rxd"), "{r}");
        assert!(!r.contains("packed_vq"), "{r}");
    }
}
