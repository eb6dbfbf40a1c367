//! `ringswitch run` configuration: the TOML file and the command line merged into one
//! validated [`RunPlan`]. Errors name the field, the value and the fix.
//!
//! Merge rule: settings on the command line override the file; ports are the file's
//! `[[port]]` entries followed by the `--port` ones (a port list is additive, and a
//! script adding one port to a shared config file is the common case).

pub mod file;
pub mod port;
pub mod socket;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::cli::{LogFormat, RunArgs, DEFAULT_CTL};
use crate::control::{McastOptions, PortSpec, RunOptions};
use file::{FileConfig, FileError};
use port::PortError;
use socket::{SocketError, SocketState};

/// What the control socket is called in socket errors and logs (the refusal at `--check`
/// time and at bind time say the same). It must not contain "ringswitch running": that is
/// the daemon's ready line, which tests and scripts wait for.
pub const CTL_SOCKET: &str =
    "the control socket (another ringswitch may hold it: use --ctl PATH for a second daemon)";
/// Worker threads accepted by `--workers` (0 in [`RunOptions`] means one per core).
pub const WORKERS_MAX: i64 = 256;
/// A busy-poll window longer than a second is a misconfiguration, not a latency knob.
pub const POLL_US_MAX: i64 = 1_000_000;

/// Everything `run` needs, validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunPlan {
    pub options: RunOptions,
    pub ctl: PathBuf,
    pub metrics: Option<SocketAddr>,
    /// Passed on to the metrics listener, which re-checks the address itself.
    pub metrics_allow_remote: bool,
    pub log_format: LogFormat,
    /// Accepted options that do nothing any more, one warning each for `run` to log.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{origin}: {source}")]
    Port {
        origin: String,
        #[source]
        source: PortError,
    },
    #[error(
        "port `{name}` is given twice ({first} and {second}): every port needs its own \
         name/socket path; remove one"
    )]
    DuplicatePort {
        name: String,
        first: String,
        second: String,
    },
    #[error(
        "{second}: UDP {endpoint} is already the vxlan port of {first}: give each vxlan \
         port its own local address or dstport (a port carries one VNI)"
    )]
    VxlanEndpoint {
        endpoint: String,
        first: String,
        second: String,
    },
    #[error("{count} ports configured: at most {max} are supported")]
    TooManyPorts { count: usize, max: usize },
    #[error("{field} = {value}: {fix}")]
    Field {
        field: &'static str,
        value: String,
        fix: String,
    },
    #[error("{origin}: {source}")]
    Socket {
        origin: String,
        #[source]
        source: SocketError,
    },
    #[error(
        "{origin}: directory {dir} does not exist: create it, or put the socket somewhere \
         that exists"
    )]
    NoDirectory { origin: String, dir: PathBuf },
}

/// Merges `args` with the config file it names and validates the result. Looks at the
/// file system (sockets in use, directories) but changes nothing.
pub fn resolve(args: &RunArgs) -> Result<RunPlan, ConfigError> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let file_name = args
        .config
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    merge(args, file, &file_name)
}

