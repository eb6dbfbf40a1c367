//! The exit eventfds of vhost-user-backend's worker threads, and closing the copy the
//! crate never closes.
//!
//! Each connection's `VhostUserDaemon` asks the device for one exit event per worker
//! thread (`VhostUserBackend::exit_event`). vhost-user-backend 0.24 registers the
//! consumer half in the thread's epoll through `into_raw_fd()` and never closes it
//! (event_loop.rs, `VringEpollHandler::new`): one eventfd per worker thread per
//! connection would stay open in the daemon for ever, a leak a frontend can grow by
//! reconnecting. So the device keeps the original of every consumer it lends and, once
//! the connection's worker threads are joined, closes the lent copy itself, but only
//! when `kcmp(2)` (KCMP_FILE) says that fd number still refers to the very eventfd it
//! lent: if a later vhost-user-backend closes its copy and the number is reused,
//! nothing is closed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::libc;
use parking_lot::Mutex;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

/// `KCMP_FILE` of linux/kcmp.h: "do the two fds refer to the same open file".
const KCMP_FILE: libc::c_int = 0;

/// The exit events lent to the current connection's worker threads.
#[derive(Default)]
pub(crate) struct ExitEvents {
    /// Our original of each lent consumer, with the fd number the crate got.
    lent: Mutex<Vec<(EventConsumer, RawFd)>>,
}

impl ExitEvents {
    /// A fresh exit event for one worker thread: the notifier and a duplicate of the
    /// consumer go to vhost-user-backend; the original consumer stays here.
    pub(crate) fn lend(&self) -> Option<(EventConsumer, EventNotifier)> {
        let (consumer, notifier) =
            new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()?;
        let copy = consumer.try_clone().ok()?;
        self.lent.lock().push((consumer, copy.as_raw_fd()));
        Some((copy, notifier))
    }

    /// Closes the lent consumers that are still open. Call only once every worker
    /// thread of the connection has ended (its epoll is gone). Returns how many were
    /// closed.
    pub(crate) fn reclaim(&self) -> usize {
        let lent = std::mem::take(&mut *self.lent.lock());
        let mut closed = 0;
        for (ours, fd) in lent {
            if same_file(ours.as_raw_fd(), fd) {
                // SAFETY: `fd` refers to the eventfd we duplicated for vhost-user-backend
                // (kcmp just checked it), which gave up ownership with `into_raw_fd` and
                // never closes it; the worker thread whose epoll used it has been joined.
                // Nothing else owns the number, so the OwnedFd is its sole owner.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                closed += 1;
            }
        }
        closed
    }
}

/// Whether fds `a` and `b` of this process refer to the same open file description.
/// False when kcmp(2) is unavailable (a kernel without CONFIG_KCMP): then a lent fd is
/// left open rather than risk closing a stranger's.
fn same_file(a: RawFd, b: RawFd) -> bool {
    let pid = std::process::id();
    // SAFETY: kcmp only compares kernel objects of the given pids; it reads and writes
    // no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a, b) };
    if r < 0 {
        tracing::debug!(
            "kcmp: {}; an exit eventfd stays open",
            std::io::Error::last_os_error()
        );
    }
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD only reads the fd's flags.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    }

    /// What vhost-user-backend 0.24 does with a lent consumer: `into_raw_fd` and
    /// forget it. Reclaim closes exactly that fd, and only once.
    #[test]
    fn reclaim_closes_the_forgotten_copy() {
        use std::os::fd::IntoRawFd;
        let ev = ExitEvents::default();
        let (consumer, notifier) = ev.lend().unwrap();
        let fd = consumer.into_raw_fd();
        assert!(is_open(fd));
        notifier.notify().unwrap();
        assert_eq!(ev.reclaim(), 1);
        assert!(!is_open(fd), "the lent copy is closed");
        assert_eq!(ev.reclaim(), 0, "nothing left to close");
    }

    /// A backend that closes its copy itself: the number may be reused by another
    /// file, which reclaim must leave alone.
    #[test]
    fn reclaim_leaves_a_reused_number_alone() {
        use std::os::fd::IntoRawFd;
        let ev = ExitEvents::default();
        let (consumer, _notifier) = ev.lend().unwrap();
        let fd = consumer.into_raw_fd();
        // The backend's copy closed and its number taken by another file, in one step
        // (dup2), so no other thread of the test binary can get the number between.
        let null = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: `fd` is ours (taken with into_raw_fd); dup2 replaces it atomically.
        assert_eq!(unsafe { libc::dup2(null.as_raw_fd(), fd) }, fd);
        assert_eq!(ev.reclaim(), 0);
        assert!(is_open(fd), "a stranger's fd stays open");
        // SAFETY: `fd` is the /dev/null duplicate dup2 made; we own it.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}
