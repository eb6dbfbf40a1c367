//! `ringswitch demo`: three "containers" (network namespaces with veths) switched by
//! ringswitch in switch-only mode, with traffic generated in-process: UDP echo probes for
//! a v4/v6 reachability matrix, then a TCP stream with a live progress line, then a
//! summary (matrix, throughput, FDB, drops) — and everything cleaned up, also on Ctrl-C.

use std::io::{IsTerminal, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::control::{Control, PortSpec, RunOptions};
use crate::netns::{ip, spawn_in, Namespaces};
use crate::runtime::Runtime;

/// Options of `ringswitch demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Leave everything running until Ctrl-C, to explore with `ringswitch ctl`.
    pub keep: bool,
    /// Duration of the TCP throughput phase.
    pub seconds: u64,
    /// Control socket path (served while the demo runs).
    pub ctl: PathBuf,
}

const CONTAINERS: usize = 3;
const ECHO_PORT: u16 = 7;
const TCP_PORT: u16 = 5001;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

fn stopped() -> bool {
    STOP.load(Ordering::SeqCst)
}

fn v4(i: usize) -> IpAddr {
    IpAddr::from([198, 18, 0, i as u8])
}

fn v6(i: usize) -> IpAddr {
    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16])
}

/// The demo's topology: namespace names, veth names.
struct Topology {
    /// Deletes the namespaces (and with them the veths) when the demo ends.
    _ns: Namespaces,
    switch_ns: String,
    containers: Vec<String>,
    host_ends: Vec<String>,
}

fn build_topology(tag: &str) -> Result<Topology> {
    let mut ns = Namespaces::default();
    let switch_ns = format!("{tag}-sw");
    ns.add(&switch_ns)?;
    let mut containers = Vec::new();
    let mut host_ends = Vec::new();
    for i in 1..=CONTAINERS {
        let c = format!("{tag}-c{i}");
        ns.add(&c)?;
        let host = format!("{tag}h{i}");
        let inner = format!("{tag}c{i}");
        ip(&[
            "link", "add", &host, "netns", &switch_ns, "type", "veth", "peer", "name", &inner,
            "netns", &c,
        ])?;
        ip(&[
            "-n",
            &c,
            "addr",
            "add",
            &format!("{}/24", v4(i)),
            "dev",
            &inner,
        ])?;
        ip(&[
            "-n",
            &c,
            "addr",
            "add",
            &format!("{}/64", v6(i)),
            "dev",
            &inner,
            "nodad",
        ])?;
        ip(&["-n", &c, "link", "set", &inner, "up"])?;
        // The switch's port must not speak itself (no IPv6 link-local, no ND/RS).
        ip(&[
            "-n",
            &switch_ns,
            "link",
            "set",
            &host,
            "addrgenmode",
            "none",
        ])?;
        ip(&["-n", &switch_ns, "link", "set", &host, "up"])?;
        containers.push(c);
        host_ends.push(host);
    }
    Ok(Topology {
        _ns: ns,
        switch_ns,
        containers,
        host_ends,
    })
}

/// UDP echo servers (v4 and v6) in every container, until `stop`.
fn start_echo_servers(
    t: &Topology,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Result<()>>> {
    let mut hs = Vec::new();
    for (i, c) in t.containers.iter().enumerate() {
        for addr in [v4(i + 1), v6(i + 1)] {
            let stop = stop.clone();
            hs.push(spawn_in(c, move || {
                let s = UdpSocket::bind(SocketAddr::new(addr, ECHO_PORT))?;
                s.set_read_timeout(Some(Duration::from_millis(100)))?;
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(&buf[..n], from);
                    }
                }
                Ok(())
            }));
        }
    }
    hs
}

