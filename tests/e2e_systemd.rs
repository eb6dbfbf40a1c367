//! `ringswitch run` under a service manager's readiness protocol (sd_notify(3), what
//! contrib/systemd/ringswitch.service's `Type=notify` waits for): the daemon sends
//! `READY=1` on `$NOTIFY_SOCKET` once its configured ports are up and ctl answers, and
//! `STOPPING=1` when it is told to stop.

mod common;

use common::{ringswitch_command, Netns, Process, TempDir, TestScope};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn daemon_notifies_ready_after_its_ports_are_up() {
    let _scope = TestScope::start("e2e_systemd", Duration::from_secs(60));
    let sw = Netns::new("sdn").unwrap();
    let peer = Netns::new("sdp").unwrap();
    sw.veth("v1", &peer, "eth0").unwrap();
    sw.veth("v2", &peer, "eth1").unwrap();
    let dir = TempDir::new("sdn").unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let ctl = dir.path().join("ctl.sock");

    let mut cmd = sw.command(env!("CARGO_BIN_EXE_ringswitch"));
    cmd.env("NOTIFY_SOCKET", &notify).args([
        "run",
        "--workers",
        "1",
        "--port",
        "afpacket:ifname=v1",
        "--port",
        "afpacket:ifname=v2",
        "--ctl",
        ctl.to_str().unwrap(),
    ]);
    let mut daemon = Process::spawn("ringswitch", cmd).unwrap();
    let ready = recv(&sock);
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "{ready:?}\n{}",
        daemon.output().tail(20)
    );
    assert!(ready.contains("STATUS=running with 2 ports"), "{ready:?}");

    // Ready means usable: both ports are up and ctl answers at once.
    let o = ringswitch_command()
        .args(["ctl", "--ctl"])
        .arg(&ctl)
        .args(["ports", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let states: Vec<(&str, &str)> = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, vec![("v1", "up"), ("v2", "up")]);

    daemon.signal(libc::SIGTERM);
    assert_eq!(recv(&sock), "STOPPING=1\n");
    let st = daemon.wait_exit(Duration::from_secs(20)).unwrap();
    assert!(st.success(), "{st:?}\n{}", daemon.output().tail(20));
}
