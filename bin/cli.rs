//! The command line (clap derive). Parsing of `--port` specs and `set-port` changes lives
//! in [`crate::config`] so the TOML file and the ctl socket share one set of rules and
//! error messages; clap only calls those parsers.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::config::port::{parse_port_arg, parse_port_change};
use crate::control::{PortChange, PortSpec};

/// Where `run` listens and `ctl` connects unless `--ctl` says otherwise.
pub const DEFAULT_CTL: &str = "/run/ringswitch/ctl.sock";

const EXAMPLES: &str = "\
Examples:
  # Two QEMU guests on one switch, a host tap, metrics on loopback:
  ringswitch run --port vhost-user:path=/run/vm1.sock,queues=2,mac=52:54:00:00:00:01 \\
                 --port vhost-user:path=/run/vm2.sock,vlan=10 \\
                 --port tap:name=rs0 --metrics 127.0.0.1:9101

  # Switch container veths without any VM, ports from a file:
  ringswitch run --config /etc/ringswitch.toml --port afpacket:ifname=veth-c3

  # Inspect and change a running daemon:
  ringswitch ctl ports
  ringswitch ctl stats --json
  ringswitch ctl add-port tap:name=rs1,queues=2
  ringswitch ctl set-port /run/vm2.sock vlan=none
  ringswitch ctl del-port rs1

  # Three network namespaces switched by ringswitch, then cleaned up:
  ringswitch demo

Port syntax (stable; scripts depend on it):
  vhost-user:path=P[,queues=N][,client][,mac=M][,vlan=V][,offloads=on|off]
             [,qmp=PATH[,qmp-nic=ID]]
  tap:name=N[,queues=N][,vlan=V]
  afpacket:ifname=I[,vlan=V]
  vxlan:local=IP,remote=IP[;IP...],vni=N[,dstport=4789][,name=N][,vlan=V]
  every kind also: [,mac=M][,trunk=10,20-30][,native=V][,port-security=on|off]
                   [,flood-limit=PPS][,mac-limit=N]";

const RUN_EXAMPLES: &str = "\
Examples:
  ringswitch run --port vhost-user:path=/run/vm1.sock --port vhost-user:path=/run/vm2.sock
  ringswitch run --port vhost-user:path=/run/vm1.sock,qmp=/run/vm1.qmp,qmp-nic=net0
  ringswitch run --config /etc/ringswitch.toml --log-format json
  ringswitch run --config /etc/ringswitch.toml --check    # validate, print, exit

