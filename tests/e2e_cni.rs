//! `ringswitch-cni` invoked exactly as a container runtime does (CNI 1.0.0: `CNI_*`
//! environment, configuration on stdin, result or error object on stdout) with Debian's
//! `host-local` IPAM plugin, against a running daemon. Everything happens in namespaces
//! of the test: the "host" (daemon, plugin, host veth ends) and two containers.

mod common;

use common::{is_root, ringswitch_command, skip_without, Netns, TempDir, TestScope};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Debian's containernetworking-plugins.
const CNI_PLUGINS: &str = "/usr/lib/cni";

/// The plugin binary: beside the daemon's (`cargo test --workspace` builds both, the
/// plugin because crates/cni has tests of its own), or `RINGSWITCH_CNI`.
fn cni_binary() -> PathBuf {
    let p = std::env::var_os("RINGSWITCH_CNI").map_or_else(
        || Path::new(env!("CARGO_BIN_EXE_ringswitch")).with_file_name("ringswitch-cni"),
        PathBuf::from,
    );
    let built = std::fs::metadata(&p)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: build it with `cargo build -p ringswitch-cni` (cargo test \
                 --workspace does), or set RINGSWITCH_CNI",
                p.display()
            )
        });
    // `cargo test --test e2e_cni` alone does not rebuild the plugin: refuse to test an
    // older one than its sources.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/cni/src");
    if let Ok(rd) = std::fs::read_dir(&src) {
        for f in rd.flatten() {
            let newer = f
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > built);
            assert!(
                !newer || std::env::var_os("RINGSWITCH_CNI").is_some(),
                "{} is older than {}: run `cargo build -p ringswitch-cni` first",
                p.display(),
                f.path().display()
            );
        }
    }
    p
}

struct Runtime<'a> {
    host: &'a Netns,
    conf: Value,
}

/// What one plugin invocation returned.
struct Reply {
    ok: bool,
    out: Value,
    stderr: String,
}

impl Runtime<'_> {
    /// Runs the plugin in the host namespace with only what a runtime passes it.
    fn call(&self, command: &str, id: &str, ns: Option<&Netns>, conf: &Value) -> Reply {
        let netns = ns.map(|n| format!("/run/netns/{}", n.name()));
        let mut c = self.host.command(cni_binary().to_str().unwrap());
        c.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", CNI_PLUGINS)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = &netns {
            c.env("CNI_NETNS", n);
        }
        let mut child = c.spawn().expect("running ringswitch-cni");
        // The plugin may exit before reading (a bad environment): EPIPE is fine.
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.to_string().as_bytes());
        let o = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        Reply {
            ok: o.status.success(),
            out: if stdout.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
            },
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    fn ok(&self, command: &str, id: &str, ns: Option<&Netns>, conf: &Value) -> Value {
        let r = self.call(command, id, ns, conf);
        assert!(r.ok, "{command} {id} failed: {}\n{}", r.out, r.stderr);
        r.out
    }

    /// The configuration with `prevResult` (what a runtime sends to CHECK and DEL).
    fn with_prev(&self, prev: &Value) -> Value {
        let mut c = self.conf.clone();
        c["prevResult"] = prev.clone();
        c
    }
}

