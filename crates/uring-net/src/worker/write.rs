//! Writes to host ports (taps and AF_PACKET sockets): the op slab entry (`TxOp`), how one
//! frame becomes one write (`WriteSpec`: a plain write of a host rx buffer, or a gather of
//! our rewritten header and head with the rest of the frame), queuing it (`write_to`) and
//! its completion (`on_tx_done`), which gives the source buffer or guest frame back once
//! its last write is done.
//!
//! Kept apart because it is the one place that builds iovecs over memory the kernel reads
//! after we return: the rules for what may be read from guest memory again, and for how
//! long the source must stay put, live next to the code that depends on them.

use std::os::fd::AsRawFd;

use io_uring::{opcode, types};
use switch::egress::Egress;
use switch::{DropReason, PortId, VnetHdr};

use super::{ud, Worker, TAG_TX};
use crate::guest::GuestFrame;
use switch::bytes::{skip_segs, Seg, HEAD_COPY, MAX_SEGS};
use switch::vnet::HDR_LEN;

#[derive(Clone, Copy)]
pub(super) enum Src {
    Host {
        q: u16,
        bid: u16,
    },
    Guest {
        slot: u32,
    },
    /// The whole frame is in the op (`TxOp::head`): nothing to give back.
    Owned,
}

pub(super) struct TxOp {
    pub(super) src: Src,
    pub(super) dest: u16,
    hdr: [u8; HDR_LEN],
    /// Bytes of the frame written from our memory: a rewritten L2 head, and for a guest
    /// frame the rest of the private head copy the switch decided on. Its buffer is
    /// reused (capacity for MAX_HEAD + HEAD_COPY; more only for a whole-frame decision).
    pub(super) head: Vec<u8>,
    pub(super) iov: [libc::iovec; MAX_SEGS + 2],
    /// A VXLAN send (`super::vxlan`): its sendmsg header, destination, UDP_SEGMENT
    /// control message, and how many datagrams it carries (0: not a VXLAN send).
    pub(super) vx: super::vxlan::VxSend,
}

impl TxOp {
    pub(super) fn empty() -> TxOp {
        TxOp {
            src: Src::Host { q: 0, bid: 0 },
            dest: 0,
            hdr: [0; HDR_LEN],
            head: Vec::with_capacity(switch::egress::MAX_HEAD + HEAD_COPY),
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; MAX_SEGS + 2],
            vx: super::vxlan::VxSend::new(),
        }
    }
}

/// How one frame is written to one destination.
pub(super) enum WriteSpec {
    /// Contiguous bytes in our process (a host rx buffer).
    Plain { addr: u64, len: u32 },
    /// Gather write; the op's `iov[..n]` is filled.
    Vectored { n: usize },
}
impl Worker {
    /// Queues one write of a frame to `dest`; false (and counted) when it cannot be.
    pub(super) fn write_to(
        &mut self,
        ingress: PortId,
        dest: PortId,
        src: Src,
        spec: impl FnOnce(&mut TxOp) -> WriteSpec,
    ) -> bool {
        let Some(dq) = self.by_port.get(dest.index()).copied().flatten() else {
            // A destination without a queue on this worker (a vhost-user RX queue: see
            // docs/design/uring-net.md).
            self.stats.ports[dest.index()].drop_no_queue.add(1);
            return false;
        };
        let Some(Some(d)) = self.queues.get(dq as usize) else {
            return false;
        };
        if d.kind == super::QueueKind::Vxlan {
            // Copied and encapsulated: nothing of the source is held.
            self.vxlan_write(ingress, dest, dq, spec);
            return false;
        }
        if d.inflight >= self.cfg.max_inflight {
            self.stats.ports[dest.index()].drop_dest_full.add(1);
            self.sw.count_drop(ingress, DropReason::DestinationFull);
            return false;
        }
        let Some(oi) = self.free_ops.pop() else {
            self.stats.ports[dest.index()].drop_dest_full.add(1);
            self.sw.count_drop(ingress, DropReason::DestinationFull);
            return false;
        };
        let fd = types::Fd(d.fd.as_raw_fd());
        let op = &mut self.ops[oi as usize];
        op.src = src;
        op.dest = dq;
        op.vx.datagrams = 0;
        let entry = match spec(op) {
            WriteSpec::Plain { addr, len } => {
                opcode::Write::new(fd, addr as *const u8, len).build()
            }
            WriteSpec::Vectored { n } => {
                // n <= op.iov.len(), a handful of iovecs.
                #[allow(clippy::cast_possible_truncation)]
                let n = n as u32;
                opcode::Writev::new(fd, op.iov.as_ptr(), n).build()
            }
        };
        if !self.push(entry.user_data(ud(TAG_TX, oi as u64))) {
            self.free_ops.push(oi);
            self.stats.ports[dest.index()].drop_tx_error.add(1);
            return false;
        }
        if let Some(Some(d)) = self.queues.get_mut(dq as usize) {
            d.inflight += 1;
        }
        if let Src::Guest { .. } = src {
            // Guest frames go out with writev: our header and head, then guest pages.
            self.stats.ports[ingress.index()].tx_fallback.add(1);
        }
        true
    }