Port syntax (stable; scripts depend on it):
  vhost-user:path=P[,queues=N][,client][,mac=M][,vlan=V][,offloads=on|off]
             [,qmp=PATH[,qmp-nic=ID]]
      path      unix socket; ringswitch listens on it (QEMU connects), or with `client`
                connects to QEMU's socket (QEMU `server=on`)
      queues    queue pairs offered to the guest, 1..=16 (default 1)
      mac       the guest NIC's MAC, a unicast address like 52:54:00:12:34:56
      vlan      access VLAN 1..=4094 (default: trunk of all VLANs, native VLAN 1)
      offloads  offer checksum/TSO/USO offloads to the guest (default on)
      qmp       QEMU's QMP socket (QEMU -qmp unix:PATH,server=on,wait=off): the port
                follows the guest's rx filter (promisc, MAC tables, VLANs), which QEMU
                keeps to itself for vhost-user NICs
      qmp-nic   which NIC of that QEMU: its -device id= or its -netdev id= (default:
                QEMU's only NIC)
  tap:name=N[,queues=N][,vlan=V]      a tap device (created if missing), queues 1..=256
  afpacket:ifname=I[,vlan=V]          an existing interface, e.g. a veth
  vxlan:local=IP,remote=IP[;IP...],vni=N[,dstport=4789][,name=N][,vlan=V]
      a VXLAN tunnel (RFC 7348, IPv4 or IPv6 underlay) to remote VTEPs, e.g. Linux
      `ip link add vx0 type vxlan id N local IP remote IP dstport 4789`: floods go to
      every remote, unicast to the VTEP its MAC was learned from. Quote the `;` in a
      shell. name defaults to vxlan<VNI>; vlan= is the VLAN the VNI maps onto.
  Every kind also takes:
      mac            tap/afpacket: the MAC of the far end (a container's interface)
      trunk          trunk port carrying these VLANs tagged, e.g. trunk=10,20-30
      native         VLAN of untagged frames on a trunk (default 1 without trunk=;
                     with trunk= and no native=, untagged frames are dropped)
      port-security  on: only mac= may be the Ethernet source and ARP sender (needs mac=)
      flood-limit    broadcast/unknown-unicast/multicast frames flooded per second
                     (0 or absent: no limit)
      mac-limit      MACs learned behind the port (0 or absent: no limit)

Logging: RUST_LOG (default `info`), e.g. RUST_LOG=ringswitch=debug,info.";

const CTL_EXAMPLES: &str = "\
Examples:
  ringswitch ctl ports
  ringswitch ctl --ctl /tmp/rs.sock fdb
  ringswitch ctl stats --json | jq .stats.ports
  ringswitch ctl add-port vhost-user:path=/run/vm3.sock,queues=2
  ringswitch ctl set-port /run/vm3.sock vlan=20
  ringswitch ctl del-port /run/vm3.sock";

/// io_uring vhost-user virtio-net backend with an in-process L2 switch.
#[derive(Debug, Parser)]
#[command(name = "ringswitch", version, about, after_help = EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the switch with the given ports until SIGINT/SIGTERM.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Talk to a running daemon over its control socket.
    #[command(after_help = CTL_EXAMPLES)]
    Ctl(CtlArgs),
    /// Three network namespaces joined by veths and switched by ringswitch: shows traffic
    /// flowing, then cleans up.
    Demo(DemoArgs),
    /// Write the man pages generated from this command line.
    Man(ManArgs),
    /// Print a shell completion script, e.g. `ringswitch completions bash >
    /// /etc/bash_completion.d/ringswitch`.
    Completions(CompletionsArgs),
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line (for journald/log shippers).
    Json,
}

#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// TOML config file; its `[[port]]` entries come before the `--port` ones, and
    /// command-line flags override its settings.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A port to attach (repeatable); see the syntax below.
    #[arg(long = "port", value_name = "SPEC", value_parser = parse_port_arg)]
    pub ports: Vec<PortSpec>,
    /// Worker threads, 1..=256 (default: one per core).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Busy-poll window after each batch in microseconds, 0..=1000000; 0 = off. Inside a
    /// window guest TX rings are polled without asking the guest for kicks. Default:
    /// automatic, a 50 µs window only while a worker is busy (≥ 64 k completions or guest
    /// frames/s); guest frames keep it open only while the worker has its core to itself.
    #[arg(long, value_name = "USEC")]
    pub poll_us: Option<u32>,
    /// Control socket [default: /run/ringswitch/ctl.sock].
    #[arg(long, value_name = "PATH")]
    pub ctl: Option<PathBuf>,
    /// Serve Prometheus metrics on this address, e.g. 127.0.0.1:9101 (loopback only
    /// unless --metrics-allow-remote).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Allow a non-loopback --metrics address (the endpoint has no authentication).
    #[arg(long)]
    pub metrics_allow_remote: bool,
    /// Log format [default: human].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Turn IGMP/MLD snooping off: all multicast floods within its VLAN.
    #[arg(long)]
    pub no_mcast_snooping: bool,
    /// Send IGMP/MLD general queries when no multicast router does, so snooping works on
    /// a segment without one (like Linux's bridge `multicast_querier`).
    #[arg(long)]
    pub mcast_querier: bool,
    /// IPv4 source address of our IGMP queries (default 0.0.0.0, which loses every
    /// querier election to a real router).
    #[arg(long, value_name = "IPV4")]
    pub mcast_querier_ip: Option<std::net::Ipv4Addr>,
    /// No effect (accepted so existing command lines keep working; logs a warning):
    /// guest memory is never pinned or registered with io_uring.
    #[arg(long)]
    pub no_pin_guest_memory: bool,
    /// Validate the configuration, print it as JSON and exit without starting.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CTL, global = true)]
    pub ctl: PathBuf,
    /// Print the daemon's JSON response instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Ports: kind, state, negotiated features, queues, offloads, rx filter.
    Ports,
    /// Learned and static MAC table entries with their age.
    Fdb,
    /// Multicast group memberships (IGMP/MLD snooping) with their expiry.
    Mdb,
    /// Per-port, per-queue and per-worker counters.
    Stats,
    /// Attach a port at run time (same syntax as `run --port`).
    AddPort {
        #[arg(value_name = "SPEC", value_parser = parse_port_arg)]
        spec: PortSpec,
    },
    /// Detach a port at run time; other ports are not disturbed.
    DelPort {
        /// The port's name as `ctl ports` shows it (socket path, tap or interface name).
        name: String,
    },
    /// Change a running port: `vlan=V|none`, `trunk=LIST|none`, `native=V|none`, `mac=M`
    /// (tap/afpacket), `port-security=on|off`, `flood-limit=PPS`, `mac-limit=N`.
    SetPort {
        /// The port's name as `ctl ports` shows it.
        name: String,
        #[arg(value_name = "CHANGE", value_parser = parse_port_change)]
        change: PortChange,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Leave the namespaces and the daemon running until Ctrl-C, to explore with `ctl`.
    #[arg(long)]
    pub keep: bool,
    /// How long to generate traffic.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub seconds: u64,
    /// Control socket of the demo's daemon.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CTL)]
    pub ctl: PathBuf,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write ringswitch.1 and one page per subcommand into DIR (default: print
    /// ringswitch.1 to stdout).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ringswitch").chain(args.iter().copied()))
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_collects_ports_in_order() {
        let cli = parse(&[
            "run",
            "--port",
            "tap:name=rs0",
            "--port",
            "afpacket:ifname=veth0",
            "--workers",
            "2",
            "--poll-us",
            "50",
            "--log-format",
            "json",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(r.ports.len(), 2);
        assert_eq!(r.ports[0].name(), "rs0");
        assert_eq!(r.ports[1].name(), "veth0");
        assert_eq!(r.workers, Some(2));
        assert_eq!(r.poll_us, Some(50));
        assert_eq!(r.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn bad_port_is_a_usage_error_naming_the_key() {
        let e = parse(&["run", "--port", "vhost-user:path=/tmp/a,queues=0"]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("queues=0"), "{msg}");
        assert!(msg.contains("1..=16"), "{msg}");
    }

    #[test]
    fn ctl_flags_are_global() {
        let cli = parse(&["ctl", "stats", "--json", "--ctl", "/tmp/x.sock"]).unwrap();
        let Command::Ctl(c) = cli.command else {
            panic!("not ctl")
        };
        assert!(c.json);
        assert_eq!(c.ctl, PathBuf::from("/tmp/x.sock"));
        assert!(matches!(c.command, CtlCommand::Stats));

        let cli = parse(&["ctl", "ports"]).unwrap();
        let Command::Ctl(c) = cli.command else {
            panic!("not ctl")
        };
        assert_eq!(c.ctl, PathBuf::from(DEFAULT_CTL));
        assert!(!c.json);
    }

    #[test]
    fn set_port_parses_change() {
        let cli = parse(&["ctl", "set-port", "rs0", "vlan=none"]).unwrap();
        let Command::Ctl(CtlArgs {
            command: CtlCommand::SetPort { name, change },
            ..
        }) = cli.command
        else {
            panic!("not set-port")
        };
        assert_eq!(name, "rs0");
        assert_eq!(change.vlan, Some(None));
        assert!(parse(&["ctl", "set-port", "rs0", "vlan=5000"]).is_err());
        assert!(parse(&["ctl", "set-port", "rs0"]).is_err());
    }

    #[test]
    fn run_port_with_qmp() {
        let cli = parse(&[
            "run",
            "--port",
            "vhost-user:path=/run/vm1.sock,qmp=/run/vm1.qmp,qmp-nic=net0",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        let PortSpec::VhostUser { qmp: Some(q), .. } = &r.ports[0] else {
            panic!("no qmp: {:?}", r.ports)
        };
        assert_eq!(
            (q.path.as_str(), q.nic.as_deref()),
            ("/run/vm1.qmp", Some("net0"))
        );
        let e = parse(&["run", "--port", "vhost-user:path=/a,qmp-nic=net0"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("qmp-nic=net0") && e.contains("add qmp=PATH"),
            "{e}"
        );
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("[,qmp=PATH[,qmp-nic=ID]]"), "{help}");
    }

    #[test]
    fn help_has_examples() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Examples:"), "{help}");
        assert!(help.contains("vhost-user:path=P"), "{help}");
        assert!(
            help.contains("vxlan:local=IP,remote=IP[;IP...],vni=N"),
            "{help}"
        );
    }
}
