//! Guest TX queues (vhost-user): the `GuestQ`s this worker services, their kicks
//! (`arm_kick`), popping and deciding their frames (`service_guests`,
//! `forward_guest_frame`), handing each to its destinations (`deliver_guest_frame`:
//! host ports get a write, guests get a staged delivery placed by `flush_stage`), and
//! completing the guest's descriptors once nothing reads the frame any more
//! (`GuestInFlight`, `complete_guest`, `guest_frame_ref_done`). Delivery into a guest's
//! RX side (`deliver_to_guest`), attaching and detaching live here too.
//!
//! Kept apart because guest memory is shared with a guest that may rewrite it at any
//! time: what a decision rests on comes from the private head copy, and a frame's pages
//! are read only until it is completed. Both rules belong to this file's code.

use crossbeam_channel::Sender;
use io_uring::{opcode, types};
use switch::{Decision, DropReason, Millis, Offloads, PortId, SwitchView, VnetHdr};

use super::write::{copy_frame, guest_write_spec, Src, TxOp};
use super::{ud, Worker, MAX_RX_ERRORS, TAG_CANCEL, TAG_KICK};
use crate::guest::{GuestFrame, GuestTxQueue};
use switch::bytes::{skip_segs, Seg};
use switch::vnet::HDR_LEN;

/// Heads longer than this are staged by address rather than copied into the stage.
const STAGE_BY_ADDR_MIN: usize = 128;

/// How long a guest TX queue whose frames found a full destination gets its descriptors
/// back only at batch ends (backpressure; see `service_guests`).
const HOLD_MS: u64 = 2;

/// Guest frames popped per kick round.
pub(super) const GUEST_BATCH: usize = 64;

/// Pop rounds per guest queue before the worker turns to its other work: a guest that
/// keeps its TX ring full must not starve the other queues (it is serviced again at once,
/// without sleeping, after one pass over the ring's completions).
const GUEST_BUDGET: usize = 4;

pub(super) struct GuestQ {
    pub(super) port: PortId,
    /// Which of the port's TX queues this is (the caller's key, e.g. the queue pair).
    key: u64,
    pub(super) q: Box<dyn GuestTxQueue>,
    /// Told when the queue is gone (every frame completed) after a detach.
    pub(super) on_closed: Option<Sender<()>>,
    /// Frames were completed in this batch: flush (signal the guest) at its end.
    pub(super) completed: bool,
    kick_buf: Box<u64>,
    pub(super) armed: bool,
    pub(super) closing: bool,
    pub(super) inflight: u32,
    pub(super) kicked: bool,
    /// Popped with [`GuestTxQueue::poll`] during a poll window, so the guest may not kick
    /// for new frames: serviced on every pass, and armed before the worker sleeps.
    pub(super) polled: bool,
    /// Until this time (ms) completed descriptors go back only at batch ends: one of the
    /// queue's frames recently found its destination full (see `service_guests`).
    hold_until: u64,
    /// Kick reads failing in a row (a closed or bogus kick fd); past MAX_RX_ERRORS the
    /// queue stops waiting for kicks instead of spinning.
    pub(super) kick_errors: u32,
}

pub(super) struct GuestInFlight {
    gq: u16,
    token: u64,
    refs: u16,
}

/// What becomes of a source frame with staged deliveries once the stage is flushed.
pub(super) enum AfterFlush {
    /// Guest destinations only: complete its descriptor.
    Complete { gq: u16, token: u64 },
    /// Host writes hold it too: drop the slot's queuing reference.
    Release(u32),
    /// A tap/AF_PACKET receive buffer with staged deliveries: drop their reference
    /// (the buffer goes back to its ring once no write holds it either).
    Recycle { q: u16, bid: u16 },
}
impl Worker {
    pub(super) fn guest_frame_ref_done(&mut self, slot: u32) {
        let Some(e) = self.gframes.get_mut(slot as usize) else {
            return;
        };
        let finished = match e {
            Some(g) => {
                g.refs = g.refs.saturating_sub(1);
                g.refs == 0
            }
            None => false,
        };
        if finished {
            if let Some(g) = e.take() {
                self.free_gframes.push(slot);
                self.complete_guest(g.gq, g.token);
            }
        }
    }

    fn complete_guest(&mut self, gq: u16, token: u64) {
        if let Some(Some(g)) = self.guests.get_mut(gq as usize) {
            g.inflight = g.inflight.saturating_sub(1);
            g.completed = true;
            g.q.complete(token);
        }
    }