/// The pure part of [`resolve`] (plus socket probes), separated for tests.
pub fn merge(args: &RunArgs, file: FileConfig, file_name: &str) -> Result<RunPlan, ConfigError> {
    // (origin, spec) in the order the runtime will attach them.
    let mut ports: Vec<(String, PortSpec)> = Vec::new();
    for (i, raw) in file.port.into_iter().enumerate() {
        let origin = format!("{file_name}: [[port]] #{}", i + 1);
        let spec = raw.into_spec().map_err(|source| ConfigError::Port {
            origin: origin.clone(),
            source,
        })?;
        ports.push((origin, spec));
    }
    for (i, spec) in args.ports.iter().enumerate() {
        ports.push((format!("--port #{} ({})", i + 1, spec.name()), spec.clone()));
    }
    check_duplicates(&ports)?;
    if ports.len() > switch::MAX_PORTS {
        return Err(ConfigError::TooManyPorts {
            count: ports.len(),
            max: switch::MAX_PORTS,
        });
    }
    for (origin, spec) in &ports {
        check_listen_socket(origin, spec)?;
    }

    let workers = match args.workers.map(|w| w as i64).or(file.workers) {
        None => 0,
        Some(w) if (1..=WORKERS_MAX).contains(&w) => w as usize,
        Some(w) => {
            return Err(ConfigError::Field {
                field: "workers",
                value: w.to_string(),
                fix: format!("use 1..={WORKERS_MAX}, or leave it out for one per core"),
            })
        }
    };
    let poll_us = match args.poll_us.map(i64::from).or(file.poll_us) {
        None => None,
        Some(p) if (0..=POLL_US_MAX).contains(&p) => Some(p as u32),
        Some(p) => {
            return Err(ConfigError::Field {
                field: "poll-us",
                value: p.to_string(),
                fix: format!("use 0 (off) ..= {POLL_US_MAX} microseconds"),
            })
        }
    };

    let ctl = args
        .ctl
        .clone()
        .or(file.ctl)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CTL));
    if ctl.as_os_str().len() > port::SUN_PATH_MAX || ctl.as_os_str().is_empty() {
        return Err(ConfigError::Field {
            field: "ctl",
            value: ctl.display().to_string(),
            fix: "a unix socket path must be 1 to 107 bytes long".into(),
        });
    }
    // The ctl directory is created at start; only a live daemon on it is an error now.
    if let SocketState::Live =
        socket::probe(&ctl, "the control socket").map_err(|source| ConfigError::Socket {
            origin: "ctl".into(),
            source,
        })?
    {
        return Err(ConfigError::Socket {
            origin: "ctl".into(),
            source: SocketError::InUse {
                path: ctl.clone(),
                what: CTL_SOCKET.into(),
            },
        });
    }

    let allow_remote = args.metrics_allow_remote || file.metrics_allow_remote.unwrap_or(false);
    let metrics = args
        .metrics
        .clone()
        .or(file.metrics)
        .map(|m| parse_metrics_addr(&m, allow_remote))
        .transpose()?;

    // Guest memory used to be pinned as io_uring fixed buffers; it never is now. The flag
    // and the key stay accepted so existing command lines and files keep working.
    let mut warnings = Vec::new();
    let pin = match (args.no_pin_guest_memory, file.pin_guest_memory.is_some()) {
        (true, true) => Some(format!(
            "--no-pin-guest-memory and pin-guest-memory ({file_name})"
        )),
        (true, false) => Some("--no-pin-guest-memory".to_string()),
        (false, true) => Some(format!("pin-guest-memory ({file_name})")),
        (false, false) => None,
    };
    if let Some(what) = pin {
        warnings.push(format!(
            "{what} has no effect: guest memory is never pinned"
        ));
    }
    Ok(RunPlan {
        options: RunOptions {
            ports: ports.into_iter().map(|(_, s)| s).collect(),
            workers,
            poll_us,
            mcast: McastOptions {
                snooping: !args.no_mcast_snooping && file.mcast_snooping.unwrap_or(true),
                querier: args.mcast_querier || file.mcast_querier.unwrap_or(false),
                querier_ip4: args.mcast_querier_ip.or(file.mcast_querier_ip),
            },
        },
        ctl,
        metrics,
        metrics_allow_remote: allow_remote,
        log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        warnings,
    })
}

/// Parses `--metrics ADDR` (an IP:port or a host name:port) and refuses addresses off
/// this host unless `allow_remote`: the endpoint has no authentication, and counters
/// reveal traffic patterns of every guest.
pub fn parse_metrics_addr(s: &str, allow_remote: bool) -> Result<SocketAddr, ConfigError> {
    let field = |fix: String| ConfigError::Field {
        field: "metrics",
        value: s.to_string(),
        fix,
    };
    let addrs: Vec<SocketAddr> = match s.parse::<SocketAddr>() {
        Ok(a) => vec![a],
        Err(_) => s
            .to_socket_addrs()
            .map_err(|e| field(format!("{e}; write an address like 127.0.0.1:9101")))?
            .collect(),
    };
    let Some(first) = addrs.first().copied() else {
        return Err(field(
            "resolves to no address; use e.g. 127.0.0.1:9101".into(),
        ));
    };
    if !allow_remote && !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(field(
            "not a loopback address: metrics have no authentication, so use e.g. \
             127.0.0.1:9101, or add --metrics-allow-remote"
                .into(),
        ));
    }
    Ok(first)
}

/// The key under which two ports collide: their name, and for socket paths the path
/// made absolute and lexically normalised (with the parent resolved when it exists),
/// so `./a.sock` and `/tmp/../tmp/a.sock` are caught as the same socket.
fn identity(spec: &PortSpec) -> String {
    match spec {
        PortSpec::VhostUser { path, .. } => normalize(Path::new(path)).display().to_string(),
        other => other.name().to_string(),
    }
}

fn normalize(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    match (out.parent(), out.file_name()) {
        (Some(dir), Some(name)) => match dir.canonicalize() {
            Ok(d) => d.join(name),
            Err(_) => out,
        },
        _ => out,
    }
}

