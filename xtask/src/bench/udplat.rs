//! The project's small UDP request/response latency tool, run inside the benchmark's
//! namespaces as `cargo xtask bench udp-echo ADDR:PORT` and
//! `cargo xtask bench udp-rr ADDR:PORT [--count N] [--size BYTES]`.
//!
//! Why our own and not `netperf UDP_RR`: it is not packaged for the test image, and what
//! we need is tiny — one request in flight, the round-trip time of each, percentiles.
//! The first requests are a warm-up (ARP, FDB learning) and are not counted.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::stats::percentile_sorted;

const WARMUP: u64 = 100;
const TIMEOUT: Duration = Duration::from_millis(200);

/// What `udp-rr` prints as one JSON line.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RrResult {
    pub sent: u64,
    pub received: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

/// `udp-echo ADDR:PORT`: answers every datagram with itself, until killed.
pub fn echo(args: &[String]) -> Result<()> {
    let addr: SocketAddr = args
        .first()
        .context("usage: udp-echo ADDR:PORT")?
        .parse()
        .context("udp-echo: bad ADDR:PORT")?;
    let s = UdpSocket::bind(addr).with_context(|| format!("binding {addr}"))?;
    println!("udp-echo listening on {addr}");
    let mut buf = [0u8; 2048];
    loop {
        let (n, from) = s.recv_from(&mut buf)?;
        s.send_to(&buf[..n], from)?;
    }
}

/// `udp-rr ADDR:PORT [--count N] [--size BYTES]`.
pub fn rr(args: &[String]) -> Result<()> {
    let mut it = args.iter();
    let addr: SocketAddr = it
        .next()
        .context("usage: udp-rr ADDR:PORT [--count N] [--size BYTES]")?
        .parse()
        .context("udp-rr: bad ADDR:PORT")?;
    let (mut count, mut size) = (10_000u64, 18usize);
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--count" => count = v.parse()?,
            "--size" => size = v.parse()?,
            _ => bail!("udp-rr: unknown option {a}"),
        }
    }
    if !(8..=1400).contains(&size) {
        bail!("udp-rr: --size must be 8..=1400 (a sequence number fits)");
    }
    let r = run_rr(addr, WARMUP, count, size)?;
    println!("{}", serde_json::to_string(&r)?);
    Ok(())
}

fn run_rr(addr: SocketAddr, warmup: u64, count: u64, size: usize) -> Result<RrResult> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let s = UdpSocket::bind(bind)?;
    s.connect(addr)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    let mut req = vec![0u8; size];
    let mut resp = vec![0u8; 2048];
    let mut rtts = Vec::with_capacity(count as usize);
    let mut received = 0;
    for seq in 0..warmup + count {
        req[..8].copy_from_slice(&seq.to_be_bytes());
        let t0 = Instant::now();
        s.send(&req)?;
        // Skip late answers to earlier (timed-out) requests.
        let got = loop {
            match s.recv(&mut resp) {
                Ok(n) if n >= 8 && resp[..8] == req[..8] => break true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break false
                }
                // ECONNREFUSED from an ICMP port unreachable: the echo is not up yet.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break false,
                Err(e) => return Err(e.into()),
            }
        };
        if seq >= warmup && got {
            received += 1;
            rtts.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    rtts.sort_by(f64::total_cmp);
    Ok(RrResult {
        sent: count,
        received,
        p50_us: percentile_sorted(&rtts, 50.0),
        p99_us: percentile_sorted(&rtts, 99.0),
        max_us: rtts.last().copied().unwrap_or(f64::NAN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_over_loopback() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut b) {
                let _ = echo.send_to(&b[..n], from);
            }
        });
        let r = run_rr(addr, 10, 200, 32).unwrap();
        assert_eq!((r.sent, r.received), (200, 200));
        assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
    }

    #[test]
    fn nobody_answering_counts_losses() {
        // A bound socket that never answers.
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = run_rr(silent.local_addr().unwrap(), 1, 2, 8).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.received, 0);
        assert!(r.p50_us.is_nan());
    }
}
