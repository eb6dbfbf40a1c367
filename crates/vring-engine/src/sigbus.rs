//! Surviving a frontend that shrinks a file we mapped (SIGBUS, `BUS_ADRERR`).
//!
//! A memory region is checked against its file's size when the table arrives
//! ([`crate::frontend_checks`]), but a memfd that is not sealed against shrinking
//! (`F_SEAL_SHRINK`) can be `ftruncate`d afterwards: the next access to a page past the new
//! end raises SIGBUS, whose default action kills the whole daemon. So every such mapping
//! (guest memory regions, the dirty log) is registered here with the port it belongs to,
//! and a process-wide SIGBUS handler (sigaction(2), `SA_SIGINFO`) looks the faulting
//! address up:
//! - inside a registered range: the whole range is replaced by anonymous zero pages
//!   (`mmap(MAP_FIXED | MAP_ANONYMOUS)`), so the faulting access completes (reading zeros,
//!   writing into memory nobody shares), the port's fault count is bumped and a wake-up
//!   eventfd written. A watcher thread then fails that port's connection
//!   ([`on_fault`] callbacks) and counts `memory_fault`; other ports never notice.
//! - anywhere else: the previous handler runs (Rust's std installs one to report stack
//!   overflows), or the default action is restored and the access faults again.
//!
//! The handler is async-signal-safe (signal-safety(7)): no allocation and no locks, only
//! atomics in a fixed-size table, `mmap`, `write` and `sigaction` (plain system calls).
//! Registrations are serialised by a mutex the handler never takes; each slot is a tiny
//! seqlock so the handler never sees a half-written range.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use nix::libc;
use parking_lot::Mutex;

/// Ranges the handler can know: guest regions (at most 509 per port) and logs of all ports.
const SLOTS: usize = 4096;

struct Slot {
    /// Even: stable; odd: being rewritten (seqlock).
    seq: AtomicU64,
    start: AtomicUsize,
    /// 0: free.
    len: AtomicUsize,
    /// Who registered it (a device's address: unique while it lives).
    owner: AtomicUsize,
    /// SIGBUSes in this range since the watcher last looked.
    faults: AtomicU32,
    /// Whether the owner still maps it; a retired slot keeps guarding its range (a frame
    /// in flight may still hold the mapping) until the slot is reused.
    live: AtomicU32,
}

#[allow(clippy::declare_interior_mutable_const)]
const SLOT: Slot = Slot {
    seq: AtomicU64::new(0),
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    owner: AtomicUsize::new(0),
    faults: AtomicU32::new(0),
    live: AtomicU32::new(0),
};

static TABLE: [Slot; SLOTS] = [SLOT; SLOTS];

/// The eventfd the handler writes (-1 before [`install`]).
static WAKE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// The action in place before ours, for addresses that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Registration and callback bookkeeping (never touched by the handler).
static WRITERS: Mutex<()> = Mutex::new(());

type Callback = Arc<dyn Fn(u32) + Send + Sync>;
static CALLBACKS: Mutex<Vec<(usize, u64, Callback)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Why a range could not be guarded.
#[derive(Debug, thiserror::Error)]
pub enum SigbusError {
    #[error("cannot install the SIGBUS handler: {0}")]
    Install(std::io::Error),
    #[error("no free slot to guard another mapping ({SLOTS} in use)")]
    Full,
}

/// Installs the handler and its watcher thread, once per process.
pub fn install() -> Result<(), SigbusError> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| install_once().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| SigbusError::Install(std::io::Error::other(e)))
}

