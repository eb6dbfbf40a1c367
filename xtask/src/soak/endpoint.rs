//! Traffic generator and checker: one thread per endpoint (a veth end in its namespace,
//! or the tap in the daemon's namespace), with a raw AF_PACKET socket bound to the
//! interface. Each thread sends frames to every other endpoint at a fixed rate and checks
//! every frame it receives.
//!
//! The rule that makes "misdelivered" strict without false alarms: a unicast frame that
//! reaches an endpoint it was not addressed to is legitimate only as unknown-unicast
//! flooding. The sender marks a frame [`MAY_FLOOD`] unless it has proof that the switch
//! knows the destination: frames from that destination, stamped with the current daemon
//! and port generations, have been coming back through the switch for [`LEARN_SETTLE`]
//! (so the switch learned the destination's MAC on its current port). Not from the first
//! such frame on: the switch may forward a frame without learning its source (it only
//! try-locks the FDB writer, and the housekeeping thread's aging scan holds it), and the
//! next frames from that source learn it. Faults run inside odd "windows"; a frame sent
//! in one window and received in another is excused (counted), since the FDB may have
//! been flushed in between. Everything else addressed elsewhere is a misdelivery.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::frame::{self, Frame, Payload, BROADCAST, BROADCAST_ID, MAY_FLOOD};

/// How long frames from a destination must have been arriving (with the current
/// generations) before the switch is taken to have learned it: learning deferred by a
/// busy FDB writer (the aging scan runs every 250 ms) is done by a later frame.
pub const LEARN_SETTLE: Duration = Duration::from_millis(200);

/// Proof that the switch learned an endpoint: the generations (daemon, endpoint's port)
/// its frames were stamped with, and when the first such frame arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    pub epochs: (u32, u32),
    pub since: Instant,
}

/// Records a frame from `id` stamped `epochs`; a new generation starts a new proof.
fn prove(known: &mut HashMap<u8, Proof>, id: u8, epochs: (u32, u32), now: Instant) {
    match known.get(&id) {
        Some(p) if p.epochs == epochs => {}
        _ => {
            known.insert(id, Proof { epochs, since: now });
        }
    }
}

/// Whether the proof for `id` covers `epochs` and has settled at `now`.
fn settled(known: &HashMap<u8, Proof>, id: u8, epochs: (u32, u32), now: Instant) -> bool {
    known
        .get(&id)
        .is_some_and(|p| p.epochs == epochs && now.duration_since(p.since) >= LEARN_SETTLE)
}

/// Counters of one endpoint.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    /// Our frames received (every kind below).
    pub checked: AtomicU64,
    /// Unicast frames addressed to us, payload consistent.
    pub delivered: AtomicU64,
    /// Frames we sent to a testpmd peer that it echoed back to us (macswap).
    pub echoed: AtomicU64,
    /// On a testpmd peer's slot: frames it echoed that came back to their sender.
    pub echoed_by: AtomicU64,
    pub broadcast: AtomicU64,
    /// Unicast for someone else that the sender marked MAY_FLOOD.
    pub flooded: AtomicU64,
    /// Unicast for someone else, not marked, but sent in an earlier fault window.
    pub excused: AtomicU64,
    pub misdelivered: AtomicU64,
    /// Unicast frames addressed to us whose sequence number is not above the last one
    /// seen from that sender (duplicate or reordered).
    pub late: AtomicU64,
    /// Sequence numbers skipped (frames lost, expected while a fault is under way).
    pub lost: AtomicU64,
}

/// State shared by the orchestrator and the endpoint threads.
pub struct Shared {
    pub run: AtomicBool,
    /// Daemon generation.
    pub epoch: AtomicU32,
    /// Port generation per endpoint id (veths, tap, testpmd peers).
    pub ep_epoch: Vec<AtomicU32>,
    /// Fault window: odd while a fault is under way.
    pub window: AtomicU32,
    /// Bumped by the orchestrator when an endpoint's interface was re-made.
    pub reopen: Vec<AtomicU32>,
    pub counters: Vec<Counters>,
    pub samples: Mutex<Vec<String>>,
    /// When the shared state was made, and the last fault ended (ms after that), so a
    /// misdelivery sample says how long after a fault it happened.
    pub start: Instant,
    pub fault_ended_ms: AtomicU64,
    /// Frames per second each endpoint sends.
    pub rate: u32,
}

