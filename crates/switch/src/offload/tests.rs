#![allow(clippy::cast_possible_truncation)]
//! Offload tests: decisions, nonsense metadata, and property tests that reassemble the
//! segments and check payload, lengths, IDs, sequence numbers, flags and checksums with
//! etherparse as the independent parser.

use super::*;
use crate::bytes::Chunk;
use crate::port::Offloads;
use crate::vnet::{
    VnetHdr, F_DATA_VALID, F_NEEDS_CSUM, GSO_ECN, GSO_NONE, GSO_TCPV4, GSO_TCPV6, GSO_UDP,
    GSO_UDP_L4,
};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use proptest::prelude::*;

/// What to build.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub v6: bool,
    pub vlan: bool,
    pub tcp: bool,
    pub ip_opts: usize, // IPv4 options bytes (multiple of 4) / IPv6 dest-opts ext header (multiple of 8)
    pub tcp_opts: usize, // multiple of 4
    pub tcp_flags: u8,
    pub ip_id: u16,
    pub df: bool,
    pub seq: u32,
    pub payload: Vec<u8>,
}

/// Builds an Ethernet frame whose L4 checksum field holds the pseudo-header seed, as a
/// sender using NEEDS_CSUM leaves it. Returns (frame, csum_start).
pub(crate) fn build(s: &Spec) -> (Vec<u8>, usize) {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    if s.vlan {
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    }
    let l4_hlen = if s.tcp { 20 + s.tcp_opts } else { 8 };
    let l4_len = l4_hlen + s.payload.len();
    let proto = if s.tcp { 6 } else { 17 };
    let l3 = f.len() + 2;
    let (src, dst): (Vec<u8>, Vec<u8>);
    if !s.v6 {
        f.extend_from_slice(&[0x08, 0x00]);
        let ihl = 20 + s.ip_opts;
        let tot = (ihl + l4_len) as u16;
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0x02); // ECT(0)
        f.extend_from_slice(&tot.to_be_bytes());
        f.extend_from_slice(&s.ip_id.to_be_bytes());
        f.extend_from_slice(&(if s.df { 0x4000u16 } else { 0 }).to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0]);
        src = vec![198, 18, 0, 1];
        dst = vec![198, 19, 0, 2];
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        for i in 0..s.ip_opts {
            f.push(if i + 1 == s.ip_opts { 0 } else { 1 }); // NOPs, then EOL
        }
        let c = checksum(&f[l3..l3 + ihl]);
        f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        f.extend_from_slice(&[0x86, 0xdd]);
        let ext = s.ip_opts;
        let plen = (ext + l4_len) as u16;
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&plen.to_be_bytes());
        f.push(if ext > 0 { 60 } else { proto });
        f.push(64);
        src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1].to_vec();
        dst = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2].to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        if ext > 0 {
            f.push(proto);
            f.push((ext / 8 - 1) as u8);
            f.push(1); // PadN covering the rest
            f.push((ext - 4) as u8);
            f.extend(std::iter::repeat_n(0, ext - 4));
        }
    }
    let l4 = f.len();
    if s.tcp {
        f.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89]);
        f.extend_from_slice(&s.seq.to_be_bytes());
        f.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        f.push(((l4_hlen / 4) as u8) << 4);
        f.push(s.tcp_flags);
        f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
        f.extend(std::iter::repeat_n(1u8, s.tcp_opts)); // NOP options
    } else {
        f.extend_from_slice(&[0x9c, 0x40, 0x13, 0x89]);
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(&s.payload);
    // Pseudo-header seed (RFC 9293 §3.1, RFC 8200 §8.1), folded, not complemented.
    let mut c = Csum::new();
    c.add_bytes(&src);
    c.add_bytes(&dst);
    c.add_u16(proto as u16);
    c.add_u16(l4_len as u16);
    let at = l4 + if s.tcp { 16 } else { 6 };
    f[at..at + 2].copy_from_slice(&c.fold().to_be_bytes());
    (f, l4)
}

pub(crate) fn gso_hdr(s: &Spec, l4: usize, gso_type: u8, mss: u16) -> VnetHdr {
    let hl = if s.tcp { 20 + s.tcp_opts } else { 8 };
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: (l4 + hl) as u16,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: if s.tcp { 16 } else { 6 },
        num_buffers: 0,
    }
}

fn spec(v6: bool, tcp: bool, n: usize) -> Spec {
    Spec {
        v6,
        vlan: false,
        tcp,
        ip_opts: 0,
        tcp_opts: 12,
        tcp_flags: 0x18,
        ip_id: 0x1234,
        df: true,
        seq: 1000,
        payload: (0..n).map(|i| (i * 7 + 3) as u8).collect(),
    }
}

/// L4 checksum of a segment verifies (sum over pseudo header + L4 = 0xffff).
fn l4_verifies(seg: &[u8]) -> bool {
    let p = SlicedPacket::from_ethernet(seg).expect("segment parses");
    let mut c = Csum::new();
    let (l4, proto_len) = match p.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            c.add_bytes(&h.source());
            c.add_bytes(&h.destination());
            c.add_u16(h.protocol().0 as u16);
            (ip.payload().payload, ip.payload().payload.len())
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            c.add_bytes(&h.source());
            c.add_bytes(&h.destination());
            c.add_u16(ip.payload().ip_number.0 as u16);
            (ip.payload().payload, ip.payload().payload.len())
        }
        _ => panic!("not IP"),
    };
    c.add_u16(proto_len as u16);
    c.add_bytes(l4);
    c.fold() == 0xffff
}

