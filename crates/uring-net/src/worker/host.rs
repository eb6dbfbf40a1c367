//! Host ports: the tap and AF_PACKET queues this worker owns a share of. Each `Queue`
//! receives with one multishot read/recv into its provided-buffer ring (`arm_rx`), and a
//! received frame (`on_rx`, located by `locate_frame`) is decided and written on from the
//! rx buffer where it landed; the buffer goes back to the ring (`recycle`) when its last
//! write completes. Adding and removing ports lives here too.
//!
//! Kept apart because the rx buffer's lifetime (the kernel's, then ours until the last
//! reference is gone) is this file's one invariant, and every `// SAFETY:` that leans on
//! it is here.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use io_uring::{cqueue, opcode, types};
use switch::{Decision, Millis, PortId, SwitchView, VnetHdr};

use super::guest::AfterFlush;
use super::write::{host_write_spec, Src, TxOp};
use super::{ud, QueueKind, Worker, MAX_RX_ERRORS, TAG_CANCEL, TAG_RX};
use crate::bufring::BufRing;
use crate::error::{Error, Result};
use crate::sys::auxdata::{reinsert_vlan, vlan_from_control};
use crate::vxlan::VxlanPort;
use switch::bytes::Seg;
use switch::vnet::HDR_LEN;

/// sizeof(struct tpacket_auxdata).
const AUXDATA_LEN: u32 = 20;

pub(super) struct Queue {
    pub(super) port: PortId,
    pub(super) kind: QueueKind,
    pub(super) fd: OwnedFd,
    /// recvmsg template for AF_PACKET (room for PACKET_AUXDATA); stable address.
    pub(super) msg: Box<libc::msghdr>,
    pub(super) rx: BufRing,
    /// Outstanding writes per rx buffer id.
    pub(super) refs: Box<[u16]>,
    pub(super) armed: bool,
    pub(super) inflight: u32,
    pub(super) closing: bool,
    pub(super) dirty: bool,
    /// Receive errors in a row; past `MAX_RX_ERRORS` the queue stops receiving (an fd
    /// whose device vanished would otherwise fail, re-arm and wake us forever).
    rx_errors: u32,
    /// Receiving stopped after persistent errors (writes still go out).
    rx_stopped: bool,
    /// A VXLAN port's shared state (its send sockets stay open while a write is in
    /// flight because the queue holds it until it is finalized).
    pub(super) vx: Option<Arc<VxlanPort>>,
}
impl Worker {
    pub(super) fn on_rx(
        &mut self,
        view: &SwitchView<'_>,
        now: Millis,
        qi: u16,
        res: i32,
        flags: u32,
    ) {
        let Some(Some(q)) = self.queues.get_mut(qi as usize) else {
            return;
        };
        if !cqueue::more(flags) {
            q.armed = false;
        }
        let port = q.port;
        let Some(bid) = cqueue::buffer_select(flags) else {
            if res == -libc::ENOBUFS {
                self.stats.ports[port.index()].rx_enobufs.add(1);
            } else if res < 0 && res != -libc::ECANCELED {
                self.stats.ports[port.index()].rx_errors.add(1);
                q.rx_errors += 1;
                if q.rx_errors == MAX_RX_ERRORS {
                    q.rx_stopped = true;
                    tracing::error!(%port, "receive keeps failing (errno {}): queue stopped", -res);
                } else if let Some(s) = self.log_rx.check(self.now()) {
                    tracing::warn!(%port, suppressed = s, "receive failed: errno {}", -res);
                }
            }
            return;
        };
        q.rx.consumed();
        q.rx_errors = 0;
        let closing = q.closing;
        if q.vx.is_some() {
            let mut frames = std::mem::take(&mut self.vx_rx);
            // Borrowed, not cloned: an Arc clone per receive is an atomic pair on a line
            // every worker shares.
            if let Some(q) = self.queues.get(qi as usize).and_then(Option::as_ref) {
                if let Some(vx) = &q.vx {
                    super::vxlan::locate_vxlan(q, vx, bid, res, now, &mut frames);
                }
            }
            if frames.is_empty() && !closing {
                self.stats.ports[port.index()].drop_bad_frame.add(1);
            }
            if !closing {
                for f in &frames {
                    let Some(base) = self
                        .queues
                        .get(qi as usize)
                        .and_then(Option::as_ref)
                        .and_then(|q| q.rx.buf_ptr(bid))
                    else {
                        break;
                    };
                    // SAFETY: `locate_vxlan` keeps every frame (and an in-place header
                    // before it) inside buffer `bid`, which is ours until recycled (see
                    // below); the slice does not outlive this loop.
                    let frame = unsafe { std::slice::from_raw_parts(base.add(f.start), f.len) };
                    let whole = f.hdr_in_place.then(|| {
                        // SAFETY: as above; the in-place header is the HDR_LEN bytes
                        // before the frame, inside the buffer.
                        unsafe {
                            std::slice::from_raw_parts(base.add(f.start - HDR_LEN), f.len + HDR_LEN)
                        }
                    });
                    self.forward_host_frame(view, now, qi, bid, port, &f.hdr, frame, whole);
                }
            }
            self.vx_rx = frames;
        } else {
            let located = locate_frame(q, bid, res);
            if closing {
                self.recycle(qi, bid);
                return;
            }
            let c = &self.stats.ports[port.index()];
            let Some((ptr, len)) = located else {
                c.drop_bad_frame.add(1);
                self.recycle(qi, bid);
                return;
            };
            // SAFETY: the buffer belongs to this queue's ring, which is only dropped in
            // `finalize` after every reference (refs[bid]) is gone; the kernel will not
            // write it again before we push `bid` back. The slice does not outlive this
            // function.
            let buf: &[u8] = unsafe { std::slice::from_raw_parts(ptr, len) };
            let Ok(hdr) = VnetHdr::parse(buf, HDR_LEN) else {
                c.drop_bad_frame.add(1);
                self.recycle(qi, bid);
                return;
            };
            self.forward_host_frame(view, now, qi, bid, port, &hdr, &buf[HDR_LEN..], Some(buf));
        }
        let held =
            matches!(self.queues.get(qi as usize), Some(Some(q)) if q.refs[bid as usize] > 0);
        if !held {
            self.recycle(qi, bid);
        }
    }

