//! Hostile frontends over the real vhost-user socket (ARCHITECTURE.md "frontend boundary"):
//! a memory region larger than its memfd and a kick fd that is not an eventfd are refused
//! and counted, and the daemon (and its other port) carries on.

mod common;

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use common::frames::*;
use common::harness::Harness;
use common::*;
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

fn two_ports(tag: &str) -> Harness {
    Harness::new(vec![
        opts(&format!("{tag}a"), MAC_A),
        opts(&format!("{tag}b"), MAC_B),
    ])
}

/// The start of QEMU's sequence up to (not including) SET_MEM_TABLE.
fn negotiate(fe: &mut vhost::vhost_user::Frontend) {
    fe.set_owner().unwrap();
    let offered = fe.get_features().unwrap();
    let pf = fe.get_protocol_features().unwrap();
    fe.set_protocol_features(pf).unwrap();
    fe.set_hdr_flags(vhost::vhost_user::message::VhostUserHeaderFlag::NEED_REPLY);
    fe.set_features(offered).unwrap();
}

/// The healthy port still completes the whole start sequence and answers a control command.
fn other_port_works(h: &Harness) {
    let fe = TestGuest::connect(&h.dev(1).options().socket, 3);
    let _g = TestGuest::start(fe, 3, u64::MAX);
    assert_eq!(h.dev(1).frontend_stats(), Default::default());
}

#[test]
fn region_past_memfd_end_is_refused() {
    let h = two_ports("eof");
    let mut fe = TestGuest::connect(&h.dev(0).options().socket, 3);
    negotiate(&mut fe);
    // A 1 MiB memfd announced as a 4 MiB region: mmap succeeds, an access past 1 MiB would
    // SIGBUS the daemon.
    let fd =
        nix::sys::memfd::memfd_create(c"short", nix::sys::memfd::MemFdCreateFlag::empty()).unwrap();
    let file = File::from(fd);
    file.set_len(1 << 20).unwrap();
    let mem: Mem = GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(MEM_BASE),
        4 << 20,
        Some(FileOffset::new(file, 0)),
    )])
    .unwrap();
    assert!(fe.set_mem_table(&regions(&mem)).is_err());
    assert_eq!(h.dev(0).frontend_stats().bad_memory_table, 1);
    other_port_works(&h);
}

#[test]
fn kick_fd_pipe_is_refused() {
    let h = two_ports("pipe");
    let mut fe = TestGuest::connect(&h.dev(0).options().socket, 3);
    negotiate(&mut fe);
    let mem = memfd_memory(MEM_BASE, MEM_SIZE);
    fe.set_mem_table(&regions(&mem)).unwrap();
    let q = DriverQueue::new(MEM_BASE, QSIZE);
    fe.set_vring_num(0, QSIZE).unwrap();
    fe.set_vring_base(0, 0).unwrap();
    fe.set_vring_addr(0, &q.config(&mem)).unwrap();
    fe.set_vring_call(0, &q.call).unwrap();
    // A pipe whose write end is closed: always readable (EOF). Installed as RX queue 0's
    // kick fd, the worker would count a "kick" per epoll wake-up, forever.
    let (r, w) = nix::unistd::pipe().unwrap();
    drop(w);
    // SAFETY: `r` is a fresh fd; the EventFd becomes its only owner.
    let bogus = unsafe { EventFd::from_raw_fd(r.into_raw_fd()) };
    fe.set_vring_kick(0, &bogus).unwrap();
    fe.set_vring_enable(0, true).unwrap();
    // /dev/zero too (always readable).
    let zero = File::open("/dev/zero").unwrap();
    // SAFETY: as above.
    let zero = unsafe { EventFd::from_raw_fd(zero.into_raw_fd()) };
    fe.set_vring_kick(0, &zero).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.dev(0).frontend_stats().bad_vring_fd, 2);
    assert_eq!(h.dev(0).queue_stats(0).unwrap().kicks, 0);
    other_port_works(&h);
}

#[test]
fn region_count_above_limit_is_refused() {
    let mut o = opts("nreg", MAC_A);
    o.max_mem_regions = 2;
    let h = Harness::new(vec![o, opts("nregb", MAC_B)]);
    let mut fe = TestGuest::connect(&h.dev(0).options().socket, 3);
    negotiate(&mut fe);
    // The memories stay alive (their fds open) while the request is in flight.
    let mems: Vec<Mem> = (0..3)
        .map(|i| memfd_memory(MEM_BASE + i * (1 << 20), 1 << 20))
        .collect();
    let three: Vec<_> = mems.iter().flat_map(regions).collect();
    assert!(fe.set_mem_table(&three).is_err());
    assert_eq!(h.dev(0).frontend_stats().bad_memory_table, 1);
    other_port_works(&h);
}

#[test]
fn socket_mode_and_group_are_applied() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let gid = nix::unistd::getegid().as_raw();
    let mut o = opts("perm", MAC_A);
    o.socket_perm = 0o660;
    o.socket_gid = Some(gid);
    let h = Harness::new(vec![o, opts("permdef", MAC_B)]);
    let md = std::fs::metadata(&h.dev(0).options().socket).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o660);
    assert_eq!(md.gid(), gid);
    let md = std::fs::metadata(&h.dev(1).options().socket).unwrap();
    assert_eq!(
        md.permissions().mode() & 0o777,
        0o600,
        "default: owner only"
    );
    other_port_works(&h);
}