    pub(super) fn on_tx_done(&mut self, oi: u32, res: i32) {
        let Some(op) = self.ops.get(oi as usize) else {
            return;
        };
        let (src, dq, datagrams) = (op.src, op.dest, op.vx.datagrams);
        self.free_ops.push(oi);
        let now = self.now();
        if let Some(Some(d)) = self.queues.get_mut(dq as usize) {
            d.inflight = d.inflight.saturating_sub(1);
            let c = &self.stats.ports[d.port.index()];
            if datagrams > 0 {
                // A VXLAN sendmsg: `datagrams` packets, each with an 8-byte header.
                match u64::try_from(res) {
                    Ok(n) => {
                        c.tx_packets.add(datagrams.into());
                        c.tx_bytes.add(n.saturating_sub(8 * u64::from(datagrams)));
                    }
                    Err(_) => {
                        c.drop_tx_error.add(datagrams.into());
                        if res != -libc::EAGAIN {
                            if let Some(s) = self.log_tx.check(now) {
                                tracing::warn!(port = %d.port, suppressed = s, "vxlan send failed: {res}");
                            }
                        }
                    }
                }
            } else if usize::try_from(res).is_ok_and(|n| n >= HDR_LEN) {
                c.tx_packets.add(1);
                c.tx_bytes.add(res as u64 - HDR_LEN as u64);
            } else {
                c.drop_tx_error.add(1);
                if res != -libc::EAGAIN {
                    if let Some(s) = self.log_tx.check(now) {
                        tracing::warn!(port = %d.port, suppressed = s, "write failed: {res}");
                    }
                }
            }
        }
        match src {
            Src::Host { q, bid } => self.host_buffer_ref_done(q, bid),
            Src::Guest { slot } => self.guest_frame_ref_done(slot),
            Src::Owned => {}
        }
    }
}
/// Write of a host rx buffer: as is (`whole`: the vnet header and frame, contiguous)
/// when the egress form is identical, otherwise a gather of (adjusted vnet header,
/// rewritten L2 head, rest of the frame).
pub(super) fn host_write_spec(
    op: &mut TxOp,
    whole: Option<&[u8]>,
    hdr: &VnetHdr,
    frame: &[u8],
    eg: &Egress,
) -> WriteSpec {
    if let Some(buf) = whole.filter(|_| eg.is_identity(frame)) {
        // `buf` is one host receive buffer (`rx_buf_size`, a u32).
        #[allow(clippy::cast_possible_truncation)]
        let len = buf.len() as u32;
        return WriteSpec::Plain {
            addr: buf.as_ptr() as u64,
            len,
        };
    }
    let body = frame.get(eg.body_offset as usize..).unwrap_or(&[]);
    let n = fill_rewrite(op, hdr, eg, &[]);
    op.iov[n] = libc::iovec {
        iov_base: body.as_ptr() as *mut libc::c_void,
        iov_len: body.len(),
    };
    WriteSpec::Vectored { n: n + 1 }
}

