//! A fixed workload of forwarding decisions for instruction-count profiling
//! (`valgrind --tool=callgrind --toggle-collect='decide_loop::run'
//! target/release/examples/decide_loop 100000 10`: 40 960 decisions), which is repeatable
//! on a busy machine where wall-clock benchmarks are not. A third argument `full` makes
//! every decision escape whole (profile `decide_loop::run_full` then), `single` does that
//! with one `decide` call per frame (`decide_loop::run_single`).

use switch::{
    Decision, FdbConfig, FrameRef, Millis, PortConfig, PortId, PortKind, Switch, SwitchConfig,
    VnetHdr,
};

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x52, 0x54, b[0], b[1], b[2], b[3]]
}

fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 46, 0, 1, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[
        198, 18, 0, 1, 198, 18, 0, 2, 0x04, 0xd2, 0x16, 0x2e, 0, 26, 0, 0,
    ]);
    f.resize(64, 0);
    f
}

fn main() {
    let macs: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let sw = Switch::new(SwitchConfig {
        fdb: FdbConfig {
            max_entries: (macs as usize).max(4096),
            aging_ms: 300_000,
        },
        ..Default::default()
    });
    for p in 0..16 {
        sw.add_port(PortConfig::new(format!("p{p}"), PortKind::VhostUser))
            .expect("port");
    }
    let frames: Vec<(PortId, Vec<u8>)> = (0..macs)
        .map(|i| (PortId((i % 16) as u16), frame([0xff; 6], mac(i))))
        .collect();
    for (p, f) in &frames {
        sw.view()
            .decide(*p, &VnetHdr::default(), f, f.len(), Millis(0));
    }
    let traffic: Vec<(PortId, Vec<u8>)> = (0..4096u32)
        .map(|i| {
            let s = i.wrapping_mul(2_654_435_761) % macs;
            let d = (s + 1) % macs;
            (PortId((s % 16) as u16), frame(mac(d), mac(s)))
        })
        .collect();
    let refs: Vec<FrameRef> = traffic
        .iter()
        .map(|(p, f)| FrameRef {
            ingress: *p,
            hdr: VnetHdr::default(),
            bytes: f,
            len: f.len(),
        })
        .collect();
    let iters: usize = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    // "full": the consumer reads the whole decision (frame view included), as a data
    // plane does; "single": that, one `decide` per frame (no batch prefetch), as the data
    // planes call it today; default: only the port set, as the criterion bench does.
    let n = match std::env::args().nth(3).as_deref() {
        Some("full") => run_full(&sw, &refs, iters),
        Some("single") => run_single(&sw, &refs, iters),
        _ => run(&sw, &refs, iters),
    };
    println!("{n} forwarded");
}

/// The measured part, kept out of line so that callgrind can count it alone:
/// `valgrind --tool=callgrind --toggle-collect='decide_loop::run' …`.
#[inline(never)]
fn run(sw: &Switch, refs: &[FrameRef], iters: usize) -> u64 {
    let mut n = 0u64;
    for _ in 0..iters {
        for chunk in refs.chunks(64) {
            sw.view().decide_batch(chunk, Millis(1), |_, d| {
                if let Decision::Forward(f) = d {
                    n += f.ports.len() as u64;
                }
            });
        }
    }
    n
}

/// Like [`run`], but every decision escapes whole (`black_box`), so none of it can be
/// optimised away: `--toggle-collect='decide_loop::run_full'`.
#[inline(never)]
fn run_full(sw: &Switch, refs: &[FrameRef], iters: usize) -> u64 {
    let mut n = 0u64;
    for _ in 0..iters {
        for chunk in refs.chunks(64) {
            sw.view().decide_batch(chunk, Millis(1), |_, d| {
                if let Decision::Forward(f) = std::hint::black_box(d) {
                    n += f.ports.len() as u64;
                }
            });
        }
    }
    n
}

/// Like [`run_full`], one [`switch::SwitchView::decide`] per frame.
#[inline(never)]
fn run_single(sw: &Switch, refs: &[FrameRef], iters: usize) -> u64 {
    let mut n = 0u64;
    for _ in 0..iters {
        for chunk in refs.chunks(64) {
            let v = sw.view();
            for f in chunk {
                let d = v.decide(f.ingress, &f.hdr, f.bytes, f.len, Millis(1));
                if let Decision::Forward(f) = std::hint::black_box(d) {
                    n += f.ports.len() as u64;
                }
            }
        }
    }
    n
}