fn run(frame: &[u8], hdr: &VnetHdr, dest: &Offloads) -> Result<Egress, OffloadDrop> {
    let parts = [frame].map(Chunk::from);
    plan(hdr, &Frame::new(&parts), dest)
}

fn seg_plan(frame: &[u8], hdr: &VnetHdr, dest: &Offloads) -> GsoPlan {
    match run(frame, hdr, dest) {
        Ok(Egress::Segment(p)) => p,
        other => panic!("expected Segment, got {other:?}"),
    }
}

/// Checks segments of a TCP/USO frame against the source. `partial`: checksums were left
/// for the receiver; complete them first.
fn check_segments(
    src: &Spec,
    segs: &[(VnetHdr, Vec<u8>)],
    mss: usize,
    partial: bool,
) -> Result<(), TestCaseError> {
    let n = src.payload.len().div_ceil(mss);
    prop_assert_eq!(segs.len(), n);
    let mut payload = Vec::new();
    for (i, (vh, bytes)) in segs.iter().enumerate() {
        let mut bytes = bytes.clone();
        if partial {
            prop_assert_eq!(vh.flags, F_NEEDS_CSUM);
            let job = CsumJob {
                start: vh.csum_start as usize,
                at: (vh.csum_start + vh.csum_offset) as usize,
                hdr: *vh,
            };
            prop_assert!(job.apply(&mut bytes));
        } else {
            prop_assert_eq!(vh.flags & F_NEEDS_CSUM, 0);
        }
        prop_assert_eq!(vh.gso_type, GSO_NONE);
        let p = SlicedPacket::from_ethernet(&bytes).expect("segment parses");
        match &p.net {
            Some(NetSlice::Ipv4(ip)) => {
                let h = ip.header().to_header();
                prop_assert_eq!(h.header_checksum, h.calc_header_checksum());
                prop_assert_eq!(h.identification, src.ip_id.wrapping_add(i as u16));
                prop_assert_eq!(h.dont_fragment, src.df);
            }
            Some(NetSlice::Ipv6(_)) => {}
            _ => prop_assert!(false, "no IP"),
        }
        prop_assert!(l4_verifies(&bytes), "L4 checksum of segment {}", i);
        let last = i + 1 == n;
        let data = match p.transport {
            Some(TransportSlice::Tcp(t)) => {
                prop_assert_eq!(t.sequence_number(), src.seq.wrapping_add((i * mss) as u32));
                prop_assert_eq!(t.fin(), last && src.tcp_flags & 1 != 0);
                prop_assert_eq!(t.psh(), last && src.tcp_flags & 8 != 0);
                prop_assert_eq!(t.cwr(), i == 0 && src.tcp_flags & 0x80 != 0);
                prop_assert_eq!(t.syn(), src.tcp_flags & 2 != 0);
                prop_assert_eq!(t.ack(), src.tcp_flags & 0x10 != 0);
                prop_assert_eq!(t.options().len(), src.tcp_opts);
                t.payload().to_vec()
            }
            Some(TransportSlice::Udp(u)) => {
                prop_assert_eq!(u.length() as usize, 8 + u.payload().len());
                u.payload().to_vec()
            }
            _ => return Err(TestCaseError::fail("no L4")),
        };
        prop_assert!(data.len() <= mss);
        if !last {
            prop_assert_eq!(data.len(), mss);
        }
        payload.extend_from_slice(&data);
    }
    prop_assert_eq!(payload, src.payload.clone());
    Ok(())
}

