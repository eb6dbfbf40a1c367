//! The public face of the data plane: workers, ports, guest queues, stats, shutdown.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Sender};
use parking_lot::{Mutex, RwLock};
use switch::{Offloads, PortConfig, PortId, PortKind, Switch};

use crate::bufring::RX_BUF_SIZE;
use crate::error::{Error, Result};
use crate::guest::{GuestRx, GuestTxQueue};
use crate::probe::Features;
use crate::sockstats::SocketStats;
use crate::stats::{PortStats, Stats, WorkerStats, WorkerStatsSnapshot};
use crate::sys;
use crate::vxlan::{VxlanConfig, VxlanPort};
use crate::worker::{Cmd, QueueKind, Worker, WorkerConfig};

/// Data plane settings (`--workers`, `--poll-us`, ...).
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// Worker threads; 0 = one per available core.
    pub workers: usize,
    /// After a batch, keep polling the ring without sleeping for this long (µs). Trades
    /// CPU (and extra io_uring_enter calls) for latency; 0 = always sleep in the kernel.
    pub poll_us: u32,
    /// With `poll_us` 0: poll for a short window (`AUTO_POLL_US`) after each batch, but
    /// only while the worker is busy (≥ 64 completions per ms, the rate at which
    /// `batch_us` kicks in too); an idle worker always sleeps. Under load this saves the
    /// sleep/wake-up per batch — measured, it is what kept the switch-only TCP figure
    /// below the Linux bridge (BENCHMARKS.md) — at no cost when traffic is light.
    pub auto_poll: bool,
    /// Batching wait (µs, Linux ≥ 6.12 `min_wait`): a worker that wakes for a completion
    /// keeps collecting completions that arrive within this long of entering the kernel,
    /// up to 256, in the same io_uring_enter. Idle latency is unchanged (the first
    /// completion after the window wakes at once); under load it cuts syscalls per packet.
    /// 0 = wake for every completion.
    pub batch_us: u32,
    /// Rx buffers per port queue (a power of two).
    pub rx_buffers: u16,
    /// Size of one rx buffer: the vnet header plus the largest (GSO) frame.
    pub rx_buf_size: u32,
    /// Writes in flight per destination queue before frames to it are dropped.
    pub max_inflight: u32,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            workers: 0,
            poll_us: 0,
            auto_poll: false,
            batch_us: 50,
            rx_buffers: 256,
            rx_buf_size: RX_BUF_SIZE,
            max_inflight: 256,
        }
    }
}

/// A host port to add.
#[derive(Debug, Clone)]
pub enum PortSpec {
    /// A tap device, created if it does not exist, with one queue per worker.
    Tap {
        /// L2 configuration; `config.name` is the tap's name.
        config: PortConfig,
        /// What the kernel may hand us through the tap (TUNSETOFFLOAD).
        rx_offloads: Offloads,
    },
    /// An AF_PACKET port on an existing interface (e.g. the host end of a veth).
    AfPacket {
        /// L2 configuration; `config.name` is the interface name.
        config: PortConfig,
    },
    /// A VXLAN tunnel (RFC 7348) to a list of remote VTEPs: a UDP socket per worker in
    /// the calling thread's network namespace (crate::vxlan).
    Vxlan {
        /// L2 configuration; `config.name` is the port's name.
        config: PortConfig,
        vxlan: VxlanConfig,
    },
}

impl PortSpec {
    /// A tap with the defaults of a host port: promiscuous, learning, accepts every
    /// offload in both directions (the kernel segments/checksums for the host itself).
    pub fn tap(name: &str) -> PortSpec {
        let mut config = PortConfig::new(name, PortKind::Tap);
        config.offloads = Offloads::ALL;
        PortSpec::Tap {
            config,
            rx_offloads: Offloads::ALL,
        }
    }

    /// An AF_PACKET port on `ifname` with host-port defaults.
    pub fn afpacket(ifname: &str) -> PortSpec {
        let mut config = PortConfig::new(ifname, PortKind::AfPacket);
        config.offloads = Offloads::ALL;
        PortSpec::AfPacket { config }
    }

