//! Containers (netns + veth) switched through AF_PACKET ports, and a tap port reaching a
//! container: ping v4/v6 and an iperf3 TCP stream through ringswitch's data plane.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

mod common;

use std::sync::Arc;

use common::{container, iperf3, ping, prefix, Ns, Reaped};
use switch::{DropReason, Switch, SwitchConfig, VlanMode};
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
            "{} {}: rx {} pkts {} B, tx {} pkts {} B, drops: full {} no_queue {} tx_err {} bad {} rx_queue {}, enobufs {}, switch {:?}",
            p.port, p.name, p.rx_packets, p.rx_bytes, p.tx_packets, p.tx_bytes,
            p.drop_dest_full, p.drop_no_queue, p.drop_tx_error, p.drop_bad_frame, p.drop_rx_queue, p.rx_enobufs,
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

/// Sends `n` 64-byte UDP datagrams to `dst` port 9 as fast as Python can.
const PY_BLAST: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"x" * 64, (sys.argv[1], 9))
"#;

/// The busy-poll window (`--poll-us`) path: one worker that keeps polling its ring after
/// each batch still forwards both ways, and enters the kernel only for work
/// (ARCHITECTURE.md, io_uring data plane): a poll pass that finds nothing costs no system
/// call (IORING_SQ_TASKRUN says whether entering would run anything), and one enter
/// submits and reaps a whole batch. With a 300 ms window the worker polls through the
/// whole test, which used to cost 2.6 M `io_uring_enter`s. Enters are counted, not timed.
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
            poll_us: 300_000,
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
    // Light traffic: every frame is a batch of its own, and costs at most its receive
    // completion, its send's submission and its send completion: 3 enters. Measured
    // ~1.3; the constant covers the ports' setup.
    let w = dp.stats().workers[0].clone();
    assert!(
        w.enters <= 3 * w.packets + 20,
        "{} io_uring_enters for {} ping packets: a poll pass enters without work",
        w.enters,
        w.packets
    );
    // A flood: frames arriving while the worker works are reaped, forwarded and their
    // sends submitted by one enter per batch: measured 0.016-0.019 per frame; a bound of
    // 0.5 leaves room for a noisy host and fails a regression to one enter per frame.
    const BLAST: u64 = 20_000;
    let o = c1
        .ns
        .exec(&["python3", "-c", PY_BLAST, &c2.v4, &BLAST.to_string()]);
    assert!(o.status.success(), "{o:?}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    report(&dp);
    let f = dp.stats().workers[0].clone();
    let (enters, packets) = (f.enters - w.enters, f.packets - w.packets);
    eprintln!("flood: {enters} enters for {packets} frames");
    assert!(
        packets >= BLAST / 4,
        "only {packets} of {BLAST} frames forwarded"
    );
    assert!(
        2 * enters < packets,
        "{enters} io_uring_enters for {packets} flood frames: not one enter per batch"
    );
    dp.shutdown().unwrap();
}

fn access(ifname: &str, vid: u16) -> PortSpec {
    match PortSpec::afpacket(ifname) {
        PortSpec::AfPacket { mut config } => {
            config.vlan = VlanMode::Access(vid);
            PortSpec::AfPacket { config }
        }
        other => other,
    }
}

/// Raw sender of VLAN-10-tagged UDP frames (this kernel has no 802.1Q interfaces, so the
/// "trunk" container speaks VLAN through a packet socket). Args: dst mac, src mac (hex).
const PY_SEND_TAGGED: &str = r#"
import socket, struct, sys
dst = bytes.fromhex(sys.argv[1]); src = bytes.fromhex(sys.argv[2])
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s & 0xffff) + (s >> 16); s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
pl = b'tagged-hello\n'
udp = struct.pack('!HHHH', 40000, 5000, 8 + len(pl), 0) + pl
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
                 socket.inet_aton('198.18.10.2'), socket.inet_aton('198.18.10.1'))
ip = ip[:10] + struct.pack('!H', csum(ip)) + ip[12:]
f = dst + src + struct.pack('!HHH', 0x8100, 10, 0x0800) + ip + udp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('eth0', 0))
for _ in range(3): s.send(f)
"#;