/// Splits `frame` at `cuts` and segments it both ways (gather and copy); both must agree.
fn segment_split(p: &GsoPlan, frame: &[u8], cuts: &[usize]) -> Vec<(VnetHdr, Vec<u8>)> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(frame.len())).collect();
    cuts.sort_unstable();
    let mut parts: Vec<Chunk<'_>> = Vec::new();
    let mut at = 0;
    for c in cuts {
        parts.push(Chunk::from(&frame[at..c]));
        at = c;
    }
    parts.push(Chunk::from(&frame[at..]));
    let f = Frame::new(&parts);
    let gathered = segment_to_vecs(p, f).unwrap();
    let mut s = p.segments(f).unwrap();
    let mut copied = Vec::new();
    let mut buf = vec![0u8; 70000];
    while let Some((n, vh)) = s.copy_next(&mut buf).unwrap() {
        copied.push((vh, buf[..n].to_vec()));
    }
    assert_eq!(gathered, copied, "gather and copy paths differ");
    // Scatter into small destination buffers of uneven sizes (mergeable RX buffers).
    let mut s = p.segments(f).unwrap();
    let mut scattered = Vec::new();
    let sizes = [7usize, 1, 60, 3, 500, 1];
    loop {
        let mut bufs: Vec<Vec<u8>> = sizes.iter().map(|&n| vec![0u8; n]).collect();
        bufs.push(vec![0u8; 70000]);
        let mut refs: Vec<&mut [u8]> = bufs.iter_mut().map(|b| &mut b[..]).collect();
        let Some((n, vh)) = s.copy_next_scatter(&mut refs).unwrap() else {
            break;
        };
        let flat: Vec<u8> = bufs.concat();
        scattered.push((vh, flat[..n].to_vec()));
    }
    assert_eq!(gathered, scattered, "gather and scatter-copy paths differ");
    // Retagging while copying: push a tag on an untagged frame or pop an existing one
    // gives the gathered segment with its L2 head swapped and csum_start moved.
    let l3 = p.l3_off();
    let tagged = l3 == 18;
    let (head, body): (Vec<u8>, usize) = if tagged {
        (frame[..12].to_vec(), 16)
    } else {
        ([&frame[..12], &[0x81, 0x00, 0x00, 0x09][..]].concat(), 12)
    };
    let mut s = p.segments(f).unwrap();
    for (vh, want) in &gathered {
        let mut buf = vec![0u8; 70000];
        let (n, got_vh) = s
            .copy_next_with_head(&head, body, &mut [&mut buf[..]])
            .unwrap()
            .unwrap();
        let mut w = head.clone();
        w.extend_from_slice(&want[body..]);
        assert_eq!(&buf[..n], &w[..], "retagged segment differs");
        let mut wv = *vh;
        if vh.flags & crate::vnet::F_NEEDS_CSUM != 0 {
            wv.csum_start = (vh.csum_start as isize + head.len() as isize - body as isize) as u16;
        }
        assert_eq!(got_vh, wv);
    }
    assert_eq!(
        p.segments(f)
            .unwrap()
            .copy_next_with_head(&head, l3 + 1, &mut [&mut [0u8; 9000][..]]),
        Err(OffloadDrop::HeadersTooLong)
    );
    let mut small: Vec<&mut [u8]> = vec![];
    let mut tiny = [0u8; 10];
    small.push(&mut tiny);
    assert_eq!(
        p.segments(f).unwrap().copy_next_scatter(&mut small),
        Err(OffloadDrop::DstTooSmall)
    );
    gathered
}

#[test]
fn tcp4_into_1448() {
    let s = spec(false, true, 64000);
    let (f, l4) = build(&s);
    let p = seg_plan(&f, &gso_hdr(&s, l4, GSO_TCPV4, 1448), &Offloads::NONE);
    assert_eq!(p.kind(), GsoKind::TcpV4);
    assert_eq!(p.segment_count(), 64000usize.div_ceil(1448));
    let segs = segment_split(&p, &f, &[7, 60, 3000]);
    check_segments(&s, &segs, 1448, false).unwrap();
    assert!(segs
        .iter()
        .all(|(vh, b)| vh.flags == 0 && b.len() <= l4 + 32 + 1448));
}

#[test]
fn data_valid_only_where_understood() {
    let s = spec(true, true, 5000);
    let (f, l4) = build(&s);
    let hdr = gso_hdr(&s, l4, GSO_TCPV6, 1000);
    let dv = Offloads {
        data_valid: true,
        ..Offloads::NONE
    };
    let segs =
        segment_to_vecs(&seg_plan(&f, &hdr, &dv), Frame::new(&[Chunk::from(&f[..])])).unwrap();
    assert!(segs.iter().all(|(vh, _)| vh.flags == F_DATA_VALID));
    // Partial checksums for a csum-capable receiver without TSO6.
    let csum = Offloads {
        csum: true,
        data_valid: true,
        tso4: true,
        ..Offloads::NONE
    };
    let p = seg_plan(&f, &hdr, &csum);
    assert!(p.partial_csum());
    check_segments(
        &s,
        &segment_to_vecs(&p, Frame::new(&[Chunk::from(&f[..])])).unwrap(),
        1000,
        true,
    )
    .unwrap();
}

#[test]
fn passthrough_and_csum_decisions() {
    let s = spec(false, true, 5000);
    let (f, l4) = build(&s);
    let hdr = gso_hdr(&s, l4, GSO_TCPV4, 1448);
    match run(&f, &hdr, &Offloads::ALL).unwrap() {
        Egress::PassThrough { hdr: h } => assert_eq!(
            (h.gso_type, h.gso_size, h.flags),
            (GSO_TCPV4, 1448, F_NEEDS_CSUM)
        ),
        e => panic!("{e:?}"),
    }
    // ECN frames need TSO_ECN at the receiver.
    let ecn = VnetHdr {
        gso_type: GSO_TCPV4 | GSO_ECN,
        ..hdr
    };
    let no_ecn = Offloads {
        tso_ecn: false,
        ..Offloads::ALL
    };
    assert!(matches!(run(&f, &ecn, &no_ecn), Ok(Egress::Segment(_))));
    assert!(matches!(
        run(&f, &ecn, &Offloads::ALL),
        Ok(Egress::PassThrough { .. })
    ));
    // Payload that fits one segment is not GSO: only the checksum is completed.
    let small = VnetHdr {
        gso_size: 5000,
        ..hdr
    };
    let Ok(Egress::CompleteCsum(job)) = run(&f, &small, &Offloads::NONE) else {
        panic!()
    };
    assert_eq!(job.hdr.gso_type, GSO_NONE);
    let mut g = f.clone();
    let v = job.value(&Frame::new(&[Chunk::from(&f[..])]));
    assert!(job.apply(&mut g));
    assert_eq!(u16::from_be_bytes([g[job.at], g[job.at + 1]]), v);
    assert!(l4_verifies(&g));
    // Plain frames: DATA_VALID kept only for receivers that understand it.
    let dv = VnetHdr {
        flags: F_DATA_VALID,
        ..VnetHdr::default()
    };
    assert!(
        matches!(run(&f, &dv, &Offloads::NONE), Ok(Egress::PassThrough { hdr }) if hdr.flags == 0)
    );
    assert!(
        matches!(run(&f, &dv, &Offloads::ALL), Ok(Egress::PassThrough { hdr }) if hdr.flags == F_DATA_VALID)
    );
    // NEEDS_CSUM passes through to a csum-capable receiver.
    let nc = VnetHdr {
        gso_type: GSO_NONE,
        gso_size: 0,
        ..hdr
    };
    let csum = Offloads {
        csum: true,
        ..Offloads::NONE
    };
    assert!(
        matches!(run(&f, &nc, &csum), Ok(Egress::PassThrough { hdr }) if hdr.flags == F_NEEDS_CSUM && hdr.csum_start == l4 as u16)
    );
}

