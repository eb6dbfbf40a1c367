//! Golden test against Linux itself: the same GSO frame is written through an AF_PACKET
//! socket with PACKET_VNET_HDR onto a veth whose offloads are all off, so the kernel
//! segments and checksums it in software (`validate_xmit_skb` → `skb_gso_segment`);
//! the segments are captured on the peer and compared byte for byte with ours.
//!
//! Needs root (namespaces, veth, AF_PACKET) and `ip`/`ethtool`; everything happens in a
//! namespace created for the test and deleted on drop.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

mod golden;
#[path = "../../../tests/common/prereq.rs"]
mod prereq;

use golden::{build, first_diff, veth_lab, Pair, Spec, SRC_MAC};
use switch::offload::{plan, segment_to_vecs, Egress, Frame};
use switch::vnet::{F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4};
use switch::Chunk;
use switch::{Offloads, VnetHdr};

struct Case {
    name: &'static str,
    spec: Spec,
    gso_type: u8,
    mss: u16,
}

/// Zeroes the IP length field (large-send convention "fill in per segment").
fn zero_ip_len(frame: &mut [u8], v6: bool, vlan: bool) {
    let l3 = if vlan { 18 } else { 14 };
    let at = l3 + if v6 { 4 } else { 2 };
    frame[at] = 0;
    frame[at + 1] = 0;
}

fn tcp(v6: bool) -> Spec {
    Spec {
        v6,
        vlan: false,
        tcp: true,
        ip_opts: 0,
        tcp_opts: 12,
        tcp_flags: 0x18,
        ip_id: 0x4321,
        df: true,
        seq: 0x1000_0000,
        payload_len: 20000,
    }
}

fn udp(v6: bool) -> Spec {
    Spec {
        tcp: false,
        tcp_opts: 0,
        tcp_flags: 0,
        ..tcp(v6)
    }
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "tcp4",
            spec: Spec {
                tcp_flags: 0x19,
                ip_id: 0xfffe,
                ..tcp(false)
            },
            gso_type: GSO_TCPV4,
            mss: 1448,
        },
        Case {
            name: "tcp4_nodf_ipopts_ecn_cwr",
            spec: Spec {
                df: false,
                ip_opts: 8,
                tcp_flags: 0x80 | 0x18,
                payload_len: 7001,
                ..tcp(false)
            },
            gso_type: GSO_TCPV4 | GSO_ECN,
            mss: 1000,
        },
        Case {
            name: "tcp4_vlan",
            spec: Spec {
                vlan: true,
                ..tcp(false)
            },
            gso_type: GSO_TCPV4,
            mss: 1448,
        },
        Case {
            name: "tcp4_jumbo_mss",
            spec: Spec {
                payload_len: 60000,
                ..tcp(false)
            },
            gso_type: GSO_TCPV4,
            mss: 8000,
        },
        Case {
            name: "tcp6_seq_wrap",
            spec: Spec {
                seq: 0xffff_f000,
                tcp_flags: 0x11,
                payload_len: 15000,
                ..tcp(true)
            },
            gso_type: GSO_TCPV6,
            mss: 1428,
        },
        Case {
            name: "tcp4_len0",
            spec: tcp(false),
            gso_type: GSO_TCPV4,
            mss: 1448,
        },
        Case {
            name: "uso6_vlan_len0",
            spec: Spec {
                vlan: true,
                payload_len: 5000,
                ..udp(true)
            },
            gso_type: GSO_UDP_L4,
            mss: 1300,
        },
        Case {
            name: "tcp6_destopts",
            spec: Spec {
                ip_opts: 16,
                ..tcp(true)
            },
            gso_type: GSO_TCPV6,
            mss: 1400,
        },
        Case {
            name: "uso4",
            spec: Spec {
                payload_len: 10000,
                ..udp(false)
            },
            gso_type: GSO_UDP_L4,
            mss: 1200,
        },
        Case {
            name: "uso6",
            spec: Spec {
                payload_len: 9001,
                ..udp(true)
            },
            gso_type: GSO_UDP_L4,
            mss: 1400,
        },
        Case {
            name: "ufo6",
            spec: Spec {
                payload_len: 6001,
                ..udp(true)
            },
            gso_type: GSO_UDP,
            mss: 1232,
        },
        Case {
            name: "ufo4",
            spec: Spec {
                payload_len: 5000,
                ..udp(false)
            },
            gso_type: GSO_UDP,
            mss: 1480,
        },
        Case {
            name: "csum_udp4",
            spec: Spec {
                payload_len: 333,
                ..udp(false)
            },
            gso_type: GSO_NONE,
            mss: 0,
        },
        Case {
            name: "csum_tcp6",
            spec: Spec {
                payload_len: 1001,
                ..tcp(true)
            },
            gso_type: GSO_NONE,
            mss: 0,
        },
    ]
}