fn ctl_ports(sock: &Path) -> Vec<Value> {
    let o = ringswitch_command()
        .args(["ctl", "--ctl"])
        .arg(sock)
        .args(["ports", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["ports"].as_array().cloned().unwrap_or_default()
}

/// Addresses host-local holds for network `name` (one file per address in dataDir).
fn allocations(data_dir: &Path, name: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(data_dir.join(name)) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.parse::<std::net::IpAddr>().is_ok())
        .collect();
    v.sort();
    v
}

/// Pings until an answer comes or 5 s pass (ARP/ND, and IPv6 duplicate address
/// detection, which keeps a new address tentative for about a second).
fn ping(from: &Netns, to: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let ok = from
            .command("ping")
            .args(["-c", "1", "-W", "1", to])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok || std::time::Instant::now() > deadline {
            return ok;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn link_exists(ns: &Netns, name: &str) -> bool {
    ns.ip(&["link", "show", "dev", name]).is_ok()
}

/// Root and host-local (skips outside CI, fails under CI=true).
fn prerequisites_missing() -> bool {
    skip_without("root", is_root(), "run the e2e tests as root")
        || skip_without(
            "host-local",
            Path::new(CNI_PLUGINS).join("host-local").exists(),
            "apt-get install containernetworking-plugins",
        )
}

/// `ringswitch run` in `host` with its control socket at `sock`, once it runs.
fn start_daemon(host: &Netns, sock: &Path) -> common::Process {
    let daemon = host
        .spawn(
            "ringswitch",
            env!("CARGO_BIN_EXE_ringswitch"),
            &["run", "--workers", "1", "--ctl", sock.to_str().unwrap()],
        )
        .unwrap();
    daemon
        .wait_for("ringswitch running", Duration::from_secs(20))
        .unwrap();
    daemon
}

#[test]
fn containers_attached_by_the_cni_plugin_ping_through_ringswitch() {
    let _scope = TestScope::start("e2e_cni", Duration::from_secs(60));
    if prerequisites_missing() {
        return;
    }
    let host = Netns::new("cnih").unwrap();
    let c1 = Netns::new("cni1").unwrap();
    let c2 = Netns::new("cni2").unwrap();
    let dir = TempDir::new("cni").unwrap();
    let sock = dir.path().join("ctl.sock");
    let ipam_dir = dir.path().join("ipam");
    let _daemon = start_daemon(&host, &sock);

    let rt = Runtime {
        host: &host,
        conf: json!({
            "cniVersion": "1.0.0",
            "name": "rsnet",
            "type": "ringswitch-cni",
            "controlSocket": sock,
            "mtu": 1400,
            "port": {"vlan": 10},
            "ipam": {
                "type": "host-local",
                "dataDir": ipam_dir,
                "ranges": [[{"subnet": "198.18.7.0/24"}], [{"subnet": "2001:db8:7::/64"}]],
                "routes": [{"dst": "198.19.0.0/16"}]
            }
        }),
    };

    // ADD two containers.
    let r1 = rt.ok("ADD", "ctr1", Some(&c1), &rt.conf);
    let r2 = rt.ok("ADD", "ctr2", Some(&c2), &rt.conf);
    let sandbox = format!("/run/netns/{}", c1.name());
    assert_eq!(r1["interfaces"][1]["name"], "eth0", "{r1}");
    assert_eq!(r1["interfaces"][1]["sandbox"], sandbox.as_str(), "{r1}");
    assert_eq!(r1["ips"][0]["interface"], 1, "{r1}");
    assert_eq!(r1["ips"][1]["interface"], 1, "{r1}");
    let host1 = r1["interfaces"][0]["name"].as_str().unwrap().to_string();
    // (IPv4, IPv6) of a result, without the prefix length.
    let addrs = |r: &Value| {
        let a = |i: usize| {
            let a = r["ips"][i]["address"].as_str().unwrap();
            a.split('/').next().unwrap().to_string()
        };
        (a(0), a(1))
    };
    let ((a1, a1v6), (a2, a2v6)) = (addrs(&r1), addrs(&r2));
    assert!(
        a1.starts_with("198.18.7.") && a1v6.starts_with("2001:db8:7::"),
        "{r1}"
    );
    let mut held = vec![a1.clone(), a2.clone(), a1v6.clone(), a2v6.clone()];
    held.sort();
    assert_eq!(allocations(&ipam_dir, "rsnet"), held);
    let mut held2 = vec![a2.clone(), a2v6.clone()];
    held2.sort();

    // The container side as IPAM and the config asked; the host side in ringswitch.
    let eth0 = c1.ip(&["-j", "addr", "show", "dev", "eth0"]).unwrap();
    let eth0: Value = serde_json::from_str(&eth0).unwrap();
    assert_eq!(eth0[0]["mtu"], 1400, "{eth0}");
    assert_eq!(eth0[0]["address"], r1["interfaces"][1]["mac"], "{eth0}");
    let routes = c1.ip(&["route", "show", "198.19.0.0/16"]).unwrap();
    assert!(routes.contains("via 198.18.7.1 dev eth0"), "{routes}");
    let ports = ctl_ports(&sock);
    let port = ports
        .iter()
        .find(|p| p["name"] == host1.as_str())
        .unwrap_or_else(|| panic!("no port {host1}: {ports:?}"));
    assert_eq!(
        (port["kind"].as_str(), port["vlan"].as_str()),
        (Some("afpacket"), Some("access 10"))
    );
    assert!(ping(&c1, &a2), "ctr1 → ctr2 through ringswitch");
    assert!(ping(&c2, &a1), "ctr2 → ctr1 through ringswitch");
    assert!(ping(&c1, &a2v6), "ctr1 → ctr2 over IPv6");

    // CHECK passes, and fails (with our code) once the address is gone.
    let check1 = rt.with_prev(&r1);
    assert_eq!(rt.ok("CHECK", "ctr1", Some(&c1), &check1), Value::Null);
    c1.ip(&["addr", "del", &format!("{a1}/24"), "dev", "eth0"])
        .unwrap();
    let r = rt.call("CHECK", "ctr1", Some(&c1), &check1);
    assert!(!r.ok && r.out["code"] == 102, "{}", r.out);
    assert!(r.out["msg"].as_str().unwrap().contains(&a1), "{}", r.out);

    // DEL removes port, veth and allocation; a second DEL is fine.
    rt.ok("DEL", "ctr1", Some(&c1), &check1);
    assert!(ctl_ports(&sock).iter().all(|p| p["name"] != host1.as_str()));
    assert!(!link_exists(&host, &host1), "host end gone");
    assert!(!link_exists(&c1, "eth0"), "container end gone");
    assert_eq!(allocations(&ipam_dir, "rsnet"), held2);
    rt.ok("DEL", "ctr1", Some(&c1), &check1);
    // DEL after the namespace is gone and without prevResult (runtime crash recovery).
    rt.ok("DEL", "ctr1", None, &rt.conf);

    // A port option the daemon refuses: the spec's error object, code 7, with the
    // daemon's reason; nothing left behind (veth and IPAM allocation undone).
    let links_before = host.ip(&["-o", "link"]).unwrap().lines().count();
    let mut bad = rt.conf.clone();
    bad["port"] = json!({"vlan": 10, "bogus-option": "x"});
    let r = rt.call("ADD", "ctr1", Some(&c1), &bad);
    assert!(!r.ok, "{}", r.out);
    assert_eq!(r.out["cniVersion"], "1.0.0", "{}", r.out);
    assert_eq!(r.out["code"], 7, "{}", r.out);
    assert!(
        r.out["msg"].as_str().unwrap().contains("bogus-option"),
        "{}",
        r.out
    );
    assert_eq!(
        host.ip(&["-o", "link"]).unwrap().lines().count(),
        links_before
    );
    assert!(!link_exists(&c1, "eth0"));
    assert_eq!(allocations(&ipam_dir, "rsnet"), held2);
    // An unsupported version: code 1.
    let mut old = rt.conf.clone();
    old["cniVersion"] = json!("0.3.1");
    assert_eq!(rt.call("ADD", "ctr1", Some(&c1), &old).out["code"], 1);

    rt.ok("DEL", "ctr2", Some(&c2), &rt.with_prev(&r2));
    assert!(ctl_ports(&sock).is_empty());
    assert!(allocations(&ipam_dir, "rsnet").is_empty());
}

/// CNI 1.1.0: STATUS answers for the daemon, GC releases exactly the attachments the
/// runtime no longer lists (port, veth, host-local allocation), and ADD/DEL still
/// delegate to Debian's host-local, which speaks only up to 1.0.0.
#[test]
fn status_and_gc_of_cni_1_1() {
    let _scope = TestScope::start("e2e_cni_gc", Duration::from_secs(60));
    if prerequisites_missing() {
        return;
    }
    let host = Netns::new("cnigh").unwrap();
    let c1 = Netns::new("cnig1").unwrap();
    let c2 = Netns::new("cnig2").unwrap();
    let dir = TempDir::new("cnigc").unwrap();
    let sock = dir.path().join("ctl.sock");
    let ipam_dir = dir.path().join("ipam");
    let rt = Runtime {
        host: &host,
        conf: json!({
            "cniVersion": "1.1.0",
            "name": "rsgc",
            "type": "ringswitch-cni",
            "controlSocket": sock,
            "ipam": {
                "type": "host-local",
                "dataDir": ipam_dir,
                "ranges": [[{"subnet": "198.18.9.0/24"}]]
            }
        }),
    };
    // No daemon yet: not available (50).
    let r = rt.call("STATUS", "-", None, &rt.conf);
    assert!(!r.ok && r.out["code"] == 50, "{}", r.out);
    let _daemon = start_daemon(&host, &sock);
    assert_eq!(rt.ok("STATUS", "-", None, &rt.conf), Value::Null);

    let r1 = rt.ok("ADD", "gc1", Some(&c1), &rt.conf);
    let r2 = rt.ok("ADD", "gc2", Some(&c2), &rt.conf);
    assert_eq!(r1["cniVersion"], "1.1.0", "{r1}");
    let name = |r: &Value| r["interfaces"][0]["name"].as_str().unwrap().to_string();
    let (h1, h2) = (name(&r1), name(&r2));
    let addr = |r: &Value| {
        let a = r["ips"][0]["address"].as_str().unwrap();
        a.split('/').next().unwrap().to_string()
    };
    assert!(ping(&c1, &addr(&r2)), "gc1 → gc2 before GC");
    assert_eq!(allocations(&ipam_dir, "rsgc").len(), 2);

    // The runtime lost gc2 (say, it crashed during DEL): GC with only gc1 valid.
    let mut gc = rt.conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "gc1", "ifname": "eth0"}]);
    assert_eq!(rt.ok("GC", "-", None, &gc), Value::Null);
    let ports: Vec<String> = ctl_ports(&sock)
        .iter()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    assert_eq!(ports, vec![h1.clone()], "only gc1's port is left");
    assert!(link_exists(&host, &h1) && !link_exists(&host, &h2));
    assert!(
        !link_exists(&c2, "eth0"),
        "gc2's container end went with its veth"
    );
    assert_eq!(allocations(&ipam_dir, "rsgc"), vec![addr(&r1)]);
    // Another network's GC leaves ours alone; a second GC changes nothing.
    let mut other = gc.clone();
    other["name"] = json!("othernet");
    other["cni.dev/valid-attachments"] = json!([]);
    rt.ok("GC", "-", None, &other);
    rt.ok("GC", "-", None, &gc);
    assert!(link_exists(&host, &h1));
    assert_eq!(allocations(&ipam_dir, "rsgc"), vec![addr(&r1)]);
    // GC with nothing valid releases the rest.
    gc["cni.dev/valid-attachments"] = json!([]);
    rt.ok("GC", "-", None, &gc);
    assert!(ctl_ports(&sock).is_empty());
    assert!(!link_exists(&host, &h1));
    assert!(allocations(&ipam_dir, "rsgc").is_empty());
}
