//! Mirrors the receive filter QEMU keeps for a guest NIC into the switch port, over QEMU's
//! QMP socket (opt-in per vhost-user port: `qmp=PATH[,qmp-nic=ID]`).
//!
//! Why: with a vhost-user netdev QEMU handles the control virtqueue itself (QEMU 7.2
//! `hw/net/virtio-net.c` `virtio_net_vhost_status`: `cvq = max_ncs - max_queue_pairs` = 0
//! for vhost-user), so the driver's VIRTIO_NET_CTRL_RX, CTRL_MAC and CTRL_VLAN commands
//! (virtio 1.2 §5.1.6.5.1–3) never reach the backend. QEMU does report them: it emits the
//! QMP event `NIC_RX_FILTER_CHANGED` once, and again only after a `query-rx-filter` for
//! that NIC; `query-rx-filter` returns the `RxFilterInfo` of `qapi/net.json`. libvirt
//! does exactly this for macvtap with `trustGuestRxFilters`. We query once at connect, on
//! every event for our NIC, and whenever the switch's filter for the port no longer is
//! what we applied (vring-engine resets it on feature negotiation and disconnect).
//!
//! QMP is JSON from a process we do not fully trust: lines are bounded
//! ([`MAX_LINE`]), every field we use is checked, unknown fields are ignored, and any
//! violation ends the session (counted, logged at a bounded rate) and we reconnect with
//! backoff — which is also how a restarted QEMU is picked up.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use switch::filter::MAC_TABLE_ENTRIES;
use switch::{Mac, PortId, RxFilter, Switch, VlanSet};
use vring_engine::PortEvents;

use crate::control::QmpSpec;
use datapath::Glue;

/// Longest QMP message we accept. A reply for one NIC is ~25 KB (a `vlan-table` of all
/// 4096 ids when VLAN filtering is off); an unnamed query returns one such entry per NIC.
pub const MAX_LINE: usize = 1 << 20;
/// How long a command may take to be answered.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Socket read timeout: how often the watcher looks at its port while QEMU is silent.
const POLL: Duration = Duration::from_millis(250);
/// How often the switch's filter is compared with what we applied.
const RESYNC_EVERY: Duration = Duration::from_secs(1);
/// Least time between two queries of one NIC. QEMU re-arms its event with each query,
/// so a guest toggling its filter in a loop could otherwise keep this thread parsing
/// 25 KB replies back to back; the last state still arrives (the event stays pending).
const MIN_QUERY_GAP: Duration = Duration::from_millis(50);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// At most one warning per this interval per port (QEMU down = an error per attempt).
const LOG_EVERY: Duration = Duration::from_secs(30);
/// Children of /machine/peripheral we look at when resolving a netdev id.
const MAX_QOM_CHILDREN: usize = 256;

/// Why a QMP session ended or a reply was refused.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("QMP message longer than {MAX_LINE} bytes")]
    LineTooLong,
    #[error("QMP sent invalid JSON: {0}")]
    Json(String),
    #[error("no QMP greeting: is this QEMU's -qmp socket?")]
    NotQmp,
    #[error("QEMU closed the QMP connection")]
    Closed,
    #[error("no answer to {0} within {REPLY_TIMEOUT:?}")]
    Timeout(&'static str),
    #[error("{command} failed: {desc}")]
    Command {
        command: &'static str,
        class: String,
        desc: String,
    },
    #[error("query-rx-filter field `{field}`: {why}")]
    Field { field: &'static str, why: String },
    #[error("{0}")]
    Nic(String),
}

fn field(field: &'static str, why: impl Into<String>) -> QmpError {
    QmpError::Field {
        field,
        why: why.into(),
    }
}

fn get_bool(info: &Value, key: &'static str) -> Result<bool, QmpError> {
    match info.get(key) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(field(key, "not a boolean")),
        None => Err(field(key, "missing")),
    }
}

/// `RxState` of qapi/net.json: (none, all).
fn get_state(info: &Value, key: &'static str) -> Result<(bool, bool), QmpError> {
    match info.get(key).and_then(Value::as_str) {
        Some("normal") => Ok((false, false)),
        Some("none") => Ok((true, false)),
        Some("all") => Ok((false, true)),
        Some(other) => Err(field(
            key,
            format!("{:?} is not normal, none or all", truncate(other)),
        )),
        None => Err(field(key, "missing or not a string")),
    }
}

fn parse_mac(key: &'static str, v: &Value) -> Result<Mac, QmpError> {
    let s = v.as_str().ok_or_else(|| field(key, "not a string"))?;
    s.parse()
        .map_err(|_| field(key, format!("{:?} is not a MAC address", truncate(s))))
}