fn install_once() -> std::io::Result<()> {
    // SAFETY: eventfd(2) with constant flags; a non-negative result is a fresh fd we own.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` was just created and is owned by nobody else.
    let wake = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    WAKE.store(raw, Ordering::Release);
    std::thread::Builder::new()
        .name("sigbus-watch".into())
        .spawn(move || watch(wake))?;
    // SAFETY: zeroed is a valid sigaction (empty mask, no flags) that we fill in before
    // use; `handler` has the SA_SIGINFO signature and is async-signal-safe (module doc).
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction =
            handler as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut act.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        // Recorded before ours goes in, so the handler always finds it.
        if libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let _ = PREVIOUS.set(old);
        if libc::sigaction(libc::SIGBUS, &act, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `si_code` of an access to a page past the end of a mapped file.
const BUS_ADRERR: i32 = 2;

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    if code == BUS_ADRERR {
        if let Some((slot, start, len)) = lookup(addr) {
            // SAFETY: `start..start + len` is a guest/log mapping a port registered; it
            // is replaced in place by private zero pages (nothing in Rust holds a
            // reference into guest memory; every access is a raw/volatile one).
            let p = unsafe {
                libc::mmap(
                    start as *mut libc::c_void,
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                slot.faults.fetch_add(1, Ordering::AcqRel);
                let one = 1u64.to_ne_bytes();
                let fd = WAKE.load(Ordering::Acquire);
                // SAFETY: `fd` is the watcher's eventfd, never closed; 8 bytes from a
                // local buffer.
                unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
                return;
            }
        }
    }
    // Not ours: the previous handler, or the default action (the access faults again).
    if let Some(prev) = PREVIOUS.get() {
        let h = prev.sa_sigaction;
        if prev.sa_flags & libc::SA_SIGINFO != 0 && h != libc::SIG_DFL && h != libc::SIG_IGN {
            // SAFETY: an SA_SIGINFO handler installed before ours, called as the kernel
            // would have called it.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(h) };
            f(sig, info, ctx);
            return;
        }
    }
    // SAFETY: restoring the default action is async-signal-safe; zeroed = SIG_DFL.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
    }
}

/// The registered range holding `addr`, read without locks (seqlock per slot).
fn lookup(addr: usize) -> Option<(&'static Slot, usize, usize)> {
    for s in TABLE.iter() {
        for _ in 0..4 {
            let s1 = s.seq.load(Ordering::Acquire);
            if s1 % 2 == 1 {
                continue;
            }
            let start = s.start.load(Ordering::Relaxed);
            let len = s.len.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if s.seq.load(Ordering::Relaxed) != s1 {
                continue;
            }
            if len != 0 && addr >= start && addr - start < len {
                return Some((s, start, len));
            }
            break;
        }
    }
    None
}

fn write_slot(s: &Slot, start: usize, len: usize, owner: usize, live: bool) {
    let seq = s.seq.load(Ordering::Relaxed);
    s.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
    fence(Ordering::Release);
    s.start.store(start, Ordering::Relaxed);
    s.len.store(len, Ordering::Relaxed);
    s.owner.store(owner, Ordering::Relaxed);
    s.faults.store(0, Ordering::Relaxed);
    s.live.store(u32::from(live), Ordering::Relaxed);
    s.seq.store(seq.wrapping_add(2), Ordering::Release);
}

/// Guards `len` bytes mapped at `start` for `owner` (a device): a SIGBUS there fails only
/// that device's connection.
/// A slot already covering an overlapping range (an old mapping at a reused address) is
/// taken over; otherwise a free slot, or else a retired one.
pub fn register(start: usize, len: usize, owner: usize) -> Result<(), SigbusError> {
    if len == 0 {
        return Ok(());
    }
    let _w = WRITERS.lock();
    let end = start.saturating_add(len);
    let overlaps = |s: &Slot| {
        let (a, l) = (
            s.start.load(Ordering::Relaxed),
            s.len.load(Ordering::Relaxed),
        );
        l != 0 && a < end && start < a.saturating_add(l)
    };
    // Every slot overlapping the new range is stale (that address was unmapped since).
    let mut free = None;
    for s in TABLE.iter() {
        if overlaps(s) {
            write_slot(s, 0, 0, 0, false);
        }
    }
    for s in TABLE.iter() {
        if s.len.load(Ordering::Relaxed) == 0 {
            free = Some(s);
            break;
        }
    }
    let s = match free {
        Some(s) => s,
        None => TABLE
            .iter()
            .find(|s| s.live.load(Ordering::Relaxed) == 0)
            .ok_or(SigbusError::Full)?,
    };
    write_slot(s, start, len, owner, true);
    Ok(())
}

/// Marks `owner`'s ranges retired except those listed in `keep` (the current table): they
/// keep guarding until the slot is needed, since frames in flight may still hold the old
/// mapping.
pub fn retire(owner: usize, keep: &[(usize, usize)]) {
    let _w = WRITERS.lock();
    for s in TABLE.iter() {
        let (a, l) = (
            s.start.load(Ordering::Relaxed),
            s.len.load(Ordering::Relaxed),
        );
        if l != 0 && s.owner.load(Ordering::Relaxed) == owner && !keep.contains(&(a, l)) {
            s.live.store(0, Ordering::Relaxed);
        }
    }
}

/// Calls `f(faults)` on the watcher thread whenever `owner`'s mappings faulted. Faults from
/// before the call are dropped (they belonged to an earlier connection). The callback is
/// removed when the returned guard is dropped.
pub fn on_fault(owner: usize, f: impl Fn(u32) + Send + Sync + 'static) -> FaultGuard {
    take_faults(owner);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    CALLBACKS.lock().push((owner, id, Arc::new(f)));
    FaultGuard { id }
}

/// Keeps an [`on_fault`] callback registered.
pub struct FaultGuard {
    id: u64,
}

impl Drop for FaultGuard {
    fn drop(&mut self) {
        CALLBACKS.lock().retain(|c| c.1 != self.id);
    }
}

/// `owner`'s faults since the last call.
fn take_faults(owner: usize) -> u32 {
    TABLE
        .iter()
        .filter(|s| s.owner.load(Ordering::Relaxed) == owner)
        .map(|s| s.faults.swap(0, Ordering::AcqRel))
        .fold(0u32, u32::saturating_add)
}

fn watch(wake: OwnedFd) {
    let mut buf = [0u8; 8];
    loop {
        match nix::unistd::read(wake.as_raw_fd(), &mut buf) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!("SIGBUS watcher stops: {e}");
                return;
            }
        }
        let cbs: Vec<(usize, Callback)> = CALLBACKS
            .lock()
            .iter()
            .map(|(p, _, f)| (*p, f.clone()))
            .collect();
        for (owner, f) in cbs {
            let n = take_faults(owner);
            if n > 0 {
                f(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memfd mapped, registered, shrunk to 0: reading it returns zeros instead of killing
    /// the process, and the port's callback hears of it.
    #[test]
    fn shrunk_mapping_reads_zeros_and_is_reported() {
        install().unwrap();
        let fd = nix::sys::memfd::memfd_create(c"sb", nix::sys::memfd::MemFdCreateFlag::empty())
            .unwrap();
        let f = std::fs::File::from(fd);
        f.set_len(8192).unwrap();
        // SAFETY: a fresh shared mapping of our memfd, unmapped at the end.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                8192,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let base = p as usize;
        // SAFETY: inside the mapping.
        unsafe { std::ptr::write_volatile(p.cast::<u8>().add(4096), 7) };
        register(base, 8192, 4242).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = Mutex::new(tx);
        let _g = on_fault(4242, move |n| {
            let _ = tx.lock().send(n);
        });
        assert_eq!(lookup(base + 5000).map(|l| (l.1, l.2)), Some((base, 8192)));
        // Our range ends at 8192; another test's mapping may sit right after it (mmap
        // places mappings next to each other), so only ours must not answer there.
        assert!(lookup(base + 8192).is_none_or(|l| l.1 != base));
        f.set_len(0).unwrap();
        // SAFETY: inside the mapping; past EOF now, so it faults and is zero-filled.
        let v = unsafe { std::ptr::read_volatile(p.cast::<u8>().add(4096)) };
        assert_eq!(v, 0);
        let n = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        assert_eq!(n, 1);
        retire(4242, &[]);
        register(base, 8192, 4243).unwrap();
        let s = lookup(base).unwrap().0;
        assert_eq!(
            s.owner.load(Ordering::Relaxed),
            4243,
            "reused address taken over"
        );
        retire(4243, &[]);
        // SAFETY: our mapping (now anonymous), unmapped once.
        unsafe { libc::munmap(p, 8192) };
    }
}