/// The UDP address a vxlan port receives on (`local:dstport`); None for other kinds.
pub fn vxlan_endpoint(spec: &PortSpec) -> Option<SocketAddr> {
    match spec {
        PortSpec::Vxlan { local, dstport, .. } => Some(SocketAddr::new(*local, *dstport)),
        _ => None,
    }
}

fn check_duplicates(ports: &[(String, PortSpec)]) -> Result<(), ConfigError> {
    for (i, (origin, spec)) in ports.iter().enumerate() {
        for (first, earlier) in &ports[..i] {
            if let (Some(a), Some(b)) = (vxlan_endpoint(earlier), vxlan_endpoint(spec)) {
                // Its receive sockets would join the other port's SO_REUSEPORT group and
                // take a share of its packets.
                if a == b && earlier.name() != spec.name() {
                    return Err(ConfigError::VxlanEndpoint {
                        endpoint: a.to_string(),
                        first: first.clone(),
                        second: origin.clone(),
                    });
                }
            }
            if earlier.name() == spec.name() || identity(earlier) == identity(spec) {
                return Err(ConfigError::DuplicatePort {
                    name: spec.name().to_string(),
                    first: first.clone(),
                    second: origin.clone(),
                });
            }
        }
    }
    Ok(())
}

/// A server-mode vhost-user socket must not be held by a live process (another backend
/// or a second ringswitch) and its directory must exist. Client-mode paths are QEMU's
/// own listening sockets: live is the expected state there.
fn check_listen_socket(origin: &str, spec: &PortSpec) -> Result<(), ConfigError> {
    let PortSpec::VhostUser {
        path,
        client: false,
        ..
    } = spec
    else {
        return Ok(());
    };
    let path = Path::new(path);
    let dir = listen_dir(path);
    if !dir.is_dir() {
        return Err(ConfigError::NoDirectory {
            origin: origin.to_string(),
            dir: dir.to_path_buf(),
        });
    }
    match socket::probe(path, "this port") {
        Ok(SocketState::Live) => Err(ConfigError::Socket {
            origin: origin.to_string(),
            source: SocketError::InUse {
                path: path.to_path_buf(),
                what: "this port".into(),
            },
        }),
        Ok(_) => Ok(()),
        Err(source) => Err(ConfigError::Socket {
            origin: origin.to_string(),
            source,
        }),
    }
}

/// The directory a socket is created in (`.` for a bare file name).
fn listen_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The side effects of starting: removes stale sockets of server-mode vhost-user ports
/// (a crashed run leaves them behind, and bind(2) fails on an existing path). Re-checks
/// liveness, since time passed since [`resolve`].
pub fn prepare_port_sockets(ports: &[PortSpec]) -> Result<(), ConfigError> {
    for spec in ports {
        prepare_port_socket(spec)?;
    }
    Ok(())
}