/// Our output toward a destination that takes `dest`.
/// `frag_id`: the IPv6 fragment Identification to use (Linux draws its own at random).
fn ours(hdr: &VnetHdr, frame: &[u8], dest: &Offloads, frag_id: Option<u32>) -> Vec<Vec<u8>> {
    let parts = [frame].map(Chunk::from);
    let f = Frame::new(&parts);
    match plan(hdr, &f, dest).expect("planned") {
        Egress::Segment(mut p) => {
            if let Some(id) = frag_id {
                p.set_ipv6_frag_id(id);
            }
            segment_to_vecs(&p, f)
                .expect("segmented")
                .into_iter()
                .map(|(_, b)| b)
                .collect()
        }
        Egress::CompleteCsum(job) => {
            let mut b = frame.to_vec();
            assert!(job.apply(&mut b));
            vec![b]
        }
        Egress::PassThrough { .. } => vec![frame.to_vec()],
    }
}

/// Segments with completed checksums: the sender has no checksum offload either.
#[test]
fn segments_match_linux() {
    compare_with_linux("gso", false);
}

/// Segments with partial checksums (NEEDS_CSUM toward a receiver that takes it): the
/// sender keeps checksum offload, so Linux leaves its adjusted seeds in the segments.
#[test]
fn partial_csum_segments_match_linux() {
    compare_with_linux("gsop", true);
}

fn compare_with_linux(tag: &str, tx_csum: bool) {
    if prereq::skip_without(
        "root",
        prereq::is_root(),
        "the golden GSO test needs namespaces, veths and AF_PACKET",
    ) {
        return;
    }
    let dest = Offloads {
        csum: tx_csum,
        ..Offloads::NONE
    };
    let (ns, a, b) = veth_lab(tag, tx_csum);
    let cases = cases();
    let failures = ns.enter(|| {
        let pair = Pair::open(&a, &b);
        let mut failures = Vec::new();
        for c in &cases {
            let (mut frame, l4) = build(&c.spec);
            if c.name.ends_with("_len0") {
                zero_ip_len(&mut frame, c.spec.v6, c.spec.vlan);
            }
            let hl = if c.spec.tcp { 20 + c.spec.tcp_opts } else { 8 };
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: c.gso_type,
                hdr_len: (l4 + hl) as u16,
                gso_size: c.mss,
                csum_start: l4 as u16,
                csum_offset: if c.spec.tcp { 16 } else { 6 },
                num_buffers: 0,
            };
            let mut want = ours(&hdr, &frame, &dest, None);
            let mut vh = [0u8; 10];
            hdr.emit(&mut vh, 10).unwrap();
            pair.send(&vh, &frame);
            let got = pair.capture(&SRC_MAC, want.len());
            if c.spec.v6 && c.gso_type == GSO_UDP {
                // IPv6 UFO: take the kernel's random fragment ID, compare everything else.
                if let Some(id) = got.first().and_then(|g| g.get(58..62)) {
                    let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
                    want = ours(&hdr, &frame, &dest, Some(id));
                }
            }
            if got.len() != want.len() {
                failures.push(format!("{}: Linux sent {} segments, we made {}", c.name, got.len(), want.len()));
                continue;
            }
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                if let Some(at) = first_diff(g, w) {
                    let lo = at.saturating_sub(4);
                    failures.push(format!(
                        "{} segment {i}: first difference at byte {at} (len linux {} ours {}): linux {:02x?} ours {:02x?}",
                        c.name,
                        g.len(),
                        w.len(),
                        &g[lo..(at + 8).min(g.len())],
                        &w[lo..(at + 8).min(w.len())]
                    ));
                }
            }
            eprintln!("{}: {} segment(s) compared", c.name, want.len());
        }
        failures
    });
    drop(ns);
    assert!(
        failures.is_empty(),
        "differences from Linux:\n{}",
        failures.join("\n")
    );
}

/// xorshift64*: a fixed-seed generator, so a failure is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

/// Random frames of every GSO kind, sizes, options, flags and tags: ours equal Linux's,
/// with checksums completed.
#[test]
fn random_frames_match_linux() {
    random_frames("gsor", false);
}

/// The same with partial checksums (sender keeps checksum offload).
#[test]
fn random_frames_partial_csum_match_linux() {
    random_frames("gsorp", true);
}