    /// Pops and forwards frames from every kicked (or, in a poll window, polled) guest TX
    /// queue, at most `GUEST_BUDGET` rounds each; a queue with frames left stays kicked.
    /// Returns the frames popped.
    pub(super) fn service_guests(&mut self, view: &SwitchView<'_>, now: Millis) -> usize {
        self.guest_backlog = false;
        let mut total = 0;
        let polling = self.polling;
        for (gi, gi16) in (0..self.guests.len()).zip(0u16..) {
            let Some(Some(g)) = self.guests.get_mut(gi) else {
                continue;
            };
            if !(g.kicked || g.polled) || g.closing {
                continue;
            }
            g.kicked = false;
            // Inside a poll window the queue stays without notifications (see
            // `TxRing::poll`); outside, a pop that drains it re-arms them itself.
            g.polled = polling;
            let mut popped = std::mem::take(&mut self.popped);
            let mut rounds = 0;
            loop {
                popped.clear();
                let Some(Some(g)) = self.guests.get_mut(gi) else {
                    break;
                };
                if rounds == GUEST_BUDGET {
                    g.kicked = true;
                    self.guest_backlog = true;
                    break;
                }
                rounds += 1;
                if polling {
                    g.q.poll(GUEST_BATCH, &mut popped);
                } else {
                    g.q.pop(GUEST_BATCH, &mut popped);
                }
                if popped.is_empty() {
                    break;
                }
                let round = popped.len();
                // A round's frames are mostly one conversation (SwitchView::decide_cached);
                // nothing is reused across rounds.
                self.decisions.clear();
                // By reference: a GuestFrame is ~800 bytes, moving each one costs a memcpy.
                for f in popped.frames() {
                    self.forward_guest_frame(view, now, gi16, f);
                }
                // Before the next pop: the staged frames' descriptors complete after it.
                let all_placed = self.flush_stage(view);
                // Give completed descriptors back now, not at the end of the whole batch,
                // so a sender whose ring we just drained can refill it while we work on —
                // but only while its frames find room: for HOLD_MS after a destination was
                // full, returning descriptors later is the backpressure that slows the
                // sender instead of feeding more drops (measured: with three busy-polling
                // processes on two cores, publishing regardless cut the sink's rate from
                // ≈ 1.1 to ≈ 0.6 Mpps; with a keeping-up sink it lifts throughput by up
                // to 1.9×). The guest is signalled (if it wants) once, at the batch end.
                if let Some(Some(g)) = self.guests.get_mut(gi) {
                    if !all_placed {
                        g.hold_until = now.0 + HOLD_MS;
                    } else if now.0 >= g.hold_until {
                        // Frames that found room keep a poll window open, unless the worker
                        // shares its core with the processes it serves (crate::share).
                        if !self.share.contended() {
                            total += round;
                        }
                        if g.completed {
                            g.q.publish();
                        }
                    }
                }
            }
            self.popped = popped;
        }
        total
    }

    /// Decides one popped guest frame and hands it to every destination.
    ///
    /// What the decision rests on — the virtio-net header, the addresses, the VLAN tag,
    /// the EtherType and the L3/L4 headers — is the private head copy made at pop time,
    /// and every destination gets exactly those bytes from that copy: only the bytes
    /// past it are read from guest memory again. A second vCPU rewriting the frame after
    /// the decision can therefore change only payload bytes the switch never looked at;
    /// it cannot retag the frame (a VLAN hop) or smuggle an offload past the check.
    fn forward_guest_frame(&mut self, view: &SwitchView<'_>, now: Millis, gi: u16, f: &GuestFrame) {
        let Some(Some(g)) = self.guests.get_mut(gi as usize) else {
            return;
        };
        let port = g.port;
        g.inflight += 1;
        let c = &self.stats.ports[port.index()];
        let head = f.head();
        let hdr = match VnetHdr::parse(head, HDR_LEN) {
            Ok(h) if f.len() as usize >= HDR_LEN + 14 => h,
            _ => {
                c.drop_bad_frame.add(1);
                self.complete_guest(gi, f.token);
                return;
            }
        };
        let frame_len = f.len() as usize - HDR_LEN;
        c.rx_packets.add(1);
        c.rx_bytes.add(frame_len as u64);
        self.stats.worker.packets.add(1);
        let fhead = &head[HDR_LEN..];
        let tpid = view.port(port).map_or(switch::vlan::TPID_8021Q, |p| p.tpid);
        // Snooping control packets (an MLDv2 report can exceed the head copy) are decided
        // on a private copy of the whole frame, and sent from it: rare and small.
        let mut whole = std::mem::take(&mut self.whole);
        whole.clear();
        let decided = if switch::needs_whole_frame(fhead, frame_len, tpid) {
            copy_frame(f, &mut whole);
            view.decide(port, &hdr, &whole, frame_len, now)
        } else {
            view.decide_cached(&mut self.decisions, port, &hdr, fhead, frame_len, now)
        };
        // The frame's private bytes: the whole frame, or its head copy (which lives in
        // `f`, and so stays put until the stage is flushed).
        let (private, in_frame): (&[u8], bool) = if whole.is_empty() {
            (fhead, true)
        } else {
            (&whole, false)
        };
        match decided {
            Decision::Forward(fwd) => {
                self.deliver_guest_frame(view, gi, f, &hdr, private, in_frame, &fwd)
            }
            Decision::Drop(_) => self.complete_guest(gi, f.token),
        }
        self.whole = whole;
    }

