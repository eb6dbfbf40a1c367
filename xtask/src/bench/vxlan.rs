//! VXLAN between two hosts (issue 23): hosts A and B are namespaces joined by an underlay
//! veth (IPv4, MTU 1600), each with a "container" (a namespace on a veth into its host),
//! the topology of tests/e2e_vxlan.rs. The hosts are joined over VXLAN (VNI 4242, port
//! 4789) by ringswitch on both ends (an `afpacket` port on the container's veth and a
//! `vxlan:` port, `--workers 1`) or by Linux on both ends (`ip link add … type vxlan` on
//! a bridge with the container's veth) — the same veths and addresses for both, the two
//! interleaved within each run (A B, then B A). iperf3 from container A to container B:
//! TCP (Gbit/s received) and UDP datagrams that fill a 1500-byte MTU (1472 bytes of
//! payload: 1500-byte IP packets, 1514-byte frames, 1564 bytes on the underlay), sent
//! as fast as iperf3 can (packets/s received).
//!
//! The underlay's MTU is 1600 so that the containers keep the usual 1500 and nothing is
//! fragmented or cut on either side (an underlay of 1500 would need container MTUs of
//! 1450 for Linux's bridge, which drops longer frames, while ringswitch would cut TCP
//! to fit: two different workloads).

use std::time::Duration;

use anyhow::{bail, Result};

use super::daemon::Daemon;
use super::netns::{ip, Created, Topology};
use super::proc::{output, pause, Proc};
use super::results::Results;
use super::switchonly::{iperf_client, iperf_server, tcp_received_gbit, udp_received_pps};
use super::Ctx;

pub const VNI: u32 = 4242;
const UNDERLAY_MTU: &str = "1600";
const UL_A: &str = "198.18.100.1";
const UL_B: &str = "198.18.100.2";
const C_A: &str = "198.18.0.1";
const C_B: &str = "198.18.0.2";
/// iperf3 UDP payload: 1472 + 8 (UDP) + 20 (IPv4) = a 1500-byte packet.
const UDP_PAYLOAD: &str = "1472";

/// What joins the two hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joiner {
    Linux,
    Ringswitch,
}

impl Joiner {
    pub fn name(self) -> &'static str {
        match self {
            Joiner::Linux => "linux-vxlan-bridge",
            Joiner::Ringswitch => "ringswitch",
        }
    }
}

/// The figures of this phase: (test, unit, what).
pub const TESTS: [(&str, &str, &str); 2] = [
    ("tcp", "Gbit/s", "iperf3 TCP, Gbit/s"),
    (
        "udp1500",
        "kpps",
        "iperf3 UDP 1500 B packets, kpps received",
    ),
];

/// Results key of one figure.
pub fn key(test: &str, j: Joiner) -> String {
    format!("vxlan/{test}/{}", j.name())
}

/// Hosts A and B, their containers, the underlay and the container veths.
struct Hosts {
    a: String,
    b: String,
    ca: String,
    cb: String,
    _created: Created,
}

impl Hosts {
    fn create() -> Result<Hosts> {
        let pid = std::process::id();
        let [a, b, ca, cb] = ["vxa", "vxb", "vca", "vcb"].map(|n| format!("rsb{pid}-{n}"));
        let mut created = Created::default();
        for ns in [&a, &b, &ca, &cb] {
            created.add(ns)?;
        }
        ip(&[
            "-n", &a, "link", "add", "ul", "type", "veth", "peer", "name", "ul", "netns", &b,
        ])?;
        for (ns, addr) in [(&a, UL_A), (&b, UL_B)] {
            ip(&["-n", ns, "link", "set", "ul", "mtu", UNDERLAY_MTU])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", "ul"])?;
            ip(&["-n", ns, "link", "set", "ul", "up"])?;
        }
        for (host, c, dev, addr) in [(&a, &ca, "h1", C_A), (&b, &cb, "h2", C_B)] {
            ip(&[
                "-n", host, "link", "add", dev, "type", "veth", "peer", "name", "eth0", "netns", c,
            ])?;
            ip(&["-n", host, "link", "set", dev, "addrgenmode", "none"])?;
            ip(&["-n", host, "link", "set", dev, "up"])?;
            ip(&["-n", c, "addr", "add", &format!("{addr}/24"), "dev", "eth0"])?;
            ip(&["-n", c, "link", "set", "eth0", "up"])?;
        }
        Ok(Hosts {
            a,
            b,
            ca,
            cb,
            _created: created,
        })
    }

