//! Control commands from [`crate::Dataplane`]: the Read of the worker's wake eventfd that
//! tells it commands are queued (`arm_wake`), running them (`on_commands`), and the
//! shutdown teardown that cancels everything and waits until the kernel holds no
//! reference to the worker's memory (`teardown`).
//!
//! Kept apart because it is the worker's control path, not its data path: it runs once
//! per command, and what it changes (ports, queues, guest memory) is done by the
//! per-concern files it calls.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, types};
use std::sync::Arc;

use switch::vlan::TPID_8021Q;
use switch::{Forward, FrameView, PortId, VnetHdr};

use super::write::{owned_write_spec, Src};
use super::{ud, Cmd, Worker, TAG_CANCEL, TAG_KICK, TAG_RX, TAG_SHIFT, TAG_TX, TAG_WAKE};

impl Worker {
    pub(super) fn arm_wake(&mut self) {
        if self.wake_armed || self.shutdown {
            return;
        }
        let e = opcode::Read::new(
            types::Fd(self.wake.as_raw_fd()),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(ud(TAG_WAKE, 0));
        self.wake_armed = self.push(e);
    }

    /// Floods a frame the switch originates to every port of `vid` that accepts it,
    /// tagged as each port's VLAN mode says, through the paths received frames take:
    /// staged into guests (and adapted to their offloads by their RX side), written to
    /// taps and AF_PACKET ports from a private copy in the op (`Src::Owned`).
    fn inject(&mut self, frame: &[u8], vid: switch::Vid) {
        let sw = Arc::clone(&self.sw);
        let view = sw.view();
        let Ok(fv) = FrameView::parse(frame, frame.len(), TPID_8021Q, false) else {
            return;
        };
        let fwd = Forward {
            vid,
            ports: view.flood_ports(vid, &fv.dst),
            frame: fv,
        };
        // No ingress port: drops are counted on the destination only.
        let ingress = PortId(u16::MAX);
        let hdr = VnetHdr::default();
        for dest in fwd.ports.iter() {
            // The querier's frames are small; a port below their size gets none.
            if view.check_mtu(dest, &hdr, &fwd, frame).is_err() {
                continue;
            }
            let eg = view.egress(dest, &fwd, frame);
            let body = frame.get(usize::from(eg.body_offset)..).unwrap_or(&[]);
            if self.guest_rx[dest.index()].is_some() {
                // SAFETY: no guest memory: the frame is copied into the stage's arena.
                unsafe {
                    self.stage.push(
                        dest,
                        ingress,
                        eg.adjust_hdr(&hdr),
                        0,
                        [eg.head(), body],
                        std::iter::empty(),
                    );
                }
                continue;
            }
            let _ = self.write_to(ingress, dest, Src::Owned, |op| {
                owned_write_spec(op, &hdr, &eg, body)
            });
        }
        if !self.stage.is_empty() {
            self.flush_stage(&view);
        }
    }

    pub(super) fn on_commands(&mut self) {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Cmd::AddQueue {
                    port,
                    kind,
                    fd,
                    vxlan,
                    reply,
                } => {
                    let r = self.add_queue(port, kind, fd, vxlan);
                    let _ = reply.send(r);
                }
                Cmd::AttachGuestTx {
                    port,
                    key,
                    queue,
                    reply,
                } => {
                    self.attach_guest(port, key, queue);
                    let _ = reply.send(Ok(()));
                }
                Cmd::DetachGuestTx { port, key, reply } => self.detach_guest(port, key, reply),
                Cmd::AttachGuestRx { port, sink, reply } => {
                    if let Some(e) = self.guest_rx.get_mut(port.index()) {
                        *e = Some(sink);
                    }
                    let _ = reply.send(());
                }
                Cmd::RemovePort { port, reply } => {
                    self.remove_port(port);
                    let _ = reply.send(());
                }
                Cmd::Inject { frame, vid } => self.inject(&frame, vid),
                Cmd::Shutdown => self.shutdown = true,
            }
        }
    }

    /// Cancels everything and waits until the kernel holds no reference to our memory.
    pub(super) fn teardown(&mut self) {
        let ports: Vec<PortId> = self
            .queues
            .iter()
            .flatten()
            .map(|q| q.port)
            .chain(self.guests.iter().flatten().map(|g| g.port))
            .collect();
        for p in ports {
            self.remove_port(p);
        }
        if self.wake_armed {
            let e = opcode::AsyncCancel::new(ud(TAG_WAKE, 0))
                .build()
                .user_data(ud(TAG_CANCEL, 0));
            let _ = self.push(e);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let busy = self.wake_armed
                || self.queues.iter().flatten().next().is_some()
                || self.guests.iter().flatten().next().is_some();
            if !busy {
                break;
            }
            let ts = types::Timespec::new().nsec(50_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.stats.worker.enters.add(1);
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.clear();
            for c in self.ring.completion() {
                cqes.push((c.user_data(), c.result(), c.flags()));
            }
            for &(data, res, flags) in &cqes {
                let idx = data & ((1 << TAG_SHIFT) - 1);
                match data >> TAG_SHIFT {
                    TAG_RX => {
                        if let Some(Some(q)) = self.queues.get_mut(idx as usize) {
                            if !cqueue::more(flags) {
                                q.armed = false;
                            }
                            if let Some(bid) = cqueue::buffer_select(flags) {
                                q.rx.consumed();
                                // `idx` indexed `queues` just above; queue indices are
                                // u16 (`add_queue`).
                                if let Ok(qi) = u16::try_from(idx) {
                                    self.recycle(qi, bid);
                                }
                            }
                        }
                    }
                    // Op indices are below MAX_OPS (set in `ud`).
                    TAG_TX => {
                        if let Ok(oi) = u32::try_from(idx) {
                            self.on_tx_done(oi, res);
                        }
                    }
                    TAG_WAKE => self.wake_armed = false,
                    TAG_KICK => {
                        if let Some(Some(g)) = self.guests.get_mut(idx as usize) {
                            g.armed = false;
                        }
                    }
                    _ => {}
                }
            }
            self.cqes = cqes;
            self.finalize();
        }
    }
}
