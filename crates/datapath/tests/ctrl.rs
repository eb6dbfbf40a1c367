//! Control virtqueue end to end (virtio 1.2 §5.1.6.5): every class and command, acks,
//! and the effect on the switch.

mod common;

use common::frames::*;
use common::harness::Harness;
use common::*;
use switch::Mac;
use vhost::vhost_user::message::VhostUserConfigFlags;
use vhost::vhost_user::VhostUserFrontend;
use virtio_bindings::virtio_net::*;
use vring_engine::ctrl::{ERR, OK};
use vring_engine::features::bit;

#[test]
fn every_command_is_validated_applied_and_acked() {
    let mut o = opts("ctl", MAC_A);
    o.queue_pairs = 2;
    let h = Harness::new(vec![o]);
    let mut g = TestGuest::start(
        TestGuest::connect(&h.dev(0).options().socket, 5),
        5,
        u64::MAX,
    );
    assert_ne!(g.features & bit(VIRTIO_NET_F_MQ), 0);
    let c = 4; // controlq = 2N with MQ (§5.1.2)
    let d = h.dev(0);

    // RX modes (§5.1.6.5.1)
    assert_eq!(g.ctrl(c, 0, 0, &[1]), OK);
    assert!(d.rx_filter().promisc);
    assert_eq!(g.ctrl(c, 0, 0, &[0]), OK);
    for cmd in 1..=5u8 {
        assert_eq!(g.ctrl(c, 0, cmd, &[1]), OK, "rx cmd {cmd}");
    }
    let f = d.rx_filter();
    assert!(!f.promisc && f.allmulti && f.alluni && f.nomulti && f.nouni && f.nobcast);
    assert_eq!(g.ctrl(c, 0, 6, &[1]), ERR, "unknown rx command");
    assert_eq!(g.ctrl(c, 0, 0, &[1, 1]), ERR, "wrong data length");

    // MAC table and address (§5.1.6.5.2)
    let mut t = Vec::new();
    t.extend_from_slice(&2u32.to_le_bytes());
    t.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2]);
    t.extend_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(&[1, 0, 0x5e, 0, 0, 9]);
    assert_eq!(g.ctrl(c, 1, 0, &t), OK);
    assert_eq!(d.rx_filter().uni.len(), 2);
    assert_eq!(d.rx_filter().multi, vec![Mac([1, 0, 0x5e, 0, 0, 9])]);
    let mut short = t.clone();
    short.truncate(t.len() - 1);
    assert_eq!(g.ctrl(c, 1, 0, &short), ERR);
    let new_mac = [0x52, 0x54, 0, 0, 0, 0x77];
    assert_eq!(g.ctrl(c, 1, 1, &new_mac), OK);
    assert_eq!(d.rx_filter().mac, Some(Mac(new_mac)));
    let (_, cfg) =
        g.fe.get_config(0, 6, VhostUserConfigFlags::WRITABLE, &[0; 6])
            .unwrap();
    assert_eq!(cfg, new_mac, "config space follows MAC_ADDR_SET");
    assert_eq!(
        g.ctrl(c, 1, 1, &[1, 2, 3, 4, 5, 6]),
        ERR,
        "multicast address"
    );

    // VLAN filter (§5.1.6.5.3)
    assert_eq!(g.ctrl(c, 2, 0, &100u16.to_le_bytes()), OK);
    assert!(d.rx_filter().vlans.as_ref().unwrap().contains(100));
    assert_eq!(g.ctrl(c, 2, 1, &100u16.to_le_bytes()), OK);
    assert!(!d.rx_filter().vlans.as_ref().unwrap().contains(100));
    assert_eq!(g.ctrl(c, 2, 0, &4095u16.to_le_bytes()), ERR);

    // Announce (§5.1.6.5.4)
    assert!(d.request_announce());
    let (_, st) =
        g.fe.get_config(6, 2, VhostUserConfigFlags::WRITABLE, &[0; 2])
            .unwrap();
    assert_eq!(st[0] & 2, 2);
    assert_eq!(g.ctrl(c, 3, 0, &[]), OK);
    let (_, st) =
        g.fe.get_config(6, 2, VhostUserConfigFlags::WRITABLE, &[0; 2])
            .unwrap();
    assert_eq!(st[0] & 2, 0, "ANNOUNCE_ACK clears the status bit");

    // Multiqueue (§5.1.6.5.5)
    assert_eq!(g.ctrl(c, 4, 0, &2u16.to_le_bytes()), OK);
    assert_eq!(d.active_queue_pairs(), 2);
    assert_eq!(g.ctrl(c, 4, 0, &3u16.to_le_bytes()), ERR);
    assert_eq!(g.ctrl(c, 4, 0, &0u16.to_le_bytes()), ERR);
    assert_eq!(g.ctrl(c, 4, 1, &[]), ERR, "RSS not offered");

    // Guest offloads (§5.1.6.5.6)
    let csum = bit(VIRTIO_NET_F_GUEST_CSUM);
    assert_eq!(g.ctrl(c, 5, 0, &csum.to_le_bytes()), OK);
    // The switch now delivers to the port with what the guest accepts.
    let last_off = h.offloads(d.port());
    assert!(last_off.csum && !last_off.tso4);
    assert_eq!(
        g.ctrl(c, 5, 0, &bit(VIRTIO_NET_F_MRG_RXBUF).to_le_bytes()),
        ERR,
        "not an offload"
    );

    // Unknown class.
    assert_eq!(g.ctrl(c, 9, 0, &[]), ERR);
    let stats = d.queue_stats(c).unwrap();
    assert_eq!(stats.frames, 24, "every command was read");
}