    /// Decides and writes on one frame received into buffer `bid` of queue `qi`: `frame`
    /// (the Ethernet bytes) described by `hdr`; `whole`, when the buffer holds the header
    /// right before the frame, is both together (written as is when nothing changes).
    /// Every write or staging that keeps the buffer takes a reference (refs[bid]).
    #[allow(clippy::too_many_arguments)]
    fn forward_host_frame(
        &mut self,
        view: &SwitchView<'_>,
        now: Millis,
        qi: u16,
        bid: u16,
        port: PortId,
        hdr: &VnetHdr,
        frame: &[u8],
        whole: Option<&[u8]>,
    ) {
        let c = &self.stats.ports[port.index()];
        c.rx_packets.add(1);
        c.rx_bytes.add(frame.len() as u64);
        self.stats.worker.packets.add(1);
        let hdr = *hdr;
        let mut staged = false;
        if let Decision::Forward(fwd) = view.decide(port, &hdr, frame, frame.len(), now) {
            for dest in fwd.ports.iter() {
                if let Err(why) = view.check_mtu(dest, &hdr, &fwd, frame) {
                    self.sw.count_drop(port, why);
                    continue;
                }
                let eg = view.egress(dest, &fwd, frame);
                if self.guest_rx[dest.index()].is_some() {
                    // Staged like a guest's frame and placed at the end of this batch of
                    // completions, one burst per destination: the one RX path. The egress
                    // head is copied into the stage; the body stays in our buffer, which
                    // is held (refs[bid]) until the stage is flushed.
                    let (head, body) = if eg.is_identity(frame) {
                        (&[][..], frame)
                    } else {
                        (
                            eg.head(),
                            frame.get(usize::from(eg.body_offset)..).unwrap_or(&[]),
                        )
                    };
                    let flow = crate::flow::flow_hash(&fwd, frame);
                    // `body` lies inside one receive buffer (`rx_buf_size`, a u32).
                    #[allow(clippy::cast_possible_truncation)]
                    let seg = Seg {
                        addr: body.as_ptr() as u64,
                        len: body.len() as u32,
                    };
                    // SAFETY: the buffer stays mapped and is not rewritten by the kernel
                    // until it is recycled, which happens only after its staged
                    // deliveries are flushed (`AfterFlush::Recycle`, refs[bid] below).
                    unsafe {
                        self.stage
                            .push(dest, port, eg.adjust_hdr(&hdr), flow, [head, &[]], [seg]);
                    }
                    staged = true;
                    continue;
                }
                let src = Src::Host { q: qi, bid };
                let spec = |op: &mut TxOp| host_write_spec(op, whole, &hdr, frame, &eg);
                if self.write_to(port, dest, src, spec) {
                    if let Some(Some(q)) = self.queues.get_mut(qi as usize) {
                        q.refs[bid as usize] = q.refs[bid as usize].saturating_add(1);
                    }
                }
            }
        }
        if staged {
            if let Some(Some(q)) = self.queues.get_mut(qi as usize) {
                q.refs[bid as usize] = q.refs[bid as usize].saturating_add(1);
                self.after_flush.push(AfterFlush::Recycle { q: qi, bid });
            }
        }
    }

    /// One holder of receive buffer `bid` of queue `q` (a write or the stage) is done
    /// with it; the last one gives it back to the ring.
    pub(super) fn host_buffer_ref_done(&mut self, q: u16, bid: u16) {
        let done = match self.queues.get_mut(q as usize) {
            Some(Some(qq)) => {
                let r = &mut qq.refs[bid as usize];
                *r = r.saturating_sub(1);
                *r == 0
            }
            _ => false,
        };
        if done {
            self.recycle(q, bid);
        }
    }

    pub(super) fn recycle(&mut self, qi: u16, bid: u16) {
        if let Some(Some(q)) = self.queues.get_mut(qi as usize) {
            q.rx.push(bid);
            q.dirty = true;
        }
    }

