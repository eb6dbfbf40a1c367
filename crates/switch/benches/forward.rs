//! Forwarding decisions per second per core for 64-byte frames, with 1 k and 100 k learned
//! MACs, plus the frame parser against etherparse. Run: `cargo bench -p ringswitch-switch
//! --bench forward`.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use switch::{
    Decision, FdbConfig, FrameRef, FrameView, Mac, Millis, PortConfig, PortKind, Switch,
    SwitchConfig, VnetHdr,
};

const PORTS: u16 = 16;
const BATCH: usize = 64;

fn mac(i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x52, 0x54, b[0], b[1], b[2], b[3]]
}

/// A 64-byte IPv4/UDP frame.
fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&[0x45, 0, 0, 46, 0, 1, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[198, 18, 0, 1, 198, 18, 0, 2]);
    f.extend_from_slice(&[0x04, 0xd2, 0x16, 0x2e, 0, 26, 0, 0]);
    f.resize(64, 0);
    f
}

fn setup(macs: u32) -> (Switch, Vec<(u16, Vec<u8>)>) {
    let sw = Switch::new(SwitchConfig {
        fdb: FdbConfig {
            max_entries: (macs as usize * 2).max(4096),
            aging_ms: 300_000,
        },
        ..Default::default()
    });
    for p in 0..PORTS {
        sw.add_port(PortConfig::new(format!("p{p}"), PortKind::VhostUser))
            .unwrap();
    }
    // Learn every MAC on port (i % PORTS).
    let v = sw.view();
    for i in 0..macs {
        let f = frame([0xff; 6], mac(i));
        let _ = v.decide(
            switch::PortId((i % u32::from(PORTS)) as u16),
            &VnetHdr::default(),
            &f,
            f.len(),
            Millis(0),
        );
    }
    drop(v);
    assert_eq!(sw.fdb().len(), macs as usize);
    // 4096 pre-built frames between random learned pairs on different ports.
    let mut x: u32 = 12345;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let frames = (0..4096)
        .map(|_| loop {
            let (s, d) = (rnd() % macs, rnd() % macs);
            if s % u32::from(PORTS) != d % u32::from(PORTS) {
                break ((s % u32::from(PORTS)) as u16, frame(mac(d), mac(s)));
            }
        })
        .collect();
    (sw, frames)
}

fn bench_decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("decide_64B");
    for macs in [1_000u32, 100_000] {
        let (sw, frames) = setup(macs);
        let refs: Vec<FrameRef> = frames
            .iter()
            .map(|(p, f)| FrameRef {
                ingress: switch::PortId(*p),
                hdr: VnetHdr::default(),
                bytes: f,
                len: f.len(),
            })
            .collect();
        g.throughput(Throughput::Elements(frames.len() as u64));
        g.bench_function(format!("{macs}_macs"), |b| {
            b.iter(|| {
                let mut n = 0usize;
                for chunk in refs.chunks(BATCH) {
                    sw.view().decide_batch(chunk, Millis(1), |_, d| {
                        if let Decision::Forward(fw) = d {
                            n += fw.ports.len();
                        }
                    });
                }
                assert_eq!(n, frames.len());
                black_box(n)
            })
        });
    }
    g.finish();
}

fn bench_parse(c: &mut Criterion) {
    let f = frame(mac(1), mac(2));
    let mut g = c.benchmark_group("parse_64B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ringswitch_frameview", |b| {
        b.iter(|| {
            black_box(FrameView::parse(black_box(&f), 64, 0x8100, false).map(|v| v.l4_offset))
        })
    });
    g.bench_function("etherparse_lax_sliced", |b| {
        b.iter(|| {
            black_box(
                etherparse::LaxSlicedPacket::from_ethernet(black_box(&f))
                    .map(|p| p.transport.is_some()),
            )
        })
    });
    g.finish();
    black_box(Mac::ZERO);
}

criterion_group!(benches, bench_decide, bench_parse);
criterion_main!(benches);
