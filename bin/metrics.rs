//! Prometheus metrics: the counters of `ctl stats` in the text exposition format 0.0.4,
//! served by a tiny HTTP/1.1 responder on a std `TcpListener` thread.
//!
//! Why no HTTP framework: one read-only GET endpoint that answers from memory needs a
//! request line and a few headers, not an async runtime. Requests are served one at a
//! time with short timeouts (a scraper polls every few seconds); the endpoint has no
//! authentication, so it binds to loopback unless the user explicitly allows otherwise.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::control::{Control, StatsReport};

/// Longest request head we read; scrapers send a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "metrics address {0} is not loopback: the endpoint has no authentication; use \
         127.0.0.1:PORT or pass --metrics-allow-remote"
    )]
    NotLoopback(SocketAddr),
    #[error("metrics address {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Binds the listener (before the runtime starts, so a taken port fails fast).
pub fn bind(addr: SocketAddr, allow_remote: bool) -> Result<TcpListener, MetricsError> {
    if !allow_remote && !addr.ip().is_loopback() {
        return Err(MetricsError::NotLoopback(addr));
    }
    TcpListener::bind(addr).map_err(|source| MetricsError::Io { addr, source })
}

/// The running endpoint; [`MetricsServer::shutdown`] (or Drop) stops it.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(
        listener: TcpListener,
        control: Arc<dyn Control>,
    ) -> Result<MetricsServer, MetricsError> {
        let addr = listener.local_addr().map_err(|source| MetricsError::Io {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            source,
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        Ok(c) => {
                            if let Err(e) = serve(c, &*control) {
                                tracing::debug!(error = %e, "metrics: request failed");
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "metrics: accept failed");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })
            .map_err(|source| MetricsError::Io { addr, source })?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shutdown(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept(2); an unspecified bind address is reached via
            // loopback of the same family.
            let mut wake = self.addr;
            if wake.ip().is_unspecified() {
                wake.set_ip(match wake {
                    SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let _ = TcpStream::connect_timeout(&wake, IO_TIMEOUT);
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Reads the request head (up to the blank line) with a size cap.
fn read_head(c: &mut TcpStream) -> io::Result<Option<String>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(String::from_utf8_lossy(&buf).into_owned()));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// (status line, extra headers, body) for a request head.
pub fn respond(head: &str, control: &dyn Control) -> (&'static str, &'static str, String, bool) {
    let line = head.lines().next().unwrap_or("");
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", "", "bad request\n".into(), true);
    };
    if !version.starts_with("HTTP/1.") {
        return (
            "505 HTTP Version Not Supported",
            "",
            "HTTP/1.x only\n".into(),
            true,
        );
    }
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return (
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "use GET\n".into(),
            true,
        );
    }
    let path = target.split('?').next().unwrap_or("");
    if path != "/metrics" {
        return (
            "404 Not Found",
            "",
            "metrics are at /metrics\n".into(),
            !head_only,
        );
    }
    ("200 OK", "", render(&control.stats()), !head_only)
}

fn serve(mut c: TcpStream, control: &dyn Control) -> io::Result<()> {
    c.set_read_timeout(Some(IO_TIMEOUT))?;
    c.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some(head) = read_head(&mut c)? else {
        return Ok(());
    };
    let (status, extra, body, send_body) = respond(&head, control);
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        if status.starts_with("200") { CONTENT_TYPE } else { "text/plain; charset=utf-8" },
        body.len()
    )
    .into_bytes();
    if send_body {
        out.extend_from_slice(body.as_bytes());
    }
    c.write_all(&out)?;
    c.flush()?;
    let _ = c.shutdown(Shutdown::Both);
    Ok(())
}

/// Escapes a label value (exposition format: backslash, double quote and newline).
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Go-style float text as Prometheus parses it (`+Inf`, `NaN`).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", label(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// The exposition text for one stats snapshot. Counter names end in `_total`; the same
/// counters as `ctl stats`.
pub fn render(s: &StatsReport) -> String {
    let mut o = Out(String::new());
    o.family(
        "ringswitch_uptime_seconds",
        "gauge",
        "Seconds since the daemon started.",
    );
    o.sample("ringswitch_uptime_seconds", &[], float(s.uptime_s));
    o.family("ringswitch_fdb_entries", "gauge", "MAC table entries.");
    o.sample("ringswitch_fdb_entries", &[], s.fdb_entries);
    o.family(
        "ringswitch_mdb_entries",
        "gauge",
        "Multicast group memberships.",
    );
    o.sample("ringswitch_mdb_entries", &[], s.mdb_entries);

    type PortField = fn(&crate::control::PortCounters) -> u64;
    let port_counters: [(&str, &str, PortField); 5] = [
        (
            "ringswitch_port_rx_packets_total",
            "Packets received from the port.",
            |p| p.rx_packets,
        ),
        (
            "ringswitch_port_rx_bytes_total",
            "Bytes received from the port.",
            |p| p.rx_bytes,
        ),
        (
            "ringswitch_port_tx_packets_total",
            "Packets sent to the port.",
            |p| p.tx_packets,
        ),
        (
            "ringswitch_port_tx_bytes_total",
            "Bytes sent to the port.",
            |p| p.tx_bytes,
        ),
        (
            "ringswitch_port_fallback_writes_total",
            "Guest frames written to host ports (writev: our header and head, then guest pages).",
            |p| p.fallback_writes,
        ),
    ];
    for (name, help, get) in port_counters {
        o.family(name, "counter", help);
        for p in &s.ports {
            o.sample(name, &[("port", &p.name)], get(p));
        }
    }
    o.family(
        "ringswitch_port_drops_total",
        "counter",
        "Frames dropped, by port and reason.",
    );
    for p in &s.ports {
        for (reason, n) in &p.drops {
            o.sample(
                "ringswitch_port_drops_total",
                &[("port", &p.name), ("reason", reason)],
                n,
            );
        }
    }

    type QueueField = fn(&crate::control::QueueCounters) -> u64;
    let queue_counters: [(&str, &str, QueueField); 5] = [
        (
            "ringswitch_queue_rx_packets_total",
            "Packets received on the queue.",
            |q| q.rx_packets,
        ),
        (
            "ringswitch_queue_rx_bytes_total",
            "Bytes received on the queue.",
            |q| q.rx_bytes,
        ),
        (
            "ringswitch_queue_tx_packets_total",
            "Packets sent on the queue.",
            |q| q.tx_packets,
        ),
        (
            "ringswitch_queue_tx_bytes_total",
            "Bytes sent on the queue.",
            |q| q.tx_bytes,
        ),
        (
            "ringswitch_queue_drops_total",
            "Frames dropped on the queue.",
            |q| q.drops,
        ),
    ];
    for (name, help, get) in queue_counters {
        o.family(name, "counter", help);
        for p in &s.ports {
            for q in &p.queues {
                let queue = q.queue.to_string();
                o.sample(name, &[("port", &p.name), ("queue", &queue)], get(q));
            }
        }
    }

    o.family(
        "ringswitch_worker_packets_total",
        "counter",
        "Packets forwarded by the worker.",
    );
    for w in &s.workers {
        o.sample(
            "ringswitch_worker_packets_total",
            &[("worker", &w.worker.to_string())],
            w.packets,
        );
    }
    o.family(
        "ringswitch_worker_io_uring_enters_total",
        "counter",
        "io_uring_enter(2) calls made by the worker.",
    );
    for w in &s.workers {
        o.sample(
            "ringswitch_worker_io_uring_enters_total",
            &[("worker", &w.worker.to_string())],
            w.io_uring_enters,
        );
    }
    o.family(
        "ringswitch_worker_syscalls_per_packet",
        "gauge",
        "io_uring_enter(2) calls per forwarded packet.",
    );
    for w in &s.workers {
        o.sample(
            "ringswitch_worker_syscalls_per_packet",
            &[("worker", &w.worker.to_string())],
            float(w.syscalls_per_packet),
        );
    }
    o.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctl::server::tests::Fake;

    #[test]
    fn exposition_text() {
        let fake = Fake::with_port("a\"b\\c");
        let text = render(&fake.stats());
        assert!(text.contains("# TYPE ringswitch_port_rx_packets_total counter\n"));
        assert!(!text.contains("fixed"), "no fixed-buffer counters: {text}");
        assert!(
            text.contains("ringswitch_port_rx_packets_total{port=\"a\\\"b\\\\c\"} 7\n"),
            "{text}"
        );
        assert!(text.contains(
            "ringswitch_port_drops_total{port=\"a\\\"b\\\\c\",reason=\"vlan_not_member\"} 2\n"
        ));
        assert!(text
            .contains("ringswitch_queue_rx_packets_total{port=\"a\\\"b\\\\c\",queue=\"0\"} 7\n"));
        assert!(text.contains("ringswitch_worker_io_uring_enters_total{worker=\"0\"} 2\n"));
        assert!(text.contains("ringswitch_uptime_seconds 1\n"));
        // Every sample line belongs to a family declared before it.
        let mut declared = std::collections::HashSet::new();
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap().to_string());
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().unwrap();
                assert!(declared.contains(name), "{l}");
            }
        }
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(label("x\ny"), "x\\ny");
    }

    /// Port security's drops reach the exposition under the reason names `ctl stats`
    /// uses (every switch DropReason is exported the same way, by its snake_case name).
    #[test]
    fn port_security_drops_are_exported_by_reason() {
        let s = StatsReport {
            ports: vec![crate::control::PortCounters {
                name: "v1".into(),
                drops: ["spoofed_source", "storm_limited", "mac_limit"]
                    .iter()
                    .zip(1u64..)
                    .map(|(r, n)| (r.to_string(), n))
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = render(&s);
        for (reason, n) in [
            ("spoofed_source", 1),
            ("storm_limited", 2),
            ("mac_limit", 3),
        ] {
            let line =
                format!("ringswitch_port_drops_total{{port=\"v1\",reason=\"{reason}\"}} {n}\n");
            assert!(text.contains(&line), "{line}{text}");
        }
        // The names are the switch's own.
        for r in [
            switch::DropReason::SpoofedSource,
            switch::DropReason::StormLimited,
            switch::DropReason::MacLimit,
        ] {
            assert!(text.contains(&format!("reason=\"{}\"", r.as_str())), "{r}");
        }
    }

    #[test]
    fn http_routing() {
        let fake = Fake::with_port("p");
        let r = respond("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &fake);
        assert_eq!(r.0, "200 OK");
        assert!(r
            .2
            .contains("ringswitch_port_rx_packets_total{port=\"p\"} 7"));
        assert_eq!(
            respond("GET /metrics?x=1 HTTP/1.0\r\n\r\n", &fake).0,
            "200 OK"
        );
        assert!(!respond("HEAD /metrics HTTP/1.1\r\n\r\n", &fake).3);
        assert_eq!(respond("GET / HTTP/1.1\r\n\r\n", &fake).0, "404 Not Found");
        assert_eq!(
            respond("POST /metrics HTTP/1.1\r\n\r\n", &fake).0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond("garbage\r\n\r\n", &fake).0, "400 Bad Request");
        assert!(respond("GET /metrics SPDY/3\r\n\r\n", &fake)
            .0
            .starts_with("505"));
    }

    #[test]
    fn served_over_tcp_on_loopback_only() {
        assert!(matches!(
            bind("198.18.0.1:9101".parse().unwrap(), false),
            Err(MetricsError::NotLoopback(_))
        ));
        let l = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let mut server = MetricsServer::start(l, Arc::new(Fake::with_port("p"))).unwrap();
        let mut c = TcpStream::connect(server.local_addr()).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        c.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.contains(CONTENT_TYPE));
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{head}"
        );
        assert!(body.contains("ringswitch_fdb_entries 1"));
        server.shutdown();
        assert!(TcpStream::connect(server.local_addr()).is_err());
    }
}