    /// A VXLAN port named `name`. It takes complete frames only (a UDP socket has no
    /// vnet header): offloaded frames are completed and segmented before they are sent.
    pub fn vxlan(name: &str, vxlan: VxlanConfig) -> PortSpec {
        PortSpec::Vxlan {
            config: PortConfig::new(name, PortKind::Vxlan),
            vxlan,
        }
    }

    /// The tap or interface name.
    pub fn name(&self) -> &str {
        match self {
            PortSpec::Tap { config, .. }
            | PortSpec::AfPacket { config }
            | PortSpec::Vxlan { config, .. } => &config.name,
        }
    }
}

struct WorkerHandle {
    cmds: Sender<Cmd>,
    wake: OwnedFd,
    stats: Arc<WorkerStats>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerHandle {
    fn send(&self, cmd: Cmd) -> Result<()> {
        self.cmds.send(cmd).map_err(|_| Error::Shutdown)?;
        crate::sys::eventfd_signal(&self.wake)
            .map_err(|e| Error::Worker(format!("waking worker failed: {e}")))
    }
}

/// The io_uring data plane.
pub struct Dataplane {
    sw: Arc<Switch>,
    workers: Vec<WorkerHandle>,
    ports: Mutex<BTreeMap<PortId, String>>,
    next_worker: AtomicUsize,
    sockstats: RwLock<Vec<Option<Arc<SocketStats>>>>,
    /// Which worker runs each attached guest TX queue, by (port, key).
    guest_tx: Mutex<BTreeMap<(PortId, u64), usize>>,
    /// What the kernel's io_uring offers (probed in `new`).
    features: Features,
    /// The shared state of each VXLAN port.
    vxlan: RwLock<BTreeMap<PortId, Arc<VxlanPort>>>,
}

impl Dataplane {
    /// Starts the workers, after checking that the kernel has every io_uring feature they
    /// need ([`crate::probe`]: `Error::Kernel` names the first one missing). Optional
    /// features that are missing are logged and fallen back from (see [`Self::features`]).
    pub fn new(sw: Arc<Switch>, cfg: DataplaneConfig) -> Result<Dataplane> {
        let features = crate::probe::probe()?;
        for f in features.missing() {
            tracing::warn!(
                "this kernel lacks {f} (Linux ≥ {}): the data plane works without it",
                f.since()
            );
        }
        let n = if cfg.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            cfg.workers
        };
        let epoch = Instant::now();
        let mut workers = Vec::with_capacity(n);
        for index in 0..n {
            let (tx, rx) = unbounded();
            let wake = sys::eventfd().map_err(|e| Error::Worker(format!("eventfd: {e}")))?;
            let wake_w = wake
                .try_clone()
                .map_err(|e| Error::Worker(format!("dup eventfd: {e}")))?;
            let stats = Arc::new(WorkerStats::default());
            let wcfg = WorkerConfig {
                index,
                poll: Duration::from_micros(cfg.poll_us.into()),
                auto_poll: cfg.auto_poll,
                // Without min_wait (Linux < 6.12) a worker wakes for every completion.
                batch_wait: Duration::from_micros(if features.min_wait {
                    cfg.batch_us.into()
                } else {
                    0
                }),
                rx_buffers: cfg.rx_buffers,
                rx_buf_size: cfg.rx_buf_size,
                max_inflight: cfg.max_inflight.max(1),
                epoch,
            };
            let (ready_tx, ready_rx) = bounded(1);
            let (sw2, st2) = (Arc::clone(&sw), Arc::clone(&stats));
            let thread = std::thread::Builder::new()
                .name(format!("uring-{index}"))
                .spawn(move || match Worker::new(wcfg, sw2, st2, rx, wake) {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok(()));
                        w.run();
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(|e| Error::Worker(format!("spawn: {e}")))?;
            let h = WorkerHandle {
                cmds: tx,
                wake: wake_w,
                stats,
                thread: Some(thread),
            };
            let ready = ready_rx
                .recv()
                .unwrap_or_else(|_| Err(Error::Worker("worker died during setup".into())));
            workers.push(h);
            if let Err(e) = ready {
                let dp = Dataplane::assemble(sw, workers, features);
                drop(dp);
                return Err(e);
            }
        }
        tracing::info!(workers = n, poll_us = cfg.poll_us, "data plane started");
        Ok(Dataplane::assemble(sw, workers, features))
    }

