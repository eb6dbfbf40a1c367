//! Offload throughput per core: RFC 1071 checksum (target ≥ 10 GB/s) and software GSO of
//! a 64 KiB TCP frame into 1448-byte segments (target ≥ 20 Gbit/s), both as gather
//! (headers built, payload summed in place) and as copy into a destination buffer (the
//! guest → guest path). Run: `cargo bench -p ringswitch-switch --bench offload`.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use switch::offload::{checksum, plan, Csum, Egress, Frame, MAX_HDR};
use switch::vnet::{F_NEEDS_CSUM, GSO_TCPV4};
use switch::{Chunk, Offloads, VnetHdr};

/// Ethernet + IPv4 + TCP (12 bytes of options) + payload, checksum field = pseudo seed.
fn tcp4_frame(payload: usize) -> (Vec<u8>, VnetHdr) {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let l4_len = 32 + payload;
    f.extend_from_slice(&[
        0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 19, 0, 2,
    ]);
    let tot = (20 + l4_len) as u16;
    f[16..18].copy_from_slice(&tot.to_be_bytes());
    let c = checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&[
        0x9c, 0x40, 0x13, 0x89, 0, 0, 0, 1, 0, 0, 0, 1, 0x80, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    f.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
    f.extend((0..payload).map(|i| (i * 31) as u8));
    let mut s = Csum::new();
    s.add_bytes(&f[26..34]);
    s.add_u16(6);
    s.add_u16(l4_len as u16);
    f[50..52].copy_from_slice(&s.fold().to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 66,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    (f, hdr)
}

fn bench_csum(c: &mut Criterion) {
    let mut g = c.benchmark_group("checksum");
    for size in [1500usize, 65536] {
        let buf: Vec<u8> = (0..size + 1).map(|i| (i * 7) as u8).collect();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("{size}B"), |b| {
            b.iter(|| checksum(black_box(&buf[..size])))
        });
        // Odd start (second descriptor after an odd-length first one).
        g.bench_function(format!("{size}B_odd_offset"), |b| {
            b.iter(|| {
                let mut s = Csum::new();
                s.add_bytes(black_box(&buf[..1]));
                s.add_bytes(black_box(&buf[1..size + 1]));
                s.finish()
            })
        });
    }
    g.finish();
}

fn bench_gso(c: &mut Criterion) {
    let (f, hdr) = tcp4_frame(65536 - 66);
    let parts = [&f[..]].map(Chunk::from);
    let frame = Frame::new(&parts);
    let mut g = c.benchmark_group("gso_tcp4_64k_mss1448");
    g.throughput(Throughput::Bytes(f.len() as u64));
    for (name, dest) in [
        ("complete", Offloads::NONE),
        (
            "partial",
            Offloads {
                csum: true,
                ..Offloads::NONE
            },
        ),
    ] {
        let Ok(Egress::Segment(p)) = plan(&hdr, &frame, &dest) else {
            panic!("not a GSO plan")
        };
        g.bench_function(format!("gather_{name}"), |b| {
            let mut h = [0u8; MAX_HDR];
            b.iter(|| {
                let mut n = 0usize;
                let Ok(mut s) = p.segments(frame) else {
                    return 0;
                };
                while let Some(seg) = s.next_into(&mut h) {
                    n += seg.len() + h[seg.hdr_len - 1] as usize;
                }
                n
            })
        });
        g.bench_function(format!("copy_{name}"), |b| {
            let mut dst = vec![0u8; 2048];
            b.iter(|| {
                let mut n = 0usize;
                let Ok(mut s) = p.segments(frame) else {
                    return 0;
                };
                while let Ok(Some((len, _))) = s.copy_next(&mut dst) {
                    n += len + dst[len - 1] as usize;
                }
                n
            })
        });
        g.bench_function(format!("plan_and_gather_{name}"), |b| {
            let mut h = [0u8; MAX_HDR];
            b.iter(|| {
                let Ok(Egress::Segment(p)) = plan(black_box(&hdr), &frame, &dest) else {
                    return 0;
                };
                let Ok(mut s) = p.segments(frame) else {
                    return 0;
                };
                let mut n = 0usize;
                while let Some(seg) = s.next_into(&mut h) {
                    n += seg.len();
                }
                n
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_csum, bench_gso);
criterion_main!(benches);
