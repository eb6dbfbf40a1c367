//! End to end through the in-repo frontend: negotiation, config space, packed-ring refusal,
//! TX in every layout, RX with and without mergeable buffers, through the real switch.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

mod common;

use common::frames::*;
use common::harness::Harness;
use common::*;
use vhost::vhost_user::message::VhostUserConfigFlags;
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use virtio_bindings::virtio_config::{VIRTIO_F_RING_PACKED, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use vring_engine::features::bit;
use vring_engine::DropReason;

const ALL: u64 = u64::MAX;

fn two_guests(h: &Harness, want: u64) -> (TestGuest, TestGuest) {
    let a = TestGuest::start(TestGuest::connect(&h.dev(0).options().socket, 3), 3, want);
    let b = TestGuest::start(TestGuest::connect(&h.dev(1).options().socket, 3), 3, want);
    (a, b)
}

#[test]
fn negotiation_config_space_and_packed_refusal() {
    let mut o = opts("neg", MAC_A);
    o.queue_pairs = 2;
    let h = Harness::new(vec![o]);
    let mut fe = TestGuest::connect(&h.dev(0).options().socket, 5);
    fe.set_owner().unwrap();
    let f = fe.get_features().unwrap();
    for b in [
        VIRTIO_F_VERSION_1,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_MTU,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_CTRL_RX,
        VIRTIO_NET_F_CTRL_RX_EXTRA,
        VIRTIO_NET_F_CTRL_VLAN,
        VIRTIO_NET_F_CTRL_MAC_ADDR,
        VIRTIO_NET_F_GUEST_ANNOUNCE,
        VIRTIO_NET_F_MQ,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_HOST_ECN,
        VIRTIO_NET_F_HOST_UFO,
        VIRTIO_NET_F_HOST_USO,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_GUEST_ECN,
        VIRTIO_NET_F_GUEST_UFO,
        VIRTIO_NET_F_GUEST_USO4,
        VIRTIO_NET_F_GUEST_USO6,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_RING_F_INDIRECT_DESC,
    ] {
        assert_ne!(f & bit(b), 0, "feature bit {b} not offered");
    }
    assert_eq!(f & bit(VIRTIO_F_RING_PACKED), 0);
    let pf = fe.get_protocol_features().unwrap();
    use vhost::vhost_user::message::VhostUserProtocolFeatures as P;
    for p in [
        P::MQ,
        P::REPLY_ACK,
        P::CONFIG,
        P::CONFIGURE_MEM_SLOTS,
        P::RESET_DEVICE,
    ] {
        assert!(pf.contains(p), "{p:?} not offered");
    }
    fe.set_protocol_features(P::REPLY_ACK | P::CONFIG | P::MQ)
        .unwrap();
    assert_eq!(fe.get_queue_num().unwrap(), 5);
    // A frontend insisting on the packed ring gets a NACK, not a hang.
    fe.set_hdr_flags(vhost::vhost_user::message::VhostUserHeaderFlag::NEED_REPLY);
    assert!(fe.set_features(f | bit(VIRTIO_F_RING_PACKED)).is_err());
}

#[test]
fn config_space_reads() {
    let mut o = opts("cfg", MAC_A);
    o.queue_pairs = 3;
    o.mtu = Some(9000);
    let h = Harness::new(vec![o]);
    let mut fe = TestGuest::connect(&h.dev(0).options().socket, 7);
    fe.set_owner().unwrap();
    let f = fe.get_features().unwrap();
    use vhost::vhost_user::message::VhostUserProtocolFeatures as P;
    fe.set_protocol_features(P::CONFIG | P::REPLY_ACK).unwrap();
    fe.set_features(f).unwrap();
    let (_, cfg) = fe
        .get_config(0, 12, VhostUserConfigFlags::WRITABLE, &[0u8; 12])
        .unwrap();
    assert_eq!(&cfg[..6], &MAC_A.0);
    assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 1, "LINK_UP");
    assert_eq!(u16::from_le_bytes([cfg[8], cfg[9]]), 3);
    assert_eq!(u16::from_le_bytes([cfg[10], cfg[11]]), 9000);
    assert!(h.dev(0).request_announce());
    let (_, cfg) = fe
        .get_config(6, 2, VhostUserConfigFlags::WRITABLE, &[0u8; 2])
        .unwrap();
    assert_eq!(
        u16::from_le_bytes([cfg[0], cfg[1]]),
        3,
        "LINK_UP | ANNOUNCE"
    );
}

