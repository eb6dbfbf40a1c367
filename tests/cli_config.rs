//! The command line and the config file, through the real binary: good configurations
//! resolve (`run --check` prints what would start), bad ones fail before anything starts
//! with a message naming the field, the value and the fix. Also `--help`, man pages and
//! completions. Nothing here needs root or namespaces.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ringswitch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ringswitch"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running ringswitch")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory under /tmp (short: unix socket paths are limited to 107 bytes).
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("rs-cli-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn ctl(&self) -> String {
        self.0.join("ctl.sock").display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `run --check` with `args`; returns the printed plan.
fn check(args: &[&str]) -> serde_json::Value {
    let mut a = vec!["run", "--check"];
    a.extend_from_slice(args);
    let o = ringswitch(&a);
    assert!(o.status.success(), "{a:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("--check prints JSON")
}

/// `run --check` with `args` must fail (exit code `code`) with all of `needles` in stderr.
fn fails(args: &[&str], code: i32, needles: &[&str]) {
    let mut a = vec!["run", "--check"];
    a.extend_from_slice(args);
    let o = ringswitch(&a);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(code), "{a:?}: {err}");
    for n in needles {
        assert!(err.contains(n), "{a:?}: expected {n:?} in:\n{err}");
    }
}

#[test]
fn command_line_ports_resolve() {
    let d = Dir::new("good");
    let sock = d.0.join("vm1.sock").display().to_string();
    let plan = check(&[
        "--port",
        &format!(
            "vhost-user:path={sock},queues=4,mac=52:54:00:AA:00:01,vlan=10,offloads=off,\
             max-queue-size=1024"
        ),
        "--port",
        "tap:name=rs0,queues=2",
        "--port",
        "afpacket:ifname=veth0",
        "--workers",
        "2",
        "--poll-us",
        "50",
        "--metrics",
        "127.0.0.1:9101",
        "--ctl",
        &d.ctl(),
    ]);
    let ports = plan["options"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 3);
    assert_eq!(ports[0]["path"], sock.as_str());
    assert_eq!(ports[0]["queues"], 4);
    assert_eq!(ports[0]["mac"], "52:54:00:aa:00:01");
    assert_eq!(ports[0]["vlan"], 10);
    assert_eq!(ports[0]["offloads"], false);
    assert_eq!(ports[0]["client"], false);
    assert_eq!(ports[0]["max_queue_size"], 1024);
    assert_eq!(ports[1]["name"], "rs0");
    assert!(ports[1].get("max_queue_size").is_none());
    assert_eq!(ports[2]["ifname"], "veth0");
    assert_eq!(plan["options"]["workers"], 2);
    assert_eq!(plan["options"]["poll_us"], 50);
    assert_eq!(plan["metrics"], "127.0.0.1:9101");
    assert_eq!(plan["ctl"], d.ctl().as_str());
    assert_eq!(plan["log_format"], "human");
}

#[test]
fn defaults_and_file_merge() {
    let plan = check(&[]);
    assert_eq!(plan["ctl"], "/run/ringswitch/ctl.sock");
    assert_eq!(plan["options"]["workers"], 0);
    assert_eq!(plan["metrics"], serde_json::Value::Null);

    let d = Dir::new("merge");
    let cfg = d.file(
        "rs.toml",
        &format!(
            "workers = 3\npoll-us = 5\nlog-format = \"json\"\n\
             [[port]]\nkind = \"tap\"\nname = \"file0\"\n\
             [[port]]\nkind = \"vhost-user\"\npath = \"{}\"\nmax-queue-size = 4096\n",
            d.0.join("file1.sock").display()
        ),
    );
    let plan = check(&[
        "--config",
        cfg.to_str().unwrap(),
        "--workers",
        "1",
        "--port",
        "afpacket:ifname=cli0",
        "--ctl",
        &d.ctl(),
    ]);
    let names: Vec<&str> = plan["options"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["name"]
                .as_str()
                .or(p["ifname"].as_str())
                .or(p["path"].as_str())
                .unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            "file0",
            &*d.0.join("file1.sock").display().to_string(),
            "cli0"
        ],
        "file ports first, then --port"
    );
    assert_eq!(plan["options"]["ports"][1]["max_queue_size"], 4096);
    assert_eq!(plan["options"]["workers"], 1, "the command line wins");
    assert_eq!(plan["options"]["poll_us"], 5);
    assert_eq!(plan["log_format"], "json");
}