    fn assemble(sw: Arc<Switch>, workers: Vec<WorkerHandle>, features: Features) -> Dataplane {
        Dataplane {
            sw,
            workers,
            ports: Mutex::new(BTreeMap::new()),
            next_worker: AtomicUsize::new(0),
            sockstats: RwLock::new(vec![None; switch::MAX_PORTS]),
            guest_tx: Mutex::new(BTreeMap::new()),
            features,
            vxlan: RwLock::new(BTreeMap::new()),
        }
    }

    /// The optional io_uring features this kernel has, probed at start-up. A missing
    /// `min_wait` is fallen back from here: no batching wait.
    pub fn features(&self) -> Features {
        self.features
    }

    pub fn switch(&self) -> &Arc<Switch> {
        &self.sw
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Adds a tap or AF_PACKET port: opens one queue per worker in the calling thread's
    /// network namespace, registers the port with the switch and starts receiving.
    pub fn add_port(&self, spec: PortSpec) -> Result<PortId> {
        let n = self.workers.len();
        let mut vx = None;
        let (fds, kind, config) = match spec {
            PortSpec::Tap {
                mut config,
                rx_offloads,
            } => {
                let mut fds = Vec::with_capacity(n);
                for _ in 0..n {
                    let (fd, name) = sys::tap::open_queue(&config.name, &rx_offloads)?;
                    config.name = name;
                    fds.push(fd);
                }
                sys::ifreq::set_mtu(&config.name, config.mtu).map_err(|e| Error::Tap {
                    name: config.name.clone(),
                    op: "set MTU",
                    source: e,
                })?;
                sys::ifreq::set_up(&config.name).map_err(|e| Error::Tap {
                    name: config.name.clone(),
                    op: "set IFF_UP",
                    source: e,
                })?;
                config.kind = PortKind::Tap;
                (fds, QueueKind::Tap, config)
            }
            PortSpec::AfPacket { mut config } => {
                let socks = sys::afpacket::open_group(&config.name, n)?;
                // The interface's MTU is its owner's (a veth's is set with the pair): the
                // kernel refuses longer writes (EMSGSIZE), so the port never takes more.
                let link = sys::ifreq::mtu(&config.name).map_err(|e| Error::AfPacket {
                    ifname: config.name.clone(),
                    op: "SIOCGIFMTU",
                    source: e,
                })?;
                if link < config.mtu {
                    tracing::info!(
                        port = %config.name,
                        "interface MTU {link} is below the port's {}: using {link}",
                        config.mtu
                    );
                    config.mtu = link.max(switch::mtu::MIN_MTU);
                }
                config.kind = PortKind::AfPacket;
                let fds = socks.into_iter().map(|s| s.fd).collect();
                (fds, QueueKind::Packet, config)
            }
            PortSpec::Vxlan { mut config, vxlan } => {
                let io = |op: &'static str| {
                    let name = config.name.clone();
                    move |source| Error::Vxlan { name, op, source }
                };
                let aging = self.sw.fdb().config().aging_ms;
                let fds = VxlanPort::open_rx(&vxlan, n).map_err(io("open the receive sockets"))?;
                let port = VxlanPort::open(vxlan, aging).map_err(io("open the send sockets"))?;
                config.kind = PortKind::Vxlan;
                config.offloads = Offloads::NONE;
                vx = Some(Arc::new(port));
                (fds, QueueKind::Vxlan, config)
            }
        };
        let name = config.name.clone();
        let dups = fds
            .iter()
            .map(|f| f.try_clone())
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| Error::Worker(format!("dup queue fd: {e}")))?;
        let id = self
            .sw
            .add_port(config)
            .map_err(|e| Error::Switch(e.to_string()))?;
        let mut replies = Vec::with_capacity(n);
        for (w, fd) in self.workers.iter().zip(fds) {
            let (tx, rx) = bounded(1);
            w.send(Cmd::AddQueue {
                port: id,
                kind,
                fd,
                vxlan: vx.clone(),
                reply: tx,
            })?;
            replies.push(rx);
        }
        let mut result = Ok(());
        for rx in replies {
            let r = rx.recv().unwrap_or(Err(Error::Shutdown));
            if result.is_ok() {
                result = r;
            }
        }
        if let Err(e) = result {
            let _ = self.detach(id);
            return Err(e);
        }
        if let Some(e) = self.sockstats.write().get_mut(id.index()) {
            *e = Some(Arc::new(match kind {
                QueueKind::Vxlan => SocketStats::udp(dups),
                k => SocketStats::new(dups, k == QueueKind::Packet),
            }));
        }
        self.ports.lock().insert(id, name.clone());
        if let Some(v) = vx {
            tracing::info!(%id, vni = v.config().vni, inner_max = v.inner_max(), "vxlan port");
            self.vxlan.write().insert(id, v);
        }
        tracing::info!(%id, name = %name, ?kind, "port added");
        Ok(id)
    }