#[test]
fn frames_cross_the_switch_both_ways_in_every_tx_layout() {
    let h = Harness::new(vec![opts("a", MAC_A), opts("b", MAC_B)]);
    let (mut a, mut b) = two_guests(&h, ALL);
    let hl = a.hdr_len();
    assert_eq!(hl, 12);
    assert_ne!(a.features & bit(VIRTIO_NET_F_MRG_RXBUF), 0);
    let rx_b = b.post_rx(0, 8, 2048);
    let rx_a = a.post_rx(0, 8, 2048);

    // A → B, header in its own descriptor.
    let f1 = udp_frame(MAC_A, MAC_B, 100);
    let hdr = [0u8; 12];
    a.send_split(1, &hdr, &f1);
    assert_eq!(a.queues[1].wait_used(&a.mem, 1)[0].1, 0, "TX used len is 0");
    let got = b.queues[0].wait_used(&b.mem, 1);
    let (head, len) = got[0];
    assert_eq!(len as usize, hl + f1.len());
    let addr = rx_b.iter().find(|(h, _)| *h == head).unwrap().1;
    let data = b.read(addr, len as usize);
    assert_eq!(u16::from_le_bytes([data[10], data[11]]), 1, "num_buffers");
    assert_eq!(&data[hl..], &f1[..]);
    assert!(b.queues[0].called(), "B was signalled");

    // B → A, header inline with the frame (ANY_LAYOUT).
    let f2 = udp_frame(MAC_B, MAC_A, 1000);
    b.send_inline(1, &hdr, &f2);
    let (head, len) = a.queues[0].wait_used(&a.mem, 1)[0];
    let addr = rx_a.iter().find(|(h, _)| *h == head).unwrap().1;
    assert_eq!(&a.read(addr, len as usize)[hl..], &f2[..]);

    // A → B through an indirect table, frame split over three buffers.
    let f3 = udp_frame(MAC_A, MAC_B, 500);
    let p0 = a.alloc(hl as u64);
    let p1 = a.alloc(40);
    let p2 = a.alloc(f3.len() as u64 - 40);
    a.mem
        .write_slice(&hdr[..hl], vm_memory::GuestAddress(p0))
        .unwrap();
    use vm_memory::Bytes;
    a.mem
        .write_slice(&f3[..40], vm_memory::GuestAddress(p1))
        .unwrap();
    a.mem
        .write_slice(&f3[40..], vm_memory::GuestAddress(p2))
        .unwrap();
    let table = a.alloc(48);
    let bufs = [
        (p0, hl as u32, false),
        (p1, 40, false),
        (p2, f3.len() as u32 - 40, false),
    ];
    a.queues[1].add_indirect(&a.mem, table, &bufs);
    a.queues[1].kick();
    let (head, len) = b.queues[0].wait_used(&b.mem, 1)[0];
    let addr = rx_b.iter().find(|(h, _)| *h == head).unwrap().1;
    assert_eq!(&b.read(addr, len as usize)[hl..], &f3[..]);

    let tx = h.dev(0).queue_stats(1).unwrap();
    assert_eq!((tx.frames, tx.dropped_total()), (2, 0));
    let rx = h.dev(1).queue_stats(0).unwrap();
    assert_eq!(rx.frames, 2);
    assert_eq!(rx.bytes as usize, f1.len() + f3.len());
}

#[test]
fn mergeable_rx_spreads_a_frame_over_buffers() {
    let h = Harness::new(vec![opts("ma", MAC_A), opts("mb", MAC_B)]);
    let (mut a, mut b) = two_guests(&h, ALL);
    let hl = b.hdr_len();
    let rx = b.post_rx(0, 4, 512);
    let f = udp_frame(MAC_A, MAC_B, 1200);
    a.send_split(1, &[0u8; 12], &f);
    let used = b.queues[0].wait_used(&b.mem, 3);
    let total = hl + f.len();
    assert_eq!(used.len(), 3);
    assert_eq!(used.iter().map(|u| u.1 as usize).sum::<usize>(), total);
    let mut data = Vec::new();
    for (head, len) in &used {
        let addr = rx.iter().find(|(h, _)| h == head).unwrap().1;
        data.extend(b.read(addr, *len as usize));
    }
    assert_eq!(u16::from_le_bytes([data[10], data[11]]), 3, "num_buffers");
    assert_eq!(&data[hl..], &f[..]);
}