impl Shared {
    pub fn new(endpoints: usize, rate: u32) -> Shared {
        Shared {
            run: AtomicBool::new(true),
            epoch: AtomicU32::new(0),
            ep_epoch: (0..endpoints).map(|_| AtomicU32::new(0)).collect(),
            window: AtomicU32::new(0),
            reopen: (0..endpoints).map(|_| AtomicU32::new(0)).collect(),
            counters: (0..endpoints).map(|_| Counters::default()).collect(),
            samples: Mutex::new(Vec::new()),
            start: Instant::now(),
            fault_ended_ms: AtomicU64::new(0),
            rate,
        }
    }

    fn ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts a fault window.
    pub fn fault_begin(&self) {
        let w = self.window.fetch_add(1, SeqCst);
        debug_assert!(w.is_multiple_of(2));
    }

    /// Ends it: what the fault invalidated (daemon, some endpoints' ports) gets a new
    /// generation first, so no earlier proof of learning counts any more.
    pub fn fault_end(&self, daemon: bool, endpoints: &[usize]) {
        if daemon {
            self.epoch.fetch_add(1, SeqCst);
        }
        for &e in endpoints {
            self.ep_epoch[e].fetch_add(1, SeqCst);
        }
        self.fault_ended_ms.store(self.ms(), SeqCst);
        self.window.fetch_add(1, SeqCst);
    }
}

/// One endpoint thread's fixed facts.
pub struct Spec {
    pub id: u8,
    pub netns: String,
    pub ifname: String,
    /// Ids this endpoint sends to.
    pub peers: Vec<u8>,
    /// Ids that are testpmd echo peers (their frames back are echoes of ours).
    pub echo_peers: Vec<u8>,
}