    /// Removes a port from the switch and from every worker.
    pub fn remove_port(&self, id: PortId) -> Result<()> {
        if self.ports.lock().remove(&id).is_none() {
            return Err(Error::UnknownPort(id));
        }
        self.detach(id)
    }

    fn detach(&self, id: PortId) -> Result<()> {
        let _ = self.sw.remove_port(id);
        self.vxlan.write().remove(&id);
        self.guest_tx.lock().retain(|(p, _), _| *p != id);
        if let Some(e) = self.sockstats.write().get_mut(id.index()) {
            *e = None;
        }
        let mut replies = Vec::new();
        for w in &self.workers {
            let (tx, rx) = bounded(1);
            w.send(Cmd::RemovePort {
                port: id,
                reply: tx,
            })?;
            replies.push(rx);
        }
        for rx in replies {
            let _ = rx.recv();
        }
        Ok(())
    }

    /// Attaches guest TX queue `key` (e.g. its queue pair) of an existing switch port to
    /// worker `worker % workers`, or to the next worker in round-robin order (queue pairs
    /// of all ports are spread over the workers). From now on that worker owns the queue's
    /// kick fd. A queue already attached under the same key is detached first.
    pub fn attach_guest_tx(
        &self,
        port: PortId,
        key: u64,
        worker: Option<usize>,
        queue: Box<dyn GuestTxQueue>,
    ) -> Result<()> {
        self.detach_guest_tx(port, key, Duration::from_secs(5))?;
        let i = worker.unwrap_or_else(|| self.next_worker.fetch_add(1, Ordering::Relaxed));
        let i = i % self.workers.len();
        let (tx, rx) = bounded(1);
        self.workers[i].send(Cmd::AttachGuestTx {
            port,
            key,
            queue,
            reply: tx,
        })?;
        let r = rx.recv().unwrap_or(Err(Error::Shutdown));
        if r.is_ok() {
            self.guest_tx.lock().insert((port, key), i);
        }
        r
    }