    pub(super) fn arm_rx(&mut self, qi: u16) {
        let Some(Some(q)) = self.queues.get_mut(qi as usize) else {
            return;
        };
        if q.armed || q.closing || q.rx_stopped || q.rx.in_kernel() == 0 {
            return;
        }
        let fd = types::Fd(q.fd.as_raw_fd());
        let e = match q.kind {
            QueueKind::Tap => opcode::ReadMulti::new(fd, 0, q.rx.bgid()).build(),
            QueueKind::Packet | QueueKind::Vxlan => {
                opcode::RecvMsgMulti::new(fd, &*q.msg, q.rx.bgid()).build()
            }
        };
        let e = e.user_data(ud(TAG_RX, qi as u64));
        let ok = self.push(e);
        if let Some(Some(q)) = self.queues.get_mut(qi as usize) {
            q.armed = ok;
        }
    }

    pub(super) fn add_queue(
        &mut self,
        port: PortId,
        kind: QueueKind,
        fd: OwnedFd,
        vx: Option<Arc<VxlanPort>>,
    ) -> Result<()> {
        let qi = match self.queues.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.queues.push(None);
                self.queues.len() - 1
            }
        };
        // The queue index is the buffer group id (u16) and the CQE tag's index.
        let Ok(qi16) = u16::try_from(qi) else {
            return Err(Error::BufRing(std::io::Error::other(
                "more than 65536 host queues",
            )));
        };
        let mut rx = BufRing::new(self.cfg.rx_buffers, self.cfg.rx_buf_size, qi16)
            .map_err(Error::BufRing)?;
        rx.register(&self.ring.submitter())
            .map_err(Error::BufRing)?;
        let refs = vec![0u16; rx.entries() as usize].into_boxed_slice();
        // SAFETY: msghdr is plain old data; all-zero is valid.
        let mut msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: CMSG_SPACE is pure arithmetic.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(AUXDATA_LEN) } as usize;
        if kind == QueueKind::Vxlan {
            // The source address names the VTEP; the control data, UDP_GRO's segment
            // size.
            *msg = crate::vxlan::decap::recv_msghdr_gro();
        }
        self.queues[qi] = Some(Queue {
            port,
            kind,
            fd,
            msg,
            rx,
            refs,
            armed: false,
            inflight: 0,
            closing: false,
            dirty: false,
            rx_errors: 0,
            rx_stopped: false,
            vx,
        });
        self.by_port[port.index()] = Some(qi16);
        self.arm_rx(qi16);
        Ok(())
    }

    pub(super) fn remove_port(&mut self, port: PortId) {
        if let Some(e) = self.guest_rx.get_mut(port.index()) {
            *e = None;
        }
        self.rx_touched.remove(port);
        if let Some(qi) = self.by_port.get_mut(port.index()).and_then(Option::take) {
            if let Some(Some(q)) = self.queues.get_mut(qi as usize) {
                q.closing = true;
                if q.armed {
                    let e = opcode::AsyncCancel::new(ud(TAG_RX, qi as u64))
                        .build()
                        .user_data(ud(TAG_CANCEL, 0));
                    let _ = self.push(e); // a failed cancel leaves the queue armed until the ring is closed
                }
            }
        }
        for gi in 0..self.guests.len() {
            if matches!(&self.guests[gi], Some(g) if g.port == port && !g.closing) {
                self.close_guest(gi);
            }
        }
    }
}
/// Where the frame (vnet header first) of a completed receive lies in buffer `bid`, after
/// putting back an out-of-band VLAN tag on AF_PACKET. `None`: runt, possibly truncated or
/// malformed (a counted drop).
fn locate_frame(q: &Queue, bid: u16, res: i32) -> Option<(*const u8, usize)> {
    let len = usize::try_from(res).ok()?;
    let base = q.rx.buf_ptr(bid)?;
    let buf_size = q.rx.buf_size() as usize;
    if len > buf_size {
        return None;
    }
    let (start, flen) = match q.kind {
        QueueKind::Tap => {
            // A read that fills the whole buffer may have been cut short.
            if len >= buf_size {
                return None;
            }
            (0, len)
        }
        // VXLAN queues are located by `vxlan::locate_vxlan`.
        QueueKind::Packet | QueueKind::Vxlan => {
            // SAFETY: the kernel filled `len` bytes of our buffer and handed it back; nothing
            // else references it until it is pushed back to the ring.
            let b = unsafe { std::slice::from_raw_parts_mut(base, len) };
            let out = types::RecvMsgOut::parse(b, &q.msg).ok()?;
            if out.is_payload_truncated() || out.is_control_data_truncated() {
                return None;
            }
            let start = out.payload_data().as_ptr() as usize - base as usize;
            let plen = out.payload_data().len();
            match vlan_from_control(out.control_data()) {
                Some((tpid, tci)) => reinsert_vlan(b, start, plen, tpid, tci)?,
                None => (start, plen),
            }
        }
    };
    if flen < HDR_LEN + 14 {
        return None;
    }
    // SAFETY: `start + flen <= len <= buf_size`, inside buffer `bid`.
    Some((unsafe { base.add(start) } as *const u8, flen))
}
