//! The running daemon: one switch, the io_uring data plane with its host ports, and the
//! vhost-user ports. Implements [`Control`] for the ctl socket and metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use datapath::Glue;
use parking_lot::Mutex;
use switch::{Mac, Millis, PortConfig, PortId, PortKind, Switch, SwitchConfig, VlanMode};
use uring_net::{Dataplane, DataplaneConfig, VxlanConfig};
use vring_engine::{PortOptions, SocketMode, VhostUserPort};

use crate::control::{
    Control, ControlError, FdbRow, MdbRow, PortChange, PortCounters, PortInfo, PortSpec,
    QueueCounters, RunOptions, StatsReport, VxlanCounters, VxlanInfo, WorkerCounters,
};

/// Guest offload features switched off by `offloads=off`.
const OFFLOAD_FEATURES: &[&str] = &[
    "CSUM",
    "GUEST_CSUM",
    "HOST_TSO4",
    "HOST_TSO6",
    "HOST_ECN",
    "HOST_UFO",
    "HOST_USO",
    "GUEST_TSO4",
    "GUEST_TSO6",
    "GUEST_ECN",
    "GUEST_UFO",
    "GUEST_USO4",
    "GUEST_USO6",
];

/// The daemon's state while running.
pub struct Runtime {
    epoch: Instant,
    sw: Arc<Switch>,
    dp: Mutex<Option<Arc<Dataplane>>>,
    glue: Arc<Glue>,
    vhost: Mutex<BTreeMap<PortId, VhostUserPort>>,
    /// QMP watchers' counters, by port.
    qmp: Mutex<BTreeMap<PortId, Arc<crate::qmp::QmpCounters>>>,
    /// Ports as the user specified them, by switch port id.
    specs: Mutex<BTreeMap<PortId, PortSpec>>,
    stop: Arc<AtomicBool>,
    housekeeping: Mutex<Option<JoinHandle<()>>>,
}

/// What a port's L2 options (`vlan`, `trunk`, `native`, `mac`, `port-security`,
/// `flood-limit`, `mac-limit`) set in its switch [`PortConfig`]. The rx filter is not
/// touched: a vhost-user port's comes from `mac=` when it is added (and from the guest);
/// on tap and afpacket ports `mac=` is only what port security binds to.
struct L2Settings {
    vlan: VlanMode,
    mac: Option<Mac>,
    port_security: bool,
    flood_limit_pps: u32,
    mac_limit: u32,
}

impl L2Settings {
    /// From a validated spec (config::port checked every value).
    fn of(spec: &PortSpec) -> Result<L2Settings, ControlError> {
        let invalid = |e: &dyn std::fmt::Display| ControlError::InvalidPort(e.to_string());
        let l2 = spec.l2();
        let vlan = match (spec.vlan(), &l2.trunk, l2.native) {
            (Some(v), _, _) => VlanMode::Access(v),
            (None, None, None) => VlanMode::default(),
            (None, None, native) => VlanMode::Trunk {
                native,
                allowed: Box::new(switch::vlan::VlanSet::all()),
            },
            (None, Some(t), native) => VlanMode::Trunk {
                native,
                allowed: Box::new(crate::config::port::trunk_set(t).map_err(|e| invalid(&e))?),
            },
        };
        let mac = spec
            .mac()
            .map(|m| m.parse::<Mac>())
            .transpose()
            .map_err(|e| invalid(&format!("mac: {e}")))?;
        Ok(L2Settings {
            vlan,
            mac,
            port_security: l2.port_security,
            flood_limit_pps: l2.flood_limit,
            mac_limit: l2.mac_limit,
        })
    }

    fn apply(self, c: &mut PortConfig) {
        c.vlan = self.vlan;
        c.mac = self.mac;
        c.port_security = self.port_security;
        c.flood_limit_pps = self.flood_limit_pps;
        c.mac_limit = self.mac_limit;
    }
}

/// The port's MTU (`mtu=`, default 1500). Set when the port is added and not through
/// [`L2Settings`]: `set-port` cannot change it (a guest reads it once, at probe), and an
/// afpacket port's may have been lowered to its interface's.
fn port_mtu(spec: &PortSpec) -> u16 {
    spec.l2().mtu.unwrap_or(switch::mtu::DEFAULT_MTU)
}