    /// Detaches guest TX queue `key` of `port`: its worker stops popping and, once every
    /// frame it popped has been written and completed (returned to the guest), drops the
    /// queue object. Returns when that happened — what a vhost-user GET_VRING_BASE needs
    /// before it may report the ring's index — or `Err(Timeout)` after `wait`. Detaching
    /// a queue that is not attached is not an error.
    pub fn detach_guest_tx(&self, port: PortId, key: u64, wait: Duration) -> Result<()> {
        let Some(i) = self.guest_tx.lock().remove(&(port, key)) else {
            return Ok(());
        };
        let (tx, rx) = bounded(1);
        self.workers[i].send(Cmd::DetachGuestTx {
            port,
            key,
            reply: tx,
        })?;
        match rx.recv_timeout(wait) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(Error::Timeout(wait)),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(Error::Shutdown),
        }
    }

    /// Makes `sink` the RX side of guest port `port` on every worker: frames the switch
    /// sends to `port` are copied once into it, by whichever worker forwards them.
    pub fn attach_guest_rx(&self, port: PortId, sink: Arc<dyn GuestRx>) -> Result<()> {
        let mut replies = Vec::with_capacity(self.workers.len());
        for w in &self.workers {
            let (tx, rx) = bounded(1);
            w.send(Cmd::AttachGuestRx {
                port,
                sink: Arc::clone(&sink),
                reply: tx,
            })?;
            replies.push(rx);
        }
        for rx in replies {
            rx.recv().map_err(|_| Error::Shutdown)?;
        }
        Ok(())
    }

    /// Floods `frame`, which the switch itself originates (an IGMP/MLD query of the
    /// querier), to every port of `vid` that accepts it. It takes the path every
    /// received frame takes, on the first worker: staged into guests (adapted to each
    /// guest's offloads) and written to taps and AF_PACKET ports, each tagged as the
    /// port's VLAN mode says. Returns once the worker has it; the sends follow at once.
    pub fn inject(&self, frame: Vec<u8>, vid: switch::Vid) -> Result<()> {
        let w = self.workers.first().ok_or(Error::Shutdown)?;
        w.send(Cmd::Inject { frame, vid })
    }

    /// Registers a port that is fed by guest queues (not a host device) with the switch.
    pub fn add_guest_port(&self, config: PortConfig) -> Result<PortId> {
        let name = config.name.clone();
        let id = self
            .sw
            .add_port(config)
            .map_err(|e| Error::Switch(e.to_string()))?;
        self.ports.lock().insert(id, name);
        Ok(id)
    }

    /// The shared state of VXLAN port `id` (its remotes, learned VTEPs and counters).
    pub fn vxlan(&self, id: PortId) -> Option<Arc<VxlanPort>> {
        self.vxlan.read().get(&id).cloned()
    }

    /// Counters of every port and worker.
    pub fn stats(&self) -> Stats {
        let ports = self.ports.lock().clone();
        let mut out = Stats::default();
        for (id, name) in ports {
            let mut p = PortStats::new(id, name);
            for w in &self.workers {
                p.accumulate(&w.stats.ports[id.index()]);
            }
            p.switch = self.sw.stats(id);
            if let Some(d) = self.sockstats.read().get(id.index()).cloned().flatten() {
                p.drop_rx_queue = d.queue_drops();
            }
            out.ports.push(p);
        }
        for (i, w) in self.workers.iter().enumerate() {
            let c = &w.stats.worker;
            out.workers.push(WorkerStatsSnapshot {
                worker: i,
                enters: c.enters.get(),
                packets: c.packets.get(),
                batches: c.batches.get(),
            });
        }
        out
    }

    /// Stops every worker (in-flight writes complete or are cancelled first).
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        for w in &self.workers {
            let _ = w.send(Cmd::Shutdown);
        }
        let mut r = Ok(());
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                if t.join().is_err() {
                    r = Err(Error::Worker("worker panicked".into()));
                }
            }
        }
        r
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switch::SwitchConfig;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn dataplane_is_shareable() {
        assert_send_sync::<Dataplane>();
    }

    /// A data plane with no ports starts, reports zero counters and shuts down.
    #[test]
    fn an_empty_dataplane_starts_and_stops() {
        let sw = Arc::new(Switch::new(SwitchConfig::default()));
        let dp = Dataplane::new(
            sw,
            DataplaneConfig {
                workers: 1,
                ..Default::default()
            },
        )
        .unwrap();
        let s = dp.stats();
        assert!(s.ports.is_empty());
        assert_eq!(s.workers.len(), 1);
        assert_eq!(s.workers[0].packets, 0);
        assert!(matches!(
            dp.remove_port(PortId(7)),
            Err(Error::UnknownPort(PortId(7)))
        ));
        dp.shutdown().unwrap();
    }
}