#[test]
fn nonsense_metadata_is_a_counted_drop() {
    let s = spec(false, true, 5000);
    let (f, l4) = build(&s);
    let ok = gso_hdr(&s, l4, GSO_TCPV4, 1448);
    let n = Offloads::NONE;
    let cases: Vec<(VnetHdr, OffloadDrop)> = vec![
        (VnetHdr { gso_size: 0, ..ok }, OffloadDrop::GsoSizeZero),
        (
            VnetHdr {
                hdr_len: f.len() as u16 + 1,
                ..ok
            },
            OffloadDrop::HdrLenPastFrame,
        ),
        (
            VnetHdr {
                csum_start: f.len() as u16,
                ..ok
            },
            OffloadDrop::CsumPastFrame,
        ),
        (
            VnetHdr {
                csum_offset: 0xffff,
                ..ok
            },
            OffloadDrop::CsumPastFrame,
        ),
        (
            VnetHdr {
                gso_type: GSO_TCPV6,
                ..ok
            },
            OffloadDrop::GsoTypeMismatch,
        ),
        (
            VnetHdr {
                gso_type: GSO_UDP_L4,
                ..ok
            },
            OffloadDrop::GsoTypeMismatch,
        ),
        (VnetHdr { gso_type: 2, ..ok }, OffloadDrop::UnknownGsoType),
        (VnetHdr { flags: 0, ..ok }, OffloadDrop::GsoWithoutCsum),
        (
            VnetHdr {
                csum_start: l4 as u16 - 4,
                ..ok
            },
            OffloadDrop::CsumStartMismatch,
        ),
        (
            VnetHdr {
                csum_offset: 6,
                ..ok
            },
            OffloadDrop::CsumOffsetMismatch,
        ),
        (
            VnetHdr {
                gso_type: GSO_ECN,
                gso_size: 0,
                ..ok
            },
            OffloadDrop::UnknownGsoType,
        ),
    ];
    let mut counters = DropCounters::default();
    for (h, want) in cases {
        let got = run(&f, &h, &n);
        assert_eq!(got, Err(want), "{h:?}");
        if let Err(d) = got {
            counters.record(d);
        }
    }
    assert_eq!(counters.total(), 11);
    // Length fields that disagree with the frame, truncation, non-IP.
    let mut bad = f.clone();
    bad[16] ^= 1; // IPv4 total length
    assert_eq!(run(&bad, &ok, &n), Err(OffloadDrop::IpLengthMismatch));
    // Length 0: "fill in per segment" (large-send convention); same segments as with the
    // right length.
    let mut zero = f.clone();
    zero[16] = 0;
    zero[17] = 0;
    let want = segment_to_vecs(&seg_plan(&f, &ok, &n), Frame::new(&[Chunk::from(&f[..])])).unwrap();
    let got = segment_to_vecs(
        &seg_plan(&zero, &ok, &n),
        Frame::new(&[Chunk::from(&zero[..])]),
    )
    .unwrap();
    assert_eq!(got, want);
    let s6 = spec(true, true, 5000);
    let (f6, l46) = build(&s6);
    let h6 = gso_hdr(&s6, l46, GSO_TCPV6, 1448);
    let mut zero6 = f6.clone();
    zero6[18] = 0;
    zero6[19] = 0;
    let want =
        segment_to_vecs(&seg_plan(&f6, &h6, &n), Frame::new(&[Chunk::from(&f6[..])])).unwrap();
    let got = segment_to_vecs(
        &seg_plan(&zero6, &h6, &n),
        Frame::new(&[Chunk::from(&zero6[..])]),
    )
    .unwrap();
    assert_eq!(got, want);
    zero6[20] = 0; // ... but not behind a hop-by-hop header: that is a jumbogram
    assert_eq!(run(&zero6, &h6, &n), Err(OffloadDrop::IpUnsupported));
    let mut bad = f.clone();
    bad[14] = 0x44; // IHL 4
    assert_eq!(run(&bad, &ok, &n), Err(OffloadDrop::BadIpHeader));
    let mut bad = f.clone();
    bad[12] = 0x88;
    assert_eq!(run(&bad, &ok, &n), Err(OffloadDrop::NotIp));
    let mut bad = f.clone();
    bad[l4 + 12] = 0x40; // TCP doff 4
    assert_eq!(run(&bad, &ok, &n), Err(OffloadDrop::BadTcpHeader));
    let mut bad = f.clone();
    bad[20] = 0x20; // MF
    assert_eq!(run(&bad, &ok, &n), Err(OffloadDrop::IpUnsupported));
    assert_eq!(
        run(
            &f[..30],
            &VnetHdr {
                hdr_len: 0,
                csum_start: 0,
                ..ok
            },
            &n
        ),
        Err(OffloadDrop::Truncated)
    );
    // USO over its segment limit; UFO with an unaligned size.
    let u = spec(false, false, 60000);
    let (uf, ul4) = build(&u);
    assert_eq!(
        run(&uf, &gso_hdr(&u, ul4, GSO_UDP_L4, 100), &n),
        Err(OffloadDrop::TooManySegments)
    );
    assert_eq!(
        run(&uf, &gso_hdr(&u, ul4, GSO_UDP, 1001), &n),
        Err(OffloadDrop::UfoUnsupported)
    );
    // IPv6 UFO with extension headers (Linux would emit overlapping fragments).
    let u6 = Spec {
        ip_opts: 16,
        ..spec(true, false, 6000)
    };
    let (uf6, ul46) = build(&u6);
    assert_eq!(
        run(&uf6, &gso_hdr(&u6, ul46, GSO_UDP, 1000), &n),
        Err(OffloadDrop::UfoUnsupported)
    );
    // Destination too small: error, the segment is not consumed.
    let p = seg_plan(&f, &ok, &n);
    let parts = [&f[..]].map(Chunk::from);
    let mut sg = p.segments(Frame::new(&parts)).unwrap();
    assert_eq!(sg.copy_next(&mut [0u8; 100]), Err(OffloadDrop::DstTooSmall));
    assert_eq!(sg.remaining(), p.segment_count());
    // A plan used on another frame is refused.
    assert!(p.segments(Frame::new(&[Chunk::from(&f[..100])])).is_err());
}