/// Raw receiver: prints `vid=<VLAN>` for the first frame carrying `to-trunk`, reading the
/// tag in band or from PACKET_AUXDATA (the veth hands tags over out of band).
const PY_RECV_TAGGED: &str = r#"
import socket, struct, select, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind(('eth0', 0))
s.setsockopt(263, 8, 1)
print('ready', flush=True)
end = time.time() + 8
while time.time() < end:
    r, _, _ = select.select([s], [], [], 0.5)
    if not r: continue
    data, anc, _, _ = s.recvmsg(65535, socket.CMSG_SPACE(20))
    vid = None
    for lvl, typ, d in anc:
        if lvl == 263 and typ == 8 and len(d) >= 20:
            st, = struct.unpack_from('I', d, 0); tci, = struct.unpack_from('H', d, 16)
            if st & 16: vid = tci & 0xfff
    if data[12:14] == b'\x81\x00': vid = struct.unpack('!H', data[14:16])[0] & 0xfff
    if b'to-trunk' in data:
        print('vid=%s' % vid, flush=True); break
"#;

fn hex(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect()
}

/// VLANs over AF_PACKET: c1 on an access port of VLAN 10, c2 on a trunk port (speaking
/// VLAN 10 tagged through a raw socket), c3 on an access port of VLAN 20 with an address in
/// c1's subnet. Trunk → access: the tag (which the veth hands over out of band and
/// PACKET_AUXDATA puts back) is popped on the way to c1. Access → trunk: the tag is pushed.
/// c3 is isolated.
#[test]
fn vlan_access_and_trunk_over_afpacket() {
    use std::io::BufRead;
    let pfx = prefix("v");
    let sw = Ns::new(format!("{pfx}sw"));
    let mk = |i: u8| {
        let ns = Ns::new(format!("{pfx}c{i}"));
        let host_if = format!("h{i}");
        sw.ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        sw.ip(&["link", "set", &host_if, "up"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        (ns, host_if)
    };
    let (n1, h1) = mk(1);
    let (n2, h2) = mk(2);
    let (n3, h3) = mk(3);
    n1.ip(&["addr", "add", "198.18.10.1/24", "dev", "eth0"]);
    n3.ip(&["addr", "add", "198.18.10.3/24", "dev", "eth0"]);
    let (m1, m2) = (n1.mac("eth0"), n2.mac("eth0"));
    n1.ip(&[
        "neigh",
        "add",
        "198.18.10.2",
        "lladdr",
        &m2.map(|b| format!("{b:02x}")).join(":"),
        "dev",
        "eth0",
    ]);
    let dp = dataplane(2);
    let (p1, p2) = sw.run_in(|| {
        let p1 = dp.add_port(access(&h1, 10)).unwrap();
        let p2 = dp.add_port(PortSpec::afpacket(&h2)).unwrap();
        dp.add_port(access(&h3, 20)).unwrap();
        (p1, p2)
    });
    let r = (|| {
        // trunk -> access
        let mut rcv = Reaped(n1.spawn(&[
            "timeout",
            "5",
            "socat",
            "-u",
            "UDP4-RECV:5000,bind=198.18.10.1",
            "STDOUT",
        ]));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let o = n2.exec(&["python3", "-c", PY_SEND_TAGGED, &hex(m1), &hex(m2)]);
        if !o.status.success() {
            return Err(format!("raw send: {o:?}"));
        }
        let mut got = String::new();
        if let Some(mut out) = rcv.0.stdout.take() {
            use std::io::Read;
            let _ = out.read_to_string(&mut got);
        }
        if !got.contains("tagged-hello") {
            return Err(format!(
                "c1 did not get the trunk's VLAN 10 frame untagged: {got:?}"
            ));
        }
        // access -> trunk
        let mut rx = Reaped(n2.spawn(&["python3", "-c", PY_RECV_TAGGED]));
        let mut lines = std::io::BufReader::new(rx.0.stdout.take().unwrap()).lines();
        if lines.next().and_then(Result::ok).as_deref() != Some("ready") {
            return Err("raw receiver did not start".into());
        }
        for _ in 0..3 {
            let o = n1.exec(&[
                "sh",
                "-c",
                "echo to-trunk | socat -u - UDP4-SENDTO:198.18.10.2:5001",
            ]);
            if !o.status.success() {
                return Err(format!("send: {o:?}"));
            }
        }
        let line = lines.next().and_then(Result::ok).unwrap_or_default();
        drop(rx);
        if line != "vid=10" {
            return Err(format!("trunk side saw {line:?}, wanted a VLAN 10 tag"));
        }
        // isolation
        if ping(&n3, "198.18.10.1").is_ok() {
            return Err("VLAN 20 reached VLAN 10".to_string());
        }
        Ok::<_, String>(())
    })();
    report(&dp);
    r.unwrap();
    let s = dp.stats();
    assert!(s.port(p1).unwrap().tx_packets > 0 && s.port(p2).unwrap().tx_packets > 0);
    dp.shutdown().unwrap();
}

/// Malformed frames from a container (runt, multicast source, IPv4 header longer than
/// the frame) are counted drops; the data plane keeps forwarding.
const PY_SEND_BAD: &str = r#"
import socket, sys
dst = bytes.fromhex(sys.argv[1]); src = bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('eth0', 0))
sent = 0
for f in [dst + src[:2],                                          # runt: 8 bytes
          dst + bytes.fromhex('010000000001') + b'\x88\xb5' + b'x' * 46,  # multicast source
          dst + src + b'\x08\x00' + b'\x4f' + b'\x00' * 10]:       # IHL 15 in a 11-byte header
    try:
        s.send(f); sent += 1
    except OSError:
        pass
print(sent)
"#;

#[test]
fn hostile_frames_are_counted_drops() {
    let pfx = prefix("h");
    let sw = Ns::new(format!("{pfx}sw"));
    let c1 = container(&sw, &pfx, 1);
    let c2 = container(&sw, &pfx, 2);
    let dp = dataplane(1);
    let p1 = sw.run_in(|| {
        let p1 = dp.add_port(PortSpec::afpacket(&c1.host_if)).unwrap();
        dp.add_port(PortSpec::afpacket(&c2.host_if)).unwrap();
        p1
    });
    let (m1, m2) = (c1.ns.mac("eth0"), c2.ns.mac("eth0"));
    let o = c1
        .ns
        .exec(&["python3", "-c", PY_SEND_BAD, &hex(m2), &hex(m1)]);
    let sent: u32 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(sent >= 2, "{o:?}");
    let r = ping(&c1.ns, &c2.v4);
    report(&dp);
    r.unwrap();
    let s = dp.stats();
    let p = s.port(p1).unwrap();
    let malformed = [
        DropReason::Runt,
        DropReason::InvalidSource,
        DropReason::BadIpv4Header,
    ];
    let dropped = p.drop_bad_frame
        + malformed
            .iter()
            .map(|r| p.switch.drop_count(*r))
            .sum::<u64>();
    assert_eq!(
        dropped,
        u64::from(sent),
        "every malformed frame sent is a counted drop: {p:?}"
    );
    dp.shutdown().unwrap();
}

/// Attaching to a tap that already exists (persistent, multi-queue, vnet header — as
/// `ip tuntap add` makes it) instead of creating one.
#[test]
fn attaches_to_existing_tap() {
    let pfx = prefix("e");
    let sw = Ns::new(format!("{pfx}sw"));
    let tapns = Ns::new(format!("{pfx}c1"));
    let c2 = container(&sw, &pfx, 2);
    let tap = format!("{pfx}t");
    tapns.ip(&[
        "tuntap",
        "add",
        "dev",
        &tap,
        "mode",
        "tap",
        "multi_queue",
        "vnet_hdr",
    ]);
    tapns.ip(&["addr", "add", "198.18.0.1/24", "dev", &tap]);
    let dp = dataplane(2);
    let pt = tapns.run_in(|| dp.add_port(PortSpec::tap(&tap)).unwrap());
    sw.run_in(|| dp.add_port(PortSpec::afpacket(&c2.host_if)).unwrap());
    let r = ping(&tapns, &c2.v4);
    report(&dp);
    r.unwrap();
    assert!(dp.stats().port(pt).unwrap().tx_packets > 0);
    dp.shutdown().unwrap();
}

/// A port whose interface disappears under the data plane (a veth or a tap is deleted)
/// does not turn its worker into a busy loop of failing, re-armed receives (a tap fd whose
/// device is gone fails every read with EBADFD); other ports keep working.
#[test]
fn vanished_interface_does_not_spin() {
    let pfx = prefix("x");
    let sw = Ns::new(format!("{pfx}sw"));
    let c1 = container(&sw, &pfx, 1);
    let c2 = container(&sw, &pfx, 2);
    let c3 = container(&sw, &pfx, 3);
    let dp = dataplane(1);
    sw.run_in(|| {
        for c in [&c1, &c2, &c3] {
            dp.add_port(PortSpec::afpacket(&c.host_if)).unwrap();
        }
    });
    let tap = format!("{pfx}t");
    let tapns = Ns::new(format!("{pfx}tn"));
    tapns.run_in(|| dp.add_port(PortSpec::tap(&tap)).unwrap());
    ping(&c1.ns, &c3.v4).unwrap();
    sw.ip(&["link", "del", &c2.host_if]);
    tapns.ip(&["link", "del", &tap]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let e1 = dp.stats().workers[0].enters;
    std::thread::sleep(std::time::Duration::from_millis(300));
    let e2 = dp.stats().workers[0].enters;
    report(&dp);
    assert!(e2 - e1 < 50, "worker spins: {} enters while idle", e2 - e1);
    ping(&c1.ns, &c3.v4).unwrap();
    dp.shutdown().unwrap();
}

/// An AF_PACKET port's socket queue is sized for GSO frames, and what the kernel still
/// drops at a full queue (the worker fell behind) is counted, not silent: a socket nobody
/// reads is flooded from the container, and its drops appear through
/// [`SocketStats::queue_drops`] — the reader behind `PortStats::drop_rx_queue` — and keep
/// adding up across reads although each PACKET_STATISTICS read clears the kernel's count.
#[test]
fn afpacket_queue_is_sized_and_its_drops_counted() {
    use std::os::fd::AsRawFd;
    use uring_net::sockstats::SocketStats;
    use uring_net::sys::afpacket::{open_group, RCVBUF_BYTES};

    let pfx = prefix("q");
    let sw = Ns::new(format!("{pfx}sw"));
    let c1 = container(&sw, &pfx, 1);
    let sock = sw.run_in(|| open_group(&c1.host_if, 1).unwrap().remove(0));
    let mut rcvbuf: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `rcvbuf`/`len` live for the call; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            sock.fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&mut rcvbuf as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(r, 0);
    assert!(rcvbuf >= RCVBUF_BYTES, "SO_RCVBUF is {rcvbuf}");
    let port = SocketStats::new(vec![sock.fd.try_clone().unwrap()], true);
    assert_eq!(port.queue_drops(), 0);

    // 12-byte vnet header (no offload), then a broadcast frame of a local experimental
    // EtherType (IEEE 802 0x88b5) with 1400 bytes of payload.
    let mut frame = vec![0u8; 12 + 14 + 1400];
    frame[12..18].fill(0xff);
    frame[18..24].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    frame[24..26].copy_from_slice(&0x88b5u16.to_be_bytes());
    let flood = |n: usize| {
        c1.ns.run_in(|| {
            let tx = open_group("eth0", 1).unwrap().remove(0);
            let mut sent = 0;
            for _ in 0..n {
                // SAFETY: `frame` lives for the call; the kernel only reads it.
                let r =
                    unsafe { libc::write(tx.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
                sent += usize::from(r == frame.len() as isize);
            }
            sent
        })
    };
    // ~2.3 KiB of truesize per frame: 20 000 frames overflow even a doubled 4 MiB queue.
    let sent = flood(20_000);
    assert!(sent > 10_000, "only {sent} frames sent");
    let first = port.queue_drops();
    assert!(
        first > 0,
        "no drops counted after {sent} frames into an unread queue"
    );
    assert!(
        first < sent as u64,
        "{first} drops of {sent}: the queue took none"
    );
    assert_eq!(port.queue_drops(), first, "a second read adds nothing new");
    flood(20_000);
    assert!(
        port.queue_drops() > first,
        "drops of the second flood not added"
    );
}
