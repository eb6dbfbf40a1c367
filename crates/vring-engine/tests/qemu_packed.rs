//! QEMU with `packed=on` against our port: on a port without `packed` the packed ring is
//! not offered, so QEMU must fall back to the split ring (the bit disappears from the
//! device's host features) instead of hanging or failing; on a port with `packed` it is
//! offered and stays in the host features. Checked through QMP `x-query-virtio-status`
//! on a paused VM (no guest kernel needed: QEMU talks to the back-end when the device is
//! realized; a guest negotiating it is tests/e2e_scenarios.rs). The same runs check that
//! QEMU's early SET_VRING_ENABLE (sent before SET_FEATURES) does not cost the
//! connection (see src/relay.rs).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use common::frames::*;
use common::harness::Harness;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn qemu_packed_on_falls_back_to_split_ring() {
    let host = host_features(false);
    assert!(host.contains("VIRTIO_F_VERSION_1"), "{host}");
    assert!(
        !host.contains("VIRTIO_F_RING_PACKED"),
        "packed ring must not be offered: {host}"
    );
}

#[test]
fn qemu_packed_on_keeps_the_packed_ring_offered_with_packed_ports() {
    let host = host_features(true);
    assert!(host.contains("VIRTIO_F_VERSION_1"), "{host}");
    assert!(
        host.contains("VIRTIO_F_RING_PACKED"),
        "a `packed` port offers the packed ring: {host}"
    );
}

/// The host features QEMU (`packed=on`) shows for a NIC on a port with `packed` as given.
fn host_features(packed: bool) -> String {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let mut o = opts("qemu", MAC_A);
    o.packed = packed;
    let h = Harness::new(vec![o]);
    let sock = h.dev(0).options().socket.clone();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "pc,accel=tcg",
            "-m",
            "128",
            "-object",
            "memory-backend-memfd,id=mem,size=128M,share=on",
            "-numa",
            "node,memdev=mem",
            "-chardev",
            &format!("socket,id=c0,path={}", sock.display()),
            "-netdev",
            "vhost-user,id=n0,chardev=c0",
            "-device",
            "virtio-net-pci,id=nic0,netdev=n0,packed=on,vectors=0",
            "-S",
            "-display",
            "none",
            "-nodefaults",
            "-qmp",
            "stdio",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-system-x86_64 must be installed (Debian package qemu-system-x86)");
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let _guard = Kill(child);
    let mut line = String::new();
    let mut read_reply = |want: &str| -> String {
        loop {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "QEMU exited");
            if line.contains(want) {
                return line.clone();
            }
        }
    };
    read_reply("QMP");
    writeln!(stdin, r#"{{"execute":"qmp_capabilities"}}"#).unwrap();
    read_reply("return");
    writeln!(stdin, r#"{{"execute":"x-query-virtio"}}"#).unwrap();
    let list = read_reply("return");
    let path = list
        .split("\"path\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a virtio device path")
        .to_string();
    writeln!(
        stdin,
        r#"{{"execute":"x-query-virtio-status","arguments":{{"path":"{path}"}}}}"#
    )
    .unwrap();
    let st = read_reply("return");
    let host = st.split("\"host-features\"").nth(1).expect("host-features");
    let host = host
        .split("\"backend-features\"")
        .next()
        .unwrap_or(host)
        .to_string();
    // QEMU enabled its rings before any SET_FEATURES; the connection must survive that.
    let port = h.dev(0).port();
    assert!(
        !h.events()
            .contains(&common::harness::Event::Link(port, false)),
        "the back-end dropped QEMU's connection: {:?}",
        h.events()
    );
    writeln!(stdin, r#"{{"execute":"quit"}}"#).unwrap();
    host
}
