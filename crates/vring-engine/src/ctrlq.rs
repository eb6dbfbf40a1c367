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
    pub(crate) fn process_ctrl(&self, q: usize) {
        let Some(vring) = self.vring(q) else { return };
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
            let mut used = 0u32;
            match chain.walk(&mem, table, head, Direction::ReadThenWrite) {
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
                    if let Some(s) = chain.writable.first() {
                        if let Ok(b) = s.subslice(0, 1) {
                            b.copy_from(&[ack]);
                            used = 1;
                            if let Some(l) = log.as_mut() {
                                l.host(b.ptr_guard().as_ptr(), 1);
                            }
                        }
                    }
                    ctr.count_frame(cmd.len());
                }
            }
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
