//! Lifecycle: frontend disconnect and reconnect (server and client sockets), device reset,
//! driver reload with re-negotiation, memory table changes (SET_MEM_TABLE, ADD/REM_MEM_REG),
//! GET_VRING_BASE stopping a ring, and a broken ring revived by setting it up again.
#![allow(clippy::cast_possible_truncation)] // test code: small literal sizes

mod common;

use std::os::unix::net::UnixListener;

use common::frames::*;
use common::harness::Harness;
use common::*;
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vring_engine::chain::ChainError;
use vring_engine::{DropReason, SocketMode};

const TX: usize = 1;

fn ping(a: &mut TestGuest, b: &mut TestGuest, src: switch::Mac, dst: switch::Mac) {
    b.post_rx(0, 1, 2048);
    let f = udp_frame(src, dst, 50);
    a.send_split(TX, &[0; 12], &f);
    let (_, len) = b.queues[0].wait_used(&b.mem, 1)[0];
    assert_eq!(len as usize, b.hdr_len() + f.len());
}

fn start(path: &std::path::Path) -> TestGuest {
    TestGuest::start(TestGuest::connect(path, 3), 3, u64::MAX)
}

#[test]
fn server_mode_reconnect() {
    let h = Harness::new(vec![opts("sra", MAC_A), opts("srb", MAC_B)]);
    let pa = h.dev(0).options().socket.clone();
    let mut b = start(&h.dev(1).options().socket);
    let mut a = start(&pa);
    ping(&mut a, &mut b, MAC_A, MAC_B);
    let port_a = h.dev(0).port();
    drop(a);
    wait_for("link down after disconnect", || {
        (!h.link_up(port_a)).then_some(())
    });
    assert_eq!(h.dev(0).acked_features(), 0, "driver state forgotten");
    let mut a = start(&pa);
    ping(&mut a, &mut b, MAC_A, MAC_B);
    ping(&mut b, &mut a, MAC_B, MAC_A);
}

