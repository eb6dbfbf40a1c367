//! Containers (netns + veth) switched through AF_PACKET ports, and a tap port reaching a
//! container: ping v4/v6 and an iperf3 TCP stream through ringswitch's data plane.

mod common;

use std::sync::Arc;

use common::{container, iperf3, ping, prefix, Ns};
use switch::{Switch, SwitchConfig};
use uring_net::{Dataplane, DataplaneConfig, PortSpec};

fn dataplane(workers: usize) -> Dataplane {
    let sw = Arc::new(Switch::new(SwitchConfig::default()));
    Dataplane::new(
        sw,
        DataplaneConfig {
            workers,
            ..Default::default()
        },
    )
    .expect("dataplane")
}

fn report(dp: &Dataplane) {
    let s = dp.stats();
    for p in &s.ports {
        eprintln!(
            "{} {}: rx {} pkts {} B, tx {} pkts {} B, drops: full {} no_queue {} tx_err {} bad {}, enobufs {}, switch {:?}",
            p.port, p.name, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes,
            p.drop_dest_full, p.drop_no_queue, p.drop_tx_error, p.drop_bad_frame, p.rx_enobufs,
            p.switch.drops
        );
    }
    for w in &s.workers {
        eprintln!(
            "worker {}: enters {} packets {} batches {} => {:.4} syscalls/packet",
            w.worker,
            w.enters,
            w.packets,
            w.batches,
            w.syscalls_per_packet()
        );
    }
}

#[test]
fn two_containers_ping_and_tcp() {
    let pfx = prefix("a");
    let sw = Ns::new(format!("{pfx}sw"));
    let c1 = container(&sw, &pfx, 1);
    let c2 = container(&sw, &pfx, 2);
    let dp = dataplane(2);
    let (p1, p2) = sw.run_in(|| {
        (
            dp.add_port(PortSpec::afpacket(&c1.host_if)).unwrap(),
            dp.add_port(PortSpec::afpacket(&c2.host_if)).unwrap(),
        )
    });
    let r = (|| {
        ping(&c1.ns, &c2.v4)?;
        ping(&c2.ns, &c1.v4)?;
        ping(&c1.ns, &c2.v6)?;
        ping(&c2.ns, &c1.v6)?;
        let bytes = iperf3(&c2.ns, &c2.v4, &c1.ns, 2)?;
        eprintln!("iperf3 c1 -> c2: {bytes} bytes");
        if bytes < 1_000_000 {
            return Err(format!("iperf3 moved only {bytes} bytes"));
        }
        Ok::<_, String>(())
    })();
    report(&dp);
    r.unwrap();
    let s = dp.stats();
    let (s1, s2) = (s.port(p1).unwrap(), s.port(p2).unwrap());
    assert!(s1.rx_packets > 0 && s1.tx_packets > 0, "{s1:?}");
    assert!(s2.rx_packets > 0 && s2.tx_packets > 0, "{s2:?}");
    assert!(s.workers.iter().map(|w| w.enters).sum::<u64>() > 0);
    dp.shutdown().unwrap();
}

#[test]
fn three_containers_ping_and_tcp() {
    let pfx = prefix("b");
    let sw = Ns::new(format!("{pfx}sw"));
    let cs: Vec<_> = (1..=3).map(|i| container(&sw, &pfx, i)).collect();
    let dp = dataplane(2);
    sw.run_in(|| {
        for c in &cs {
            dp.add_port(PortSpec::afpacket(&c.host_if)).unwrap();
        }
    });
    let r = (|| {
        for a in &cs {
            for b in &cs {
                if a.host_if != b.host_if {
                    ping(&a.ns, &b.v4)?;
                    ping(&a.ns, &b.v6)?;
                }
            }
        }
        let bytes = iperf3(&cs[2].ns, &cs[2].v6, &cs[0].ns, 2)?;
        eprintln!("iperf3 c1 -> c3 over v6: {bytes} bytes");
        if bytes < 1_000_000 {
            return Err(format!("iperf3 moved only {bytes} bytes"));
        }
        Ok::<_, String>(())
    })();
    report(&dp);
    r.unwrap();
    dp.shutdown().unwrap();
}

/// A tap port created in container 1's namespace (its IP stack uses the tap) reaches
/// container 2 behind an AF_PACKET port.
#[test]
fn tap_port_reaches_container() {
    let pfx = prefix("t");
    let sw = Ns::new(format!("{pfx}sw"));
    let tapns = Ns::new(format!("{pfx}c1"));
    let c2 = container(&sw, &pfx, 2);
    let dp = dataplane(2);
    let tap = format!("{pfx}t");
    let pt = tapns.run_in(|| dp.add_port(PortSpec::tap(&tap)).unwrap());
    sw.run_in(|| dp.add_port(PortSpec::afpacket(&c2.host_if)).unwrap());
    tapns.ip(&["addr", "add", "198.18.0.1/24", "dev", &tap]);
    tapns.ip(&["addr", "add", "2001:db8::1/64", "dev", &tap, "nodad"]);
    let r = (|| {
        ping(&tapns, &c2.v4)?;
        ping(&c2.ns, "198.18.0.1")?;
        ping(&tapns, &c2.v6)?;
        let bytes = iperf3(&c2.ns, &c2.v4, &tapns, 2)?;
        eprintln!("iperf3 tap -> c2: {bytes} bytes");
        if bytes < 1_000_000 {
            return Err(format!("iperf3 moved only {bytes} bytes"));
        }
        Ok::<_, String>(())
    })();
    report(&dp);
    r.unwrap();
    let s = dp.stats();
    let st = s.port(pt).unwrap();
    assert!(st.rx_packets > 0 && st.tx_packets > 0, "{st:?}");
    dp.remove_port(pt).unwrap();
    assert!(dp.stats().port(pt).is_none());
    dp.shutdown().unwrap();
}

/// The busy-poll window (`--poll-us`) path: one worker that keeps polling its ring after
/// each batch still forwards both ways.
#[test]
fn busy_poll_worker_forwards() {
    let pfx = prefix("p");
    let sw = Ns::new(format!("{pfx}sw"));
    let c1 = container(&sw, &pfx, 1);
    let c2 = container(&sw, &pfx, 2);
    let dp = Dataplane::new(
        Arc::new(Switch::new(SwitchConfig::default())),
        DataplaneConfig {
            workers: 1,
            poll_us: 200,
            batch_us: 0,
            ..Default::default()
        },
    )
    .unwrap();
    sw.run_in(|| {
        dp.add_port(PortSpec::afpacket(&c1.host_if)).unwrap();
        dp.add_port(PortSpec::afpacket(&c2.host_if)).unwrap();
    });
    let r = ping(&c1.ns, &c2.v4).and_then(|_| ping(&c2.ns, &c1.v6));
    report(&dp);
    r.unwrap();
    dp.shutdown().unwrap();
}
