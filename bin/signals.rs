//! Graceful shutdown on SIGINT/SIGTERM.
//!
//! Why sigwait rather than a handler: the signals are blocked in the main thread before
//! any other thread exists, so every thread (workers, vhost-user, ctl) inherits the mask
//! and only the main thread ever takes them, synchronously, from `sigwait(3)`. No
//! async-signal-safety rules to follow, no unsafe, no self-pipe.
//! Caveat: a blocked mask survives exec, so a child spawned by the daemon would start
//! with SIGINT/SIGTERM blocked; the daemon spawns none.

use nix::sys::signal::{SigSet, Signal};

/// SIGINT and SIGTERM, blocked in the calling thread.
pub struct ShutdownSignals {
    set: SigSet,
}

impl ShutdownSignals {
    /// Blocks SIGINT and SIGTERM in the calling thread. Call it before spawning threads
    /// so that they inherit the mask.
    pub fn block() -> nix::Result<ShutdownSignals> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.thread_block()?;
        Ok(ShutdownSignals { set })
    }

    /// Waits until one of the signals arrives and returns it.
    pub fn wait(&self) -> nix::Result<Signal> {
        self.set.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_a_blocked_signal() {
        // In a thread of its own: the mask and the thread-directed signal stay there.
        let got = std::thread::spawn(|| {
            let s = ShutdownSignals::block().unwrap();
            // raise(3) in a multithreaded process targets the calling thread; the signal
            // is blocked, so it stays pending until sigwait takes it.
            nix::sys::signal::raise(Signal::SIGTERM).unwrap();
            s.wait().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(got, Signal::SIGTERM);
    }
}