    /// [`forward_guest_frame`](Self::forward_guest_frame)'s delivery: `private` is the
    /// frame's first bytes as decided on (the rest follows in guest memory); `in_frame`
    /// says they are `f`'s own head copy rather than a scratch copy of the whole frame.
    #[allow(clippy::too_many_arguments)]
    fn deliver_guest_frame(
        &mut self,
        view: &SwitchView<'_>,
        gi: u16,
        f: &GuestFrame,
        hdr: &VnetHdr,
        private: &[u8],
        in_frame: bool,
        fwd: &switch::Forward,
    ) {
        let Some(Some(g)) = self.guests.get(gi as usize) else {
            return;
        };
        let port = g.port;
        let flow = crate::flow::flow_hash(fwd, private);
        // Guest memory past the private bytes (and past the guest's own header copy).
        let guest_skip = f.seg_hdr() + private.len();
        // The in-flight slot (a reference count across completions) is taken only for a
        // host destination; deliveries into guests are staged and complete with the flush
        // (`after_flush`), so the common guest→guest frame skips the slot altogether.
        let mut slot: Option<u32> = None;
        let mut staged = false;
        for dest in fwd.ports.iter() {
            if let Err(why) = view.check_mtu(dest, hdr, fwd, private) {
                self.sw.count_drop(port, why);
                continue;
            }
            let eg = view.egress(dest, fwd, private);
            if self.guest_rx[dest.index()].is_some() {
                let h = eg.adjust_hdr(hdr);
                // The stage copies what it is given as bytes; the head copy inside `f` is
                // handed over by address instead (a 256-byte copy per frame and
                // destination saved: 4.4 % of the 1500-byte guest→guest profile). An
                // untouched head needs no rewritten L2 bytes either.
                let (l2, body) = if eg.is_identity(private) {
                    (&[][..], private)
                } else {
                    (
                        eg.head(),
                        private.get(usize::from(eg.body_offset)..).unwrap_or(&[]),
                    )
                };
                // A short head is copied: for a 64-byte frame the copy is cheaper than
                // a second part the RX placement walks (and the popped batch's cold
                // lines it would read from at flush).
                let (copied, by_addr) = if in_frame && body.len() > STAGE_BY_ADDR_MIN {
                    let seg = Seg {
                        addr: body.as_ptr() as u64,
                        len: u32::try_from(body.len()).unwrap_or(0),
                    };
                    ([l2, &[][..]], Some(seg).filter(|s| s.len > 0))
                } else {
                    ([l2, body], None)
                };
                // SAFETY: `GuestTxQueue` guarantees a popped frame's segments stay mapped
                // and readable until it is completed; a frame with a staged delivery is
                // completed only after the stage is flushed (`after_flush`). `by_addr`
                // points into `f`, which stays in the popped batch, unmoved and unchanged,
                // until that flush (`service_guests` flushes before the next pop).
                unsafe {
                    self.stage.push(
                        dest,
                        port,
                        h,
                        flow,
                        copied,
                        by_addr
                            .into_iter()
                            .chain(skip_segs(f.segs().iter().copied(), guest_skip)),
                    );
                }
                staged = true;
                continue;
            }
            let s = match slot {
                Some(s) => s,
                None => {
                    let Some(s) = self.free_gframes.pop() else {
                        self.stats.ports[dest.index()].drop_dest_full.add(1);
                        self.sw.count_drop(port, DropReason::DestinationFull);
                        continue;
                    };
                    self.gframes[s as usize] = Some(GuestInFlight {
                        gq: gi,
                        token: f.token,
                        refs: 1, // held while queuing (and staged), released below
                    });
                    slot = Some(s);
                    s
                }
            };
            let spec = |op: &mut TxOp| guest_write_spec(op, f, hdr, private, &eg);
            if self.write_to(port, dest, Src::Guest { slot: s }, spec) {
                if let Some(Some(e)) = self.gframes.get_mut(s as usize) {
                    e.refs += 1;
                }
            }
        }
        match (staged, slot) {
            (true, None) => self.after_flush.push(AfterFlush::Complete {
                gq: gi,
                token: f.token,
            }),
            (true, Some(s)) => self.after_flush.push(AfterFlush::Release(s)),
            (false, Some(s)) => self.guest_frame_ref_done(s),
            (false, None) => self.complete_guest(gi, f.token),
        }
    }

