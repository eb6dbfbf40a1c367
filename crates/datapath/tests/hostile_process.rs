//! A hostile frontend as a real process on the socket (examples/hostile_frontend.rs:
//! queue-size indirect tables and chains, zero-length descriptors, bad virtio-net
//! headers, broadcast frames, a kick after each) on one port of the daemon's wiring,
//! while two other guests forward: the data plane survives, every hostile chain is
//! dropped and counted under its reason on the hostile port, and the pair keeps
//! forwarding during and after the flood. No speed is asserted (the bench measures it).
//! `harness = false`: the binary is also the hostile frontend's process (see `main`).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::frames::*;
use common::harness::Harness;
use common::*;
use switch::Mac;
use vm_memory::{Bytes, GuestAddress};
use vring_engine::chain::ChainError;
use vring_engine::DropReason;

const RX: usize = 0;
const TX: usize = 1;
const MAC_C: Mac = Mac([0x52, 0x54, 0, 0, 0, 0xc]);

/// The hostile frontend, run as a child process: this test binary again (harness = false)
/// with `--hostile-frontend` first.
// It brings its own copy of the test driver (guest.rs), as the example does.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../examples/hostile_frontend.rs"]
mod hostile;

const CHILD_FLAG: &str = "--hostile-frontend";

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some(CHILD_FLAG) {
        std::process::exit(hostile::run(argv[1..].to_vec()));
    }
    // libtest's arguments (filters, --nocapture) do not apply: one test, always run.
    println!("test a_hostile_frontend_process_is_counted_and_the_pair_keeps_forwarding ...");
    a_hostile_frontend_process_is_counted_and_the_pair_keeps_forwarding();
    println!("ok");
}

/// A → B with one read-only TX buffer and B's RX buffers posted again as they come back.
struct Pair {
    a: TestGuest,
    b: TestGuest,
    tx: (u64, u32),
    rx_by_head: Vec<Option<u64>>,
    in_flight: usize,
    received: u64,
}

impl Pair {
    fn new(h: &Harness) -> Pair {
        let want = !(vring_engine::features::RING_PACKED | vring_engine::dirtylog::LOG_ALL);
        let connect = |i: usize| TestGuest::connect(&h.dev(i).options().socket, 3);
        let mut a = TestGuest::start(connect(0), 3, want);
        let mut b = TestGuest::start(connect(1), 3, want);
        let mut all = vec![0u8; a.hdr_len()];
        all.extend_from_slice(&udp_frame(MAC_A, MAC_B, 100));
        let at = a.alloc(all.len() as u64);
        a.mem.write_slice(&all, GuestAddress(at)).unwrap();
        let mut rx_by_head = vec![None; usize::from(QSIZE)];
        for (head, addr) in b.post_rx(RX, 64, 2048) {
            rx_by_head[usize::from(head)] = Some(addr);
        }
        Pair {
            a,
            b,
            tx: (at, u32::try_from(all.len()).unwrap()),
            rx_by_head,
            in_flight: 0,
            received: 0,
        }
    }

    /// One round: reclaim A's TX, post up to 32 frames, take B's RX and post it again.
    fn step(&mut self) {
        self.in_flight -= self.a.queues[TX].take_used(&self.a.mem).len();
        let mut posted = false;
        while self.in_flight < 32 {
            let (at, len) = self.tx;
            self.a.queues[TX].add(&self.a.mem, &[(at, len, false)]);
            self.in_flight += 1;
            posted = true;
        }
        if posted {
            self.a.queues[TX].kick();
        }
        let used = self.b.queues[RX].take_used(&self.b.mem);
        self.received += used.len() as u64;
        for (head, _) in &used {
            if let Some(addr) = self.rx_by_head[usize::from(*head)].take() {
                let h = self.b.queues[RX].add(&self.b.mem, &[(addr, 2048, true)]);
                self.rx_by_head[usize::from(h)] = Some(addr);
            }
        }
        if !used.is_empty() {
            self.b.queues[RX].kick();
        }
    }
}

fn a_hostile_frontend_process_is_counted_and_the_pair_keeps_forwarding() {
    let bin = std::env::current_exe().unwrap();
    let h = Harness::new(vec![
        opts("hpa", MAC_A),
        opts("hpb", MAC_B),
        opts("hpc", MAC_C),
    ]);
    let mut pair = Pair::new(&h);
    wait_for("the pair forwarding", || {
        pair.step();
        (pair.received > 0).then_some(())
    });

    let out_file = std::env::temp_dir().join(format!("hostile-{}.out", std::process::id()));
    let mut child = Command::new(&bin)
        .arg(CHILD_FLAG)
        .arg(&h.dev(2).options().socket)
        .args(["--secs", "2"])
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // The pair forwards while the flood runs (bounded: the child has 2 s of flood plus
    // its start; a hang is a failure).
    let before = pair.received;
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        pair.step();
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hostile_frontend did not finish");
        }
        std::thread::sleep(Duration::from_micros(200));
    };
    let out = std::fs::read_to_string(&out_file).unwrap_or_default();
    let _ = std::fs::remove_file(&out_file);
    assert!(status.success(), "hostile_frontend: {status}\n{out}");
    assert!(out.contains("done: posted"), "{out}");
    let during = pair.received - before;
    assert!(during > 0, "the pair forwarded nothing during the flood");

    // Every kind of hostile chain is counted under its reason on the hostile port.
    let s = h.dev(2).queue_stats(TX).unwrap();
    for why in [
        DropReason::Chain(ChainError::TooLong),
        DropReason::Chain(ChainError::ZeroLength),
        DropReason::BadHeader,
        DropReason::TooManySegments,
    ] {
        assert!(s.dropped(why) > 0, "{why:?} not counted: {s:?}\n{out}");
    }
    // Its valid broadcasts were taken (and flooded), not dropped.
    assert!(s.frames > 0, "{s:?}");
    // The pair's own queues dropped nothing of theirs on TX.
    assert_eq!(h.dev(0).queue_stats(TX).unwrap().dropped_total(), 0);

    // And after the flood: the data plane still forwards A → B.
    let after = pair.received;
    wait_for("the pair forwarding after the flood", || {
        pair.step();
        (pair.received > after + 100).then_some(())
    });
}