/// Puts the adjusted vnet header and the rewritten head (then `rest`, more private bytes
/// of the frame) into the op and its first two iovecs; returns the number of iovecs used.
fn fill_rewrite(op: &mut TxOp, hdr: &VnetHdr, eg: &Egress, rest: &[u8]) -> usize {
    let _ = eg.adjust_hdr(hdr).emit(&mut op.hdr, HDR_LEN);
    op.head.clear();
    op.head.extend_from_slice(eg.head());
    op.head.extend_from_slice(rest);
    op.iov[0] = libc::iovec {
        iov_base: op.hdr.as_mut_ptr().cast(),
        iov_len: HDR_LEN,
    };
    op.iov[1] = libc::iovec {
        iov_base: op.head.as_mut_ptr().cast(),
        iov_len: op.head.len(),
    };
    2
}

/// Write of a guest frame: our validated virtio-net header and the frame's private bytes
/// (`private`, what the switch decided on, with the egress head in front), then the
/// frame's remaining bytes straight from guest memory. Nothing the decision rests on is
/// read from guest memory again: neither the header the kernel acts on
/// (`virtio_net_hdr_to_skb`) nor the addresses, tag or EtherType.
pub(super) fn guest_write_spec(
    op: &mut TxOp,
    f: &GuestFrame,
    hdr: &VnetHdr,
    private: &[u8],
    eg: &Egress,
) -> WriteSpec {
    let body = private.get(usize::from(eg.body_offset)..).unwrap_or(&[]);
    let n = fill_rewrite(op, hdr, eg, body);
    let n = fill_segs(op, n, f.segs(), f.seg_hdr() + private.len());
    WriteSpec::Vectored { n }
}

/// Write of a frame held only by the caller (a frame the switch originates): header,
/// egress head and body all copied into the op, which lives until the write completes.
pub(super) fn owned_write_spec(
    op: &mut TxOp,
    hdr: &VnetHdr,
    eg: &Egress,
    body: &[u8],
) -> WriteSpec {
    WriteSpec::Vectored {
        n: fill_rewrite(op, hdr, eg, body),
    }
}

/// Copies a guest frame (the Ethernet frame, without the vnet header) into `out`.
pub(super) fn copy_frame(f: &GuestFrame, out: &mut Vec<u8>) {
    out.clear();
    for s in skip_segs(f.segs().iter().copied(), f.seg_hdr()) {
        let l = s.len as usize;
        out.reserve(l);
        // SAFETY: `GuestTxQueue` guarantees a popped frame's segments stay mapped and
        // readable until it is completed; the caller has not completed it yet. The copy
        // goes through raw pointers (no reference over guest memory) into the spare
        // capacity reserved above, and only then is the length extended.
        unsafe {
            std::ptr::copy_nonoverlapping(s.addr as *const u8, out.as_mut_ptr().add(out.len()), l);
            out.set_len(out.len() + l);
        }
    }
}

/// Appends `segs` minus their first `skip` bytes to `op.iov[at..]` (as many as fit);
/// returns the new count.
fn fill_segs(op: &mut TxOp, at: usize, segs: &[Seg], skip: usize) -> usize {
    let mut n = at;
    let pieces = skip_segs(segs.iter().copied(), skip);
    for (iov, s) in op.iov.iter_mut().skip(at).zip(pieces) {
        *iov = libc::iovec {
            iov_base: s.addr as *mut libc::c_void,
            iov_len: s.len as usize,
        };
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_segs_skips_across_segments() {
        let mut op = TxOp::empty();
        let segs = [
            Seg {
                addr: 1000,
                len: 12,
            },
            Seg {
                addr: 2000,
                len: 10,
            },
            Seg {
                addr: 3000,
                len: 50,
            },
        ];
        let n = fill_segs(&mut op, 2, &segs, 12 + 14);
        assert_eq!(n, 3);
        assert_eq!(op.iov[2].iov_base as u64, 3004);
        assert_eq!(op.iov[2].iov_len, 46);
        let n = fill_segs(&mut op, 0, &segs, 0);
        assert_eq!(n, 3);
        assert_eq!(op.iov[1].iov_len, 10);
    }
}