fn control_err(e: impl std::fmt::Display) -> ControlError {
    ControlError::Failed(e.to_string())
}

impl Runtime {
    /// Starts the switch, the workers and every port in `opts`.
    pub fn start(opts: RunOptions) -> anyhow::Result<Arc<Runtime>> {
        let epoch = Instant::now();
        let mut scfg = SwitchConfig::default();
        scfg.mcast.enabled = opts.mcast.snooping;
        scfg.mcast.querier.enabled = opts.mcast.querier;
        if let Some(ip) = opts.mcast.querier_ip4 {
            scfg.mcast.querier.ip4 = ip;
        }
        let sw = Arc::new(Switch::new(scfg));
        let dp = Dataplane::new(
            sw.clone(),
            DataplaneConfig {
                workers: opts.workers,
                poll_us: opts.poll_us.unwrap_or(0),
                auto_poll: opts.poll_us.is_none(),
                ..Default::default()
            },
        )
        .context("starting the io_uring workers")?;
        let dp = Arc::new(dp);
        let glue = Arc::new(Glue::new(sw.clone()));
        glue.set_dataplane(Some(dp.clone()));
        let rt = Arc::new(Runtime {
            epoch,
            glue,
            sw,
            dp: Mutex::new(Some(dp)),
            vhost: Mutex::new(BTreeMap::new()),
            qmp: Mutex::new(BTreeMap::new()),
            specs: Mutex::new(BTreeMap::new()),
            stop: Arc::new(AtomicBool::new(false)),
            housekeeping: Mutex::new(None),
        });
        for spec in opts.ports {
            let name = spec.name().to_string();
            if let Err(e) = rt.add_port(spec) {
                rt.shutdown();
                anyhow::bail!("port {name}: {e}");
            }
        }
        rt.sync_mcast_vlans();
        let weak = Arc::downgrade(&rt);
        let stop = rt.stop.clone();
        let h = std::thread::Builder::new()
            .name("housekeeping".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let Some(rt) = weak.upgrade() else { break };
                    let now = rt.now();
                    rt.sw.age(now);
                    for q in rt.sw.mcast_tick(now) {
                        rt.glue.inject(q.frame, q.vid);
                    }
                }
            })
            .context("starting the housekeeping thread")?;
        *rt.housekeeping.lock() = Some(h);
        Ok(rt)
    }

    fn now(&self) -> Millis {
        Millis(self.epoch.elapsed().as_millis() as u64)
    }

    /// Tells the snooper which VLANs are in use (access VLANs and trunks' native VLANs), so
    /// its querier, when enabled, queries in each of them.
    fn sync_mcast_vlans(&self) {
        let snooper = self.sw.snooper();
        let default = snooper.config().vlan_default();
        let mut vids: Vec<switch::Vid> = self
            .sw
            .ports()
            .iter()
            .filter_map(|(_, c, _)| match &c.vlan {
                VlanMode::Access(v) => Some(*v),
                VlanMode::Trunk { native, .. } => *native,
            })
            .collect();
        vids.sort_unstable();
        vids.dedup();
        for v in vids {
            snooper.set_vlan(v, default);
        }
    }

    /// Stops every port and worker. Idempotent.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let vhost = std::mem::take(&mut *self.vhost.lock());
        for (id, port) in vhost {
            let _ = self.sw.set_link(id, false);
            port.stop();
            self.glue.set_device(id, None);
        }
        self.glue.set_dataplane(None);
        if let Some(dp) = self.dp.lock().take() {
            match Arc::try_unwrap(dp) {
                Ok(dp) => {
                    if let Err(e) = dp.shutdown() {
                        tracing::warn!("data plane shutdown: {e}");
                    }
                }
                // A vhost-user thread still holds it for one frame: its drop stops the
                // workers.
                Err(_) => tracing::debug!("data plane still referenced; stops on last drop"),
            }
        }
        if let Some(h) = self.housekeeping.lock().take() {
            let _ = h.join();
        }
    }

    fn with_dp<T>(&self, f: impl FnOnce(&Dataplane) -> T) -> Result<T, ControlError> {
        self.dp
            .lock()
            .as_deref()
            .map(f)
            .ok_or_else(|| ControlError::Failed("the daemon is shutting down".into()))
    }

    /// Adds the vhost-user port `spec` (a validated [`PortSpec::VhostUser`]).
    fn add_vhost(&self, spec: &PortSpec) -> Result<PortId, ControlError> {
        let PortSpec::VhostUser {
            path,
            queues,
            client,
            mac,
            offloads,
            max_queue_size,
            frontend,
            ..
        } = spec
        else {
            return Err(ControlError::InvalidPort(format!(
                "{}: not a vhost-user port",
                spec.name()
            )));
        };
        let (queues, client, offloads) = (*queues, *client, *offloads);
        let mac: Option<Mac> = mac
            .as_deref()
            .map(|m| m.parse())
            .transpose()
            .map_err(|e| ControlError::InvalidPort(format!("mac: {e}")))?;
        let mut opts = PortOptions::new(path);
        opts.mode = if client {
            SocketMode::Client
        } else {
            SocketMode::Server
        };
        opts.queue_pairs = queues;
        opts.mac = mac;
        // VIRTIO_NET_F_MTU with the port's MTU in config space (virtio 1.2 §5.1.4): the
        // guest driver takes it as its initial MTU.
        opts.mtu = Some(port_mtu(spec));
        if let Some(q) = *max_queue_size {
            opts.max_queue_size = q;
        }
        if let Some(m) = frontend.socket_mode {
            opts.socket_perm = m;
        }
        if let Some(g) = &frontend.socket_group {
            opts.socket_gid = Some(resolve_group(g)?);
        }
        if let Some(n) = frontend.max_mem_regions {
            opts.max_mem_regions = n;
        }
        opts.packed = frontend.packed;
        if !offloads {
            opts = opts
                .features_off_by_name(OFFLOAD_FEATURES)
                .map_err(|e| ControlError::InvalidPort(e.to_string()))?;
        }
        opts.validate()
            .map_err(|e| ControlError::InvalidPort(format!("{path}: {e}")))?;
        let mut cfg = PortConfig::new(path, PortKind::VhostUser);
        if let Some(m) = mac {
            cfg = cfg.with_mac(m);
        }
        L2Settings::of(spec)?.apply(&mut cfg);
        cfg.mtu = port_mtu(spec);
        let dp = self
            .dp
            .lock()
            .clone()
            .ok_or_else(|| ControlError::Failed("the daemon is shutting down".into()))?;
        let (id, port) = self
            .glue
            .add_vhost_user_port(&dp, cfg, opts)
            .map_err(|e| match e {
                datapath::Error::Options(e) => ControlError::InvalidPort(e.to_string()),
                e => control_err(e),
            })?;
        self.vhost.lock().insert(id, port);
        Ok(id)
    }

    fn port_info(&self, id: PortId, cfg: &PortConfig, up: bool) -> PortInfo {
        let spec = self.specs.lock().get(&id).cloned();
        let dev = self.glue.device(id);
        let (max_queue_size, queue_sizes) = match &dev {
            Some(d) => (Some(d.options().max_queue_size), d.queue_sizes()),
            None => (None, vec![]),
        };
        let connected = dev.as_ref().map(|d| d.connected());
        let guest_memory_bytes = dev.as_ref().map(|d| d.guest_memory_bytes());
        let (features, queues, enabled, state) = match &dev {
            Some(d) => {
                let acked = d.acked_features();
                let mut names: Vec<String> = vring_engine::features::OFFERABLE
                    .iter()
                    .filter(|f| acked & (1u64 << f.bit) != 0)
                    .map(|f| f.name.to_string())
                    .collect();
                // Not in OFFERABLE (not switchable off: it is opt-in per port).
                if acked & vring_engine::features::RING_PACKED != 0 {
                    names.push("RING_PACKED".to_string());
                }
                let state = if acked == 0 {
                    "waiting"
                } else if up {
                    "up"
                } else {
                    "down"
                };
                (
                    names,
                    d.options().queue_pairs,
                    if acked == 0 {
                        0
                    } else {
                        d.active_queue_pairs()
                    },
                    state,
                )
            }
            None => {
                let q = match spec {
                    Some(PortSpec::Tap { queues, .. }) => queues.unwrap_or(0),
                    _ => 0,
                };
                let q = if q == 0 {
                    self.with_dp(|dp| dp.workers() as u16).unwrap_or(0)
                } else {
                    q
                };
                (vec![], q, q, if up { "up" } else { "down" })
            }
        };
        let vxlan = self.with_dp(|dp| dp.vxlan(id)).ok().flatten().map(|v| {
            let c = v.config();
            Box::new(VxlanInfo {
                local: c.local,
                remotes: c.remotes.clone(),
                vni: c.vni,
                dstport: c.dstport,
                inner_max: u32::try_from(v.inner_max()).unwrap_or(u32::MAX),
            })
        });
        PortInfo {
            id: id.0,
            name: cfg.name.clone(),
            kind: match cfg.kind {
                PortKind::VhostUser => "vhost-user",
                PortKind::Tap => "tap",
                PortKind::AfPacket => "afpacket",
                PortKind::Vxlan => "vxlan",
            }
            .into(),
            state: state.into(),
            mac: cfg.mac.map(|m| m.to_string()),
            vlan: describe_vlan(&cfg.vlan),
            queues,
            queues_enabled: enabled,
            features,
            max_queue_size,
            queue_sizes,
            connected,
            guest_memory_bytes,
            offloads: describe_offloads(&cfg.offloads),
            rx_filter: describe_filter(&cfg.rx_filter),
            port_security: cfg.port_security,
            flood_limit: cfg.flood_limit_pps,
            mac_limit: cfg.mac_limit,
            mtu: cfg.mtu,
            vxlan,
        }
    }

    /// Port names by id, for control-plane listings.
    fn port_names(&self) -> BTreeMap<PortId, String> {
        self.sw
            .ports()
            .into_iter()
            .map(|(id, c, _)| (id, c.name))
            .collect()
    }

    /// A second vxlan port on a running port's `local:dstport` would join its receive
    /// sockets' SO_REUSEPORT group and take a share of its packets: refused.
    fn check_vxlan_endpoint(&self, spec: &PortSpec) -> Result<(), ControlError> {
        let Some(at) = crate::config::vxlan_endpoint(spec) else {
            return Ok(());
        };
        match self
            .specs
            .lock()
            .values()
            .find(|s| crate::config::vxlan_endpoint(s) == Some(at))
        {
            Some(other) => Err(ControlError::InvalidPort(format!(
                "UDP {at} is already vxlan port {:?}'s: give each vxlan port its own local \
                 address or dstport (a port carries one VNI)",
                other.name()
            ))),
            None => Ok(()),
        }
    }

    fn id_of(&self, name: &str) -> Result<PortId, ControlError> {
        self.sw
            .port_by_name(name)
            .ok_or_else(|| ControlError::NoSuchPort(name.into()))
    }
}