#[test]
fn non_mergeable_rx_needs_a_big_enough_buffer() {
    let h = Harness::new(vec![opts("na", MAC_A), opts("nb", MAC_B)]);
    let want = !bit(VIRTIO_NET_F_MRG_RXBUF);
    let (mut a, mut b) = two_guests(&h, want);
    assert_eq!(b.features & bit(VIRTIO_NET_F_MRG_RXBUF), 0);
    let hl = b.hdr_len();
    assert_eq!(hl, 12, "VERSION_1 keeps the 12-byte header");
    let posted = b.post_rx(0, 1, 256);
    let f = udp_frame(MAC_A, MAC_B, 600);
    a.send_split(1, &[0u8; 12], &f);
    a.queues[1].wait_used(&a.mem, 1);
    wait_for("TooBig drop", || {
        (h.dev(1).queue_stats(0).unwrap().dropped(DropReason::TooBig) == 1).then_some(())
    });
    assert_eq!(b.queues[0].used_idx(&b.mem), 0, "small buffer stays posted");
    // A frame that fits lands in that same buffer, num_buffers = 1 (§5.1.6.4).
    let small = udp_frame(MAC_A, MAC_B, 10);
    a.send_split(1, &[0u8; 12], &small);
    let (head, len) = b.queues[0].wait_used(&b.mem, 1)[0];
    assert_eq!(head, posted[0].0);
    assert_eq!(len as usize, hl + small.len());
    let data = b.read(posted[0].1, len as usize);
    assert_eq!(u16::from_le_bytes([data[10], data[11]]), 1, "num_buffers");
    assert_eq!(&data[hl..], &small[..]);
}

#[test]
fn rx_without_buffers_is_counted_and_recovers() {
    let h = Harness::new(vec![opts("xa", MAC_A), opts("xb", MAC_B)]);
    let (mut a, mut b) = two_guests(&h, ALL);
    let f = udp_frame(MAC_A, MAC_B, 64);
    a.send_split(1, &[0u8; 12], &f);
    a.queues[1].wait_used(&a.mem, 1);
    wait_for("NoBuffers drop", || {
        (h.dev(1)
            .queue_stats(0)
            .unwrap()
            .dropped(DropReason::NoBuffers)
            == 1)
            .then_some(())
    });
    b.post_rx(0, 2, 2048);
    a.send_split(1, &[0u8; 12], &f);
    a.queues[1].wait_used(&a.mem, 1);
    let (_, len) = b.queues[0].wait_used(&b.mem, 1)[0];
    assert_eq!(len as usize, b.hdr_len() + f.len());
}

#[test]
fn event_idx_suppresses_and_requests_calls() {
    let h = Harness::new(vec![opts("ea", MAC_A), opts("eb", MAC_B)]);
    let (mut a, mut b) = two_guests(&h, ALL);
    assert_ne!(b.features & bit(VIRTIO_RING_F_EVENT_IDX), 0);
    b.post_rx(0, 8, 2048);
    // used_event = 1: call only once the used index passes 1 (second frame).
    b.queues[0].set_used_event(&b.mem, 1);
    let f = udp_frame(MAC_A, MAC_B, 64);
    a.send_split(1, &[0u8; 12], &f);
    b.queues[0].wait_used(&b.mem, 1);
    a.queues[1].wait_used(&a.mem, 1);
    assert!(!b.queues[0].called(), "no call before used_event is passed");
    a.send_split(1, &[0u8; 12], &f);
    b.queues[0].wait_used(&b.mem, 1);
    wait_for("call after used_event", || {
        b.queues[0].called().then_some(())
    });
}

#[test]
fn features_switched_off_per_port_are_not_offered() {
    let off = opts("off", MAC_A)
        .features_off_by_name(&["MRG_RXBUF", "GUEST_TSO4", "RING_EVENT_IDX", "CTRL_VQ"])
        .unwrap();
    let h = Harness::new(vec![off, opts("on", MAC_B)]);
    let fe = TestGuest::connect(&h.dev(0).options().socket, 3);
    fe.set_owner().unwrap();
    let f = fe.get_features().unwrap();
    for b in [
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_NET_F_CTRL_VQ,
        // …and what depends on the control queue (§5.1.3.1).
        VIRTIO_NET_F_CTRL_RX,
        VIRTIO_NET_F_CTRL_VLAN,
        VIRTIO_NET_F_GUEST_ANNOUNCE,
    ] {
        assert_eq!(f & bit(b), 0, "feature bit {b} should be off");
    }
    assert_ne!(
        f & bit(VIRTIO_NET_F_GUEST_TSO6),
        0,
        "other features stay on"
    );
    let fe_b = TestGuest::connect(&h.dev(1).options().socket, 3);
    fe_b.set_owner().unwrap();
    assert_ne!(
        fe_b.get_features().unwrap() & bit(VIRTIO_NET_F_MRG_RXBUF),
        0,
        "per port"
    );
}