fn get_macs(info: &Value, key: &'static str) -> Result<Vec<Mac>, QmpError> {
    let list = info
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| field(key, "missing or not a list"))?;
    if list.len() > MAC_TABLE_ENTRIES {
        return Err(field(
            key,
            format!(
                "{} entries; a virtio-net MAC table holds {MAC_TABLE_ENTRIES}",
                list.len()
            ),
        ));
    }
    list.iter().map(|m| parse_mac(key, m)).collect()
}

/// Keeps error messages about hostile strings short.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(40) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The switch rx filter for one `RxFilterInfo` (qapi/net.json) — what the control queue
/// would have produced (virtio 1.2 §5.1.6.5.1 RX mode, §5.1.6.5.2 MAC tables and
/// address, §5.1.6.5.3 VLAN filter), field by field from QEMU's
/// `virtio_net_query_rxfilter()`:
/// - `promiscuous` → promisc; `unicast`/`multicast` "none"/"all" → nouni/alluni and
///   nomulti/allmulti ("normal": neither);
/// - `broadcast-allowed` → **nobcast**: QEMU fills it with `n->nobcast` (inverted, up to
///   current QEMU), so a driver that never sent NOBCAST reads `false`. Taking the name
///   literally would cut every such guest off from ARP;
/// - `main-mac` → the device address; `unicast-table`/`multicast-table` and their
///   `-overflow` flags → the two MAC tables (at most [`MAC_TABLE_ENTRIES`] in total);
/// - `vlan` "all" → no VLAN filter (CTRL_VLAN not negotiated), "none" → an empty set,
///   "normal" → the ids in `vlan-table` (0..=4095).
///
/// Unknown fields are ignored; a missing or ill-typed field we use is an error.
pub fn filter_from_query(info: &Value) -> Result<RxFilter, QmpError> {
    if !info.is_object() {
        return Err(field("(entry)", "not an object"));
    }
    let (nouni, alluni) = get_state(info, "unicast")?;
    let (nomulti, allmulti) = get_state(info, "multicast")?;
    let mac = parse_mac(
        "main-mac",
        info.get("main-mac")
            .ok_or_else(|| field("main-mac", "missing"))?,
    )?;
    let uni = get_macs(info, "unicast-table")?;
    let multi = get_macs(info, "multicast-table")?;
    if uni.len() + multi.len() > MAC_TABLE_ENTRIES {
        return Err(field(
            "multicast-table",
            format!("with the unicast table more than {MAC_TABLE_ENTRIES} entries"),
        ));
    }
    let vlans = match info.get("vlan").and_then(Value::as_str) {
        Some("all") => None,
        Some("none") => Some(Box::new(VlanSet::empty())),
        Some("normal") => {
            let table = info
                .get("vlan-table")
                .and_then(Value::as_array)
                .ok_or_else(|| field("vlan-table", "missing or not a list"))?;
            if table.len() > 4096 {
                return Err(field("vlan-table", "more than 4096 entries"));
            }
            let mut set = VlanSet::empty();
            for v in table {
                match v.as_u64() {
                    Some(id) if id <= 4095 => set.insert(id as u16),
                    _ => return Err(field("vlan-table", format!("{v} is not a VLAN id"))),
                }
            }
            Some(Box::new(set))
        }
        Some(other) => {
            return Err(field(
                "vlan",
                format!("{:?} is not normal, none or all", truncate(other)),
            ))
        }
        None => return Err(field("vlan", "missing or not a string")),
    };
    Ok(RxFilter {
        promisc: get_bool(info, "promiscuous")?,
        allmulti,
        alluni,
        nomulti,
        nouni,
        nobcast: get_bool(info, "broadcast-allowed")?,
        mac: Some(mac),
        uni,
        multi,
        uni_overflow: get_bool(info, "unicast-overflow")?,
        multi_overflow: get_bool(info, "multicast-overflow")?,
        vlans,
    })
}

/// The entry named `nic` in a `query-rx-filter` return value (a list).
pub fn pick_nic<'a>(ret: &'a Value, nic: &str) -> Result<&'a Value, QmpError> {
    ret.as_array()
        .ok_or_else(|| QmpError::Json("query-rx-filter did not return a list".into()))?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(nic))
        .ok_or_else(|| QmpError::Nic(format!("query-rx-filter has no entry for NIC {nic:?}")))
}

/// One QMP connection: newline-delimited JSON objects (QEMU `docs/interop/qmp-spec`).
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already known to hold no newline.
    scanned: usize,
    next_id: u64,
    /// The NIC we watch, once resolved.
    nic: Option<String>,
    /// An event for our NIC arrived since the last query.
    pending: bool,
}