fn describe_vlan(v: &VlanMode) -> String {
    match v {
        VlanMode::Access(v) => format!("access {v}"),
        VlanMode::Trunk { native, allowed } => {
            let n = native.map_or("none".to_string(), |v| v.to_string());
            let a = if **allowed == switch::vlan::VlanSet::all() {
                "all".to_string()
            } else if allowed.is_empty() {
                "none".to_string()
            } else {
                crate::config::port::vlan_list(allowed)
            };
            format!("trunk native {n} allowed {a}")
        }
    }
}

fn describe_offloads(o: &switch::Offloads) -> Vec<String> {
    [
        (o.csum, "csum"),
        (o.tso4, "tso4"),
        (o.tso6, "tso6"),
        (o.tso_ecn, "tso_ecn"),
        (o.ufo, "ufo"),
        (o.uso4, "uso4"),
        (o.uso6, "uso6"),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .map(|(_, n)| n.to_string())
    .collect()
}

fn describe_filter(f: &switch::RxFilter) -> String {
    if f.promisc {
        return "promisc".into();
    }
    let mut s = match f.mac {
        Some(m) => format!("mac {m}"),
        None => "no-mac".into(),
    };
    for (on, name) in [
        (!f.nobcast, "+bcast"),
        (f.allmulti, "+allmulti"),
        (f.alluni, "+alluni"),
        (f.nomulti, "-multi"),
        (f.nouni, "-uni"),
        (f.uni_overflow, "+uni-overflow"),
        (f.multi_overflow, "+multi-overflow"),
    ] {
        if on {
            s.push(' ');
            s.push_str(name);
        }
    }
    if !f.uni.is_empty() {
        s.push_str(&format!(" uni[{}]", f.uni.len()));
    }
    if !f.multi.is_empty() {
        s.push_str(&format!(" multi[{}]", f.multi.len()));
    }
    if let Some(v) = &f.vlans {
        s.push_str(&format!(" vlans[{}]", v.iter().count()));
    }
    s
}

impl Control for Runtime {
    fn ports(&self) -> Vec<PortInfo> {
        self.sw
            .ports()
            .iter()
            .map(|(id, cfg, up)| self.port_info(*id, cfg, *up))
            .collect()
    }

    fn fdb(&self) -> Vec<FdbRow> {
        let names = self.port_names();
        let now = self.now();
        let mut vxlan: BTreeMap<PortId, Option<Arc<uring_net::VxlanPort>>> = BTreeMap::new();
        self.sw
            .fdb()
            .entries(now)
            .into_iter()
            .map(|e| {
                // The port's own table of which VTEP each inner MAC came from, aged like
                // the FDB (workers' clock: it starts just after ours, so an entry looks
                // a few milliseconds older here than it is).
                let vtep = vxlan
                    .entry(e.port)
                    .or_insert_with(|| self.with_dp(|dp| dp.vxlan(e.port)).ok().flatten())
                    .as_ref()
                    .and_then(|v| v.vtep_of(&e.mac, now));
                FdbRow {
                    mac: e.mac.to_string(),
                    vlan: e.vid,
                    port: names
                        .get(&e.port)
                        .cloned()
                        .unwrap_or_else(|| e.port.to_string()),
                    is_static: e.is_static,
                    age_s: e.age_ms as f64 / 1000.0,
                    vtep,
                }
            })
            .collect()
    }

    fn mdb(&self) -> Vec<MdbRow> {
        let now = self.now();
        let names = self.port_names();
        self.sw
            .mdb(now)
            .into_iter()
            .map(|e| {
                let soonest = e.ports.iter().map(|(_, t)| *t).min();
                MdbRow {
                    group: e.group.to_string(),
                    vlan: e.vid,
                    ports: e
                        .ports
                        .iter()
                        .map(|(p, _)| names.get(p).cloned().unwrap_or_else(|| p.to_string()))
                        .collect(),
                    expires_s: soonest.map(|t| t.since(now) as f64 / 1000.0),
                }
            })
            .collect()
    }

    fn stats(&self) -> StatsReport {
        let Ok(st) = self.with_dp(|dp| dp.stats()) else {
            return StatsReport::default();
        };
        let mut ports = Vec::new();
        for p in &st.ports {
            let mut drops: Vec<(String, u64)> = p
                .switch
                .drops
                .iter()
                .map(|(r, n)| (r.as_str().to_string(), *n))
                .collect();
            for (name, n) in [
                ("bad_frame", p.drop_bad_frame),
                ("destination_queue_full", p.drop_dest_full),
                ("no_queue_on_worker", p.drop_no_queue),
                ("tx_error", p.drop_tx_error),
                ("rx_socket_queue_full", p.drop_rx_queue),
            ] {
                if n > 0 {
                    drops.push((name.into(), n));
                }
            }
            let mut c = PortCounters {
                name: p.name.clone(),
                rx_packets: p.rx_packets,
                rx_bytes: p.rx_bytes,
                tx_packets: p.tx_packets,
                tx_bytes: p.tx_bytes,
                drops,
                fallback_writes: p.tx_fallback,
                queues: vec![],
                qmp: self.qmp.lock().get(&p.port).map(|q| {
                    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                    crate::control::QmpCounters {
                        connects: l(&q.connects),
                        queries: l(&q.queries),
                        applied: l(&q.applied),
                        errors: l(&q.errors),
                    }
                }),
                vxlan: None,
            };
            if let Ok(Some(v)) = self.with_dp(|dp| dp.vxlan(p.port)) {
                let v = v.stats();
                // Malformed or unwanted VXLAN packets off the underlay, and frames the
                // underlay cannot carry: each a counted drop under its reason.
                for (name, n) in [
                    ("vxlan_bad_flags", v.rx_bad_flags),
                    ("vxlan_wrong_vni", v.rx_wrong_vni),
                    ("vxlan_truncated", v.rx_truncated),
                    ("vxlan_unknown_vtep", v.rx_unknown_vtep),
                    ("vxlan_rx_oversized", v.rx_oversized),
                    ("vxlan_mtu_exceeded", v.tx_mtu_exceeded),
                    ("vxlan_bad_frame", v.tx_bad_frame),
                ] {
                    if n > 0 {
                        c.drops.push((name.into(), n));
                    }
                }
                c.vxlan = Some(VxlanCounters {
                    resegmented: v.tx_resegmented,
                    flooded: v.tx_flooded,
                });
            }
            if let Some(dev) = self.glue.device(p.port) {
                // A guest port's frames all pass its virtqueues, whichever thread moved
                // them: the device's queue counters are the totals (worker counts of
                // deliveries into it would count host→guest frames twice, and miss
                // segments of software GSO).
                let (mut rxp, mut rxb, mut txp, mut txb) = (0, 0, 0, 0);
                for qp in 0..dev.options().queue_pairs {
                    let rx = dev.queue_stats(2 * qp as usize).unwrap_or_default();
                    let tx = dev.queue_stats(2 * qp as usize + 1).unwrap_or_default();
                    // Guest view: its TX is our rx.
                    rxp += tx.frames;
                    rxb += tx.bytes;
                    txp += rx.frames;
                    txb += rx.bytes;
                    for (d, n) in rx.drops.iter().chain(tx.drops.iter()) {
                        c.drops.push((format!("queue_{d:?}").to_lowercase(), *n));
                    }
                    c.queues.push(QueueCounters {
                        queue: qp,
                        rx_packets: tx.frames,
                        rx_bytes: tx.bytes,
                        tx_packets: rx.frames,
                        tx_bytes: rx.bytes,
                        drops: rx.dropped_total() + tx.dropped_total(),
                    });
                }
                (c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes) = (rxp, rxb, txp, txb);
                // Refused frontend requests (vhost-user control channel), beside the drops.
                let f = dev.frontend_stats();
                for (name, n) in [
                    ("frontend_bad_memory_table", f.bad_memory_table),
                    ("frontend_bad_vring_fd", f.bad_vring_fd),
                    ("frontend_bad_dirty_log", f.bad_dirty_log),
                    ("frontend_memory_fault", f.memory_fault),
                ] {
                    if n > 0 {
                        c.drops.push((name.into(), n));
                    }
                }
            }
            ports.push(c);
        }
        let workers = st
            .workers
            .iter()
            .map(|w| WorkerCounters {
                worker: w.worker as u16,
                packets: w.packets,
                io_uring_enters: w.enters,
                syscalls_per_packet: if w.packets == 0 {
                    0.0
                } else {
                    w.enters as f64 / w.packets as f64
                },
            })
            .collect();
        StatsReport {
            uptime_s: self.epoch.elapsed().as_secs_f64(),
            ports,
            workers,
            fdb_entries: self.sw.fdb().len() as u64,
            mdb_entries: self.sw.mdb(self.now()).len() as u64,
        }
    }

    fn add_port(&self, spec: PortSpec) -> Result<PortInfo, ControlError> {
        if self.sw.port_by_name(spec.name()).is_some() {
            return Err(ControlError::InvalidPort(format!(
                "a port named {:?} already exists: choose another name or del-port it first",
                spec.name()
            )));
        }
        let id = match &spec {
            PortSpec::VhostUser { path, qmp, .. } => {
                let id = self.add_vhost(&spec)?;
                // Opt-in: mirror the rx filter QEMU keeps for this NIC (bin/qmp.rs). The
                // watcher ends by itself when the port's device goes.
                if let Some(q) = qmp {
                    let spawned =
                        crate::qmp::spawn(id, q.clone(), self.sw.clone(), self.glue.clone());
                    match spawned {
                        Ok(c) => {
                            self.qmp.lock().insert(id, c);
                        }
                        Err(e) => {
                            let _ = self.del_port(path);
                            return Err(control_err(format!("starting the QMP watcher: {e}")));
                        }
                    }
                }
                id
            }
            PortSpec::Tap { name, .. } => {
                let mut s = uring_net::PortSpec::tap(name);
                if let uring_net::PortSpec::Tap { config, .. } = &mut s {
                    L2Settings::of(&spec)?.apply(config);
                    config.mtu = port_mtu(&spec);
                }
                self.with_dp(|dp| dp.add_port(s))?.map_err(control_err)?
            }
            PortSpec::AfPacket { ifname, .. } => {
                let mut s = uring_net::PortSpec::afpacket(ifname);
                if let uring_net::PortSpec::AfPacket { config } = &mut s {
                    L2Settings::of(&spec)?.apply(config);
                    config.mtu = port_mtu(&spec);
                }
                self.with_dp(|dp| dp.add_port(s))?.map_err(control_err)?
            }
            PortSpec::Vxlan {
                name,
                local,
                remotes,
                vni,
                dstport,
                ..
            } => {
                self.check_vxlan_endpoint(&spec)?;
                let mut s = uring_net::PortSpec::vxlan(
                    name,
                    VxlanConfig {
                        local: *local,
                        remotes: remotes.clone(),
                        vni: *vni,
                        dstport: *dstport,
                    },
                );
                if let uring_net::PortSpec::Vxlan { config, .. } = &mut s {
                    L2Settings::of(&spec)?.apply(config);
                    config.mtu = port_mtu(&spec);
                }
                self.with_dp(|dp| dp.add_port(s))?.map_err(control_err)?
            }
        };
        self.specs.lock().insert(id, spec);
        self.sync_mcast_vlans();
        let (cfg, up) = self
            .sw
            .ports()
            .into_iter()
            .find(|(p, _, _)| *p == id)
            .map(|(_, c, u)| (c, u))
            .ok_or_else(|| ControlError::Failed("port vanished while being added".into()))?;
        Ok(self.port_info(id, &cfg, up))
    }

    fn del_port(&self, name: &str) -> Result<(), ControlError> {
        let id = self.id_of(name)?;
        if let Some(p) = self.vhost.lock().remove(&id) {
            p.stop();
            self.glue.set_device(id, None);
        }
        self.specs.lock().remove(&id);
        self.qmp.lock().remove(&id);
        self.with_dp(|dp| dp.remove_port(id))?.map_err(control_err)
    }

    /// Applies `change` to the running port: the spec with the change must validate as
    /// a whole (config::port::apply_change), then the switch takes the new settings in
    /// one atomic port-table update; the port's queues and sockets stay as they are.
    fn set_port(&self, name: &str, change: PortChange) -> Result<(), ControlError> {
        let id = self.id_of(name)?;
        // Held throughout: two set-ports on one port apply one after the other.
        let mut specs = self.specs.lock();
        let spec = specs
            .get(&id)
            .ok_or_else(|| ControlError::NoSuchPort(name.into()))?;
        let new = crate::config::port::apply_change(spec, &change)
            .map_err(|e| ControlError::InvalidPort(e.to_string()))?;
        let l2 = L2Settings::of(&new)?;
        let (old_l2, new_l2) = (spec.l2().clone(), new.l2().clone());
        let mac_changed = spec.mac() != new.mac();
        self.sw
            .update_port(id, |c| l2.apply(c))
            .map_err(|e| ControlError::InvalidPort(e.to_string()))?;
        // What the FDB learned before is not what the new rules allow: a lowered MAC
        // limit would hold only for addresses learned from now on, and port security
        // would leave spoofed addresses learned before it pointing here. Forget the
        // port's entries; they are learned again (within the rules) from its next frames.
        let limit_lowered =
            new_l2.mac_limit != 0 && (old_l2.mac_limit == 0 || new_l2.mac_limit < old_l2.mac_limit);
        let security_tightened = new_l2.port_security && (!old_l2.port_security || mac_changed);
        if limit_lowered || security_tightened {
            self.sw.fdb().flush_port(id);
        }
        specs.insert(id, new);
        drop(specs);
        self.sync_mcast_vlans();
        Ok(())
    }
}

/// `socket-group=`: a numeric gid, or a group name looked up in the group database.
fn resolve_group(g: &str) -> Result<u32, ControlError> {
    if let Ok(gid) = g.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(gr)) => Ok(gr.gid.as_raw()),
        Ok(None) => Err(ControlError::InvalidPort(format!(
            "socket-group={g}: no such group (give a name from /etc/group or a numeric gid)"
        ))),
        Err(e) => Err(ControlError::InvalidPort(format!(
            "socket-group={g}: cannot look the group up: {e}"
        ))),
    }
}
