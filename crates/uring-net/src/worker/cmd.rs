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
use switch::PortId;

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

    pub(super) fn on_commands(&mut self) {
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Cmd::AddQueue {
                    port,
                    kind,
                    fd,
                    reply,
                } => {
                    let r = self.add_queue(port, kind, fd);
                    let _ = reply.send(r);
                }
                Cmd::AttachGuestTx {
                    port,
                    key,
                    queue,
                    reply,
                } => {
                    let _ = reply.send(Ok(self.attach_guest(port, key, queue)));
                }
                Cmd::DetachGuestTx { port, key, reply } => self.detach_guest(port, key, reply),
                Cmd::SetGuestMemory { port, table, reply } => {
                    let _ = reply.send(self.set_guest_memory(port, table));
                }
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
                                self.recycle(idx as u16, bid);
                            }
                        }
                    }
                    TAG_TX => self.on_tx_done(idx as u32, res),
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
