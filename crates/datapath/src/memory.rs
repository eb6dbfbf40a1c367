//! Guest memory registered as io_uring fixed buffers ([`GuestMemories`]), so guest TX
//! frames are written to taps and AF_PACKET ports from the guest's own pages.
//!
//! Registration is lazy and off the datapath: it happens on the vhost-user protocol thread
//! when the first TX ring of a memory table is handed out (QEMU sends the whole table before
//! it starts rings, so one table is pinned once), and again when the table changes while
//! rings are out. A registration keeps the memory table it pinned alive, so a host address
//! it resolves is always inside a live mapping (see ARCHITECTURE.md "Zero-copy guest TX").

use std::sync::Arc;

use parking_lot::Mutex;
use switch::{PortId, MAX_PORTS};
use uring_net::{Dataplane, FixedTable, MemRegion};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vring_engine::NetDevice;

/// One registration: the table (None when registering failed: writev fallback) and the
/// memory table it was made from, held so its mappings outlive the registration.
struct Reg {
    table: Option<Arc<FixedTable>>,
    mem: Arc<GuestMemoryMmap<()>>,
}

#[derive(Default)]
struct PortMem {
    reg: Option<Reg>,
    /// TX rings of the port currently out with the workers.
    rings_out: u16,
}

/// Guest memory registrations, per port.
pub struct GuestMemories {
    ports: Mutex<Vec<PortMem>>,
    /// Register at all (`--no-pin-guest-memory` turns it off).
    pin: std::sync::atomic::AtomicBool,
}

impl Default for GuestMemories {
    fn default() -> Self {
        GuestMemories {
            ports: Mutex::new((0..MAX_PORTS).map(|_| PortMem::default()).collect()),
            pin: std::sync::atomic::AtomicBool::new(true),
        }
    }
}

impl GuestMemories {
    pub fn set_pin(&self, pin: bool) {
        self.pin.store(pin, std::sync::atomic::Ordering::Relaxed);
    }

    /// A TX ring of `dev` goes to the workers: the registration of its current memory
    /// table (made now if there is none yet).
    pub fn ring_out(&self, dp: &Dataplane, dev: &NetDevice) -> Option<Arc<FixedTable>> {
        let mut ports = self.ports.lock();
        let pm = ports.get_mut(dev.port().index())?;
        pm.rings_out += 1;
        if !self.pin.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let mem = dev.guest_memory().into_inner();
        if !pm.reg.as_ref().is_some_and(|r| Arc::ptr_eq(&r.mem, &mem)) {
            let old = pm.reg.replace(register(dp, mem));
            release(dp, old);
        }
        pm.reg.as_ref().and_then(|r| r.table.clone())
    }

    /// The fixed-buffer registration TX from `port`'s guest is written with: None while
    /// no TX ring is out, with `--no-pin-guest-memory`, or when registering failed (TX
    /// then uses writev from the same pages).
    pub fn registered(&self, port: PortId) -> Option<Arc<FixedTable>> {
        let ports = self.ports.lock();
        ports.get(port.index())?.reg.as_ref()?.table.clone()
    }

    /// A TX ring came back from the workers; the last one releases the registration.
    pub fn ring_back(&self, dp: &Dataplane, port: PortId) {
        let mut ports = self.ports.lock();
        let Some(pm) = ports.get_mut(port.index()) else {
            return;
        };
        pm.rings_out = pm.rings_out.saturating_sub(1);
        if pm.rings_out == 0 {
            release(dp, pm.reg.take());
        }
    }

    /// The memory table changed: with rings out, register the new one and switch the
    /// workers to it before the old one is released; otherwise just let the old one go.
    pub fn changed(&self, dp: &Dataplane, dev: &NetDevice) {
        let mut ports = self.ports.lock();
        let Some(pm) = ports.get_mut(dev.port().index()) else {
            return;
        };
        if pm.rings_out == 0 || !self.pin.load(std::sync::atomic::Ordering::Relaxed) {
            release(dp, pm.reg.take());
            return;
        }
        let new = register(dp, dev.guest_memory().into_inner());
        if let Err(e) = dp.set_guest_memory(dev.port(), new.table.clone()) {
            tracing::warn!(port = %dev.port(), "switching guest TX to the new memory table failed: {e}");
        }
        let old = pm.reg.replace(new);
        release(dp, old);
    }
}

fn register(dp: &Dataplane, mem: Arc<GuestMemoryMmap<()>>) -> Reg {
    let regions: Vec<MemRegion> = mem
        .iter()
        .map(|r| MemRegion {
            host_addr: r.as_ptr() as u64,
            len: r.len(),
        })
        .collect();
    let table = if regions.is_empty() {
        None
    } else {
        let started = std::time::Instant::now();
        // SAFETY: the regions are the mappings of `mem`, which the returned Reg keeps
        // alive for as long as the table is held (release() drops the table first).
        // A failure is counted and logged once by the data plane; TX then uses writev.
        let t = unsafe { dp.register_memory(&regions) }.ok();
        if t.is_some() {
            // Pinning makes the whole guest memory resident and takes time per GiB:
            // worth a line, once per memory table.
            let mib: u64 = regions.iter().map(|r| r.len).sum::<u64>() >> 20;
            tracing::info!(
                mib,
                ms = started.elapsed().as_millis() as u64,
                "guest memory registered as io_uring fixed buffers (zero-copy TX)"
            );
        }
        t
    };
    Reg { table, mem }
}

fn release(dp: &Dataplane, reg: Option<Reg>) {
    if let Some(Reg { table, mem }) = reg {
        if let Some(t) = table {
            dp.release_memory(t);
        }
        drop(mem);
    }
}