    /// (host namespace, container veth, local, remote) of each end.
    fn ends(&self) -> [(&str, &str, &str, &str); 2] {
        [
            (self.a.as_str(), "h1", UL_A, UL_B),
            (self.b.as_str(), "h2", UL_B, UL_A),
        ]
    }

    /// The Linux commands of one end (run with `ip -n NS`).
    fn linux_commands(dev: &str, local: &str, remote: &str) -> [Vec<String>; 7] {
        let vni = VNI.to_string();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        [
            s(&[
                "link", "add", "vx0", "type", "vxlan", "id", &vni, "local", local, "remote",
                remote, "dstport", "4789", "dev", "ul",
            ]),
            s(&["link", "add", "br0", "type", "bridge", "stp_state", "0"]),
            s(&["link", "set", "br0", "addrgenmode", "none"]),
            s(&["link", "set", "vx0", "master", "br0"]),
            s(&["link", "set", dev, "master", "br0"]),
            s(&["link", "set", "vx0", "up"]),
            s(&["link", "set", "br0", "up"]),
        ]
    }

    /// Linux vxlan + bridge on both ends; the commands, for results.json.
    fn linux_up(&self) -> Result<Vec<String>> {
        let mut cmds = vec![];
        for (ns, dev, local, remote) in self.ends() {
            for c in Self::linux_commands(dev, local, remote) {
                let mut args = vec!["-n", ns];
                args.extend(c.iter().map(String::as_str));
                ip(&args)?;
                cmds.push(format!("ip {}", args.join(" ")));
            }
        }
        Ok(cmds)
    }

    /// Removes both ends' bridge and vxlan devices (the veths stay).
    fn linux_down(&self) -> Result<()> {
        for (ns, ..) in self.ends() {
            for dev in ["br0", "vx0"] {
                if ip(&["-n", ns, "link", "show", dev]).is_ok() {
                    ip(&["-n", ns, "link", "del", dev])?;
                }
            }
        }
        Ok(())
    }

    /// ringswitch on both ends.
    fn ringswitch_up(&self, ctx: &Ctx) -> Result<Vec<Daemon>> {
        let mut ds = vec![];
        for (ns, dev, local, remote) in self.ends() {
            let ports = [
                format!("afpacket:ifname={dev}"),
                format!("vxlan:local={local},remote={remote},vni={VNI}"),
            ];
            let ctl = ctx
                .tmp
                .join(format!("ctl-vx-{dev}-{}.sock", std::process::id()));
            ds.push(Daemon::start(
                &ctx.ringswitch,
                Some(ns),
                None,
                &ports,
                1,
                &[],
                ctl,
            )?);
        }
        Ok(ds)
    }
}

/// Figures of one run of one joiner.
struct RunFigures {
    tcp_gbit: Result<f64>,
    udp_kpps: Result<f64>,
    commands: Vec<String>,
}

/// Brings `j` up, checks container A reaches B (which also fills ARP caches and FDBs),
/// runs TCP then UDP, takes `j` down again.
fn run_once(ctx: &Ctx, h: &Hosts, j: Joiner) -> Result<RunFigures> {
    let mut commands = vec![];
    let mut daemons = vec![];
    match j {
        Joiner::Linux => commands.extend(h.linux_up()?),
        Joiner::Ringswitch => {
            daemons = h.ringswitch_up(ctx)?;
            commands.extend(daemons.iter().map(|d| d.proc.cmdline.clone()));
        }
    }
    pause(Duration::from_millis(300))?;
    let mut ping = Topology::exec(&h.ca, &["ping", "-c", "3", "-i", "0.2", "-W", "2", C_B]);
    if let Err(e) = output(&mut ping) {
        let _ = h.linux_down();
        bail!(
            "container A does not reach container B over {}: {e:#}",
            j.name()
        );
    }
    let tcp_gbit = iperf_client(ctx, &h.ca, C_B, &[]).and_then(|(v, c)| {
        commands.push(c);
        tcp_received_gbit(&v)
    });
    let udp_kpps =
        iperf_client(ctx, &h.ca, C_B, &["-u", "-b", "0", "-l", UDP_PAYLOAD]).and_then(|(v, c)| {
            commands.push(c);
            udp_received_pps(&v).map(|p| p / 1e3)
        });
    for d in &mut daemons {
        // A daemon that died mid-run makes its figures worthless.
        d.proc.ensure_running()?;
    }
    match j {
        Joiner::Linux => h.linux_down()?,
        Joiner::Ringswitch => drop(daemons),
    }
    Ok(RunFigures {
        tcp_gbit,
        udp_kpps,
        commands,
    })
}