#[test]
fn ufo_fragments_reassemble() {
    let s = spec(false, false, 5000);
    let (f, l4) = build(&s);
    let p = seg_plan(
        &f,
        &gso_hdr(&s, l4, GSO_UDP, 1480),
        &Offloads {
            csum: true,
            ..Offloads::NONE
        },
    );
    assert_eq!(p.kind(), GsoKind::UfoV4);
    assert!(
        !p.partial_csum(),
        "UFO completes the checksum over the whole datagram"
    );
    let segs = segment_split(&p, &f, &[50, 51, 4000]);
    assert_eq!(segs.len(), 5008usize.div_ceil(1480));
    let mut dgram = Vec::new();
    for (i, (_, b)) in segs.iter().enumerate() {
        let h = etherparse::Ipv4Header::from_slice(&b[14..]).unwrap().0;
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert_eq!(h.identification, s.ip_id, "fragments share the ID");
        assert_eq!(h.fragment_offset.value() as usize * 8, i * 1480);
        assert_eq!(h.more_fragments, i + 1 < segs.len());
        assert!(!h.dont_fragment);
        assert_eq!(h.total_len as usize, b.len() - 14);
        assert!(b.len() - 34 <= 1480);
        dgram.extend_from_slice(&b[34..]);
    }
    // The reassembled datagram carries a valid UDP checksum.
    let mut whole = f[..34].to_vec();
    whole.extend_from_slice(&dgram);
    assert_eq!(&whole[42..], &s.payload[..]);
    assert!(l4_verifies(&whole));
}

fn arb_spec() -> impl Strategy<Value = (Spec, u16)> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0usize..6,
        0usize..11,
        prop_oneof![
            Just(0x10u8),
            Just(0x18),
            Just(0x19),
            Just(0x98),
            Just(0x99),
            any::<u8>()
        ],
        any::<u16>(),
        any::<bool>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 1..9000),
        1u16..3000,
    )
        .prop_map(
            |(v6, vlan, tcp, ipo, tcpo, flags, id, df, seq, payload, mss)| {
                let ip_opts = if v6 { ipo * 8 } else { ipo * 4 };
                (
                    Spec {
                        v6,
                        vlan,
                        tcp,
                        ip_opts,
                        tcp_opts: tcpo * 4,
                        tcp_flags: flags & !0x02,
                        ip_id: id,
                        df,
                        seq,
                        payload,
                    },
                    mss,
                )
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn segments_reassemble((s, mss) in arb_spec(), partial in any::<bool>(), cuts in proptest::collection::vec(0usize..10000, 0..4)) {
        let (f, l4) = build(&s);
        let gt = match (s.tcp, s.v6) { (true, false) => GSO_TCPV4, (true, true) => GSO_TCPV6, _ => GSO_UDP_L4 };
        let hdr = gso_hdr(&s, l4, gt, mss);
        let dest = Offloads { csum: partial, ..Offloads::NONE };
        match run(&f, &hdr, &dest) {
            Ok(Egress::Segment(p)) => {
                prop_assert!(s.payload.len() > mss as usize);
                let segs = segment_split(&p, &f, &cuts);
                check_segments(&s, &segs, mss as usize, partial)?;
            }
            Ok(Egress::CompleteCsum(job)) => {
                prop_assert!(s.payload.len() <= mss as usize && !partial);
                let mut g = f.clone();
                prop_assert!(job.apply(&mut g));
                prop_assert!(l4_verifies(&g));
            }
            Ok(Egress::PassThrough { hdr }) => {
                prop_assert!(s.payload.len() <= mss as usize && partial && hdr.flags == F_NEEDS_CSUM);
            }
            // TSO is capped too (GSO_MAX_SEGMENTS: 64 KiB at the smallest MSS), USO at
            // Linux's UDP_MAX_SEGMENTS.
            Err(OffloadDrop::TooManySegments) => {
                let max = if s.tcp { GSO_MAX_SEGMENTS } else { USO_MAX_SEGMENTS };
                prop_assert!(s.payload.len().div_ceil(mss as usize) > max);
            }
            Err(e) => prop_assert!(false, "unexpected drop {e:?}"),
        }
    }

    /// Hostile input: random bytes and header never panic; whatever is planned can be
    /// executed and respects gso_size.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400), flags in 0u8..4, gt in prop_oneof![Just(0u8), Just(1), Just(3), Just(4), Just(5), Just(0x81), any::<u8>()],
                            hl in any::<u16>(), gs in any::<u16>(), cs in 0u16..420, co in 0u16..40) {
        let hdr = VnetHdr { flags, gso_type: gt, hdr_len: hl, gso_size: gs, csum_start: cs, csum_offset: co, num_buffers: 0 };
        let parts = [&bytes[..]].map(Chunk::from);
        let f = Frame::new(&parts);
        for dest in [Offloads::NONE, Offloads::ALL, Offloads { csum: true, ..Offloads::NONE }] {
            match plan(&hdr, &f, &dest) {
                Ok(Egress::Segment(p)) => {
                    for (_, b) in segment_to_vecs(&p, f).unwrap() {
                        prop_assert!(b.len() <= MAX_HDR + p.gso_size());
                    }
                }
                Ok(Egress::CompleteCsum(j)) => { let _ = j.value(&f); let mut c = bytes.clone(); prop_assert!(j.apply(&mut c)); }
                _ => {}
            }
        }
    }
}

