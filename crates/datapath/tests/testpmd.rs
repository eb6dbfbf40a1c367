//! An implementation we did not write as the frontend: DPDK testpmd with `net_virtio_user`
//! (a virtio driver without a VM) connects to our port A in txonly mode; its frames cross the
//! switch and arrive at port B, driven by the in-repo frontend.

mod common;

use std::process::{Child, Command, Stdio};

use common::frames::*;
use common::harness::Harness;
use common::*;

/// Kills testpmd even when the test fails, and removes its runtime directory.
struct Kill(Child, String);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.1));
    }
}

#[test]
fn testpmd_virtio_user_txonly_reaches_another_port() {
    let h = Harness::new(vec![opts("pmda", MAC_A), opts("pmdb", MAC_B)]);
    let mut b = TestGuest::start(
        TestGuest::connect(&h.dev(1).options().socket, 3),
        3,
        u64::MAX,
    );
    let mut posted = b.post_rx(0, 128, 2048);
    let sock = h.dev(0).options().socket.clone();
    let prefix = format!("vring-{}", std::process::id());
    let child = Command::new("dpdk-testpmd")
        .args([
            "--no-huge",
            "-m",
            "512",
            "--no-pci",
            "--no-telemetry",
            "--file-prefix",
            &prefix,
            "--vdev",
            &format!("net_virtio_user0,path={},queues=1", sock.display()),
            "--",
            "--total-num-mbufs=16384",
            "--forward-mode=txonly",
            "--stats-period",
            "1",
            &format!("--eth-peer=0,{MAC_B}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("dpdk-testpmd (Debian package dpdk-dev) must be installed: cargo xtask deps");
    let _guard = Kill(child, prefix.clone());

    let hl = b.hdr_len();
    let mut good = 0;
    wait_for("100 testpmd frames at port B", || {
        for (head, len) in b.queues[0].take_used(&b.mem) {
            let i = posted.iter().position(|(h, _)| *h == head).unwrap();
            let (_, addr) = posted.swap_remove(i);
            let data = b.read(addr, len as usize);
            let frame = &data[hl..];
            let p = etherparse::SlicedPacket::from_ethernet(frame).expect("a valid frame");
            let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
                panic!("not Ethernet II")
            };
            assert_eq!(eth.destination(), MAC_B.0);
            assert!(matches!(
                p.transport,
                Some(etherparse::TransportSlice::Udp(_))
            ));
            good += 1;
        }
        let n = 128 - posted.len();
        if n > 0 {
            posted.extend(b.post_rx(0, n, 2048));
        }
        (good >= 100).then_some(())
    });
    let tx = h.dev(0).queue_stats(1).unwrap();
    assert!(tx.frames >= 100, "{tx:?}");
    assert_eq!(
        tx.dropped_total(),
        0,
        "testpmd's chains are all valid: {tx:?}"
    );
}