pub fn phase(ctx: &Ctx, r: &mut Results) -> Result<()> {
    let hosts = Hosts::create()?;
    let server: Proc = iperf_server(&hosts.cb, C_B)?;
    for run in 0..ctx.runs {
        let mut order = [Joiner::Linux, Joiner::Ringswitch];
        if run % 2 == 1 {
            order.reverse();
        }
        for j in order {
            let n = j.name();
            eprintln!("bench: vxlan {n} (run {}/{})", run + 1, ctx.runs);
            match run_once(ctx, &hosts, j) {
                Ok(f) => {
                    let mut cmds = vec![server.cmdline.clone()];
                    cmds.extend(f.commands);
                    for ((test, unit, what), v) in TESTS.iter().zip([f.tcp_gbit, f.udp_kpps]) {
                        let label = format!("{n}: {what}");
                        match v {
                            Ok(v) => r.add(&key(test, j), &label, unit, v, &cmds),
                            Err(e) => r.fail(&key(test, j), &label, unit, &format!("{e:#}"), &cmds),
                        }
                    }
                }
                Err(e) => {
                    super::proc::check_interrupted()?;
                    eprintln!("bench:   failed: {e:#}");
                    let _ = hosts.linux_down();
                    for (test, unit, what) in TESTS {
                        let label = format!("{n}: {what}");
                        r.fail(&key(test, j), &label, unit, &format!("{e:#}"), &[]);
                    }
                }
            }
        }
    }
    drop(server);
    drop(hosts);
    Ok(())
}

/// The report section, when the phase ran.
pub fn render(r: &Results) -> Option<String> {
    use super::report::cell;
    use super::stats::ratio;
    use std::fmt::Write as _;
    let joiners = [Joiner::Linux, Joiner::Ringswitch];
    if TESTS
        .iter()
        .all(|(t, ..)| joiners.iter().all(|&j| r.get(&key(t, j)).is_none()))
    {
        return None;
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## 11. VXLAN between two hosts\n\n\
         Two namespaces joined by an IPv4 underlay veth (MTU {UNDERLAY_MTU}), a container \
         veth (MTU 1500) on each, VXLAN (VNI {VNI}) by Linux (`type vxlan` + bridge) or by \
         ringswitch (`afpacket` + `vxlan:` ports) on both ends, interleaved. iperf3 container \
         A → B; UDP: 1500-byte IP packets, received per second.\n\n\
         | test | Linux vxlan + bridge | ringswitch | ratio |\n|---|---|---|---|"
    );
    for (t, _, what) in TESTS {
        let a = r.summary(&key(t, Joiner::Linux));
        let b = r.summary(&key(t, Joiner::Ringswitch));
        let _ = writeln!(
            md,
            "| {what} | {} | {} | {} |",
            cell(a),
            cell(b),
            ratio(b, a).map_or("—".into(), |x| format!("{x:.2}×"))
        );
    }
    let _ = writeln!(md, "\n(ratio = ringswitch / Linux.)");
    Some(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_compares_linux_and_ringswitch() {
        let mut r = Results::default();
        assert!(render(&r).is_none());
        r.add(&key("tcp", Joiner::Linux), "", "Gbit/s", 4.0, &[]);
        r.add(&key("tcp", Joiner::Ringswitch), "", "Gbit/s", 3.0, &[]);
        r.fail(&key("udp1500", Joiner::Ringswitch), "", "kpps", "boom", &[]);
        let md = render(&r).unwrap();
        assert!(md.contains("## 11. VXLAN between two hosts"), "{md}");
        assert!(
            md.contains("| iperf3 TCP, Gbit/s | 4.00 | 3.00 | 0.75× |"),
            "{md}"
        );
        assert!(
            md.contains("| iperf3 UDP 1500 B packets, kpps received | — | — | — |"),
            "{md}"
        );
    }

    #[test]
    fn linux_ends_mirror_each_other() {
        let a = Hosts::linux_commands("h1", UL_A, UL_B);
        assert_eq!(
            a[0].join(" "),
            "link add vx0 type vxlan id 4242 local 198.18.100.1 remote 198.18.100.2 \
             dstport 4789 dev ul"
        );
        assert_eq!(a[4].join(" "), "link set h1 master br0");
    }
}