impl Conn {
    fn new(stream: UnixStream) -> Result<Conn, QmpError> {
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Conn {
            stream,
            buf: Vec::new(),
            scanned: 0,
            next_id: 1,
            nic: None,
            pending: false,
        })
    }

    /// The next message, or None when nothing complete arrived within [`POLL`].
    fn next_message(&mut self) -> Result<Option<Value>, QmpError> {
        loop {
            if let Some(i) = self.buf[self.scanned..].iter().position(|b| *b == b'\n') {
                let end = self.scanned + i;
                if end > MAX_LINE {
                    return Err(QmpError::LineTooLong);
                }
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                self.scanned = 0;
                let text = line.trim_ascii();
                if text.is_empty() {
                    continue;
                }
                let v: Value =
                    serde_json::from_slice(text).map_err(|e| QmpError::Json(e.to_string()))?;
                if !v.is_object() {
                    return Err(QmpError::Json("a message that is not an object".into()));
                }
                return Ok(Some(v));
            }
            self.scanned = self.buf.len();
            if self.buf.len() > MAX_LINE {
                return Err(QmpError::LineTooLong);
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(QmpError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None)
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Notes a `NIC_RX_FILTER_CHANGED` for our NIC. The event names the NIC only when
    /// the device has an id; an unnamed one may be ours, so it counts too (one extra
    /// query at worst).
    fn observe(&mut self, msg: &Value) {
        if msg.get("event").and_then(Value::as_str) != Some("NIC_RX_FILTER_CHANGED") {
            return;
        }
        let name = msg
            .get("data")
            .and_then(|d| d.get("name"))
            .and_then(Value::as_str);
        match (name, self.nic.as_deref()) {
            (Some(n), Some(ours)) if n != ours => {}
            _ => self.pending = true,
        }
    }

    fn greeting(&mut self) -> Result<(), QmpError> {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            match self.next_message()? {
                Some(v) if v.get("QMP").is_some_and(Value::is_object) => return Ok(()),
                Some(_) => return Err(QmpError::NotQmp),
                None if Instant::now() >= deadline => return Err(QmpError::NotQmp),
                None => {}
            }
        }
    }

    /// Runs `command` and returns its `return` value. Events arriving meanwhile are
    /// observed; replies to other ids (none expected) are skipped.
    fn execute(&mut self, command: &'static str, args: Option<Value>) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "execute": command, "id": id });
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string().into_bytes();
        line.push(b'\n');
        self.stream.write_all(&line)?;
        let deadline = Instant::now() + REPLY_TIMEOUT;
        loop {
            let Some(mut v) = self.next_message()? else {
                if Instant::now() >= deadline {
                    return Err(QmpError::Timeout(command));
                }
                continue;
            };
            if v.get("event").is_some() {
                self.observe(&v);
                continue;
            }
            if v.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(r) = v.get_mut("return") {
                return Ok(r.take());
            }
            let err = v.get("error").ok_or_else(|| {
                QmpError::Json(format!("reply to {command} has neither return nor error"))
            })?;
            let text =
                |k: &str| truncate(err.get(k).and_then(Value::as_str).unwrap_or("?")).to_string();
            return Err(QmpError::Command {
                command,
                class: text("class"),
                desc: text("desc"),
            });
        }
    }

    /// The NIC name `query-rx-filter` knows. `given` may be the NIC's id (the `id=` of
    /// its `-device`), or the id of its `-netdev`, which QEMU refuses ("isn't a NIC") and
    /// we resolve through QOM: the device under /machine/peripheral whose `netdev`
    /// property names it. Without `given`, QEMU must have exactly one NIC.
    fn resolve_nic(&mut self, given: Option<&str>) -> Result<String, QmpError> {
        let Some(id) = given else {
            let ret = self.execute("query-rx-filter", None)?;
            let names: Vec<String> = ret
                .as_array()
                .ok_or_else(|| QmpError::Json("query-rx-filter did not return a list".into()))?
                .iter()
                .filter_map(|e| e.get("name").and_then(Value::as_str))
                .map(|n| truncate(n).to_string())
                .collect();
            return match names.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(QmpError::Nic(
                    "QEMU has no NIC that reports rx filters (virtio-net)".into(),
                )),
                many => Err(QmpError::Nic(format!(
                    "QEMU has {} NICs ({}): say which one with qmp-nic=ID",
                    many.len(),
                    many.join(", ")
                ))),
            };
        };
        match self.execute("query-rx-filter", Some(json!({ "name": id }))) {
            Ok(ret) => pick_nic(&ret, id).map(|_| id.to_string()),
            Err(QmpError::Command { desc, .. }) if desc.contains("isn't a NIC") => {
                self.nic_of_netdev(id)
            }
            Err(QmpError::Command { desc, .. }) => Err(QmpError::Nic(format!(
                "qmp-nic={id}: QEMU says {desc:?}; use the id= of the -device or -netdev"
            ))),
            Err(e) => Err(e),
        }
    }

    fn nic_of_netdev(&mut self, netdev: &str) -> Result<String, QmpError> {
        let list = self.execute("qom-list", Some(json!({ "path": "/machine/peripheral" })))?;
        let children: Vec<String> = list
            .as_array()
            .map(|l| {
                l.iter()
                    .filter(|c| {
                        c.get("type")
                            .and_then(Value::as_str)
                            .is_some_and(|t| t.starts_with("child<"))
                    })
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .take(MAX_QOM_CHILDREN)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        for dev in children {
            let path = format!("/machine/peripheral/{dev}");
            match self.execute(
                "qom-get",
                Some(json!({ "path": path, "property": "netdev" })),
            ) {
                Ok(Value::String(n)) if n == netdev => return Ok(dev),
                Ok(_) | Err(QmpError::Command { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(QmpError::Nic(format!(
            "qmp-nic={netdev} is a netdev, but no NIC with an id uses it: add id=NAME to its \
             -device virtio-net-pci and use qmp-nic=NAME"
        )))
    }
}

/// Where the watcher's filters go, and whether it should keep running.
pub trait FilterSink: Send + 'static {
    /// False once the port is gone (deleted, replaced, daemon stopping).
    fn alive(&self) -> bool;
    /// The filter the switch applies to the port now.
    fn current(&self) -> Option<RxFilter>;
    /// Applies `f` as the port's filter.
    fn apply(&self, f: &RxFilter);
}

/// What one port's watcher did, for logs (and for `ctl stats` once the runtime shows
/// them).
#[derive(Debug, Default)]
pub struct QmpCounters {
    pub connects: AtomicU64,
    pub queries: AtomicU64,
    pub applied: AtomicU64,
    pub errors: AtomicU64,
}

/// How far a session got.
#[derive(PartialEq, Eq)]
enum Reached {
    Connected,
    Watching,
}

/// One connection: handshake, NIC resolution, then queries on events and on resync.
/// Returns Ok when the sink is no longer alive.
fn session(
    conn: &mut Conn,
    spec: &QmpSpec,
    sink: &dyn FilterSink,
    counters: &QmpCounters,
    reached: &mut Reached,
) -> Result<(), QmpError> {
    conn.greeting()?;
    conn.execute("qmp_capabilities", None)?;
    let nic = conn.resolve_nic(spec.nic.as_deref())?;
    conn.nic = Some(nic.clone());
    conn.pending = true;
    *reached = Reached::Watching;
    tracing::info!(qmp = %spec.path, nic = %nic, "QMP: mirroring the guest's rx filter");
    let mut last: Option<RxFilter> = None;
    let mut next_check = Instant::now() + RESYNC_EVERY;
    let mut last_query: Option<Instant> = None;
    loop {
        if !sink.alive() {
            return Ok(());
        }
        if conn.pending {
            if let Some(t) = last_query {
                std::thread::sleep(MIN_QUERY_GAP.saturating_sub(t.elapsed()));
            }
            last_query = Some(Instant::now());
            conn.pending = false;
            counters.queries.fetch_add(1, Ordering::Relaxed);
            let ret = conn.execute("query-rx-filter", Some(json!({ "name": nic })))?;
            let f = filter_from_query(pick_nic(&ret, &nic)?)?;
            if sink.current().as_ref() != Some(&f) {
                sink.apply(&f);
                counters.applied.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(nic = %nic, filter = ?f, "QMP: rx filter applied");
            }
            last = Some(f);
        }
        let now = Instant::now();
        if now >= next_check {
            next_check = now + RESYNC_EVERY;
            // Something else (a reset by vring-engine) replaced our filter: QEMU's state
            // is the truth, ask again.
            if last.is_some() && sink.current() != last {
                conn.pending = true;
                continue;
            }
        }
        if let Some(msg) = conn.next_message()? {
            conn.observe(&msg);
        }
    }
}

/// Bounded logging: the first message, then at most one per [`LOG_EVERY`].
struct LogLimit {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Sleeps `d` in [`POLL`] slices; false if the sink died meanwhile.
fn sleep_alive(d: Duration, sink: &dyn FilterSink) -> bool {
    let end = Instant::now() + d;
    loop {
        if !sink.alive() {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(POLL));
    }
}

/// The watcher's life: connect, run a session, back off, reconnect, until the port goes.
pub fn watch(spec: &QmpSpec, sink: &dyn FilterSink, counters: &QmpCounters) {
    let mut backoff = BACKOFF_MIN;
    let mut log = LogLimit {
        last: None,
        suppressed: 0,
    };
    while sink.alive() {
        let mut reached = Reached::Connected;
        let result = UnixStream::connect(Path::new(&spec.path))
            .map_err(QmpError::from)
            .and_then(|s| {
                counters.connects.fetch_add(1, Ordering::Relaxed);
                let mut conn = Conn::new(s)?;
                session(&mut conn, spec, sink, counters, &mut reached)
            });
        match result {
            Ok(()) => break,
            Err(e) => {
                let errors = counters.errors.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(suppressed) = log.allow() {
                    tracing::warn!(
                        qmp = %spec.path,
                        errors,
                        suppressed,
                        "QMP: {e}; reconnecting with backoff"
                    );
                }
            }
        }
        if reached == Reached::Watching {
            backoff = BACKOFF_MIN;
        }
        if !sleep_alive(backoff, sink) {
            break;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Watcher generation per port: a re-added port gets a new watcher, the old one ends.
static GENERATIONS: Mutex<Vec<(PortId, u64)>> = Mutex::new(Vec::new());
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// A vhost-user port of the running switch as a [`FilterSink`].
struct SwitchPort {
    sw: Arc<Switch>,
    glue: Arc<Glue>,
    port: PortId,
    generation: u64,
}

impl FilterSink for SwitchPort {
    fn alive(&self) -> bool {
        let current = GENERATIONS
            .lock()
            .iter()
            .any(|(p, g)| *p == self.port && *g == self.generation);
        current && self.glue.device(self.port).is_some()
    }

    fn current(&self) -> Option<RxFilter> {
        self.sw.view().port(self.port).map(|c| c.rx_filter.clone())
    }

    /// The same path a control-queue command takes ([`PortEvents::rx_filter_changed`]).
    fn apply(&self, f: &RxFilter) {
        self.glue.rx_filter_changed(self.port, f);
    }
}

impl Drop for SwitchPort {
    fn drop(&mut self) {
        GENERATIONS
            .lock()
            .retain(|(p, g)| !(*p == self.port && *g == self.generation));
    }
}

/// Starts the QMP watcher of vhost-user port `port` (its device must be registered in
/// `glue`). It runs until the port is deleted or the daemon stops.
pub fn spawn(
    port: PortId,
    spec: QmpSpec,
    sw: Arc<Switch>,
    glue: Arc<Glue>,
) -> std::io::Result<Arc<QmpCounters>> {
    let generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
    {
        let mut g = GENERATIONS.lock();
        g.retain(|(p, _)| *p != port);
        g.push((port, generation));
    }
    let sink = SwitchPort {
        sw,
        glue,
        port,
        generation,
    };
    let counters = Arc::new(QmpCounters::default());
    let c = counters.clone();
    std::thread::Builder::new()
        .name(format!("qmp-{}", port.0))
        .spawn(move || watch(&spec, &sink, &c))?;
    Ok(counters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::sync::atomic::AtomicBool;

    const ME: Mac = Mac([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    /// A `query-rx-filter` entry as QEMU 7.2 writes it (a fresh device, VLAN filtering
    /// not negotiated: its table lists every id).
    fn info() -> Value {
        json!({
            "promiscuous": true, "name": "nic0", "main-mac": "52:54:00:12:34:56",
            "unicast": "normal", "vlan": "all", "vlan-table": (0..4096).rev().collect::<Vec<u32>>(),
            "unicast-table": [], "multicast": "normal", "multicast-overflow": false,
            "unicast-overflow": false, "multicast-table": [], "broadcast-allowed": false
        })
    }

    #[test]
    fn promisc_allmulti_and_tables() {
        let f = filter_from_query(&info()).unwrap();
        assert!(f.promisc && !f.allmulti && !f.nobcast && f.vlans.is_none());
        assert_eq!(f.mac, Some(ME));
        assert!(f.accepts(&Mac([2, 0, 0, 0, 0, 9]), Some(7)));

        // Promisc off, all multicast (Linux IFF_ALLMULTI), a unicast table (macvlan).
        let mut v = info();
        v["promiscuous"] = json!(false);
        v["multicast"] = json!("all");
        v["unicast-table"] = json!(["02:00:00:00:00:07"]);
        let f = filter_from_query(&v).unwrap();
        assert!(!f.promisc && f.allmulti && !f.alluni);
        assert_eq!(f.uni, vec![Mac([2, 0, 0, 0, 0, 7])]);
        assert!(f.accepts(&Mac([1, 0, 0x5e, 9, 9, 9]), None));
        assert!(f.accepts(&Mac([2, 0, 0, 0, 0, 7]), None));
        assert!(f.accepts(&ME, None) && f.accepts(&Mac::BROADCAST, None));
        assert!(!f.accepts(&Mac([2, 0, 0, 0, 0, 8]), None));

        // The multicast table alone (`ip maddr add`).
        v["multicast"] = json!("normal");
        v["multicast-table"] = json!(["01:00:5e:01:02:03", "33:33:00:00:00:01"]);
        let f = filter_from_query(&v).unwrap();
        assert!(f.accepts(&Mac([1, 0, 0x5e, 1, 2, 3]), None));
        assert!(!f.accepts(&Mac([1, 0, 0x5e, 1, 2, 4]), None));
        assert_eq!(f.multi.len(), 2);

        // "none" states, overflow flags, and QEMU's inverted broadcast-allowed.
        v["unicast"] = json!("none");
        v["multicast"] = json!("none");
        v["unicast-overflow"] = json!(true);
        v["broadcast-allowed"] = json!(true);
        let f = filter_from_query(&v).unwrap();
        assert!(f.nouni && f.nomulti && f.uni_overflow && f.nobcast);
        assert!(!f.accepts(&ME, None) && !f.accepts(&Mac::BROADCAST, None));
    }

    #[test]
    fn vlan_states() {
        let mut v = info();
        v["promiscuous"] = json!(false);
        v["vlan"] = json!("normal");
        v["vlan-table"] = json!([0, 10]);
        let f = filter_from_query(&v).unwrap();
        assert!(f.accepts(&ME, Some(10)) && !f.accepts(&ME, Some(11)));
        assert!(f.accepts(&ME, None));
        v["vlan"] = json!("none");
        let f = filter_from_query(&v).unwrap();
        assert!(!f.accepts(&ME, Some(10)));
        v["vlan"] = json!("normal");
        v["vlan-table"] = json!([4096]);
        assert!(filter_from_query(&v).is_err());
    }

    #[test]
    fn unknown_fields_ignored_bad_fields_refused() {
        let mut v = info();
        v["some-future-field"] = json!({"x": 1});
        assert!(filter_from_query(&v).is_ok());
        let bad: Vec<(&str, Value)> = vec![
            ("promiscuous", json!("yes")),
            ("unicast", json!("some")),
            ("multicast", json!(3)),
            ("main-mac", json!("52:54:00:12:34")),
            ("unicast-table", json!(["zz:00:00:00:00:01"])),
            ("multicast-table", json!("01:00:5e:00:00:01")),
            ("vlan", json!(null)),
            (
                "unicast-table",
                json!(vec!["02:00:00:00:00:01"; MAC_TABLE_ENTRIES + 1]),
            ),
        ];
        for (k, val) in bad {
            let mut v = info();
            v[k] = val.clone();
            let e = filter_from_query(&v).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={val}: {e}");
        }
        let mut v = info();
        v.as_object_mut().unwrap().remove("broadcast-allowed");
        assert!(filter_from_query(&v).is_err());
        let mut v = info();
        v["unicast-table"] = json!(vec!["02:00:00:00:00:01"; 40]);
        v["multicast-table"] = json!(vec!["01:00:5e:00:00:01"; 40]);
        assert!(filter_from_query(&v).is_err(), "tables over 64 in total");
        assert!(filter_from_query(&json!([1, 2])).is_err());
        assert!(pick_nic(&json!([info()]), "nic0").is_ok());
        assert!(pick_nic(&json!([info()]), "nic1").is_err());
        assert!(pick_nic(&json!({"name": "nic0"}), "nic0").is_err());
    }

    /// Records what the watcher applies; dies once `stop_after` filters were applied.
    struct Recorder {
        applied: Mutex<Vec<RxFilter>>,
        stop_after: usize,
        dead: AtomicBool,
    }

    impl FilterSink for Arc<Recorder> {
        fn alive(&self) -> bool {
            !self.dead.load(Ordering::Relaxed) && self.applied.lock().len() < self.stop_after
        }
        fn current(&self) -> Option<RxFilter> {
            self.applied.lock().last().cloned()
        }
        fn apply(&self, f: &RxFilter) {
            self.applied.lock().push(f.clone());
        }
    }

    fn recorder(stop_after: usize) -> Arc<Recorder> {
        Arc::new(Recorder {
            applied: Mutex::new(Vec::new()),
            stop_after,
            dead: AtomicBool::new(false),
        })
    }

    /// A scripted QMP peer: greets, then answers each command line with `reply(cmd)`
    /// (lines to write, `{id}` replaced by the command's id).
    fn peer(
        mut s: UnixStream,
        greeting: &'static str,
        reply: impl Fn(&Value) -> Vec<String> + Send + 'static,
    ) -> std::thread::JoinHandle<Vec<Value>> {
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            if s.write_all(greeting.as_bytes()).is_err() {
                return seen;
            }
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                let cmd: Value = serde_json::from_str(&line).unwrap();
                let id = cmd["id"].to_string();
                for out in reply(&cmd) {
                    if s.write_all(out.replace("{id}", &id).as_bytes()).is_err() {
                        return seen;
                    }
                }
                seen.push(cmd);
                line.clear();
            }
            seen
        })
    }

    const GREETING: &str =
        "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}}, \"capabilities\": [\"oob\"]}}\r\n";

    fn spec(nic: Option<&str>) -> QmpSpec {
        QmpSpec {
            path: "/unused".into(),
            nic: nic.map(String::from),
        }
    }

    #[test]
    fn session_queries_at_connect_and_on_events_of_its_nic() {
        let (a, b) = UnixStream::pair().unwrap();
        let queries = AtomicU64::new(0);
        let peer = peer(b, GREETING, move |cmd| {
            let ok = |r: Value| format!("{{\"return\": {r}, \"id\": {{id}}}}\r\n");
            match cmd["execute"].as_str().unwrap() {
                "qmp_capabilities" => vec![ok(json!({}))],
                "query-rx-filter" if cmd["arguments"]["name"] == "net0" => vec![format!(
                    "{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"net client(net0) isn't a NIC\"}}, \"id\": {{id}}}}\r\n"
                )],
                "qom-list" => vec![ok(json!([
                    {"name": "type", "type": "string"},
                    {"name": "disk0", "type": "child<virtio-blk-pci>"},
                    {"name": "nic0", "type": "child<virtio-net-pci>"}
                ]))],
                "qom-get" if cmd["arguments"]["path"] == "/machine/peripheral/nic0" => {
                    vec![ok(json!("net0"))]
                }
                "qom-get" => vec![format!(
                    "{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"no netdev\"}}, \"id\": {{id}}}}\r\n"
                )],
                "query-rx-filter" => {
                    let n = queries.fetch_add(1, Ordering::Relaxed);
                    let mut i = info();
                    i["promiscuous"] = json!(n > 0);
                    // An event for another NIC, then one for ours, after the first reply.
                    let mut out = vec![ok(json!([i]))];
                    if n == 0 {
                        out.push("{\"event\": \"NIC_RX_FILTER_CHANGED\", \"data\": {\"name\": \"nic9\", \"path\": \"/x\"}, \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n".into());
                        out.push("{\"event\": \"NIC_RX_FILTER_CHANGED\", \"data\": {\"name\": \"nic0\", \"path\": \"/machine/peripheral/nic0/virtio-backend\"}, \"timestamp\": {\"seconds\": 1, \"microseconds\": 3}}\r\n".into());
                    }
                    out
                }
                _ => vec![],
            }
        });
        let sink = recorder(2);
        let counters = QmpCounters::default();
        let mut conn = Conn::new(a).unwrap();
        let mut reached = Reached::Connected;
        session(
            &mut conn,
            &spec(Some("net0")),
            &sink,
            &counters,
            &mut reached,
        )
        .unwrap();
        drop(conn);
        let seen = peer.join().unwrap();
        let applied = sink.applied.lock().clone();
        assert_eq!(applied.len(), 2);
        assert!(!applied[0].promisc && applied[1].promisc);
        assert_eq!(conn_nic_queries(&seen), 2, "{seen:?}");
        assert!(reached == Reached::Watching);
    }

    fn conn_nic_queries(seen: &[Value]) -> usize {
        seen.iter()
            .filter(|c| c["execute"] == "query-rx-filter" && c["arguments"]["name"] == "nic0")
            .count()
    }

    /// Runs a session against a peer that answers `qmp_capabilities` and every command
    /// not in `replies` with an empty return; returns the session's error.
    fn session_error(
        greeting: &'static str,
        replies: &'static [(&'static str, &'static str)],
        nic: Option<&str>,
    ) -> String {
        let (a, b) = UnixStream::pair().unwrap();
        let _peer = peer(b, greeting, move |cmd| {
            let name = cmd["execute"].as_str().unwrap_or("");
            let r = replies
                .iter()
                .find(|(c, _)| *c == name)
                .map_or("{\"return\": {}, \"id\": {id}}\n", |(_, r)| r);
            vec![r.to_string()]
        });
        let sink = recorder(1);
        let mut conn = Conn::new(a).unwrap();
        let mut reached = Reached::Connected;
        let r = session(
            &mut conn,
            &spec(nic),
            &sink,
            &QmpCounters::default(),
            &mut reached,
        );
        assert!(sink.applied.lock().is_empty());
        r.unwrap_err().to_string()
    }

    const Q: &str = "query-rx-filter";

    #[test]
    fn garbage_ends_the_session_with_an_error() {
        let e = session_error("this is not QMP\n", &[], None);
        assert!(e.contains("invalid JSON"), "{e}");
        let e = session_error("{\"hello\": 1}\n", &[], None);
        assert!(e.contains("no QMP greeting"), "{e}");
        let e = session_error(GREETING, &[("qmp_capabilities", "[1, 2, 3]\n")], None);
        assert!(e.contains("not an object"), "{e}");
        let e = session_error(GREETING, &[("qmp_capabilities", "{\"id\": {id}}\n")], None);
        assert!(e.contains("neither return nor error"), "{e}");
        let e = session_error(GREETING, &[(Q, "{\"return\": 5, \"id\": {id}}\n")], None);
        assert!(e.contains("did not return a list"), "{e}");
        let e = session_error(GREETING, &[(Q, "{\"return\": [], \"id\": {id}}\n")], None);
        assert!(e.contains("no NIC"), "{e}");
        let e = session_error(
            GREETING,
            &[(
                Q,
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"invalid net client name: x\"}, \"id\": {id}}\n",
            )],
            Some("x"),
        );
        assert!(
            e.contains("qmp-nic=x") && e.contains("invalid net client"),
            "{e}"
        );
        // The NIC resolves, but its entry is garbage: refused, nothing applied.
        let e = session_error(
            GREETING,
            &[(
                Q,
                "{\"return\": [{\"name\": \"x\", \"promiscuous\": 1}], \"id\": {id}}\n",
            )],
            Some("x"),
        );
        assert!(e.contains("query-rx-filter field"), "{e}");
        // A netdev id whose NIC has no id cannot be resolved.
        let e = session_error(
            GREETING,
            &[
                (
                    Q,
                    "{\"error\": {\"class\": \"GenericError\", \"desc\": \"net client(n) isn't a NIC\"}, \"id\": {id}}\n",
                ),
                ("qom-list", "{\"return\": [], \"id\": {id}}\n"),
            ],
            Some("n"),
        );
        assert!(e.contains("add id=NAME"), "{e}");
        // A line that never ends.
        let (a, mut b) = UnixStream::pair().unwrap();
        let w = std::thread::spawn(move || {
            let _ = b.write_all(GREETING.as_bytes());
            let _ = b.write_all(&vec![b'x'; MAX_LINE + 2]);
            b
        });
        let mut conn = Conn::new(a).unwrap();
        conn.greeting().unwrap();
        let e = loop {
            match conn.next_message() {
                Ok(None) => continue,
                r => break r.unwrap_err(),
            }
        };
        assert!(matches!(e, QmpError::LineTooLong), "{e}");
        drop(conn);
        drop(w.join());
    }

    #[test]
    fn several_nics_need_qmp_nic() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut i2 = info();
        i2["name"] = json!("virtio-net-pci.1");
        let list = json!([info(), i2]);
        let _peer = peer(b, GREETING, move |cmd| {
            let r = match cmd["execute"].as_str() {
                Some("query-rx-filter") => list.clone(),
                _ => json!({}),
            };
            vec![format!("{{\"return\": {r}, \"id\": {{id}}}}\n")]
        });
        let sink = recorder(1);
        let mut conn = Conn::new(a).unwrap();
        let mut reached = Reached::Connected;
        let e = session(
            &mut conn,
            &spec(None),
            &sink,
            &QmpCounters::default(),
            &mut reached,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("2 NICs (nic0, virtio-net-pci.1)") && e.contains("qmp-nic"),
            "{e}"
        );
    }

    #[test]
    fn watcher_reconnects_until_the_port_goes() {
        let dir = std::env::temp_dir().join(format!("rs-qmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.sock");
        let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let sink = recorder(usize::MAX);
        let counters = Arc::new(QmpCounters::default());
        let (s2, c2) = (sink.clone(), counters.clone());
        let spec = QmpSpec {
            path: path.display().to_string(),
            nic: None,
        };
        let t = std::thread::spawn(move || watch(&spec, &s2, &c2));
        // Two connections, each answered with garbage: the watcher comes back.
        for _ in 0..2 {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(b"garbage\n").unwrap();
        }
        sink.dead.store(true, Ordering::Relaxed);
        t.join().unwrap();
        assert!(counters.connects.load(Ordering::Relaxed) >= 2);
        assert!(counters.errors.load(Ordering::Relaxed) >= 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
