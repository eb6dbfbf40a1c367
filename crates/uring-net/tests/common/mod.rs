//! Test topology helpers: network namespaces that the test creates and a Drop guard deletes
//! (deleting a namespace deletes the veths and taps in it), so nothing is left behind in
//! the root namespace even when a test fails. Addresses: 198.18.0.0/15, 2001:db8::/32.
#![allow(dead_code)]

pub mod guest;

use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A unique short prefix for this test's namespaces and interfaces.
pub fn prefix(tag: &str) -> String {
    format!(
        "rs{}{}{}",
        std::process::id() % 100_000,
        tag,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"))
}

/// Runs a command and panics with its output when it fails.
pub fn sh(args: &[&str]) {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A network namespace owned by the test.
pub struct Ns {
    pub name: String,
}

impl Ns {
    pub fn new(name: String) -> Ns {
        sh(&["ip", "netns", "add", &name]);
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// Runs a command inside the namespace and returns its output.
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        run(&v)
    }

    /// Spawns a command inside the namespace.
    pub fn spawn(&self, args: &[&str]) -> std::process::Child {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn in netns")
    }

    /// Runs `f` on a fresh thread that has joined this namespace (so the fds it opens —
    /// taps, AF_PACKET sockets — belong to it) and returns its result.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("open netns");
                // SAFETY: setns on this (fresh, scoped) thread only; the fd is valid.
                let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("netns thread panicked")
        })
    }

    pub fn mac(&self, ifname: &str) -> [u8; 6] {
        let o = self.exec(&["cat", &format!("/sys/class/net/{ifname}/address")]);
        let s = String::from_utf8_lossy(&o.stdout);
        let v: Vec<u8> = s
            .trim()
            .split(':')
            .map(|h| u8::from_str_radix(h, 16).expect("mac"))
            .collect();
        v.try_into().expect("6 bytes")
    }

    pub fn counter(&self, ifname: &str, name: &str) -> u64 {
        let o = self.exec(&["cat", &format!("/sys/class/net/{ifname}/statistics/{name}")]);
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .expect("counter")
    }
}

/// A child process that is killed and reaped when dropped (no zombies on early returns).
pub struct Reaped(pub std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A "container": a namespace whose `eth0` is one end of a veth; the other end (`host`)
/// lives in the switch namespace.
pub struct Container {
    pub ns: Ns,
    pub host_if: String,
    pub v4: String,
    pub v6: String,
}

/// Creates container `i` (1-based) attached by veth to `sw`, with 198.18.0.i/24 and
/// 2001:db8::i/64.
pub fn container(sw: &Ns, pfx: &str, i: u8) -> Container {
    let ns = Ns::new(format!("{pfx}c{i}"));
    let host_if = format!("h{i}");
    sw.ip(&[
        "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ]);
    sw.ip(&["link", "set", &host_if, "up"]);
    let v4 = format!("198.18.0.{i}");
    let v6 = format!("2001:db8::{i}");
    ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
    ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    Container {
        ns,
        host_if,
        v4,
        v6,
    }
}

/// Pings `dst` from `ns` (v4 or v6 by address form); returns the ping output on failure.
pub fn ping(ns: &Ns, dst: &str) -> Result<(), String> {
    let o = ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", dst]);
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ping {dst} from {}: {}{}",
            ns.name,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// A TCP stream with iperf3 from `client` to `server_addr` in `server`; returns the bytes
/// the receiver got.
pub fn iperf3(server: &Ns, server_addr: &str, client: &Ns, secs: u32) -> Result<u64, String> {
    let mut srv = server.spawn(&["iperf3", "-s", "-1", "-B", server_addr]);
    let mut last = String::new();
    let mut result = Err(String::new());
    for _ in 0..50 {
        let o = client.exec(&["iperf3", "-c", server_addr, "-t", &secs.to_string(), "-J"]);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        if o.status.success() && !last.contains("\"error\"") {
            result = parse_bytes_received(&last).ok_or_else(|| format!("no result in {last}"));
            break;
        }
        if !last.contains("Connection refused") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = srv.kill();
    let _ = srv.wait();
    result.map_err(|e| if e.is_empty() { last } else { e })
}

fn parse_bytes_received(json: &str) -> Option<u64> {
    let i = json.find("\"sum_received\"")?;
    let rest = &json[i..];
    let j = rest.find("\"bytes\":")? + "\"bytes\":".len();
    let num: String = rest[j..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    num.parse().ok()
}
