//! Fuzz the offload planner and segmenter with hostile virtio-net headers and frames:
//! nothing may panic or read outside the frame, gather and copy paths must agree, and no
//! segment may exceed its headers + gso_size.
//!
//! Input: 10 bytes virtio_net_hdr, 1 byte destination offload bits, 1 byte control (low
//! 7 bits: split point, the frame arrives in two descriptors; high bit: "fix-up" mode),
//! then the frame. In fix-up mode the IP length field and csum_start/offset are made
//! consistent with the frame first, so mutations reach the segmenter instead of stopping
//! at the first length check. The same input then goes through `adapt`, the entry point
//! of every delivery path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switch::bytes::total_len;
use switch::offload::{adapt, plan, segment_to_vecs, Egress, Frame, Undelivered, MAX_HDR};
use switch::{Chunk, Offloads, VnetHdr};

#[path = "shared/frames.rs"]
mod frames;
use frames::fix_up;

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let Ok(mut hdr) = VnetHdr::parse(&data[..10], 10) else {
        return;
    };
    let bits = data[10];
    let dest = Offloads {
        csum: bits & 1 != 0,
        data_valid: bits & 2 != 0,
        tso4: bits & 4 != 0,
        tso6: bits & 8 != 0,
        tso_ecn: bits & 16 != 0,
        ufo: bits & 32 != 0,
        uso4: bits & 64 != 0,
        uso6: bits & 128 != 0,
    };
    let mut bytes = data[12..].to_vec();
    if data[11] & 0x80 != 0 {
        fix_up(&mut bytes, &mut hdr);
    }
    let cut = ((data[11] & 0x7f) as usize).min(bytes.len());
    let parts = [&bytes[..cut], &bytes[cut..]].map(Chunk::from);
    let frame = Frame::new(&parts);
    match plan(&hdr, &frame, &dest) {
        Ok(Egress::Segment(mut p)) => {
            p.set_ipv6_frag_id(u32::from(bits) << 8 | 1);
            let Ok(segs) = segment_to_vecs(&p, frame) else {
                return;
            };
            assert_eq!(segs.len(), p.segment_count());
            let Ok(mut s) = p.segments(frame) else { return };
            let Ok(mut t) = p.segments(frame) else { return };
            let Ok(mut r) = p.segments(frame) else { return };
            let mut buf = vec![0u8; MAX_HDR + p.gso_size()];
            // Scatter: uneven small buffers, then one big enough for the rest.
            let mut a = [0u8; 5];
            let mut b = [0u8; 33];
            let mut c = vec![0u8; MAX_HDR + p.gso_size()];
            // Retag while copying: pop whatever L2 the frame has down to dst+src MACs.
            let head = [0xffu8; 12];
            for (vh, want) in &segs {
                assert!(want.len() <= MAX_HDR + p.gso_size());
                let (n, got_vh) = s
                    .copy_next(&mut buf)
                    .expect("sized buffer")
                    .expect("segment");
                assert_eq!(&buf[..n], &want[..]);
                assert_eq!(got_vh, *vh);
                let (n2, _) = t
                    .copy_next_scatter(&mut [&mut a[..], &mut b[..], &mut c[..]])
                    .expect("sized buffers")
                    .expect("segment");
                assert_eq!(n2, n);
                let flat: Vec<u8> = a
                    .iter()
                    .chain(b.iter())
                    .chain(c.iter())
                    .copied()
                    .take(n)
                    .collect();
                assert_eq!(&flat[..], &want[..]);
                let (n3, _) = r
                    .copy_next_with_head(&head, 12, &mut [&mut buf[..]])
                    .expect("sized buffer")
                    .expect("segment");
                assert_eq!(n3, n);
                assert_eq!(&buf[12..n], &want[12..]);
            }
            assert_eq!(s.copy_next(&mut buf), Ok(None));
        }
        Ok(Egress::CompleteCsum(job)) => {
            let v = job.value(&frame);
            let mut c = bytes.clone();
            assert!(job.apply(&mut c));
            assert_eq!(u16::from_be_bytes([c[job.at], c[job.at + 1]]), v);
        }
        Ok(Egress::PassThrough { .. }) | Err(_) => {}
    }
    // The delivery paths' entry point: whatever it hands a destination is bounded, and a
    // destination that refuses stops a segmented frame at once.
    let mut handed = 0usize;
    let r = adapt(&hdr, &parts, &dest, |h, p| {
        handed += 1;
        assert!(total_len(p) <= MAX_HDR + usize::from(h.gso_size.max(1)) + bytes.len());
        if handed > 3 {
            return Err(());
        }
        Ok(())
    });
    if r.is_ok() {
        assert!(handed <= 3);
    } else if let Err(Undelivered::Refused(())) = r {
        assert_eq!(handed, 4);
    }
});