/// [`prepare_port_sockets`] for one port (also used by `ctl add-port`).
pub fn prepare_port_socket(spec: &PortSpec) -> Result<(), ConfigError> {
    if let PortSpec::VhostUser {
        path,
        client: false,
        ..
    } = spec
    {
        let dir = listen_dir(Path::new(path));
        if !dir.is_dir() {
            return Err(ConfigError::NoDirectory {
                origin: format!("port {path}"),
                dir: dir.to_path_buf(),
            });
        }
        socket::prepare_listen_path(Path::new(path), "this port").map_err(|source| {
            ConfigError::Socket {
                origin: format!("port {path}"),
                source,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::port::parse_port;
    use std::os::unix::net::UnixListener;

    fn args(ports: &[&str]) -> RunArgs {
        RunArgs {
            ports: ports.iter().map(|p| parse_port(p).unwrap()).collect(),
            ctl: Some(PathBuf::from(format!(
                "/tmp/rs-cfgtest-{}-nonexistent/ctl.sock",
                std::process::id()
            ))),
            ..RunArgs::default()
        }
    }

    fn file(text: &str) -> FileConfig {
        FileConfig::parse(text, Path::new("f.toml")).unwrap()
    }

    fn err(a: &RunArgs, f: &str) -> String {
        merge(a, file(f), "f.toml").unwrap_err().to_string()
    }

    #[test]
    fn poll_window_defaults_to_automatic_and_zero_turns_it_off() {
        let plan = merge(&args(&["tap:name=p0"]), file(""), "f.toml").unwrap();
        assert_eq!(plan.options.poll_us, None, "automatic");
        let mut a = args(&["tap:name=p0"]);
        a.poll_us = Some(0);
        let plan = merge(&a, file(""), "f.toml").unwrap();
        assert_eq!(plan.options.poll_us, Some(0), "off");
    }

    #[test]
    fn file_ports_then_cli_ports_cli_settings_win() {
        let mut a = args(&["tap:name=cli0"]);
        a.workers = Some(3);
        let plan = merge(
            &a,
            file("workers = 1\npoll-us = 7\n[[port]]\nkind = \"afpacket\"\nifname = \"veth0\"\n"),
            "f.toml",
        )
        .unwrap();
        let names: Vec<&str> = plan.options.ports.iter().map(|p| p.name()).collect();
        assert_eq!(names, ["veth0", "cli0"]);
        assert_eq!(plan.options.workers, 3);
        assert_eq!(plan.options.poll_us, Some(7));
        assert_eq!(plan.log_format, LogFormat::Human);
        assert_eq!(plan.metrics, None);
        assert!(plan.warnings.is_empty());
        // The pin flag and key are accepted no-ops: one warning, whichever is given.
        let f = merge(&args(&[]), file("pin-guest-memory = false"), "f.toml").unwrap();
        assert_eq!(
            f.warnings,
            ["pin-guest-memory (f.toml) has no effect: guest memory is never pinned"]
        );
        let mut a = args(&[]);
        a.no_pin_guest_memory = true;
        let both = merge(&a, file("pin-guest-memory = true"), "f.toml").unwrap();
        assert_eq!(both.warnings.len(), 1);
        assert!(both.warnings[0].starts_with("--no-pin-guest-memory and pin-guest-memory"));
        assert_eq!(both.options, f.options, "neither changes what runs");
    }

    #[test]
    fn defaults() {
        let a = RunArgs::default();
        let plan = merge(&a, FileConfig::default(), "").unwrap();
        assert_eq!(plan.ctl, PathBuf::from(DEFAULT_CTL));
        assert_eq!(plan.options.workers, 0);
        assert!(plan.options.ports.is_empty());
    }

    #[test]
    fn file_port_errors_name_file_and_entry() {
        let e = err(
            &args(&[]),
            "[[port]]\nkind = \"tap\"\nname = \"a\"\n[[port]]\nkind = \"vhost-user\"\npath = \"/tmp/x\"\nqueues = 40\n",
        );
        assert_eq!(e, "f.toml: [[port]] #2: queues=40: queues must be 1..=16");
        let e = err(
            &args(&[]),
            "[[port]]\nkind = \"vhost-user\"\npath = \"/tmp/x\"\nmax-queue-size = 1000\n",
        );
        assert!(
            e.starts_with(
                "f.toml: [[port]] #1: max-queue-size=1000: max-queue-size must be a \
                           power of two in 1..=32768"
            ),
            "{e}"
        );
        let e = err(
            &args(&[]),
            "[[port]]\nkind = \"tap\"\nname = \"a\"\nqmp = \"x\"\n",
        );
        assert!(e.contains("unknown key `qmp` for tap ports"), "{e}");
        let e = err(
            &args(&[]),
            "[[port]]\nkind = \"afpacket\"\nifname = \"v\"\nport-security = true\n",
        );
        assert!(
            e.starts_with("f.toml: [[port]] #1: port-security=on: ") && e.contains("mac=M"),
            "{e}"
        );
        let e = err(
            &args(&[]),
            "[[port]]\nkind = \"tap\"\nname = \"a\"\nvlan = 10\ntrunk = \"20\"\n",
        );
        assert!(e.starts_with("f.toml: [[port]] #1: trunk=20: "), "{e}");
    }

    #[test]
    fn file_ports_take_the_l2_options() {
        let plan = merge(
            &args(&[]),
            file(
                "[[port]]\nkind = \"afpacket\"\nifname = \"v1\"\nmac = \"02:00:00:00:00:01\"\n\
                 port-security = true\nflood-limit = 100\nmac-limit = 2\n\
                 [[port]]\nkind = \"tap\"\nname = \"t\"\ntrunk = \"10,20-30\"\nnative = 5\n",
            ),
            "f.toml",
        )
        .unwrap();
        let [v1, t] = &plan.options.ports[..] else {
            panic!("{:?}", plan.options.ports)
        };
        assert_eq!(
            v1,
            &parse_port(
                "afpacket:ifname=v1,mac=02:00:00:00:00:01,port-security=on,flood-limit=100,\
                 mac-limit=2"
            )
            .unwrap()
        );
        assert_eq!(
            t,
            &parse_port("tap:name=t,trunk=10,20-30,native=5").unwrap()
        );
    }

    #[test]
    fn duplicates_across_file_and_cli() {
        let e = err(
            &args(&["tap:name=rs0"]),
            "[[port]]\nkind = \"tap\"\nname = \"rs0\"\n",
        );
        assert!(e.contains("port `rs0` is given twice"), "{e}");
        assert!(
            e.contains("f.toml: [[port]] #1") && e.contains("--port #1"),
            "{e}"
        );
        let e = err(
            &args(&[
                "vhost-user:path=/tmp/a.sock",
                "vhost-user:path=/tmp/../tmp/./a.sock",
            ]),
            "",
        );
        assert!(e.contains("given twice"), "{e}");
    }

    #[test]
    fn vxlan_ports_need_their_own_udp_endpoint() {
        let e = err(
            &args(&[
                "vxlan:local=198.18.0.1,remote=198.18.0.2,vni=1",
                "vxlan:local=198.18.0.1,remote=198.18.0.3,vni=2",
            ]),
            "",
        );
        assert_eq!(
            e,
            "--port #2 (vxlan2): UDP 198.18.0.1:4789 is already the vxlan port of --port #1 \
             (vxlan1): give each vxlan port its own local address or dstport (a port \
             carries one VNI)"
        );
        let e = err(
            &args(&[
                "vxlan:local=198.18.0.1,remote=198.18.0.2,vni=1",
                "vxlan:local=198.18.0.9,remote=198.18.0.3,vni=1",
            ]),
            "",
        );
        assert!(e.contains("port `vxlan1` is given twice"), "{e}");
        let plan = merge(
            &args(&[
                "vxlan:local=198.18.0.1,remote=198.18.0.2,vni=1",
                "vxlan:local=198.18.0.1,remote=198.18.0.2,vni=2,dstport=4790",
                "vxlan:local=2001:db8::1,remote=2001:db8::2,vni=3",
            ]),
            file(""),
            "f.toml",
        )
        .unwrap();
        assert_eq!(plan.options.ports.len(), 3);
    }

    #[test]
    fn scalar_ranges() {
        let mut a = args(&[]);
        a.workers = Some(0);
        assert_eq!(
            err(&a, ""),
            "workers = 0: use 1..=256, or leave it out for one per core"
        );
        assert!(err(&args(&[]), "poll-us = -1").contains("poll-us = -1"));
        let mut a = args(&[]);
        a.poll_us = Some(2_000_000);
        assert!(err(&a, "").contains("poll-us = 2000000"));
    }

    #[test]
    fn metrics_loopback_only_unless_allowed() {
        assert_eq!(
            parse_metrics_addr("127.0.0.1:9101", false).unwrap(),
            "127.0.0.1:9101".parse().unwrap()
        );
        assert!(parse_metrics_addr("[::1]:9101", false).is_ok());
        let e = parse_metrics_addr("0.0.0.0:9101", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics = 0.0.0.0:9101") && e.contains("--metrics-allow-remote"));
        assert!(parse_metrics_addr("0.0.0.0:9101", true).is_ok());
        assert!(parse_metrics_addr("9101", false).is_err());
        let mut a = args(&[]);
        a.metrics = Some("198.18.0.1:9101".into());
        assert!(err(&a, "").contains("not a loopback"));
        assert!(merge(&a, file("metrics-allow-remote = true"), "f").is_ok());
    }

    #[test]
    fn live_and_stale_port_sockets() {
        let dir = std::env::temp_dir().join(format!("rs-cfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("vm.sock");
        let spec = format!("vhost-user:path={}", p.display());

        let l = UnixListener::bind(&p).unwrap();
        let e = err(&args(&[&spec]), "");
        assert!(e.contains("held by a live process"), "{e}");
        // Client mode connects to QEMU's live socket: fine.
        assert!(merge(&args(&[&format!("{spec},client")]), file(""), "f").is_ok());
        drop(l);

        let plan = merge(&args(&[&spec]), file(""), "f").unwrap();
        assert!(p.exists(), "resolve changes nothing");
        prepare_port_sockets(&plan.options.ports).unwrap();
        assert!(!p.exists(), "stale socket removed at start");

        let e = err(&args(&["vhost-user:path=/nonexistent-rs-dir/a.sock"]), "");
        assert!(
            e.contains("directory /nonexistent-rs-dir does not exist"),
            "{e}"
        );

        let ctl = dir.join("ctl.sock");
        let _l = UnixListener::bind(&ctl).unwrap();
        let mut a = args(&[]);
        a.ctl = Some(ctl);
        assert!(err(&a, "").contains("another ringswitch"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