#[test]
fn client_mode_reconnect() {
    let path = sock_path("client");
    let listener = UnixListener::bind(&path).unwrap();
    let mut o = opts("cla", MAC_A);
    o.socket = path.clone();
    o.mode = SocketMode::Client;
    let h = Harness::new(vec![o, opts("clb", MAC_B)]);
    let mut b = start(&h.dev(1).options().socket);
    let mut a = TestGuest::start(TestGuest::accept(&listener, 3), 3, u64::MAX);
    ping(&mut a, &mut b, MAC_A, MAC_B);
    drop(a);
    // The device dials again; a new "QEMU" accepts it.
    let mut a = TestGuest::start(TestGuest::accept(&listener, 3), 3, u64::MAX);
    ping(&mut a, &mut b, MAC_A, MAC_B);
    drop(h);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn reset_device_and_renegotiate() {
    let h = Harness::new(vec![opts("rsa", MAC_A), opts("rsb", MAC_B)]);
    let mut a = start(&h.dev(0).options().socket);
    let mut b = start(&h.dev(1).options().socket);
    ping(&mut a, &mut b, MAC_A, MAC_B);
    assert_eq!(a.ctrl(2, 0, 0, &[1]), vring_engine::ctrl::OK);
    assert!(h.dev(0).rx_filter().promisc);
    a.fe.reset_device().unwrap();
    assert_eq!(h.dev(0).acked_features(), 0);
    assert!(
        !h.dev(0).rx_filter().promisc,
        "filter back to the configured MAC"
    );
    // The driver comes back (reload): negotiate again, fresh rings from index 0.
    let feats = a.fe.get_features().unwrap();
    a.fe.set_features(feats).unwrap();
    for i in 0..3 {
        a.queues[i] = DriverQueue::fresh(&a.mem, a.queues[i].desc.0, QSIZE);
        a.setup_queue(i);
    }
    ping(&mut a, &mut b, MAC_A, MAC_B);
    ping(&mut b, &mut a, MAC_B, MAC_A);
}

#[test]
fn get_vring_base_stops_the_ring_and_reports_its_index() {
    let h = Harness::new(vec![opts("gba", MAC_A), opts("gbb", MAC_B)]);
    let mut a = start(&h.dev(0).options().socket);
    let mut b = start(&h.dev(1).options().socket);
    ping(&mut a, &mut b, MAC_A, MAC_B);
    ping(&mut a, &mut b, MAC_A, MAC_B);
    assert_eq!(a.fe.get_vring_base(TX).unwrap(), 2);
    // B's RX ring stopped: frames for B are counted, not written.
    b.post_rx(0, 1, 2048);
    assert_eq!(
        b.fe.get_vring_base(0).unwrap(),
        2,
        "two buffers consumed, one still posted"
    );
    let f = udp_frame(MAC_A, MAC_B, 10);
    let mut a2 = a;
    a2.fe.set_vring_base(TX, 2).unwrap();
    let cfg = a2.queues[TX].config(&a2.mem);
    a2.fe.set_vring_addr(TX, &cfg).unwrap();
    a2.fe.set_vring_kick(TX, &a2.queues[TX].kick).unwrap();
    a2.fe.set_vring_call(TX, &a2.queues[TX].call).unwrap();
    a2.send_split(TX, &[0; 12], &f);
    a2.queues[TX].wait_used(&a2.mem, 1);
    wait_for("NotReady drop on stopped RX", || {
        (h.dev(1)
            .queue_stats(0)
            .unwrap()
            .dropped(DropReason::NotReady)
            == 1)
            .then_some(())
    });
    assert_eq!(b.queues[0].used_idx(&b.mem), 2, "stopped ring untouched");
    // Restarting B's RX at the base it reported resumes delivery.
    b.fe.set_vring_base(0, 2).unwrap();
    let cfg = b.queues[0].config(&b.mem);
    b.fe.set_vring_addr(0, &cfg).unwrap();
    b.fe.set_vring_kick(0, &b.queues[0].kick).unwrap();
    b.fe.set_vring_call(0, &b.queues[0].call).unwrap();
    a2.send_split(TX, &[0; 12], &f);
    let (_, len) = b.queues[0].wait_used(&b.mem, 1)[0];
    assert_eq!(len as usize, b.hdr_len() + f.len());
}

#[test]
fn memory_regions_added_and_removed() {
    let h = Harness::new(vec![opts("mra", MAC_A), opts("mrb", MAC_B)]);
    let mut a = start(&h.dev(0).options().socket);
    let mut b = start(&h.dev(1).options().socket);
    // Hot-added region (CONFIGURE_MEM_SLOTS) holds B's next RX buffer.
    let extra = memfd_memory(0x4000_0000, 1 << 20);
    let info = regions(&extra)[0];
    b.fe.add_mem_region(&info).unwrap();
    assert_eq!(h.dev(1).guest_memory().num_regions(), 2);
    // B's TX ring is out with the workers while the table changes: a frame B sends from
    // the hot-added region (header and frame in one descriptor there) reaches A intact.
    let f = udp_frame(MAC_B, MAC_A, 70);
    let tx_buf = 0x4000_0000 + 64 * 1024;
    extra.write_slice(&[0; 12], GuestAddress(tx_buf)).unwrap();
    extra.write_slice(&f, GuestAddress(tx_buf + 12)).unwrap();
    let rx = a.post_rx(0, 1, 2048);
    b.queues[TX].add(&b.mem, &[(tx_buf, 12 + f.len() as u32, false)]);
    b.queues[TX].kick();
    b.queues[TX].wait_used(&b.mem, 1);
    let (_, len) = a.queues[0].wait_used(&a.mem, 1)[0];
    assert_eq!(len as usize, a.hdr_len() + f.len());
    assert_eq!(a.read(rx[0].1 + a.hdr_len() as u64, f.len()), f);
    // And B receives into a buffer there.
    let buf = 0x4000_0000 + 4096;
    b.queues[0].add(&b.mem, &[(buf, 2048, true)]);
    b.queues[0].kick();
    let f = udp_frame(MAC_A, MAC_B, 90);
    a.send_split(TX, &[0; 12], &f);
    let (_, len) = b.queues[0].wait_used(&b.mem, 1)[0];
    let mut got = vec![0u8; len as usize];
    extra.read_slice(&mut got, GuestAddress(buf)).unwrap();
    assert_eq!(&got[b.hdr_len()..], &f[..]);
    // Once removed, a buffer there is outside guest memory: dropped, counted — on TX too.
    b.fe.remove_mem_region(&info).unwrap();
    b.queues[TX].add(&b.mem, &[(tx_buf, 12 + f.len() as u32, false)]);
    b.queues[TX].kick();
    b.queues[TX].wait_used(&b.mem, 1);
    let st = h.dev(1).queue_stats(TX).unwrap();
    assert_eq!(st.dropped(DropReason::Chain(ChainError::OutOfMemory)), 1);
    b.queues[0].add(&b.mem, &[(buf, 2048, true)]);
    b.queues[0].kick();
    a.send_split(TX, &[0; 12], &f);
    b.queues[0].wait_used(&b.mem, 1);
    let st = h.dev(1).queue_stats(0).unwrap();
    assert_eq!(st.dropped(DropReason::Chain(ChainError::OutOfMemory)), 1);
    // A whole new table (SET_MEM_TABLE) still works with buffers in the base region.
    b.fe.set_mem_table(&regions(&b.mem)).unwrap();
    ping(&mut a, &mut b, MAC_A, MAC_B);
}

#[test]
fn broken_ring_revived_by_setting_it_up_again() {
    let h = Harness::new(vec![opts("bra", MAC_A), opts("brb", MAC_B)]);
    let mut a = start(&h.dev(0).options().socket);
    let mut b = start(&h.dev(1).options().socket);
    let q = &a.queues[TX];
    q.set_avail_idx(&a.mem, QSIZE + 5);
    q.kick();
    wait_for("ring stopped", || a.queues[TX].errored().then_some(()));
    // The frontend reacts as to NEEDS_RESET: stop the ring and set it up afresh.
    a.fe.get_vring_base(TX).unwrap();
    a.queues[TX] = DriverQueue::fresh(&a.mem, a.queues[TX].desc.0, QSIZE);
    a.setup_queue(TX);
    ping(&mut a, &mut b, MAC_A, MAC_B);
}