#[test]
fn big_non_mergeable_buffers_take_a_jumbo_frame() {
    let h = Harness::new(vec![opts("bg", MAC_B)]);
    let want = !bit(VIRTIO_NET_F_MRG_RXBUF);
    let mut b = TestGuest::start(TestGuest::connect(&h.dev(0).options().socket, 3), 3, want);
    // Linux's "big packets" layout: header in its own descriptor, then page-sized pieces.
    let hl = b.hdr_len();
    let h0 = b.alloc(hl as u64);
    let pages: Vec<u64> = (0..4).map(|_| b.alloc(4096)).collect();
    let mut bufs = vec![(h0, hl as u32, true)];
    bufs.extend(pages.iter().map(|&p| (p, 4096, true)));
    let head = b.queues[0].add(&b.mem, &bufs);
    b.queues[0].kick();
    let f = udp_frame(MAC_A, MAC_B, 9000);
    let hdr = switch::VnetHdr::default();
    assert_eq!(
        h.dev(0).deliver(
            0,
            &hdr,
            &[
                switch::Chunk::from(&f[..100]),
                switch::Chunk::from(&f[100..])
            ]
        ),
        Ok(())
    );
    h.dev(0).flush_rx(0);
    let (got_head, len) = b.queues[0].wait_used(&b.mem, 1)[0];
    assert_eq!((got_head, len as usize), (head, hl + f.len()));
    let hdr_bytes = b.read(h0, hl);
    assert_eq!(
        u16::from_le_bytes([hdr_bytes[10], hdr_bytes[11]]),
        1,
        "num_buffers"
    );
    let mut data = Vec::new();
    for p in &pages {
        data.extend(b.read(*p, 4096));
    }
    assert_eq!(&data[..f.len()], &f[..]);
}

/// A guest that fills its TX ring and kicks once gets every chain processed: the worker
/// pops at most 4 rounds of 64 per pass and comes back for the rest without a new kick
/// (the device's own re-kick of its former Forward path is gone with that path).
#[test]
fn a_full_tx_ring_is_drained_from_one_kick() {
    let h = Harness::new(vec![opts("bud", MAC_A), opts("budb", MAC_B)]);
    let (mut a, _b) = two_guests(&h, ALL);
    let f = udp_frame(MAC_A, MAC_B, 20);
    let mut all = vec![0u8; 12];
    all.extend_from_slice(&f);
    let buf = a.alloc(all.len() as u64);
    use vm_memory::Bytes;
    a.mem
        .write_slice(&all, vm_memory::GuestAddress(buf))
        .unwrap();
    for _ in 0..QSIZE {
        a.queues[1].add(&a.mem, &[(buf, all.len() as u32, false)]);
    }
    a.queues[1].kick();
    let used = a.queues[1].wait_used(&a.mem, QSIZE as usize);
    assert_eq!(used.len(), QSIZE as usize);
    assert_eq!(h.dev(0).queue_stats(1).unwrap().frames, u64::from(QSIZE));
}

#[test]
fn rx_burst_places_in_order_and_publishes_the_used_index_once() {
    let h = Harness::new(vec![opts("rb", MAC_B)]);
    let mut b = TestGuest::start(TestGuest::connect(&h.dev(0).options().socket, 3), 3, ALL);
    let posted = b.post_rx(0, 3, 2048);
    let frames: Vec<Vec<u8>> = (0..4).map(|i| udp_frame(MAC_A, MAC_B, 60 + i)).collect();
    let hdr = switch::VnetHdr::default();
    let results = h.dev(0).rx_burst(0, |burst| {
        burst.expect(frames.len(), 80);
        let mut r = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            r.push(burst.deliver(
                &hdr,
                &[switch::Chunk::from(&f[..20]), switch::Chunk::from(&f[20..])],
            ));
            if i == 1 {
                // Nothing is visible to the driver until the burst ends.
                assert_eq!(b.queues[0].used_idx(&b.mem), 0);
            }
        }
        r
    });
    assert_eq!(
        results,
        vec![Ok(()), Ok(()), Ok(()), Err(vring_engine::RxDrop::NoBuffers)]
    );
    assert_eq!(b.queues[0].used_idx(&b.mem), 3);
    h.dev(0).flush_rx(0);
    let used = b.queues[0].wait_used(&b.mem, 3);
    let hl = b.hdr_len();
    for (k, &(head, len)) in used.iter().enumerate() {
        assert_eq!(head, posted[k].0, "ring order");
        assert_eq!(len as usize, hl + frames[k].len());
        assert_eq!(b.read(posted[k].1 + hl as u64, frames[k].len()), frames[k]);
    }
    let st = h.dev(0).queue_stats(0).unwrap();
    assert_eq!(st.frames, 3);
    assert_eq!(st.dropped(DropReason::NoBuffers), 1);
    // The queue keeps working after the burst: its positions were written back.
    b.post_rx(0, 1, 2048);
    assert_eq!(
        h.dev(0)
            .deliver(0, &hdr, &[switch::Chunk::from(&frames[3][..])]),
        Ok(())
    );
    assert_eq!(b.queues[0].used_idx(&b.mem), 4);
}