/// Enters `netns` (this thread only), then sends and checks until `run` is cleared.
pub fn run(spec: Spec, sh: Arc<Shared>) -> io::Result<()> {
    enter_netns(&spec.netns)?;
    let me = spec.id;
    let my_mac = frame::mac(me);
    let c = &sh.counters[usize::from(me)];
    let mut sock: Option<OwnedFd> = None;
    let mut opened_gen = u32::MAX;
    let mut next_open = Instant::now();
    let mut seq: HashMap<u8, u64> = HashMap::new();
    let mut last: HashMap<u8, u64> = HashMap::new();
    // Proof of learning per destination: (daemon epoch, destination port epoch).
    let mut known: HashMap<u8, Proof> = HashMap::new();
    let interval = Duration::from_secs(1) / sh.rate.max(1);
    let mut next_send = Instant::now();
    let mut turn: usize = 0;
    let mut buf = [0u8; 2048];
    while sh.run.load(SeqCst) {
        let gen = sh.reopen[usize::from(me)].load(SeqCst);
        if gen != opened_gen {
            sock = None;
        }
        if sock.is_none() && Instant::now() >= next_open {
            match open(&spec.ifname) {
                Ok(s) => {
                    sock = Some(s);
                    opened_gen = gen;
                }
                Err(_) => next_open = Instant::now() + Duration::from_millis(50),
            }
        }
        let Some(fd) = sock.as_ref().map(|s| s.as_raw_fd()) else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        wait_readable(fd, Duration::from_millis(1));
        // Receive everything queued.
        loop {
            match recv(fd, &mut buf) {
                Ok(Some(n)) => {
                    if let Some(f) = frame::decode(&buf[..n]) {
                        check(&sh, me, my_mac, &spec, &f, &mut last, &mut known);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    sock = None;
                    break;
                }
            }
        }
        if sock.is_none() {
            continue;
        }
        // Send what is due (bounded catch-up after a stall).
        let now = Instant::now();
        let mut burst = 0;
        while next_send <= now && burst < 64 && !spec.peers.is_empty() {
            burst += 1;
            next_send += interval;
            turn += 1;
            let w = sh.window.load(SeqCst);
            let epoch = sh.epoch.load(SeqCst);
            let src_epoch = sh.ep_epoch[usize::from(me)].load(SeqCst);
            let (dst, dst_mac) = if turn.is_multiple_of(50) {
                (BROADCAST_ID, BROADCAST)
            } else {
                let d = spec.peers[turn % spec.peers.len()];
                (d, frame::mac(d))
            };
            let dst_epoch = if dst == BROADCAST_ID {
                0
            } else {
                sh.ep_epoch[usize::from(dst)].load(SeqCst)
            };
            let sure = w.is_multiple_of(2) && settled(&known, dst, (epoch, dst_epoch), now);
            let s = seq.entry(dst).or_insert(0);
            *s += 1;
            let p = Payload {
                flags: if sure { 0 } else { MAY_FLOOD },
                src: me,
                dst,
                dst_mac,
                epoch,
                src_epoch,
                dst_epoch,
                window: w,
                seq: *s,
            };
            let b = frame::encode(dst_mac, my_mac, &p);
            // SAFETY: send(2) reads LEN bytes from a live stack buffer.
            let r = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
            if r >= 0 {
                c.sent.fetch_add(1, SeqCst);
            }
        }
        if next_send + Duration::from_millis(100) < now {
            next_send = now;
        }
    }
    Ok(())
}

/// Classifies one of our frames received by endpoint `me`.
fn check(
    sh: &Shared,
    me: u8,
    my_mac: [u8; 6],
    spec: &Spec,
    f: &Frame,
    last: &mut HashMap<u8, u64>,
    known: &mut HashMap<u8, Proof>,
) {
    let now = Instant::now();
    let c = &sh.counters[usize::from(me)];
    c.checked.fetch_add(1, SeqCst);
    let p = &f.p;
    let epoch = sh.epoch.load(SeqCst);
    let ep = |id: u8| {
        sh.ep_epoch
            .get(usize::from(id))
            .map(|e| e.load(SeqCst))
            .unwrap_or(u32::MAX)
    };
    if f.eth_dst == BROADCAST {
        c.broadcast.fetch_add(1, SeqCst);
        if p.dst == BROADCAST_ID && p.epoch == epoch && p.src_epoch == ep(p.src) {
            prove(known, p.src, (epoch, p.src_epoch), now);
        }
        return;
    }
    if f.eth_dst != my_mac {
        if p.flags & MAY_FLOOD != 0 {
            c.flooded.fetch_add(1, SeqCst);
        } else if p.window != sh.window.load(SeqCst) {
            c.excused.fetch_add(1, SeqCst);
        } else {
            misdelivered(sh, c, me, f, "unicast for another endpoint");
        }
        return;
    }
    // Addressed to us: an echo of our own frame from an echo peer (testpmd, guest), or
    // a frame for us.
    if p.src == me {
        let from_peer = spec.echo_peers.contains(&p.dst) && f.eth_src == frame::mac(p.dst);
        if !from_peer {
            // Echo peers take unicast for their own MAC only (their ports have `mac=`):
            // an echo from anyone else means our frame reached a port it was not
            // addressed to.
            misdelivered(
                sh,
                c,
                me,
                f,
                "echoed by an endpoint it was not addressed to",
            );
            return;
        }
        c.echoed.fetch_add(1, SeqCst);
        sh.counters[usize::from(p.dst)]
            .echoed_by
            .fetch_add(1, SeqCst);
        if p.epoch == epoch && p.dst_epoch == ep(p.dst) {
            prove(known, p.dst, (epoch, p.dst_epoch), now);
        }
        return;
    }
    if p.dst != me || p.dst_mac != my_mac || f.eth_src != frame::mac(p.src) {
        misdelivered(sh, c, me, f, "header and payload disagree");
        return;
    }
    c.delivered.fetch_add(1, SeqCst);
    let l = last.entry(p.src).or_insert(0);
    if p.seq <= *l {
        c.late.fetch_add(1, SeqCst);
    } else {
        c.lost.fetch_add(p.seq - *l - 1, SeqCst);
        *l = p.seq;
    }
    if p.epoch == epoch && p.src_epoch == ep(p.src) {
        prove(known, p.src, (epoch, p.src_epoch), now);
    }
}

fn misdelivered(sh: &Shared, c: &Counters, me: u8, f: &Frame, why: &str) {
    c.misdelivered.fetch_add(1, SeqCst);
    if let Ok(mut s) = sh.samples.lock() {
        if s.len() < 20 {
            let now = sh.ms();
            s.push(format!(
                "endpoint {me}: {why}: eth {} -> {} {:?}, at {now} ms, {} ms after the last \
                 fault",
                fmt_mac(f.eth_src),
                fmt_mac(f.eth_dst),
                f.p,
                now.saturating_sub(sh.fault_ended_ms.load(SeqCst))
            ));
        }
    }
}

pub fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn enter_netns(name: &str) -> io::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: setns(2) on an fd we own; it changes only this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A raw AF_PACKET socket for our ethertype, bound to `ifname`.
fn open(ifname: &str) -> io::Result<OwnedFd> {
    let proto = frame::ETHERTYPE.to_be();
    // Protocol 0 here, the ethertype only in bind(2): a packet socket opened with a
    // protocol receives it from every interface of the namespace until it is bound
    // (packet(7)), so frames arriving on other interfaces in that moment (the switch's
    // own veth ends, for the tap endpoint) would be read as delivered to this one.
    // SAFETY: socket(2) has no memory preconditions; the fd is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: if_nametoindex reads a NUL-terminated string we own.
    let idx = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if idx == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto;
    sll.sll_ifindex = i32::try_from(idx).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: bind(2) reads a sockaddr_ll of the size we pass.
    let r = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

fn wait_readable(fd: i32, d: Duration) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll(2) on one pollfd we own.
    unsafe {
        libc::poll(&mut p, 1, ms);
    }
}

/// One received frame that was not sent by this socket (PACKET_OUTGOING copies of our
/// own transmissions are skipped); None when the queue is empty.
fn recv(fd: i32, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: recvfrom(2) writes at most buf.len() bytes into buf and at most len
        // bytes into sll, both live for the call.
        let n = unsafe {
            libc::recvfrom(
                fd,
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut sll as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock => Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => Err(e),
            };
        }
        if sll.sll_pkttype == libc::PACKET_OUTGOING {
            continue;
        }
        return Ok(Some(usize::try_from(n).unwrap_or(0)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Endpoints 0..=2 check; 3 is a testpmd echo peer.
    fn setup() -> (Shared, Spec) {
        let sh = Shared::new(4, 100);
        let spec = Spec {
            id: 1,
            netns: String::new(),
            ifname: String::new(),
            peers: vec![0, 2, 3],
            echo_peers: vec![3],
        };
        (sh, spec)
    }

    fn unicast(src: u8, dst: u8, flags: u8, window: u32, seq: u64) -> Frame {
        let p = Payload {
            flags,
            src,
            dst,
            dst_mac: frame::mac(dst),
            window,
            seq,
            ..Default::default()
        };
        frame::decode(&frame::encode(frame::mac(dst), frame::mac(src), &p)).unwrap()
    }

    fn counts(sh: &Shared) -> [u64; 6] {
        let c = &sh.counters[1];
        [
            c.delivered.load(SeqCst),
            c.flooded.load(SeqCst),
            c.excused.load(SeqCst),
            c.misdelivered.load(SeqCst),
            c.late.load(SeqCst),
            c.echoed.load(SeqCst),
        ]
    }

    #[test]
    fn unicast_for_another_endpoint_is_misdelivered_unless_it_may_flood() {
        let (sh, spec) = setup();
        let (mut last, mut known) = (HashMap::new(), HashMap::new());
        let mut chk = |f: &Frame| check(&sh, 1, frame::mac(1), &spec, f, &mut last, &mut known);
        chk(&unicast(0, 2, MAY_FLOOD, 0, 1));
        chk(&unicast(0, 2, 0, 0, 2));
        assert_eq!(counts(&sh), [0, 1, 0, 1, 0, 0]);
        // Sent before a fault began, received after: excused, not proof of a bug.
        sh.fault_begin();
        let mut chk = |f: &Frame| check(&sh, 1, frame::mac(1), &spec, f, &mut last, &mut known);
        chk(&unicast(0, 2, 0, 0, 3));
        assert_eq!(counts(&sh), [0, 1, 1, 1, 0, 0]);
        assert_eq!(sh.samples.lock().unwrap().len(), 1);
    }

    #[test]
    fn frames_for_us_count_sequence_and_prove_learning() {
        let (sh, spec) = setup();
        let (mut last, mut known) = (HashMap::new(), HashMap::new());
        let mut chk = |f: &Frame| check(&sh, 1, frame::mac(1), &spec, f, &mut last, &mut known);
        chk(&unicast(0, 1, 0, 0, 1));
        chk(&unicast(0, 1, 0, 0, 4));
        chk(&unicast(0, 1, 0, 0, 4));
        // The repeat is delivered (to the right endpoint) and counted late.
        assert_eq!(counts(&sh), [3, 0, 0, 0, 1, 0]);
        assert_eq!(sh.counters[1].lost.load(SeqCst), 2);
        assert_eq!(known.get(&0).map(|p| p.epochs), Some((0, 0)));
        // Payload says "to 2" but the header says us: a corrupted or misrouted frame.
        let mut bad = unicast(0, 2, 0, 0, 5);
        bad.eth_dst = frame::mac(1);
        check(&sh, 1, frame::mac(1), &spec, &bad, &mut last, &mut known);
        assert_eq!(sh.counters[1].misdelivered.load(SeqCst), 1);
    }

    #[test]
    fn echoes_from_testpmd_prove_it_is_learned_only_in_the_current_generation() {
        let (sh, spec) = setup();
        let (mut last, mut known) = (HashMap::new(), HashMap::new());
        // Our frame to 3, echoed by it: eth 3 -> 1, payload unchanged.
        let mut echo = unicast(1, 3, MAY_FLOOD, 0, 1);
        (echo.eth_dst, echo.eth_src) = (frame::mac(1), frame::mac(3));
        check(&sh, 1, frame::mac(1), &spec, &echo, &mut last, &mut known);
        assert_eq!(counts(&sh)[5], 1);
        assert_eq!(known.get(&3).map(|p| p.epochs), Some((0, 0)));
        known.clear();
        sh.fault_begin();
        sh.fault_end(false, &[3]);
        // An echo of a frame sent before testpmd was restarted proves nothing.
        check(&sh, 1, frame::mac(1), &spec, &echo, &mut last, &mut known);
        assert_eq!(known.get(&3), None);
        assert_eq!(sh.counters[1].misdelivered.load(SeqCst), 0);
    }

    #[test]
    fn a_proof_settles_before_frames_are_sure() {
        let t0 = Instant::now();
        let mut known = HashMap::new();
        prove(&mut known, 4, (0, 0), t0);
        assert!(!settled(&known, 4, (0, 0), t0));
        assert!(!settled(&known, 4, (0, 0), t0 + LEARN_SETTLE / 2));
        // Later frames of the same generation keep the first time.
        prove(&mut known, 4, (0, 0), t0 + LEARN_SETTLE / 2);
        assert!(settled(&known, 4, (0, 0), t0 + LEARN_SETTLE));
        // Another generation (port re-made, daemon restarted): not proof any more.
        assert!(!settled(&known, 4, (0, 1), t0 + LEARN_SETTLE));
        prove(&mut known, 4, (0, 1), t0 + LEARN_SETTLE);
        assert!(!settled(&known, 4, (0, 1), t0 + LEARN_SETTLE));
        assert!(settled(&known, 4, (0, 1), t0 + 2 * LEARN_SETTLE));
        assert!(!settled(&known, 3, (0, 0), t0 + 2 * LEARN_SETTLE));
    }

    #[test]
    fn an_echo_from_another_peer_is_misdelivered() {
        let (sh, spec) = setup();
        let (mut last, mut known) = (HashMap::new(), HashMap::new());
        // Our frame for 2 (not an echo peer) came back from 3: 3 got what was for 2.
        let mut echo = unicast(1, 2, 0, 0, 1);
        (echo.eth_dst, echo.eth_src) = (frame::mac(1), frame::mac(3));
        check(&sh, 1, frame::mac(1), &spec, &echo, &mut last, &mut known);
        // Our frame for echo peer 3, echoed by 0.
        let mut echo = unicast(1, 3, 0, 0, 2);
        (echo.eth_dst, echo.eth_src) = (frame::mac(1), frame::mac(0));
        check(&sh, 1, frame::mac(1), &spec, &echo, &mut last, &mut known);
        assert_eq!(sh.counters[1].misdelivered.load(SeqCst), 2);
        assert_eq!(counts(&sh)[5], 0);
        assert_eq!(sh.counters[3].echoed_by.load(SeqCst), 0);
        assert!(known.is_empty());
    }
}
