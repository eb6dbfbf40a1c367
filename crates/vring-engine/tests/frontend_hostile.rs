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

fn deliver_one(dev: &vring_engine::NetDevice) -> Result<(), vring_engine::RxDrop> {
    let frame = udp_frame(MAC_B, MAC_A, 100);
    dev.deliver(
        0,
        &switch::VnetHdr::default(),
        &[switch::Chunk::from(&frame[..])],
    )
}

/// The healthy port still forwards: a frame delivered to it lands in its RX ring.
fn other_port_forwards(h: &Harness) {
    let fe = TestGuest::connect(&h.dev(1).options().socket, 3);
    let mut g = TestGuest::start(fe, 3, u64::MAX);
    g.post_rx(0, 1, 2048);
    deliver_one(h.dev(1)).unwrap();
    assert_eq!(g.queues[0].wait_used(&g.mem, 1).len(), 1);
    assert_eq!(h.dev(1).frontend_stats(), Default::default());
}

fn memfd(len: u64) -> File {
    let fd = nix::sys::memfd::memfd_create(c"hostile", nix::sys::memfd::MemFdCreateFlag::empty())
        .unwrap();
    let f = File::from(fd);
    f.set_len(len).unwrap();
    f
}

/// SET_LOG_BASE claiming 1 MiB of a 4 KiB memfd: mapped, the first dirty bit past 4 KiB
/// would SIGBUS the daemon. Refused before mapping: the connection ends, counted.
#[test]
fn dirty_log_past_its_file_is_refused() {
    use std::os::fd::AsRawFd;
    let h = two_ports("log");
    let fe = TestGuest::connect(&h.dev(0).options().socket, 3);
    let g = TestGuest::start(fe, 3, u64::MAX);
    let log = memfd(4096);
    let r = g.fe.set_log_base(
        0,
        Some(vhost::VhostUserDirtyLogRegion {
            mmap_size: 1 << 20,
            mmap_offset: 0,
            mmap_handle: log.as_raw_fd(),
        }),
    );
    assert!(r.is_err(), "the relay hangs up instead of replying");
    wait_for("the refusal counted", || {
        (h.dev(0).frontend_stats().bad_dirty_log == 1).then_some(())
    });
    assert!(!h.dev(0).dirty_log_mapped());
    other_port_forwards(&h);
}

/// GET_MAX_MEM_SLOTS answers the port's own limit.
#[test]
fn max_mem_slots_is_the_port_limit() {
    let mut o = opts("slots", MAC_A);
    o.max_mem_regions = 7;
    let h = Harness::new(vec![o]);
    let mut fe = TestGuest::connect(&h.dev(0).options().socket, 3);
    negotiate(&mut fe);
    assert_eq!(fe.get_max_mem_slots().unwrap(), 7);
}

/// ADD_MEM_REG of a region past its memfd's end is refused before vhost-user-backend maps
/// it; so is the region one beyond the limit.
#[test]
fn add_mem_reg_checked_in_the_relay() {
    let mut o = opts("addreg", MAC_A);
    o.max_mem_regions = 1;
    let h = Harness::new(vec![o, opts("addregb", MAC_B)]);
    let mut fe = TestGuest::connect(&h.dev(0).options().socket, 3);
    negotiate(&mut fe);
    let short = memfd(1 << 20);
    let mem: Mem = GuestMemoryMmap::from_ranges_with_files([(
        GuestAddress(MEM_BASE),
        4 << 20,
        Some(FileOffset::new(short, 0)),
    )])
    .unwrap();
    assert!(fe.add_mem_region(&regions(&mem)[0]).is_err());
    assert_eq!(h.dev(0).frontend_stats().bad_memory_table, 1);
    // Reconnect: one good region fits, a second one is over the limit.
    drop(fe);
    let mut fe = TestGuest::connect(&h.dev(0).options().socket, 3);
    negotiate(&mut fe);
    let a = memfd_memory(MEM_BASE, 1 << 20);
    let b = memfd_memory(MEM_BASE + (1 << 20), 1 << 20);
    fe.add_mem_region(&regions(&a)[0]).unwrap();
    assert!(fe.add_mem_region(&regions(&b)[0]).is_err());
    assert_eq!(h.dev(0).frontend_stats().bad_memory_table, 2);
    other_port_forwards(&h);
}

/// A frontend ftruncates its (unsealed) guest memfd to 0 while frames arrive: the daemon's
/// next access SIGBUSes, the handler zero-fills the mapping, the port's connection is
/// failed and `memory_fault` counted; the other port still forwards.
#[test]
fn memfd_shrunk_under_traffic_fails_only_its_port() {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let h = two_ports("shrink");
    let fe = TestGuest::connect(&h.dev(0).options().socket, 3);
    let mut g = TestGuest::start(fe, 3, u64::MAX);
    g.post_rx(0, 8, 2048);
    deliver_one(h.dev(0)).unwrap();
    assert_eq!(g.queues[0].wait_used(&g.mem, 1).len(), 1);
    let file = g
        .mem
        .iter()
        .next()
        .unwrap()
        .file_offset()
        .unwrap()
        .file()
        .try_clone()
        .unwrap();
    file.set_len(0).unwrap();
    // From here on the test must not touch `g.mem` (its own mapping would fault too).
    let _ = deliver_one(h.dev(0));
    wait_for("the fault counted", || {
        (h.dev(0).frontend_stats().memory_fault >= 1).then_some(())
    });
    // The connection was failed: the next request gets no answer.
    assert!(g.fe.get_features().is_err());
    // Later traffic to the failed port is dropped, never a second crash-worthy access.
    wait_for("the port detached", || {
        deliver_one(h.dev(0)).is_err().then_some(())
    });
    other_port_forwards(&h);
}
