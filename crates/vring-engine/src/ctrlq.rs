//! Control virtqueue processing (virtio 1.2 §5.1.6.5): read the command out of the chain,
//! [`crate::ctrl::apply`] it, write the one-byte ack, tell the switch.

use vhost_user_backend::VringT;
use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestAddressSpace};

use crate::chain::{copy_out, Chain, ChainError, Direction, TableInfo};
use crate::counters::Drop;
use crate::ctrl::{apply, ERR, OK};
use crate::device::Inner;
use crate::features::bit;

/// Longest command we read: a MAC_TABLE_SET with 2 × 64 entries is 8 + 768 bytes; anything
/// beyond a page is not a command a driver sends.
const MAX_CMD: usize = 4096;
/// Commands handled per call before yielding to the other queues of the thread.
const CTRL_BUDGET: usize = 64;

impl Inner {
    /// Executes the command in `chain` (`walked`: its buffers' verdict) and writes the
    /// one-byte ack; returns the bytes written (the used length).
    fn run_command(
        &self,
        chain: &Chain<'_>,
        walked: Result<(), ChainError>,
        acked: u64,
        ctr: &crate::counters::QueueCounters,
        log: Option<&mut crate::dirtylog::Logger<'_>>,
    ) -> u32 {
        match walked {
            Err(e) => ctr.count_drop(Drop::Chain(e)),
            Ok(()) if chain.write_len == 0 || chain.read_len as usize > MAX_CMD => {
                ctr.count_drop(Drop::BadLength);
            }
            Ok(()) => {
                let mut cmd = vec![0u8; chain.read_len as usize];
                let n = copy_out(&chain.readable, 0, &mut cmd);
                cmd.truncate(n);
                let result = {
                    let mut st = self.st.lock();
                    apply(&cmd, acked, self.opts.queue_pairs, &mut st.ctrl).map(|effect| {
                        if let crate::ctrl::Effect::Mac(m) = effect {
                            st.mac = Some(m);
                        }
                        self.notice(effect, &st)
                    })
                };
                let ack = match result {
                    Ok(notice) => {
                        self.publish(notice);
                        OK
                    }
                    Err(e) => {
                        if let Some(suppressed) = self.log_check() {
                            tracing::info!(port = %self.port, suppressed, "ctrl command refused: {e}");
                        }
                        ERR
                    }
                };
                ctr.count_frame(cmd.len());
                if let Some(s) = chain.writable.first() {
                    if let Ok(b) = s.subslice(0, 1) {
                        b.copy_from(&[ack]);
                        if let Some(l) = log {
                            l.host(b.ptr_guard().as_ptr(), 1);
                        }
                        return 1;
                    }
                }
            }
        }
        0
    }

    /// [`process_ctrl`](Self::process_ctrl) on a packed ring (virtio 1.2 §2.8): one list
    /// per command, popped and completed through the ring's state, published once.
    fn process_packed_ctrl(&self, q: usize, vring: &crate::vring::NetVring) {
        let Some(ctr) = self.counters.get(q) else {
            return;
        };
        let acked = self.acked();
        let indirect = acked & bit(virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC) != 0;
        let mem = self.mem.read().memory();
        let vst = vring.get_mut();
        if !vst.get_queue().ready() || !vst.is_enabled() || vring.is_broken() {
            return;
        }
        let queue = vst.get_queue();
        let Some(ring) = crate::packed::ring::desc_ring(&mem, queue) else {
            vring.mark_broken();
            return;
        };
        let set = self.bases.set_base(q);
        let Some(mut ps) =
            vring.packed_state(|| crate::packed::ring::resume(queue, set, Some(&ring)))
        else {
            ctr.count_drop(Drop::BadRing);
            vring.mark_broken();
            return;
        };
        let mut log = self.log.logger(acked, &mem, q);
        let mut chain = Chain::default();
        for done in 0..=CTRL_BUDGET {
            if done == CTRL_BUDGET {
                // Come back after the other queues of this thread (see crate::tx).
                if let Some(k) = vst.get_kick() {
                    let _ = crate::tx::self_kick(k);
                }
                break;
            }
            let p = match ps.pop(&ring, &mem, &mut chain, Direction::ReadThenWrite, indirect) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(fault) => {
                    ctr.count_drop(Drop::BadRing);
                    if let Some(suppressed) = self.log_check() {
                        tracing::warn!(port = %self.port, queue = q, suppressed, "packed control ring: {fault}: queue stopped");
                    }
                    vring.mark_broken();
                    break;
                }
            };
            let walked = p.fault.map_or(Ok(()), Err);
            let used = self.run_command(&chain, walked, acked, ctr, log.as_mut());
            let _ = ps.complete(p.id, used);
        }
        crate::packed::ring::publish_logged(&mut ps, &ring, queue.desc_table(), log.as_mut());
        if let Some(l) = log {
            l.finish();
        }
        if ps.wants_call(&ring, queue.event_idx_enabled()) && vst.signal_used_queue().is_ok() {
            ctr.count_call();
        }
    }

    pub(crate) fn process_ctrl(&self, q: usize) {
        let Some(vring) = self.vring(q) else { return };
        if vring.is_packed() {
            self.process_packed_ctrl(q, &vring);
            return;
        }
        let Some(ctr) = self.counters.get(q) else {
            return;
        };
        let acked = self.acked();
        let indirect = acked & bit(virtio_bindings::virtio_ring::VIRTIO_RING_F_INDIRECT_DESC) != 0;
        let mem = self.mem.read().memory();
        let mut vst = vring.get_mut();
        if !vst.get_queue().ready() || !vst.is_enabled() || vring.is_broken() {
            return;
        }
        let table = TableInfo {
            desc_table: GuestAddress(vst.get_queue().desc_table()),
            queue_size: vst.get_queue().size(),
            indirect_allowed: indirect,
        };
        let mut chain = Chain::default();
        let mut done = 0;
        // Dirty logging while migrating (crate::dirtylog): the ack byte and the used ring.
        let mut log = self.log.logger(acked, &mem, q);
        loop {
            if done == CTRL_BUDGET {
                // Come back after the other queues of this thread (see crate::tx).
                if let Some(k) = vst.get_kick() {
                    let _ = crate::tx::self_kick(k);
                }
                break;
            }
            done += 1;
            let mut one = [0u16; 1];
            let Some(n) = self.take_heads(q, &vring, vst.get_queue_mut(), &mem, None, &mut one)
            else {
                return;
            };
            if n == 0 {
                break;
            }
            let head = one[0];
            if head >= table.queue_size {
                ctr.count_drop(Drop::Chain(ChainError::BadIndex));
                vring.mark_broken();
                return;
            }
            let walked = chain.walk(&mem, table, head, Direction::ReadThenWrite);
            let used = self.run_command(&chain, walked, acked, ctr, log.as_mut());
            if let Some(l) = log.as_mut() {
                let (next, size) = (vst.get_queue().next_used(), table.queue_size);
                l.used(crate::split::used_elem_offset(next, size), 8);
                l.used(2, 2);
                l.flush();
            }
            if vst.add_used(head, used).is_err() {
                vring.mark_broken();
                return;
            }
        }
        if vst.needs_notification().unwrap_or(true) && vst.signal_used_queue().is_ok() {
            ctr.count_call();
        }
    }
}