#[test]
fn ecn_cwr_and_fin_psh() {
    let mut s = spec(false, true, 4000);
    s.tcp_flags = 0x80 | 0x10 | 0x08 | 0x01; // CWR ACK PSH FIN
    let (f, l4) = build(&s);
    let p = seg_plan(
        &f,
        &gso_hdr(&s, l4, GSO_TCPV4 | GSO_ECN, 1000),
        &Offloads::NONE,
    );
    let segs = segment_to_vecs(&p, Frame::new(&[Chunk::from(&f[..])])).unwrap();
    let flags: Vec<u8> = segs.iter().map(|(_, b)| b[l4 + 13]).collect();
    assert_eq!(flags, vec![0x90, 0x10, 0x10, 0x19]);
    check_segments(&s, &segs, 1000, false).unwrap();
}

/// Toward tap/AF_PACKET the payload is referenced in place: every payload slice of every
/// segment points into the source buffers, and only the header block is ours.
#[test]
fn gather_references_payload_in_place() {
    let s = spec(true, true, 30000);
    let (f, l4) = build(&s);
    let p = seg_plan(&f, &gso_hdr(&s, l4, GSO_TCPV6, 1440), &Offloads::NONE);
    let (a, b) = f.split_at(5000);
    let parts = [a, b].map(Chunk::from);
    let frame = Frame::new(&parts);
    let mut sg = p.segments(frame).unwrap();
    let mut h = [0u8; MAX_HDR];
    let src = f.as_ptr_range();
    let (mut n, mut bytes) = (0, 0);
    while let Some(seg) = sg.next_into(&mut h) {
        for sl in frame.slices(seg.payload.clone()) {
            let r = sl.as_ptr()..sl.as_ptr().wrapping_add(sl.len());
            let in_a = a.as_ptr_range().start <= r.start && r.end <= a.as_ptr_range().end;
            let in_b = b.as_ptr_range().start <= r.start && r.end <= b.as_ptr_range().end;
            assert!(in_a || in_b, "payload slice not inside one source part");
            assert!(src.start <= r.start && r.end <= src.end);
            bytes += sl.len();
        }
        assert!(seg.hdr_len <= 128, "header block stays small");
        n += 1;
    }
    assert_eq!((n, bytes), (p.segment_count(), 30000));
}

#[test]
fn ufo6_fragments_reassemble() {
    let s = spec(true, false, 5000);
    let (f, l4) = build(&s);
    assert_eq!(l4, 54);
    let mut p = seg_plan(&f, &gso_hdr(&s, l4, GSO_UDP, 1232), &Offloads::NONE);
    assert_eq!(p.kind(), GsoKind::UfoV6);
    let derived = segment_to_vecs(&p, Frame::new(&[Chunk::from(&f[..])])).unwrap();
    let id0 = u32::from_be_bytes(derived[0].1[58..62].try_into().unwrap());
    assert_ne!(id0, 0);
    p.set_ipv6_frag_id(0xdead_beef);
    let segs = segment_split(&p, &f, &[3, 70, 2000]);
    assert_eq!(segs.len(), 5008usize.div_ceil(1232));
    let mut dgram = Vec::new();
    for (i, (_, b)) in segs.iter().enumerate() {
        assert_eq!(b[20], 44, "next header: Fragment");
        assert_eq!(u16::from_be_bytes([b[18], b[19]]) as usize, b.len() - 54);
        let fh = &b[54..62];
        assert_eq!(fh[0], 17);
        let off = u16::from_be_bytes([fh[2], fh[3]]);
        assert_eq!((off & !7) as usize, i * 1232);
        assert_eq!(off & 1 == 1, i + 1 < segs.len(), "M flag");
        assert_eq!(
            u32::from_be_bytes(fh[4..8].try_into().unwrap()),
            0xdead_beef
        );
        assert!(b.len() - 62 <= 1232);
        dgram.extend_from_slice(&b[62..]);
    }
    let mut whole = f[..54].to_vec();
    whole.extend_from_slice(&dgram);
    assert_eq!(&whole[62..], &s.payload[..]);
    assert!(l4_verifies(&whole));
}