#[test]
fn the_shipped_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ringswitch.toml");
    let d = Dir::new("example");
    let plan = check(&["--config", example.to_str().unwrap(), "--ctl", &d.ctl()]);
    assert_eq!(plan["options"]["ports"].as_array().unwrap().len(), 5);
    assert_eq!(plan["metrics"], "127.0.0.1:9101");
    let vx = &plan["options"]["ports"][4];
    assert_eq!(vx["kind"], "vxlan", "{vx}");
    assert_eq!(vx["name"], "vxlan4242", "{vx}");
    assert_eq!(vx["vni"], 4242, "{vx}");
    assert_eq!(vx["vlan"], 10, "{vx}");
    assert_eq!(vx["remotes"][1], "198.18.100.3", "{vx}");
}

#[test]
fn bad_port_specs_name_key_value_and_fix() {
    // clap usage errors: exit code 2.
    fails(
        &["--port", "vhost-user:path=/tmp/a,queues=0"],
        2,
        &["--port", "queues=0", "queues must be 1..=16"],
    );
    fails(
        &["--port", "tap:name=rs0,colour=blue"],
        2,
        &[
            "unknown key `colour`",
            "valid keys: name, queues, vlan, mac, trunk, native, port-security, flood-limit, \
             mac-limit",
        ],
    );
    fails(
        &["--port", "vhost-user:path=/tmp/a,mac=01:00:5e:00:00:01"],
        2,
        &["mac=01:00:5e:00:00:01", "unicast"],
    );
    fails(
        &["--port", "vhost-user:path=/tmp/a,mac=52:54:00:12:34"],
        2,
        &[
            "mac=52:54:00:12:34",
            "six hex octets like 52:54:00:12:34:56",
        ],
    );
    fails(
        &["--port", "tap:name=t,vlan=4095"],
        2,
        &["vlan=4095", "1..=4094"],
    );
    fails(
        &["--port", "qemu:path=/a"],
        2,
        &[
            "unknown port kind `qemu`",
            "vhost-user, tap, afpacket or vxlan",
        ],
    );
    fails(
        &["--port", "afpacket:"],
        2,
        &["missing `ifname=`", "afpacket:ifname=veth0"],
    );
    fails(
        &["--port", "vhost-user:path=/a,offloads=maybe"],
        2,
        &["offloads=maybe", "on or off"],
    );
    fails(
        &["--port", "vhost-user:path=/a,max-queue-size=1000"],
        2,
        &["max-queue-size=1000", "a power of two in 1..=32768"],
    );
    fails(
        &["--port", "tap:name=t,max-queue-size=1024"],
        2,
        &["unknown key `max-queue-size` for tap ports"],
    );
}