#[test]
fn commands_of_features_not_negotiated_are_refused() {
    let h = Harness::new(vec![opts("ctl2", MAC_A)]);
    let want = !bit(VIRTIO_NET_F_CTRL_RX_EXTRA) & !bit(VIRTIO_NET_F_CTRL_VLAN);
    let mut g = TestGuest::start(TestGuest::connect(&h.dev(0).options().socket, 3), 3, want);
    let c = 2; // controlq without MQ
    assert_eq!(g.ctrl(c, 0, 0, &[1]), OK);
    assert_eq!(g.ctrl(c, 0, 2, &[1]), ERR, "ALLUNI needs CTRL_RX_EXTRA");
    assert_eq!(
        g.ctrl(c, 2, 0, &5u16.to_le_bytes()),
        ERR,
        "VLAN needs CTRL_VLAN"
    );
    assert_eq!(
        g.ctrl(c, 4, 0, &1u16.to_le_bytes()),
        ERR,
        "MQ not offered with 1 pair"
    );
}

#[test]
fn rx_filter_reaches_the_switch() {
    let h = Harness::new(vec![opts("fa", MAC_A), opts("fb", MAC_B)]);
    let mut a = TestGuest::start(
        TestGuest::connect(&h.dev(0).options().socket, 3),
        3,
        u64::MAX,
    );
    let mut b = TestGuest::start(
        TestGuest::connect(&h.dev(1).options().socket, 3),
        3,
        u64::MAX,
    );
    b.post_rx(0, 8, 2048);
    let bcast = udp_frame(MAC_A, Mac::BROADCAST, 20);
    // B refuses broadcast: the switch must not deliver it.
    assert_eq!(b.ctrl(2, 0, 5, &[1]), OK);
    a.send_split(1, &[0; 12], &bcast);
    a.queues[1].wait_used(&a.mem, 1);
    // A unicast frame sent after it arrives first, proving the broadcast was filtered.
    let uni = udp_frame(MAC_A, MAC_B, 20);
    a.send_split(1, &[0; 12], &uni);
    let (_, len) = b.queues[0].wait_used(&b.mem, 1)[0];
    assert_eq!(len as usize, b.hdr_len() + uni.len());
    assert_eq!(b.ctrl(2, 0, 5, &[0]), OK);
    a.send_split(1, &[0; 12], &bcast);
    let (_, len) = b.queues[0].wait_used(&b.mem, 1)[0];
    assert_eq!(len as usize, b.hdr_len() + bcast.len());
    assert_eq!(h.dev(1).queue_stats(0).unwrap().frames, 2);
}

#[test]
fn queue_pairs_follow_vq_pairs_set() {
    let mut o = opts("mq", MAC_A);
    o.queue_pairs = 2;
    let h = Harness::new(vec![o]);
    let mut g = TestGuest::start(
        TestGuest::connect(&h.dev(0).options().socket, 5),
        5,
        u64::MAX,
    );
    let rx1 = g.post_rx(2, 2, 2048);
    let f = udp_frame(MAC_B, MAC_A, 30);
    let hdr = switch::VnetHdr::default();
    // §5.1.6.5.5: only pair 0 is used until the driver enables more.
    assert_eq!(
        h.dev(0).deliver(1, &hdr, &[switch::Chunk::from(&f[..])]),
        Err(vring_engine::RxDrop::NotReady)
    );
    assert_eq!(g.ctrl(4, 4, 0, &2u16.to_le_bytes()), OK);
    assert_eq!(
        h.dev(0).deliver(
            1,
            &hdr,
            &[switch::Chunk::from(&f[..14]), switch::Chunk::from(&f[14..])]
        ),
        Ok(())
    );
    // Delivery published the used entry; the call comes with the flush (used_event 0).
    assert!(h.dev(0).flush_rx(1));
    assert!(g.queues[2].called());
    let (head, len) = g.queues[2].wait_used(&g.mem, 1)[0];
    assert_eq!(head, rx1[0].0);
    assert_eq!(&g.read(rx1[0].1, len as usize)[g.hdr_len()..], &f[..]);
}

#[test]
fn without_our_control_queue_pairs_follow_ring_enable() {
    // QEMU's way: the control queue stays in QEMU, pairs are steered with SET_VRING_ENABLE.
    let mut o = opts("mqen", MAC_A);
    o.queue_pairs = 2;
    let h = Harness::new(vec![o]);
    let mut g = TestGuest::start(
        TestGuest::connect(&h.dev(0).options().socket, 5),
        5,
        u64::MAX,
    );
    g.fe.set_vring_enable(4, false).unwrap();
    assert_eq!(h.dev(0).active_queue_pairs(), 2, "both RX rings enabled");
    g.fe.set_vring_enable(2, false).unwrap();
    assert_eq!(h.dev(0).active_queue_pairs(), 1);
    let f = udp_frame(MAC_B, MAC_A, 30);
    let hdr = switch::VnetHdr::default();
    assert_eq!(
        h.dev(0).deliver(1, &hdr, &[switch::Chunk::from(&f[..])]),
        Err(vring_engine::RxDrop::NotReady)
    );
    g.fe.set_vring_enable(2, true).unwrap();
    assert_eq!(h.dev(0).active_queue_pairs(), 2);
    g.post_rx(2, 1, 2048);
    assert_eq!(
        h.dev(0).deliver(1, &hdr, &[switch::Chunk::from(&f[..])]),
        Ok(())
    );
}
