//! Golden test against Linux itself: the same GSO frame is written through an AF_PACKET
//! socket with PACKET_VNET_HDR onto a veth whose offloads are all off, so the kernel
//! segments and checksums it in software (`validate_xmit_skb` → `skb_gso_segment`);
//! the segments are captured on the peer and compared byte for byte with ours.
//!
//! Needs root (namespaces, veth, AF_PACKET) and `ip`/`ethtool`; everything happens in a
//! namespace created for the test and deleted on drop.

mod golden;

use golden::{build, first_diff, veth_lab, Pair, Spec, SRC_MAC};
use switch::offload::{plan, segment_to_vecs, Egress, Frame};
use switch::vnet::{F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP, GSO_UDP_L4};
use switch::{Offloads, VnetHdr};

struct Case {
    name: &'static str,
    spec: Spec,
    gso_type: u8,
    mss: u16,
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
    let parts = [frame];
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
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED golden GSO test: needs root for namespaces and AF_PACKET");
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
            let (frame, l4) = build(&c.spec);
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