/// Offload metadata that does not fit the frame (a UDP frame sent as TCPv4 GSO) toward a
/// guest that cannot take GSO: the frame is dropped and counted under its own reason,
/// `bad_offload_metadata`, not as `destination_full`; the sender's buffer comes back and
/// the next good frame gets through.
#[test]
fn bad_offload_metadata_is_counted_under_its_own_reason() {
    let h = Harness::new(vec![opts("boa", MAC_A), opts("bob", MAC_B)]);
    let a = TestGuest::start(TestGuest::connect(&h.dev(0).options().socket, 3), 3, ALL);
    let no_gso = ALL
        & !(bit(VIRTIO_NET_F_GUEST_TSO4)
            | bit(VIRTIO_NET_F_GUEST_TSO6)
            | bit(VIRTIO_NET_F_GUEST_UFO)
            | bit(VIRTIO_NET_F_GUEST_USO4)
            | bit(VIRTIO_NET_F_GUEST_USO6));
    let b = TestGuest::start(TestGuest::connect(&h.dev(1).options().socket, 3), 3, no_gso);
    let (mut a, mut b) = (a, b);
    assert_ne!(a.features & bit(VIRTIO_NET_F_HOST_TSO4), 0);
    assert_eq!(b.features & bit(VIRTIO_NET_F_GUEST_TSO4), 0);
    b.post_rx(0, 8, 2048);
    let f = udp_frame(MAC_A, MAC_B, 1400);
    let hdr = switch::VnetHdr {
        flags: switch::vnet::F_NEEDS_CSUM,
        gso_type: switch::vnet::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 500,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    let mut hb = [0u8; 12];
    hdr.emit(&mut hb, 12).unwrap();
    a.send_split(1, &hb, &f);
    assert_eq!(
        a.queues[1].wait_used(&a.mem, 1)[0].1,
        0,
        "TX buffer returned"
    );
    let ingress = h.dev(0).port();
    wait_for("the drop counted", || {
        (h.sw
            .stats(ingress)
            .drop_count(switch::DropReason::BadOffload)
            == 1)
            .then_some(())
    });
    let st = h.sw.stats(ingress);
    assert_eq!(
        st.drop_count(switch::DropReason::DestinationFull),
        0,
        "{st:?}"
    );
    assert_eq!(b.queues[0].used_idx(&b.mem), 0, "nothing placed in B");
    // A good frame still gets through.
    let g = udp_frame(MAC_A, MAC_B, 100);
    a.send_split(1, &[0; 12], &g);
    let (_, len) = b.queues[0].wait_used(&b.mem, 1)[0];
    assert_eq!(len as usize, b.hdr_len() + g.len());
}

/// Production ring sizes: QEMU's `rx_queue_size=1024,tx_queue_size=1024` and the largest
/// split ring (32768, virtio 1.2 §2.7), with the default `max_queue_size`. The driver
/// uses descriptor indices far above 256 (it reserves the low ones) and has `n` frames in
/// flight at once, more than a 256-entry ring could hold.
fn large_rings_forward(tag: &str, size: u16, skip: u16, n: usize) {
    let h = Harness::new(vec![
        opts(&format!("{tag}a"), MAC_A),
        opts(&format!("{tag}b"), MAC_B),
    ]);
    let connect = |i: usize| TestGuest::connect(&h.dev(i).options().socket, 3);
    let mut a = TestGuest::start_sized(connect(0), 3, ALL, size);
    let mut b = TestGuest::start_sized(connect(1), 3, ALL, size);
    for g in [&mut a, &mut b] {
        for q in &mut g.queues {
            for _ in 0..skip {
                q.take_free();
            }
        }
    }
    for dev in [h.dev(0), h.dev(1)] {
        assert_eq!(dev.queue_sizes(), vec![size; 3]);
    }
    let posted = b.post_rx(0, n, 2048);
    assert!(posted.iter().all(|(head, _)| *head >= skip));
    let frames: Vec<Vec<u8>> = (0..n)
        .map(|i| udp_frame(MAC_A, MAC_B, 20 + i % 200))
        .collect();
    let mut sent = Vec::new();
    for f in &frames {
        sent.push(a.send_inline(1, &[0; 12], f));
    }
    assert!(sent.iter().all(|head| *head >= skip));
    let used = b.queues[0].wait_used(&b.mem, n);
    assert_eq!(used.len(), n);
    let hl = b.hdr_len();
    for (k, ((head, len), (want_head, addr))) in used.iter().zip(&posted).enumerate() {
        assert_eq!(head, want_head, "frame {k} in ring order");
        assert_eq!(*len as usize, hl + frames[k].len(), "frame {k}");
        assert_eq!(
            b.read(addr + hl as u64, frames[k].len()),
            frames[k],
            "frame {k}"
        );
    }
    let done = a.queues[1].wait_used(&a.mem, n);
    assert_eq!(done.len(), n, "every TX chain completed");
    let tx = h.dev(0).queue_stats(1).unwrap();
    let rx = h.dev(1).queue_stats(0).unwrap();
    assert_eq!((tx.frames, tx.dropped_total()), (n as u64, 0), "{tx:?}");
    assert_eq!((rx.frames, rx.dropped_total()), (n as u64, 0), "{rx:?}");
    // And back, B → A, on the same large rings.
    a.post_rx(0, 1, 2048);
    let f = udp_frame(MAC_B, MAC_A, 33);
    b.send_split(1, &[0; 12], &f);
    let (_, len) = a.queues[0].wait_used(&a.mem, 1)[0];
    assert_eq!(len as usize, a.hdr_len() + f.len());
}

#[test]
fn rings_of_1024_entries_forward() {
    large_rings_forward("q1k", 1024, 700, 300);
}

#[test]
fn rings_of_32768_entries_forward() {
    large_rings_forward("q32k", 32768, 32000, 600);
}

/// `max_queue_size` bounds what SET_VRING_NUM may ask for.
#[test]
fn a_ring_above_the_ports_maximum_is_refused() {
    let mut o = opts("qmax", MAC_A);
    o.max_queue_size = 256;
    let h = Harness::new(vec![o]);
    let mut fe = TestGuest::connect(&h.dev(0).options().socket, 3);
    fe.set_owner().unwrap();
    let f = fe.get_features().unwrap();
    use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures as P};
    fe.get_protocol_features().unwrap();
    fe.set_protocol_features(P::REPLY_ACK).unwrap();
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    fe.set_features(f & (bit(VIRTIO_F_VERSION_1) | bit(30)))
        .unwrap();
    assert!(fe.set_vring_num(0, 256).is_ok());
    assert!(
        fe.set_vring_num(0, 1024).is_err(),
        "1024 > max_queue_size 256"
    );
}

/// A zero-capacity RX chain can never take a frame: it is consumed and counted once
/// (not walked again for every frame), and the next buffer takes the next frame.
#[test]
fn zero_capacity_rx_chain_is_consumed_and_counted() {
    let h = Harness::new(vec![opts("za", MAC_A), opts("zb", MAC_B)]);
    let (mut a, mut b) = two_guests(&h, ALL);
    let zero = b.post_rx(0, 1, 0);
    let f = udp_frame(MAC_A, MAC_B, 64);
    a.send_split(1, &[0u8; 12], &f);
    a.queues[1].wait_used(&a.mem, 1);
    let used = b.queues[0].wait_used(&b.mem, 1);
    assert_eq!(used, vec![(zero[0].0, 0)], "returned empty");
    let s = h.dev(1).queue_stats(0).unwrap();
    assert_eq!(
        s.dropped(DropReason::Chain(
            vring_engine::chain::ChainError::ZeroLength
        )),
        1,
        "{s:?}"
    );
    b.post_rx(0, 1, 2048);
    a.send_split(1, &[0u8; 12], &f);
    let (_, len) = b.queues[0].wait_used(&b.mem, 1)[0];
    assert_eq!(len as usize, b.hdr_len() + f.len());
}
