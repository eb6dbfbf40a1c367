//! Syscalls per forwarded packet under load: a UDP flood of small datagrams between two
//! containers through AF_PACKET ports. Ignored by default (it loads the machine for a few
//! seconds); run with
//! `cargo test -p uring-net --test load -- --ignored --nocapture`.
//! `URING_BATCH_US` / `URING_POLL_US` / `URING_WORKERS` override the data plane settings.

mod common;

use std::sync::Arc;

use common::{container, prefix, Ns};
use switch::{Switch, SwitchConfig};
use uring_net::{Dataplane, DataplaneConfig, PortSpec};

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore]
fn udp_flood_syscalls_per_packet() {
    let defaults = DataplaneConfig::default();
    let cfg = DataplaneConfig {
        workers: env("URING_WORKERS", 1) as usize,
        batch_us: env("URING_BATCH_US", defaults.batch_us),
        poll_us: env("URING_POLL_US", defaults.poll_us),
        ..defaults
    };
    let pfx = prefix("l");
    let sw = Ns::new(format!("{pfx}sw"));
    let c1 = container(&sw, &pfx, 1);
    let c2 = container(&sw, &pfx, 2);
    let dp = Dataplane::new(Arc::new(Switch::new(SwitchConfig::default())), cfg.clone()).unwrap();
    sw.run_in(|| {
        dp.add_port(PortSpec::afpacket(&c1.host_if)).unwrap();
        dp.add_port(PortSpec::afpacket(&c2.host_if)).unwrap();
    });
    common::ping(&c1.ns, &c2.v4).unwrap();
    let before = dp.stats();
    let mut srv = c2.ns.spawn(&["iperf3", "-s", "-1", "-B", &c2.v4]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let o = c1.ns.exec(&[
        "iperf3", "-c", &c2.v4, "-u", "-b", "0", "-l", "64", "-t", "3",
    ]);
    let _ = srv.kill();
    let _ = srv.wait();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let after = dp.stats();
    let (mut enters, mut packets) = (0, 0);
    for (a, b) in after.workers.iter().zip(&before.workers) {
        enters += a.enters - b.enters;
        packets += a.packets - b.packets;
    }
    let spp = enters as f64 / packets.max(1) as f64;
    eprintln!("{out}");
    eprintln!(
        "workers {} batch_us {} poll_us {}: {packets} packets, {enters} io_uring_enter => {spp:.4} syscalls/packet",
        cfg.workers, cfg.batch_us, cfg.poll_us
    );
    for p in &after.ports {
        eprintln!(
            "{}: rx {} tx {} dest_full {} tx_err {} enobufs {}",
            p.name, p.rx_packets, p.tx_packets, p.drop_dest_full, p.drop_tx_error, p.rx_enobufs
        );
    }
    assert!(o.status.success(), "{out}");
    assert!(packets > 10_000, "the flood went through the data plane");
    assert!(spp < 1.0, "batching: fewer enters than packets");
    dp.shutdown().unwrap();
}