/// Port security, limits and VLAN modes on every kind: on the command line and in a file,
/// printed by `--check` as the ctl socket's JSON has them; bad values and combinations
/// name the key.
#[test]
fn l2_port_options_on_every_kind() {
    let d = Dir::new("l2");
    let sock = d.0.join("vm1.sock").display().to_string();
    let cfg = d.file(
        "l2.toml",
        "[[port]]\nkind = \"tap\"\nname = \"rs0\"\nmac = \"02:00:00:00:00:02\"\n\
         port-security = true\ntrunk = \"10,20-30\"\nnative = 5\n",
    );
    let plan = check(&[
        "--config",
        cfg.to_str().unwrap(),
        "--port",
        &format!("vhost-user:path={sock},mac=52:54:00:00:00:01,port-security=on,vlan=10"),
        "--port",
        "afpacket:ifname=veth0,mac=02:00:00:00:00:03,flood-limit=100,mac-limit=2,trunk=7",
        "--ctl",
        &d.ctl(),
    ]);
    let ports = plan["options"]["ports"].as_array().unwrap();
    assert_eq!(ports[0]["kind"], "tap");
    assert_eq!(ports[0]["mac"], "02:00:00:00:00:02");
    assert_eq!(ports[0]["port_security"], true);
    assert_eq!(ports[0]["trunk"], "10,20-30");
    assert_eq!(ports[0]["native"], 5);
    assert_eq!(ports[1]["port_security"], true);
    assert_eq!(ports[1]["vlan"], 10);
    assert!(ports[1].get("flood_limit").is_none(), "0 is left out");
    assert_eq!(ports[2]["flood_limit"], 100);
    assert_eq!(ports[2]["mac_limit"], 2);
    assert_eq!(ports[2]["trunk"], "7");
    assert!(ports[2].get("port_security").is_none());

    fails(
        &["--port", "afpacket:ifname=v,port-security=on"],
        2,
        &["port-security=on", "add mac=M"],
    );
    fails(
        &["--port", "tap:name=t,vlan=10,trunk=20"],
        2,
        &["trunk=20", "vlan= makes an access port"],
    );
    fails(
        &["--port", "tap:name=t,vlan=10,native=20"],
        2,
        &["native=20", "vlan= makes an access port"],
    );
    fails(
        &["--port", "afpacket:ifname=v,trunk=10,5000"],
        2,
        &["trunk=10,5000", "1..=4094"],
    );
    fails(
        &["--port", "afpacket:ifname=v,native=0"],
        2,
        &["native=0", "1..=4094"],
    );
    fails(
        &["--port", "afpacket:ifname=v,flood-limit=-5"],
        2,
        &["flood-limit=-5", "0..=10000000"],
    );
    fails(
        &["--port", "afpacket:ifname=v,mac-limit=100000"],
        2,
        &["mac-limit=100000", "0..=65536"],
    );
    let bad = d.file(
        "bad.toml",
        "[[port]]\nkind = \"afpacket\"\nifname = \"v\"\nport-security = true\n",
    );
    fails(
        &["--config", bad.to_str().unwrap(), "--ctl", &d.ctl()],
        1,
        &["bad.toml: [[port]] #1: port-security=on", "mac=M"],
    );
    let typed = d.file(
        "typed.toml",
        "[[port]]\nkind = \"afpacket\"\nifname = \"v\"\nport-security = \"maybe\"\n",
    );
    fails(
        &["--config", typed.to_str().unwrap(), "--ctl", &d.ctl()],
        1,
        &["typed.toml", "port-security"],
    );
    // set-port changes are parsed before connecting: bad ones never reach a daemon.
    let o = ringswitch(&["ctl", "--ctl", &d.ctl(), "set-port", "v", "vlan=3,trunk=4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("vlan= makes an access port"),
        "{}",
        stderr(&o)
    );
    let o = ringswitch(&["ctl", "--ctl", &d.ctl(), "set-port", "v", "flood-limit=x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("flood-limit=x"), "{}", stderr(&o));
}

#[test]
fn bad_settings_and_files_name_the_field() {
    let d = Dir::new("bad");
    let ctl = d.ctl();
    fails(
        &["--workers", "0", "--ctl", &ctl],
        1,
        &["workers = 0", "1..=256"],
    );
    fails(
        &["--poll-us", "5000000", "--ctl", &ctl],
        1,
        &["poll-us = 5000000"],
    );
    fails(
        &["--metrics", "0.0.0.0:9101", "--ctl", &ctl],
        1,
        &["metrics = 0.0.0.0:9101", "--metrics-allow-remote"],
    );
    let o = ringswitch(&[
        "run",
        "--check",
        "--metrics",
        "0.0.0.0:9101",
        "--metrics-allow-remote",
        "--ctl",
        &ctl,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let typo = d.file("typo.toml", "wrokers = 2\n");
    fails(
        &["--config", typo.to_str().unwrap(), "--ctl", &ctl],
        1,
        &["typo.toml", "unknown field `wrokers`", "workers"],
    );
    let port_typo = d.file("port.toml", "[[port]]\nkind = \"tap\"\nnmae = \"rs0\"\n");
    fails(
        &["--config", port_typo.to_str().unwrap(), "--ctl", &ctl],
        1,
        &["port.toml", "unknown field `nmae`"],
    );
    let range = d.file(
        "range.toml",
        "[[port]]\nkind = \"vhost-user\"\npath = \"/tmp/x.sock\"\nqueues = 32\n",
    );
    fails(
        &["--config", range.to_str().unwrap(), "--ctl", &ctl],
        1,
        &["range.toml: [[port]] #1: queues=32: queues must be 1..=16"],
    );
    fails(
        &["--config", "/nonexistent/rs.toml", "--ctl", &ctl],
        1,
        &["/nonexistent/rs.toml", "cannot read"],
    );
}

#[test]
fn duplicate_and_busy_socket_paths_are_refused() {
    let d = Dir::new("sock");
    let ctl = d.ctl();
    let sock = d.0.join("vm.sock");
    let spec = format!("vhost-user:path={}", sock.display());
    fails(
        &[
            "--port",
            &spec,
            "--port",
            &format!("{spec},queues=2"),
            "--ctl",
            &ctl,
        ],
        1,
        &["is given twice", "--port #1", "--port #2"],
    );
    let cfg = d.file("dup.toml", "[[port]]\nkind = \"tap\"\nname = \"rs0\"\n");
    fails(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--port",
            "tap:name=rs0",
            "--ctl",
            &ctl,
        ],
        1,
        &["port `rs0` is given twice", "dup.toml: [[port]] #1"],
    );

    // A live listener on the path: another backend owns it.
    let listener = UnixListener::bind(&sock).unwrap();
    fails(
        &["--port", &spec, "--ctl", &ctl],
        1,
        &[
            sock.to_str().unwrap(),
            "held by a live process",
            "choose another path",
        ],
    );
    // In client mode the path is QEMU's listening socket: live is expected.
    check(&["--port", &format!("{spec},client"), "--ctl", &ctl]);
    // A stale socket (owner gone) is fine; `run` removes it when it starts.
    drop(listener);
    check(&["--port", &spec, "--ctl", &ctl]);
    assert!(sock.exists(), "--check changes nothing");

    // A live control socket: another daemon is running.
    let _ctl = UnixListener::bind(&ctl).unwrap();
    fails(&["--ctl", &ctl], 1, &["another ringswitch", "--ctl"]);
}

#[test]
fn help_man_pages_and_completions() {
    let o = ringswitch(&["--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        help.contains("Examples:") && help.contains("ringswitch ctl add-port"),
        "{help}"
    );
    let o = ringswitch(&["run", "--help"]);
    let help = String::from_utf8_lossy(&o.stdout);
    for s in [
        "--port <SPEC>",
        "--metrics-allow-remote",
        "queues    queue pairs",
        "RUST_LOG",
    ] {
        assert!(help.contains(s), "run --help lacks {s:?}:\n{help}");
    }

    let d = Dir::new("man");
    let o = ringswitch(&["man", "--out", d.0.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    for page in [
        "ringswitch.1",
        "ringswitch-run.1",
        "ringswitch-ctl.1",
        "ringswitch-ctl-add-port.1",
    ] {
        let text =
            std::fs::read_to_string(d.0.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page}: not roff"
        );
    }
    let run_page = std::fs::read_to_string(d.0.join("ringswitch-run.1")).unwrap();
    assert!(
        run_page.contains("vhost\\-user:path=P"),
        "examples in the man page"
    );

    let o = ringswitch(&["completions", "bash"]);
    let script = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && script.contains("add-port"),
        "{script}"
    );
    assert!(ringswitch(&["completions", "zsh"]).status.success());
    assert_eq!(ringswitch(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn ctl_without_a_daemon_says_what_to_do() {
    let d = Dir::new("noctl");
    let o = ringswitch(&["ctl", "--ctl", &d.ctl(), "ports"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("is `ringswitch run` running?"), "{err}");
    let o = ringswitch(&["ctl", "add-port", "tap:name=x,queues=0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("queues=0"));
    let o = ringswitch(&["ctl", "set-port", "rs0", "mtu=9000"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("valid keys: vlan"));
}

/// `--no-pin-guest-memory` and the TOML key `pin-guest-memory` are accepted no-ops (guest
/// memory is never pinned): existing command lines and files still resolve, with one
/// warning, and the plan is the same as without them.
#[test]
fn pin_guest_memory_is_an_accepted_no_op() {
    let d = Dir::new("pin");
    let cfg = d.file("rs.toml", "pin-guest-memory = false\n");
    let ctl = d.ctl();
    let plain = check(&["--ctl", &ctl]);
    for args in [
        vec!["--no-pin-guest-memory"],
        vec!["--config", cfg.to_str().unwrap()],
        vec!["--no-pin-guest-memory", "--config", cfg.to_str().unwrap()],
    ] {
        let mut a = vec!["run", "--check", "--ctl", &ctl];
        a.extend_from_slice(&args);
        let o = ringswitch(&a);
        let err = stderr(&o);
        assert!(o.status.success(), "{a:?}: {err}");
        assert_eq!(
            err.matches("has no effect: guest memory is never pinned")
                .count(),
            1,
            "{a:?}: {err}"
        );
        let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(plan, plain, "{a:?}");
    }
    let help = String::from_utf8_lossy(&ringswitch(&["run", "--help"]).stdout).into_owned();
    assert!(help.contains("never pinned"), "{help}");
}

/// The frontend-boundary keys of a vhost-user port (`socket-mode=`, `socket-group=`,
/// `max-mem-regions=`), from `--port` and from TOML; bad values fail with the key named.
#[test]
fn vhost_frontend_boundary_keys() {
    let d = Dir::new("fb");
    let sock = d.0.join("fb.sock").display().to_string();
    let cfg = d.file(
        "rs.toml",
        &format!(
            "[[port]]\nkind = \"vhost-user\"\npath = \"{}\"\nsocket-mode = \"0640\"\n\
             max-mem-regions = 8\n",
            d.0.join("file.sock").display()
        ),
    );
    let plan = check(&[
        "--config",
        cfg.to_str().unwrap(),
        "--port",
        &format!("vhost-user:path={sock},socket-mode=0660,socket-group=kvm,max-mem-regions=64"),
        "--ctl",
        &d.ctl(),
    ]);
    let ports = plan["options"]["ports"].as_array().unwrap();
    assert_eq!(ports[0]["socket_mode"], 0o640);
    assert_eq!(ports[0]["max_mem_regions"], 8);
    assert!(ports[0].get("socket_group").is_none());
    assert_eq!(ports[1]["socket_mode"], 0o660);
    assert_eq!(ports[1]["socket_group"], "kvm");
    assert_eq!(ports[1]["max_mem_regions"], 64);
    for (arg, needles) in [
        ("socket-mode=0999", &["socket-mode=0999", "octal"][..]),
        (
            "socket-mode=01777",
            &["socket-mode=01777", "at most 0777"][..],
        ),
        (
            "socket-group=a:b",
            &["socket-group=a:b", "group name or numeric gid"][..],
        ),
        ("max-mem-regions=0", &["max-mem-regions=0", "1..=509"][..]),
        (
            "max-mem-regions=510",
            &["max-mem-regions=510", "1..=509"][..],
        ),
        (
            "client,socket-mode=0660",
            &["socket-mode=0660", "client"][..],
        ),
    ] {
        fails(
            &["--port", &format!("vhost-user:path={sock},{arg}")],
            2,
            needles,
        );
    }
}