fn random_frames(tag: &str, tx_csum: bool) {
    if prereq::skip_without(
        "root",
        prereq::is_root(),
        "the golden GSO test needs namespaces, veths and AF_PACKET",
    ) {
        return;
    }
    let mut rng = Rng(0x5eed_0ff1_0ad5_eed5);
    let mut cases = Vec::new();
    for _ in 0..256 {
        let kind = rng.below(4); // 0 TCP, 1 USO, 2 UFO, 3 checksum only
        let v6 = rng.coin();
        let tcp = kind == 0 || (kind == 3 && rng.coin());
        let mut mss = 64 + rng.below(4000) as u16;
        if kind == 2 {
            mss &= !7;
        }
        let segs_max = if kind == 1 { 128 } else { 40 };
        let payload_len = match kind {
            3 => 1 + rng.below(1400) as usize,
            _ => mss as usize + 1 + rng.below(mss as u64 * (segs_max - 1)).min(60000) as usize,
        };
        let ip_opts = match (kind, v6) {
            (2, true) => 0, // no IPv6 UFO with extension headers
            (_, true) => 8 * rng.below(3) as usize,
            (_, false) => 4 * rng.below(4) as usize,
        };
        let spec = Spec {
            v6,
            vlan: rng.coin(),
            tcp,
            ip_opts,
            tcp_opts: if tcp { 4 * rng.below(11) as usize } else { 0 },
            tcp_flags: if tcp {
                (rng.below(256) as u8 | 0x10) & !0x06
            } else {
                0
            },
            ip_id: rng.below(65536) as u16,
            df: rng.coin(),
            seq: rng.next() as u32,
            payload_len,
        };
        let ecn = tcp && kind == 0 && rng.coin();
        let gso_type = match (kind, v6) {
            (0, false) => GSO_TCPV4 | if ecn { GSO_ECN } else { 0 },
            (0, true) => GSO_TCPV6 | if ecn { GSO_ECN } else { 0 },
            (1, _) => GSO_UDP_L4,
            (2, _) => GSO_UDP,
            _ => GSO_NONE,
        };
        cases.push(Case {
            name: "random",
            spec,
            gso_type,
            mss: if kind == 3 { 0 } else { mss },
        });
    }
    let dest = Offloads {
        csum: tx_csum,
        ..Offloads::NONE
    };
    let (ns, a, b) = veth_lab(tag, tx_csum);
    let failures = ns.enter(|| {
        let pair = Pair::open(&a, &b);
        let mut failures = Vec::new();
        let mut compared = 0;
        for (n, c) in cases.iter().enumerate() {
            let (mut frame, l4) = build(&c.spec);
            if c.gso_type != GSO_NONE && n % 5 == 0 {
                zero_ip_len(&mut frame, c.spec.v6, c.spec.vlan);
            }
            let hl = if c.spec.tcp { 20 + c.spec.tcp_opts } else { 8 };
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: c.gso_type,
                hdr_len: (l4 + hl) as u16,
                gso_size: c.mss,
                csum_start: l4 as u16,
                csum_offset: if c.spec.tcp { 16 } else { 6 },
                num_buffers: 0,
            };
            let mut want = ours(&hdr, &frame, &dest, None);
            let mut vh = [0u8; 10];
            hdr.emit(&mut vh, 10).unwrap();
            pair.send(&vh, &frame);
            let got = pair.capture(&SRC_MAC, want.len());
            if c.spec.v6 && c.gso_type == GSO_UDP {
                let at = l4 + 4;
                if let Some(id) = got.first().and_then(|g| g.get(at..at + 4)) {
                    let id = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
                    want = ours(&hdr, &frame, &dest, Some(id));
                }
            }
            compared += got.len().min(want.len());
            let bad = got.len() != want.len() || got.iter().zip(&want).any(|(g, w)| g != w);
            if bad {
                let first = got.iter().zip(&want).position(|(g, w)| g != w);
                failures.push(format!(
                    "case {n} {:?} gso_type {:#x} mss {}: linux {} segments, ours {}, first differing segment {first:?} at byte {:?}",
                    c.spec,
                    c.gso_type,
                    c.mss,
                    got.len(),
                    want.len(),
                    first.and_then(|i| first_diff(&got[i], &want[i]))
                ));
            }
        }
        eprintln!("{} random frames, {compared} segments compared", cases.len());
        failures
    });
    drop(ns);
    assert!(
        failures.is_empty(),
        "differences from Linux:\n{}",
        failures.join("\n")
    );
}
