//! The snooping querier in the daemon: with `--mcast-querier`, ringswitch itself sends
//! IGMP general queries (RFC 3376 §4.1) on a segment without a multicast router, the
//! containers' kernels answer with reports that populate the MDB (`ctl mdb`), and a
//! member's leave is answered with group-specific queries (RFC 3376 §6.6.3.1).

mod common;

use common::{Netns, TempDir, TestScope};
use std::time::Duration;

/// Prints, inside `ns`, one line per IGMP query (type 0x11) seen on `dev`:
/// `query src=S dst=D group=G` (the IP source and destination, the query's group
/// address field: 0.0.0.0 in a general query, the group in a group-specific one).
const CAPTURE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
s.bind((sys.argv[1], 0))
s.settimeout(60)
print("capture-ready", flush=True)
a = lambda b: ".".join(str(x) for x in b)
while True:
    f = s.recv(2048)
    ip = f[14:]
    ihl = (ip[0] & 15) * 4
    if ip[9] == 2 and ip[ihl] == 0x11:
        print("query src=%s dst=%s group=%s" % (a(ip[12:16]), a(ip[16:20]),
              a(ip[ihl + 4:ihl + 8])), flush=True)
"#;

#[test]
fn querier_queries_and_hosts_report() {
    let _scope = TestScope::start("querier", Duration::from_secs(120));
    let dir = TempDir::new("querier").unwrap();
    let sw = Netns::new("qsw").unwrap();
    let c1 = Netns::new("qc1").unwrap();
    let c2 = Netns::new("qc2").unwrap();
    sw.veth("q1", &c1, "eth0").unwrap();
    sw.veth("q2", &c2, "eth0").unwrap();
    c1.addr("eth0", "198.18.0.1/24").unwrap();
    c2.addr("eth0", "198.18.0.2/24").unwrap();
    let ctl = dir.path().join("ctl.sock");
    // In the member's namespace: the group-specific queries after its leave go to its port.
    let capture = c2
        .spawn("capture", "python3", &["-c", CAPTURE, "eth0"])
        .unwrap();
    capture
        .wait_for("capture-ready", Duration::from_secs(20))
        .unwrap();
    // A member of 239.1.1.1 in container 2, so a query gets a report back.
    let mut member = c2
        .spawn(
            "member",
            "socat",
            &[
                "-u",
                "UDP4-RECV:5000,ip-add-membership=239.1.1.1:eth0",
                "/dev/null",
            ],
        )
        .unwrap();
    let ctl_s = ctl.display().to_string();
    let _rs = sw
        .spawn(
            "ringswitch",
            env!("CARGO_BIN_EXE_ringswitch"),
            &[
                "run",
                "--workers",
                "1",
                "--mcast-querier",
                "--mcast-querier-ip",
                "198.18.0.254",
                "--port",
                "afpacket:ifname=q1",
                "--port",
                "afpacket:ifname=q2",
                "--ctl",
                &ctl_s,
            ],
        )
        .unwrap();
    let general = capture
        .wait_for("query src=", Duration::from_secs(30))
        .unwrap();
    assert_eq!(
        general.trim(),
        "query src=198.18.0.254 dst=224.0.0.1 group=0.0.0.0",
        "the first query is our querier's general query, to all systems (RFC 3376 §4.1.12)"
    );
    // Container 2's kernel answers the general query; the MDB lists its group.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = common::ringswitch_command()
            .args(["ctl", "--ctl", &ctl_s, "mdb", "--json"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("239.1.1.1") && text.contains("q2") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "239.1.1.1 never appeared in the MDB: {text}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The member leaves (closing its socket sends an IGMPv3 TO_IN({}) report): our
    // querier asks that group alone, sent to the group's address with the group in the
    // group address field (RFC 3376 §4.1.12, §6.6.3.1). A general query matches neither.
    member.stop(Duration::from_secs(5)).unwrap();
    let specific = capture
        .wait_for("group=239.1.1.1", Duration::from_secs(20))
        .unwrap();
    assert_eq!(
        specific.trim(),
        "query src=198.18.0.254 dst=239.1.1.1 group=239.1.1.1",
        "a group-specific query from our querier answers the leave"
    );
}