/// Reassembles IPv4/IPv6 UFO fragments by offset; returns the UDP datagram.
fn reassemble_ufo(
    segs: &[(VnetHdr, Vec<u8>)],
    v6: bool,
    l3: usize,
) -> Result<Vec<u8>, TestCaseError> {
    let mut dgram = Vec::new();
    for (i, (_, b)) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let (off, more, data) = if v6 {
            prop_assert_eq!(b[l3 + 6], 44);
            let fh = &b[l3 + 40..l3 + 48];
            let v = u16::from_be_bytes([fh[2], fh[3]]);
            prop_assert_eq!(
                u16::from_be_bytes([b[l3 + 4], b[l3 + 5]]) as usize,
                b.len() - l3 - 40
            );
            ((v & !7) as usize, v & 1 == 1, &b[l3 + 48..])
        } else {
            let h = etherparse::Ipv4Header::from_slice(&b[l3..]).unwrap().0;
            prop_assert_eq!(h.header_checksum, h.calc_header_checksum());
            prop_assert_eq!(h.total_len as usize, b.len() - l3);
            (
                h.fragment_offset.value() as usize * 8,
                h.more_fragments,
                &b[l3 + h.header_len()..],
            )
        };
        prop_assert_eq!(off, dgram.len());
        prop_assert_eq!(more, !last);
        if !last {
            prop_assert_eq!(data.len() % 8, 0);
        }
        dgram.extend_from_slice(data);
    }
    Ok(dgram)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    #[test]
    fn ufo_reassembles(v6 in any::<bool>(), vlan in any::<bool>(), n in 1usize..12000, units in 1u16..400, cuts in proptest::collection::vec(0usize..12000, 0..3)) {
        let s = Spec { vlan, ..spec(v6, false, n) };
        let (f, l4) = build(&s);
        let mss = units * 8;
        match run(&f, &gso_hdr(&s, l4, GSO_UDP, mss), &Offloads::NONE) {
            Ok(Egress::Segment(p)) => {
                let segs = segment_split(&p, &f, &cuts);
                prop_assert_eq!(segs.len(), (n + 8).div_ceil(mss as usize));
                let dgram = reassemble_ufo(&segs, v6, p.l3_off())?;
                let mut whole = f[..l4].to_vec();
                whole.extend_from_slice(&dgram);
                prop_assert_eq!(&whole[l4 + 8..], &s.payload[..]);
                prop_assert!(l4_verifies(&whole));
            }
            Ok(Egress::CompleteCsum(_)) => prop_assert!(n + 8 <= mss as usize),
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// A guest may rewrite its buffer between our planning and our segmenting. Offsets and
    /// lengths come from the plan only, so arbitrary header changes in between can change
    /// the bytes we send but never make us panic or exceed the planned sizes.
    #[test]
    fn headers_changed_after_planning((s, mss) in arb_spec(), kind in 0u8..3, flips in proptest::collection::vec((0usize..200, any::<u8>()), 1..20)) {
        let (f, l4) = build(&s);
        let gt = match (kind, s.tcp, s.v6) {
            (_, true, false) => GSO_TCPV4,
            (_, true, true) => GSO_TCPV6,
            (0, false, _) => GSO_UDP,
            _ => GSO_UDP_L4,
        };
        let mss = if gt == GSO_UDP { (mss & !7).max(8) } else { mss };
        let Ok(Egress::Segment(p)) = run(&f, &gso_hdr(&s, l4, gt, mss), &Offloads::NONE) else { return Ok(()) };
        let mut g = f.clone();
        for (at, v) in flips {
            if let Some(b) = g.get_mut(at) { *b = v; }
        }
        let parts = [&g[..]].map(Chunk::from);
        let frame = Frame::new(&parts);
        let segs = segment_to_vecs(&p, frame).unwrap();
        prop_assert_eq!(segs.len(), p.segment_count());
        for (_, b) in &segs {
            prop_assert!(b.len() <= p.l4_off() + 60 + 16 + p.gso_size());
        }
        let mut sg = p.segments(frame).unwrap();
        let mut buf = vec![0u8; MAX_HDR + p.gso_size()];
        while let Some((n, _)) = sg.copy_next(&mut buf).unwrap() {
            prop_assert!(n <= buf.len());
        }
    }
}

proptest! {
    /// `passes_unchanged` promises exactly `plan`'s pass-through with the same header.
    #[test]
    fn passes_unchanged_agrees_with_plan(
        flags in prop_oneof![Just(0u8), Just(F_DATA_VALID), Just(1u8), any::<u8>()],
        gso_type in prop_oneof![Just(0u8), any::<u8>()],
        hdr_len in prop_oneof![Just(0u16), any::<u16>()],
        gso_size in prop_oneof![Just(0u16), any::<u16>()],
        csum_start in prop_oneof![Just(0u16), any::<u16>()],
        csum_offset in prop_oneof![Just(0u16), any::<u16>()],
        data_valid in any::<bool>(),
    ) {
        let hdr = VnetHdr { flags, gso_type, hdr_len, gso_size, csum_start, csum_offset, num_buffers: 0 };
        let dest = Offloads { data_valid, ..Offloads::NONE };
        let frame = vec![0u8; 60];
        if passes_unchanged(&hdr, &dest) {
            prop_assert_eq!(run(&frame, &hdr, &dest), Ok(Egress::PassThrough { hdr }));
        } else if let Ok(Egress::PassThrough { hdr: h }) = run(&frame, &hdr, &dest) {
            prop_assert_ne!(h, hdr);
        }
    }
}

/// `adapt`, the entry point of every delivery path: bad metadata never reaches the sink,
/// a checksum is completed in a patched piece list, and a refused segment stops the rest.
#[test]
fn adapt_drops_completes_and_stops_at_a_full_destination() {
    let s = spec(false, true, 64000);
    let (f, l4) = build(&s);
    let (a, b) = f.split_at(1000);
    let parts = [Chunk::from(a), Chunk::from(b)];
    // gso_size 0 with a GSO type: refused before the sink sees anything.
    let mut bad = gso_hdr(&s, l4, GSO_TCPV4, 1448);
    bad.gso_size = 0;
    let mut calls = 0;
    let r = adapt(&bad, &parts, &Offloads::NONE, |_, _| -> Result<(), ()> {
        calls += 1;
        Ok(())
    });
    assert_eq!(r, Err(Undelivered::BadOffload(OffloadDrop::GsoSizeZero)));
    assert_eq!(calls, 0);
    // Segmented toward a port without TSO; the destination takes three segments only.
    let hdr = gso_hdr(&s, l4, GSO_TCPV4, 1448);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let r = adapt(&hdr, &parts, &Offloads::NONE, |_, p| {
        if got.len() == 3 {
            return Err("full");
        }
        got.push(crate::bytes::concat(p));
        Ok(())
    });
    assert_eq!(r, Err(Undelivered::Refused("full")));
    assert_eq!(got.len(), 3, "no segment offered after the refusal");
    let want = segment_to_vecs(&seg_plan(&f, &hdr, &Offloads::NONE), Frame::new(&parts)).unwrap();
    for (g, (_, w)) in got.iter().zip(&want) {
        assert_eq!(g, w);
    }
    // A small NEEDS_CSUM frame toward a port without checksum offload: completed.
    let s = spec(false, false, 100);
    let (f, l4) = build(&s);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: l4 as u16,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    let (a, b) = f.split_at(l4 + 7); // the checksum field straddles the two pieces
    let parts = [Chunk::from(a), Chunk::from(b)];
    let mut out = Vec::new();
    let r = adapt(&hdr, &parts, &Offloads::NONE, |h, p| -> Result<(), ()> {
        assert_eq!(h.flags & F_NEEDS_CSUM, 0);
        out = crate::bytes::concat(p);
        Ok(())
    });
    assert_eq!(r, Ok(()));
    assert_eq!(out.len(), f.len());
    assert!(l4_verifies(&out), "checksum completed");
    assert_eq!(
        &out[..l4 + 6],
        &f[..l4 + 6],
        "only the checksum field changed"
    );
    assert_eq!(&out[l4 + 8..], &f[l4 + 8..]);
}

/// Amplification bound: a 64 KiB TCP frame with `gso_size = 1` (65 K segments) or 47 is
/// refused before anything is segmented; Linux's smallest MSS (48) still segments.
#[test]
fn tiny_gso_size_is_refused_not_amplified() {
    let s = spec(false, true, 65_000);
    let (f, l4) = build(&s);
    for mss in [1u16, 47] {
        let hdr = gso_hdr(&s, l4, GSO_TCPV4, mss);
        assert_eq!(
            run(&f, &hdr, &Offloads::NONE),
            Err(OffloadDrop::TooManySegments),
            "mss {mss}"
        );
        // Toward a TSO-capable port it passes through: the receiver segments (or not).
        assert!(matches!(
            run(&f, &hdr, &Offloads::ALL),
            Ok(Egress::PassThrough { .. })
        ));
    }
    let p = seg_plan(&f, &gso_hdr(&s, l4, GSO_TCPV4, 48), &Offloads::NONE);
    assert!(p.segment_count() <= GSO_MAX_SEGMENTS);
}

/// A gso_size so large that one segment's IP length would not fit the 16-bit total
/// length field (a GSO frame with total length 0 may exceed 64 KiB) is refused: the
/// segment would otherwise leave with its length wrapped (65 552 written as 16).
#[test]
fn segment_longer_than_the_ip_length_field_is_refused() {
    let s = spec(false, true, 70_000);
    let (mut f, l4) = build(&s);
    f[14 + 2..14 + 4].copy_from_slice(&[0, 0]); // total length 0: "the frame's length"
    let hdr = gso_hdr(&s, l4, GSO_TCPV4, 65_500);
    assert_eq!(
        run(&f, &hdr, &Offloads::NONE),
        Err(OffloadDrop::IpLengthMismatch)
    );
    // One unit less than the field's limit still segments.
    let ok = gso_hdr(&s, l4, GSO_TCPV4, 65_535 - 8 - (l4 + 32 - 14) as u16);
    assert!(matches!(
        run(&f, &ok, &Offloads::NONE),
        Ok(Egress::Segment(_))
    ));
}