    /// Places the staged frames (one burst per destination), counts each under what
    /// became of it, and then completes or releases the source frames and buffers.
    /// Returns whether every staged frame found room.
    pub(super) fn flush_stage(&mut self, view: &SwitchView<'_>) -> bool {
        let mut all_placed = true;
        if !self.stage.is_empty() {
            let mut stage = std::mem::take(&mut self.stage);
            stage.flush(
                |dest| {
                    let rx = self.guest_rx[dest.index()].as_deref()?;
                    Some((rx, view.port(dest).map_or(Offloads::NONE, |c| c.offloads)))
                },
                |e, bytes, delivery| {
                    let c = &self.stats.ports[e.dest.index()];
                    match delivery {
                        Ok(()) => {
                            c.tx_packets.add(1);
                            c.tx_bytes.add(bytes);
                            self.rx_touched.insert(e.dest);
                        }
                        Err(why) => {
                            if why == DropReason::DestinationFull {
                                all_placed = false;
                                c.drop_dest_full.add(1);
                            }
                            self.sw.count_drop(e.ingress, why);
                        }
                    }
                },
            );
            self.stage = stage;
        }
        let mut after = std::mem::take(&mut self.after_flush);
        for a in after.drain(..) {
            match a {
                AfterFlush::Complete { gq, token } => self.complete_guest(gq, token),
                AfterFlush::Release(slot) => self.guest_frame_ref_done(slot),
                AfterFlush::Recycle { q, bid } => self.host_buffer_ref_done(q, bid),
            }
        }
        self.after_flush = after;
        all_placed
    }

    pub(super) fn arm_kick(&mut self, gi: usize) {
        let Some(Some(g)) = self.guests.get_mut(gi) else {
            return;
        };
        if g.armed || g.closing || g.kick_errors >= MAX_RX_ERRORS {
            return;
        }
        let e = opcode::Read::new(
            types::Fd(g.q.kick_fd()),
            (&mut *g.kick_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(ud(TAG_KICK, gi as u64));
        let ok = self.push(e);
        if let Some(Some(g)) = self.guests.get_mut(gi) {
            g.armed = ok;
        }
    }

    /// Attaches a guest TX queue.
    pub(super) fn attach_guest(&mut self, port: PortId, key: u64, q: Box<dyn GuestTxQueue>) {
        let gi = match self.guests.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.guests.push(None);
                self.guests.len() - 1
            }
        };
        self.guests[gi] = Some(GuestQ {
            port,
            key,
            q,
            on_closed: None,
            completed: false,
            kick_buf: Box::new(0),
            armed: false,
            closing: false,
            inflight: 0,
            // Frames may already be queued: look once without waiting for a kick.
            kicked: true,
            polled: false,
            kick_errors: 0,
            hold_until: 0,
        });
        self.arm_kick(gi);
    }

    /// Stops one guest TX queue: no more pops; `reply` is told once every frame popped
    /// from it has completed and the queue object is dropped (at once if it is not here).
    pub(super) fn detach_guest(&mut self, port: PortId, key: u64, reply: Sender<()>) {
        let found = self
            .guests
            .iter()
            .position(|g| matches!(g, Some(g) if g.port == port && g.key == key && !g.closing));
        let Some(gi) = found else {
            let _ = reply.send(());
            return;
        };
        if let Some(Some(g)) = self.guests.get_mut(gi) {
            g.on_closed = Some(reply);
        }
        self.close_guest(gi);
        self.finalize();
    }

    pub(super) fn close_guest(&mut self, gi: usize) {
        let Some(Some(g)) = self.guests.get_mut(gi) else {
            return;
        };
        g.closing = true;
        if g.armed {
            let e = opcode::AsyncCancel::new(ud(TAG_KICK, gi as u64))
                .build()
                .user_data(ud(TAG_CANCEL, 0));
            let _ = self.push(e);
        }
    }
}