/// Can container `from` reach `to`'s address with a UDP echo? Up to ~2 s of retries (the
/// first packets also resolve ARP/ND).
fn probe(from_ns: &str, from: IpAddr, to: IpAddr) -> Result<bool> {
    spawn_in(from_ns, move || {
        let s = UdpSocket::bind(SocketAddr::new(from, 0))?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        let msg = b"ringswitch-demo-probe";
        let mut buf = [0u8; 64];
        for _ in 0..10 {
            if stopped() {
                return Ok(false);
            }
            s.send_to(msg, SocketAddr::new(to, ECHO_PORT))?;
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                if &buf[..n] == msg {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
}

/// A TCP stream from container 1 to container 2 for `secs`, reporting progress.
fn tcp_stream(t: &Topology, rt: &Runtime, secs: u64) -> Result<f64> {
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (r, d) = (received.clone(), done.clone());
    let (ltx, lrx) = std::sync::mpsc::channel();
    let server = spawn_in(&t.containers[1], move || {
        let l = TcpListener::bind(SocketAddr::new(v4(2), TCP_PORT))?;
        let _ = ltx.send(());
        l.set_nonblocking(false)?;
        let (mut s, _) = l.accept()?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut buf = vec![0u8; 256 * 1024];
        while !d.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    r.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    });
    lrx.recv_timeout(Duration::from_secs(5))
        .context("TCP sink did not start")?;
    let d = done.clone();
    let client = spawn_in(&t.containers[0], move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(v4(2), TCP_PORT), Duration::from_secs(5))?;
        s.set_write_timeout(Some(Duration::from_millis(200)))?;
        let buf = vec![0x5au8; 256 * 1024];
        while !d.load(Ordering::Relaxed) {
            match s.write(&buf) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    });
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last = (start, 0u64);
    let mut last_print = start;
    while start.elapsed() < Duration::from_secs(secs) && !stopped() {
        std::thread::sleep(Duration::from_millis(250));
        let now = Instant::now();
        let bytes = received.load(Ordering::Relaxed);
        if tty || now.duration_since(last_print) >= Duration::from_secs(1) {
            let rate =
                (bytes - last.1) as f64 * 8.0 / now.duration_since(last.0).as_secs_f64() / 1e9;
            let st = rt.stats();
            let frames: u64 = st.workers.iter().map(|w| w.packets).sum();
            let enters: u64 = st.workers.iter().map(|w| w.io_uring_enters).sum();
            let line = format!(
                "  tcp c1→c2 {:5.2} Gbit/s   {:>9} frames switched   {:.3} io_uring_enter/frame   {:>4.1}s",
                rate,
                frames,
                if frames > 0 { enters as f64 / frames as f64 } else { 0.0 },
                start.elapsed().as_secs_f64()
            );
            if tty {
                eprint!("\r{line}");
            } else {
                eprintln!("{line}");
            }
            last = (now, bytes);
            last_print = now;
        }
    }
    if tty {
        eprintln!();
    }
    done.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let total = received.load(Ordering::Relaxed);
    let c = client
        .join()
        .map_err(|_| anyhow::anyhow!("client panicked"))?;
    let s = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))?;
    c.context("TCP client")?;
    s.context("TCP server")?;
    Ok(total as f64 * 8.0 / elapsed / 1e9)
}

/// Runs the demo.
pub fn run(opts: DemoOptions) -> Result<()> {
    install_signal_handlers();
    let tag = format!("rsd{}", std::process::id() % 100_000);
    println!("ringswitch demo: 3 containers (network namespaces {tag}-c1..3) on veths, switched");
    println!("by ringswitch over AF_PACKET in namespace {tag}-sw; addresses 198.18.0.1-3/24 and");
    println!("2001:db8::1-3/64. Ctrl-C at any time cleans everything up.\n");
    let topo = build_topology(&tag)?;
    let ports: Vec<PortSpec> = topo
        .host_ends
        .iter()
        .map(|h| PortSpec::AfPacket {
            ifname: h.clone(),
            vlan: None,
            mac: None,
            l2: Default::default(),
        })
        .collect();
    let rt = spawn_in(&topo.switch_ns, move || {
        Runtime::start(RunOptions {
            ports,
            workers: 0,
            poll_us: None,
            mcast: Default::default(),
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("runtime start panicked"))??;
    // Serve the control socket while the demo runs, so `ringswitch ctl` can look inside.
    let ctl = crate::ctl::server::CtlListener::bind(&opts.ctl)
        .and_then(|l| crate::ctl::server::CtlServer::start(l, rt.clone()));
    let ctl = match ctl {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("note: no control socket for this demo ({e})");
            None
        }
    };
    let result = drive(&topo, &rt, &opts, ctl.is_some());
    drop(ctl);
    rt.shutdown();
    drop(topo);
    result
}

fn drive(topo: &Topology, rt: &Arc<Runtime>, opts: &DemoOptions, ctl: bool) -> Result<()> {
    let stop_servers = Arc::new(AtomicBool::new(false));
    let servers = start_echo_servers(topo, &stop_servers);
    std::thread::sleep(Duration::from_millis(100));

    println!("reachability (UDP echo, IPv4 / IPv6):");
    print!("{:>8}", "");
    for j in 1..=CONTAINERS {
        print!("{:>12}", format!("→ c{j}"));
    }
    println!();
    let mut all_ok = true;
    for i in 1..=CONTAINERS {
        print!("{:>8}", format!("c{i}"));
        for j in 1..=CONTAINERS {
            if i == j {
                print!("{:>12}", "-");
                continue;
            }
            let a = probe(&topo.containers[i - 1], v4(i), v4(j))?;
            let b = probe(&topo.containers[i - 1], v6(i), v6(j))?;
            all_ok &= a && b;
            let cell = format!(
                "{}/{}",
                if a { "ok" } else { "FAIL" },
                if b { "ok" } else { "FAIL" }
            );
            print!("{cell:>12}");
            let _ = std::io::stdout().flush();
        }
        println!();
        if stopped() {
            break;
        }
    }

    let gbps = if stopped() {
        0.0
    } else {
        println!("\nthroughput ({} s TCP stream):", opts.seconds);
        tcp_stream(topo, rt, opts.seconds)?
    };
    stop_servers.store(true, Ordering::Relaxed);
    for h in servers {
        let _ = h.join();
    }

    println!("\nsummary");
    println!(
        "  reachability     {}",
        if all_ok {
            "full mesh, IPv4 and IPv6"
        } else {
            "INCOMPLETE"
        }
    );
    println!("  tcp c1→c2        {gbps:.2} Gbit/s");
    let fdb = rt.fdb();
    println!("  fdb              {} learned", fdb.len());
    for e in &fdb {
        println!(
            "    {}  vlan {:<4} {:<12} age {:.1}s",
            e.mac, e.vlan, e.port, e.age_s
        );
    }
    let st = rt.stats();
    let frames: u64 = st.workers.iter().map(|w| w.packets).sum();
    let enters: u64 = st.workers.iter().map(|w| w.io_uring_enters).sum();
    println!(
        "  frames switched  {frames} ({:.3} io_uring_enter per frame)",
        if frames > 0 {
            enters as f64 / frames as f64
        } else {
            0.0
        }
    );
    let mut any_drop = false;
    for p in &st.ports {
        for (why, n) in &p.drops {
            any_drop = true;
            // The one drop every run shows: the containers' kernels send IGMP/MLD reports
            // when their links come up, and snooping sends reports only toward multicast
            // routers (RFC 4541 §2.1.1), of which the demo has none.
            let hint = if why == "no_destination" {
                "  (IGMP/MLD reports: no multicast router here, expected)"
            } else {
                ""
            };
            println!("  drop             {:<12} {why}: {n}{hint}", p.name);
        }
    }
    if !any_drop {
        println!("  drops            none");
    }

    if opts.keep && !stopped() {
        println!("\n--keep: running until Ctrl-C. Explore with:");
        println!("  ip netns exec {} ping 198.18.0.2", topo.containers[0]);
        if ctl {
            println!("  ringswitch ctl --ctl {} ports", opts.ctl.display());
        }
        while !stopped() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if stopped() {
        println!("\ninterrupted: cleaning up");
        return Ok(());
    }
    if !all_ok {
        bail!("some containers could not reach each other");
    }
    Ok(())
}
