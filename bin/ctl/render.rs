//! Human output of `ringswitch ctl`: one aligned table per listing. `--json` bypasses
//! this and prints the daemon's response line as is (stable for scripts).

use super::table::{Align, Table};
use crate::control::{FdbRow, MdbRow, PortInfo, Response, StatsReport};

use Align::{Left as L, Right as R};

/// Renders a successful response; `Error` responses are handled by the caller (they go
/// to stderr with a non-zero exit code).
pub fn response(r: &Response) -> String {
    match r {
        Response::Ports { ports: p } => ports(p),
        Response::Fdb { entries } => fdb(entries),
        Response::Mdb { entries } => mdb(entries),
        Response::Stats { stats: s } => stats(s),
        Response::Port { port } => ports(std::slice::from_ref(port)),
        Response::Ok => "ok\n".into(),
        Response::Error { message } => format!("error: {message}\n"),
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

pub fn ports(ports: &[PortInfo]) -> String {
    let mut t = Table::new(&[
        ("ID", R),
        ("NAME", L),
        ("KIND", L),
        ("STATE", L),
        ("MAC", L),
        ("VLAN", L),
        ("MTU", R),
        ("QUEUES", R),
        ("RINGS", L),
        ("FRONTEND", L),
        ("OFFLOADS", L),
        ("RX-FILTER", L),
        ("SECURITY", L),
        ("FEATURES", L),
    ]);
    for p in ports {
        t.row(vec![
            p.id.to_string(),
            p.name.clone(),
            p.kind.clone(),
            p.state.clone(),
            p.mac.clone().unwrap_or_else(|| "-".into()),
            p.vlan.clone(),
            p.mtu.to_string(),
            format!("{}/{}", p.queues_enabled, p.queues),
            rings(p),
            frontend(p),
            list(&p.offloads),
            p.rx_filter.clone(),
            security(p),
            list(&p.features),
        ]);
    }
    let mut out = t.render();
    // A vxlan port's tunnel, in a table of its own (only when there is one): the other
    // kinds have nothing to put in these columns.
    let mut tunnels = Table::new(&[
        ("PORT", L),
        ("VNI", R),
        ("LOCAL", L),
        ("DSTPORT", R),
        ("REMOTES", L),
        ("INNER-MAX", R),
    ]);
    for p in ports {
        if let Some(v) = &p.vxlan {
            let remotes: Vec<String> = v.remotes.iter().map(|r| r.to_string()).collect();
            tunnels.row(vec![
                p.name.clone(),
                v.vni.to_string(),
                v.local.to_string(),
                v.dstport.to_string(),
                remotes.join(","),
                v.inner_max.to_string(),
            ]);
        }
    }
    if !tunnels.is_empty() {
        out.push('\n');
        out.push_str(&tunnels.render());
    }
    out
}

/// Port security and limits: `port-security,flood<=100/s,macs<=2`, `-` when none is set.
fn security(p: &PortInfo) -> String {
    let mut v = Vec::new();
    if p.port_security {
        v.push("port-security".to_string());
    }
    if p.flood_limit > 0 {
        v.push(format!("flood<={}/s", p.flood_limit));
    }
    if p.mac_limit > 0 {
        v.push(format!("macs<={}", p.mac_limit));
    }
    list(&v)
}

/// A vhost-user port's ring sizes: RX/TX of the first queue pair as the driver set them
/// (`-` before it did), then the port's limit: `1024/1024 max 32768`. `-` for other kinds.
fn rings(p: &PortInfo) -> String {
    let Some(max) = p.max_queue_size else {
        return "-".into();
    };
    let size = |q: usize| match p.queue_sizes.get(q) {
        Some(&n) if n > 0 => n.to_string(),
        _ => "-".into(),
    };
    if p.queue_sizes.iter().all(|&n| n == 0) {
        return format!("max {max}");
    }
    format!("{}/{} max {max}", size(0), size(1))
}

/// A vhost-user port's frontend: `none`, or `connected` with the guest RAM mapped from
/// it (`connected 256MiB`), so an operator sees a departed guest's memory released.
/// `-` for other kinds.
fn frontend(p: &PortInfo) -> String {
    match (p.connected, p.guest_memory_bytes) {
        (None, _) => "-".into(),
        (Some(false), Some(0) | None) => "none".into(),
        (Some(c), b) => {
            let b = b.unwrap_or(0);
            let mib = b / (1024 * 1024);
            let size = if mib > 0 && b % (1024 * 1024) == 0 {
                format!("{mib}MiB")
            } else {
                format!("{b}B")
            };
            format!("{} {size}", if c { "connected" } else { "gone" })
        }
    }
}

/// Seconds with one decimal: ages are for humans deciding whether an entry is fresh.
fn secs(s: f64) -> String {
    format!("{s:.1}s")
}

pub fn fdb(rows: &[FdbRow]) -> String {
    let mut t = Table::new(&[
        ("MAC", L),
        ("VLAN", R),
        ("PORT", L),
        ("TYPE", L),
        ("AGE", R),
        ("VTEP", L),
    ]);
    for r in rows {
        t.row(vec![
            r.mac.clone(),
            r.vlan.to_string(),
            r.port.clone(),
            if r.is_static { "static" } else { "learned" }.into(),
            if r.is_static {
                "-".into()
            } else {
                secs(r.age_s)
            },
            r.vtep.map_or_else(|| "-".into(), |v| v.to_string()),
        ]);
    }
    t.render()
}

pub fn mdb(rows: &[MdbRow]) -> String {
    let mut t = Table::new(&[("GROUP", L), ("VLAN", R), ("PORTS", L), ("EXPIRES", R)]);
    for r in rows {
        t.row(vec![
            r.group.clone(),
            r.vlan.to_string(),
            list(&r.ports),
            r.expires_s.map_or_else(|| "permanent".into(), secs),
        ]);
    }
    t.render()
}

pub fn stats(s: &StatsReport) -> String {
    let mut out = format!(
        "uptime {}  fdb entries {}  mdb entries {}\n",
        secs(s.uptime_s),
        s.fdb_entries,
        s.mdb_entries
    );
    out.push('\n');

    let mut ports = Table::new(&[
        ("PORT", L),
        ("RX-PKTS", R),
        ("RX-BYTES", R),
        ("TX-PKTS", R),
        ("TX-BYTES", R),
        ("DROPS", R),
        ("GUEST-WRITEV", R),
    ]);
    let mut drops = Table::new(&[("PORT", L), ("DROP-REASON", L), ("COUNT", R)]);
    let mut queues = Table::new(&[
        ("PORT", L),
        ("QUEUE", R),
        ("RX-PKTS", R),
        ("RX-BYTES", R),
        ("TX-PKTS", R),
        ("TX-BYTES", R),
        ("DROPS", R),
    ]);
    let mut qmp = Table::new(&[
        ("PORT", L),
        ("QMP-CONNECTS", R),
        ("RX-FILTER-QUERIES", R),
        ("APPLIED", R),
        ("ERRORS", R),
    ]);
    let mut vxlan = Table::new(&[("PORT", L), ("VXLAN-RESEGMENTED", R), ("FLOODED", R)]);
    for p in &s.ports {
        let total: u64 = p.drops.iter().map(|(_, n)| *n).fold(0, u64::saturating_add);
        ports.row(vec![
            p.name.clone(),
            p.rx_packets.to_string(),
            p.rx_bytes.to_string(),
            p.tx_packets.to_string(),
            p.tx_bytes.to_string(),
            total.to_string(),
            p.fallback_writes.to_string(),
        ]);
        for (reason, n) in &p.drops {
            drops.row(vec![p.name.clone(), reason.clone(), n.to_string()]);
        }
        if let Some(v) = &p.vxlan {
            vxlan.row(vec![
                p.name.clone(),
                v.resegmented.to_string(),
                v.flooded.to_string(),
            ]);
        }
        if let Some(q) = &p.qmp {
            qmp.row(vec![
                p.name.clone(),
                q.connects.to_string(),
                q.queries.to_string(),
                q.applied.to_string(),
                q.errors.to_string(),
            ]);
        }
        for q in &p.queues {
            queues.row(vec![
                p.name.clone(),
                q.queue.to_string(),
                q.rx_packets.to_string(),
                q.rx_bytes.to_string(),
                q.tx_packets.to_string(),
                q.tx_bytes.to_string(),
                q.drops.to_string(),
            ]);
        }
    }
    let mut workers = Table::new(&[
        ("WORKER", R),
        ("PACKETS", R),
        ("IO_URING_ENTERS", R),
        ("SYSCALLS/PKT", R),
    ]);
    for w in &s.workers {
        workers.row(vec![
            w.worker.to_string(),
            w.packets.to_string(),
            w.io_uring_enters.to_string(),
            format!("{:.4}", w.syscalls_per_packet),
        ]);
    }

    out.push_str(&ports.render());
    for t in [&drops, &queues, &qmp, &vxlan, &workers] {
        if !t.is_empty() {
            out.push('\n');
            out.push_str(&t.render());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{PortCounters, QueueCounters, WorkerCounters};

    #[test]
    fn ports_table() {
        let p = PortInfo {
            id: 0,
            name: "/run/vm1.sock".into(),
            kind: "vhost-user".into(),
            state: "up".into(),
            mac: Some("52:54:00:00:00:01".into()),
            vlan: "access 10".into(),
            queues: 2,
            queues_enabled: 1,
            features: vec!["VERSION_1".into(), "MRG_RXBUF".into()],
            max_queue_size: Some(32768),
            queue_sizes: vec![1024, 1024, 0, 0, 64],
            connected: Some(true),
            guest_memory_bytes: Some(256 << 20),
            offloads: vec![],
            rx_filter: "promisc".into(),
            port_security: true,
            flood_limit: 100,
            mac_limit: 0,
            mtu: 9000,
            vxlan: None,
        };
        let waiting = PortInfo {
            queue_sizes: vec![],
            connected: Some(false),
            guest_memory_bytes: Some(0),
            ..p.clone()
        };
        let tap = PortInfo {
            kind: "tap".into(),
            max_queue_size: None,
            queue_sizes: vec![],
            connected: None,
            guest_memory_bytes: None,
            ..p.clone()
        };
        assert_eq!(frontend(&p), "connected 256MiB");
        assert_eq!(frontend(&waiting), "none");
        assert_eq!(frontend(&tap), "-");
        let odd = PortInfo {
            guest_memory_bytes: Some(4096),
            ..p.clone()
        };
        assert_eq!(frontend(&odd), "connected 4096B");
        let lingering = PortInfo {
            connected: Some(false),
            guest_memory_bytes: Some(1 << 20),
            ..p.clone()
        };
        assert_eq!(frontend(&lingering), "gone 1MiB");
        assert_eq!(rings(&p), "1024/1024 max 32768");
        assert_eq!(rings(&waiting), "max 32768");
        assert_eq!(rings(&tap), "-");
        assert_eq!(security(&p), "port-security,flood<=100/s");
        let open = PortInfo {
            port_security: false,
            flood_limit: 0,
            mac_limit: 2,
            ..p.clone()
        };
        assert_eq!(security(&open), "macs<=2");
        assert_eq!(
            security(&PortInfo {
                mac_limit: 0,
                ..open
            }),
            "-"
        );
        let out = ports(&[p]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID  NAME"), "{out}");
        assert!(
            lines[1].contains("access 10") && lines[1].contains("1/2"),
            "{out}"
        );
        assert!(lines[1].ends_with("VERSION_1,MRG_RXBUF"), "{out}");
        assert!(lines[0].contains("RINGS"), "{out}");
        assert_eq!(
            lines[0].find(" MTU").map(|i| i + 4),
            lines[1].find("9000").map(|i| i + 4)
        );
        assert_eq!(lines[0].find("RINGS"), lines[1].find("1024/1024 max 32768"));
        assert_eq!(lines[0].find("FRONTEND"), lines[1].find("connected 256MiB"));
        // Columns line up: the NAME column starts at the same offset in both lines.
        assert_eq!(lines[0].find("NAME"), lines[1].find("/run"));
        assert_eq!(lines[0].find("KIND"), lines[1].find("vhost-user"));
        assert_eq!(
            lines[0].find("SECURITY"),
            lines[1].find("port-security,flood<=100/s")
        );
    }

    #[test]
    fn vxlan_ports_get_a_tunnel_table() {
        let p = PortInfo {
            id: 3,
            name: "vxlan42".into(),
            kind: "vxlan".into(),
            state: "up".into(),
            mac: None,
            vlan: "access 10".into(),
            queues: 2,
            queues_enabled: 2,
            features: vec![],
            max_queue_size: None,
            queue_sizes: vec![],
            connected: None,
            guest_memory_bytes: None,
            offloads: vec![],
            rx_filter: "promisc".into(),
            port_security: false,
            flood_limit: 0,
            mac_limit: 0,
            mtu: 1500,
            vxlan: Some(Box::new(crate::control::VxlanInfo {
                local: "198.18.0.1".parse().unwrap(),
                remotes: vec!["198.18.0.2".parse().unwrap(), "198.18.0.3".parse().unwrap()],
                vni: 42,
                dstport: 4789,
                inner_max: 1464,
            })),
        };
        let out = ports(std::slice::from_ref(&p));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert!(
            lines[1].contains("vxlan42") && lines[1].contains("vxlan"),
            "{out}"
        );
        assert_eq!(lines[2], "");
        let cols: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "vxlan42",
                "42",
                "198.18.0.1",
                "4789",
                "198.18.0.2,198.18.0.3",
                "1464"
            ],
            "{out}"
        );
        let plain = PortInfo { vxlan: None, ..p };
        assert_eq!(
            ports(&[plain]).lines().count(),
            2,
            "no tunnel table without vxlan ports"
        );
    }

    #[test]
    fn fdb_and_mdb() {
        let out = fdb(&[
            FdbRow {
                mac: "02:00:00:00:00:01".into(),
                vlan: 1,
                port: "veth0".into(),
                is_static: false,
                age_s: 3.25,
                vtep: None,
            },
            FdbRow {
                mac: "02:00:00:00:00:02".into(),
                vlan: 10,
                port: "veth1".into(),
                is_static: true,
                age_s: 0.0,
                vtep: None,
            },
            FdbRow {
                mac: "02:00:00:00:00:03".into(),
                vlan: 10,
                port: "vxlan42".into(),
                is_static: false,
                age_s: 1.0,
                vtep: Some("2001:db8:100::2".parse().unwrap()),
            },
        ]);
        assert!(out.contains("learned") && out.contains("3.2s"), "{out}");
        assert!(out.lines().next().unwrap().ends_with("VTEP"), "{out}");
        assert!(
            out.lines().nth(2).unwrap().trim_end().ends_with("-  -"),
            "{out}"
        );
        let vx = out.lines().nth(3).unwrap();
        assert!(vx.ends_with("1.0s  2001:db8:100::2"), "{out}");
        assert_eq!(
            out.lines().next().unwrap().find("VTEP"),
            vx.find("2001:db8:100::2")
        );
        let out = mdb(&[MdbRow {
            group: "239.1.1.1".into(),
            vlan: 1,
            ports: vec!["a".into(), "b".into()],
            expires_s: None,
        }]);
        assert!(out.contains("a,b") && out.contains("permanent"), "{out}");
    }

    #[test]
    fn stats_tables() {
        let s = StatsReport {
            uptime_s: 12.0,
            ports: vec![PortCounters {
                name: "veth0".into(),
                rx_packets: 10,
                rx_bytes: 1000,
                tx_packets: 5,
                tx_bytes: 500,
                drops: vec![("vlan_not_member".into(), 3), ("rx_filter".into(), 2)],
                fallback_writes: 1,
                queues: vec![QueueCounters {
                    queue: 0,
                    rx_packets: 10,
                    ..QueueCounters::default()
                }],
                qmp: Some(crate::control::QmpCounters {
                    connects: 2,
                    queries: 9,
                    applied: 8,
                    errors: 1,
                }),
                vxlan: Some(crate::control::VxlanCounters {
                    resegmented: 11,
                    flooded: 4,
                }),
            }],
            workers: vec![WorkerCounters {
                worker: 0,
                packets: 15,
                io_uring_enters: 3,
                syscalls_per_packet: 0.2,
            }],
            fdb_entries: 2,
            mdb_entries: 0,
        };
        let out = stats(&s);
        assert!(
            out.starts_with("uptime 12.0s  fdb entries 2  mdb entries 0\n"),
            "{out}"
        );
        let port_line = out.lines().find(|l| l.starts_with("veth0  ")).unwrap();
        let cols: Vec<&str> = port_line.split_whitespace().collect();
        assert_eq!(cols, ["veth0", "10", "1000", "5", "500", "5", "1"]);
        assert!(out.contains("vlan_not_member"), "{out}");
        assert!(out.contains("0.2000"), "{out}");
        assert!(out.contains("IO_URING_ENTERS"), "{out}");
        let qmp_line = out
            .lines()
            .skip_while(|l| !l.contains("QMP-CONNECTS"))
            .nth(1)
            .unwrap();
        let cols: Vec<&str> = qmp_line.split_whitespace().collect();
        assert_eq!(cols, ["veth0", "2", "9", "8", "1"]);
        let vx_line = out
            .lines()
            .skip_while(|l| !l.contains("VXLAN-RESEGMENTED"))
            .nth(1)
            .unwrap();
        let cols: Vec<&str> = vx_line.split_whitespace().collect();
        assert_eq!(cols, ["veth0", "11", "4"]);
    }
}
