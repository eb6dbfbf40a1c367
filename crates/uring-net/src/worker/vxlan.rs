//! VXLAN ports in the worker (RFC 7348): receiving (`locate_vxlan`: the frames of one
//! receive, a datagram or a UDP_GRO run of them with one flow's TCP segments coalesced;
//! each inner source's VTEP learned; each frame then takes the host path) and sending
//! (`vxlan_write`: the frame is copied out, encapsulated by `crate::vxlan::encap` and sent with one sendmsg per UDP
//! GSO batch and remote — to the VTEP its destination was learned behind, or to every
//! remote for floods and unknown destinations: head-end replication).
//!
//! Kept apart because a VXLAN send owns all its bytes (`Src::Owned`): after the copy
//! nothing refers to the source frame, so the lifetime rules of `write` and `host` do
//! not reach in here; the one invariant is that a `VxSend`'s pointers aim into its own
//! `TxOp`, which stays put (the op slab never grows) until the send completes.

use std::sync::Arc;

use io_uring::{opcode, types};
use switch::vnet::HDR_LEN;
use switch::{DropReason, Mac, Millis, PortId, VnetHdr};

use super::host::Queue;
use super::write::{Src, TxOp, WriteSpec};
use super::{ud, Worker, TAG_TX};
use crate::vxlan::decap::{decapsulate_burst, RxDrop, RxFrame};
use crate::vxlan::encap::{encapsulate, EncapError};
use crate::vxlan::{bump, SockAddr, VxlanPort};

/// Largest frame copied out for encapsulation (a 64 KiB GSO frame and its header).
const MAX_COPY: usize = 65_536 + 1024;
/// SOL_UDP / UDP_SEGMENT (linux/udp.h).
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;

/// The sendmsg parts of one VXLAN send, inside its `TxOp`.
pub(crate) struct VxSend {
    msg: libc::msghdr,
    name: SockAddr,
    /// One cmsghdr with a u16 (CMSG_SPACE(2) = 24 bytes), 8-byte aligned.
    cmsg: [u64; 4],
    /// Datagrams this send carries; 0: the op is not a VXLAN send.
    pub(super) datagrams: u16,
}

impl VxSend {
    pub(crate) fn new() -> VxSend {
        VxSend {
            // SAFETY: msghdr is plain old data; all-zero is valid (no name, no iovecs).
            msg: unsafe { std::mem::zeroed() },
            name: SockAddr::from(std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
            cmsg: [0; 4],
            datagrams: 0,
        }
    }
}

/// The frames of a completed VXLAN receive in buffer `bid` into `frames`
/// (`crate::vxlan::decap::decapsulate_burst`: one datagram, or a UDP_GRO run of them,
/// each from one of the port's remotes with a header valid for its VNI, RFC 7348 §5;
/// in-order TCP segments of one flow coalesced into one TSO frame); each inner source
/// MAC is learned behind that remote. Each refused datagram is a counted drop (the
/// port's VXLAN counters say why); no frame at all leaves `frames` empty.
pub(super) fn locate_vxlan(
    q: &Queue,
    vx: &Arc<VxlanPort>,
    bid: u16,
    res: i32,
    now: Millis,
    frames: &mut Vec<RxFrame>,
) {
    frames.clear();
    let c = &vx.counters;
    let (Ok(len), Some(base)) = (usize::try_from(res), q.rx.buf_ptr(bid)) else {
        return;
    };
    if len > q.rx.buf_size() as usize {
        bump(&c.rx_truncated);
        return;
    }
    // SAFETY: the kernel filled `len` bytes of our buffer and handed it back; nothing
    // else references it until it is pushed back to the ring.
    let b = unsafe { std::slice::from_raw_parts_mut(base, len) };
    let mut drop = |why: RxDrop| {
        bump(match why {
            RxDrop::Truncated => &c.rx_truncated,
            RxDrop::BadFlags => &c.rx_bad_flags,
            RxDrop::WrongVni => &c.rx_wrong_vni,
            RxDrop::UnknownVtep => &c.rx_unknown_vtep,
            RxDrop::Oversized => &c.rx_oversized,
        });
    };
    let remote = decapsulate_burst(
        b,
        &q.msg,
        vx.cfg.vni,
        vx.inner_max,
        &vx.cfg.remotes,
        frames,
        &mut drop,
    );
    if let Some(r) = remote {
        let mut last = None;
        for f in frames.iter() {
            if last != Some(f.src) {
                vx.learn(f.src, r, now);
                last = Some(f.src);
            }
        }
    }
}

impl Worker {
    /// Encapsulates one frame for VXLAN port `dest` (this worker's queue `dq`) and queues
    /// its sends. `spec` describes the frame as for any host port (vnet header first);
    /// it is copied out at once, so the caller holds nothing.
    pub(super) fn vxlan_write(
        &mut self,
        ingress: PortId,
        dest: PortId,
        dq: u16,
        spec: impl FnOnce(&mut TxOp) -> WriteSpec,
    ) {
        let Some(Some(vx)) = self
            .queues
            .get(dq as usize)
            .map(|q| q.as_ref().map(|q| q.vx.clone()))
        else {
            return;
        };
        let Some(vx) = vx else {
            return;
        };
        let Some(oi) = self.free_ops.pop() else {
            self.stats.ports[dest.index()].drop_dest_full.add(1);
            self.sw.count_drop(ingress, DropReason::DestinationFull);
            return;
        };
        let mut input = std::mem::take(&mut self.vx_in);
        let copied = {
            let op = &mut self.ops[oi as usize];
            let s = spec(op);
            copy_out(op, s, &mut input)
        };
        self.free_ops.push(oi);
        let now = self.now();
        let dc = &self.stats.ports[dest.index()];
        let hdr = match VnetHdr::parse(&input, HDR_LEN) {
            Ok(h) if copied => h,
            _ => {
                dc.drop_bad_frame.add(1);
                self.vx_in = input;
                return;
            }
        };
        let mut out = std::mem::take(&mut self.vx_out);
        let mut batches = std::mem::take(&mut self.vx_batches);
        let frame = &mut input[HDR_LEN..];
        let flow = switch::vxlan::inner_flow_hash(frame);
        let dst = Mac::from_slice(frame).unwrap_or(Mac::BROADCAST);
        let r = encapsulate(
            &hdr,
            frame,
            vx.cfg.vni,
            vx.inner_max,
            &mut out,
            &mut batches,
        );
        match r {
            Ok(e) => {
                if e.resegmented {
                    bump(&vx.counters.tx_resegmented);
                }
                let only = if dst.is_unicast() {
                    vx.remote_of(&dst, now)
                } else {
                    None
                };
                if only.is_none() && vx.addrs.len() > 1 {
                    bump(&vx.counters.tx_flooded);
                }
                let fd = vx.tx_fd(flow);
                for (ri, addr) in vx.addrs.iter().enumerate() {
                    if only.is_some_and(|o| usize::from(o) != ri) {
                        continue;
                    }
                    for b in &batches {
                        let bytes = out.get(b.start..b.start + b.len).unwrap_or(&[]);
                        self.vxlan_send(ingress, dest, dq, fd, addr, bytes, b.seg, b.count);
                    }
                }
            }
            Err(EncapError::Mtu) => {
                bump(&vx.counters.tx_mtu_exceeded);
                dc.drop_tx_error.add(1);
            }
            Err(EncapError::BadFrame) => {
                bump(&vx.counters.tx_bad_frame);
                dc.drop_bad_frame.add(1);
            }
        }
        self.vx_in = input;
        self.vx_out = out;
        self.vx_batches = batches;
    }

    /// Queues one sendmsg of `bytes` (`count` datagrams of `seg` bytes, the last maybe
    /// shorter) to `addr` on socket `fd`.
    #[allow(clippy::too_many_arguments)]
    fn vxlan_send(
        &mut self,
        ingress: PortId,
        dest: PortId,
        dq: u16,
        fd: libc::c_int,
        addr: &SockAddr,
        bytes: &[u8],
        seg: usize,
        count: usize,
    ) {
        let full = matches!(self.queues.get(dq as usize), Some(Some(d)) if d.inflight >= self.cfg.max_inflight);
        let oi = if full { None } else { self.free_ops.pop() };
        let (Some(oi), Ok(datagrams), Ok(seg16)) = (oi, u16::try_from(count), u16::try_from(seg))
        else {
            self.stats.ports[dest.index()].drop_dest_full.add(1);
            self.sw.count_drop(ingress, DropReason::DestinationFull);
            return;
        };
        let op = &mut self.ops[oi as usize];
        op.src = Src::Owned;
        op.dest = dq;
        op.head.clear();
        op.head.extend_from_slice(bytes);
        op.iov[0] = libc::iovec {
            iov_base: op.head.as_mut_ptr().cast(),
            iov_len: op.head.len(),
        };
        let v = &mut op.vx;
        v.datagrams = datagrams;
        v.name = *addr;
        v.msg.msg_name = (&mut v.name.storage as *mut libc::sockaddr_in6).cast();
        v.msg.msg_namelen = v.name.len;
        v.msg.msg_iov = op.iov.as_mut_ptr();
        v.msg.msg_iovlen = 1;
        if datagrams > 1 {
            let cm = v.cmsg.as_mut_ptr().cast::<libc::cmsghdr>();
            // SAFETY: `cmsg` is 32 bytes, 8-byte aligned: room for one cmsghdr (16)
            // with a u16 payload; CMSG_* are pointer arithmetic inside it.
            unsafe {
                (*cm).cmsg_level = SOL_UDP;
                (*cm).cmsg_type = UDP_SEGMENT;
                (*cm).cmsg_len = libc::CMSG_LEN(2) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cm).cast::<u16>(), seg16);
            }
            v.msg.msg_control = v.cmsg.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE is pure arithmetic.
            v.msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
        } else {
            v.msg.msg_control = std::ptr::null_mut();
            v.msg.msg_controllen = 0;
        }
        let e = opcode::SendMsg::new(types::Fd(fd), &v.msg)
            .build()
            .user_data(ud(TAG_TX, oi.into()));
        if !self.push(e) {
            self.free_ops.push(oi);
            self.stats.ports[dest.index()]
                .drop_tx_error
                .add(datagrams.into());
            return;
        }
        if let Some(Some(d)) = self.queues.get_mut(dq as usize) {
            d.inflight += 1;
        }
    }
}

/// Copies the frame a write spec describes (vnet header first) into `out`. False when it
/// is larger than any frame we encapsulate.
fn copy_out(op: &TxOp, s: WriteSpec, out: &mut Vec<u8>) -> bool {
    out.clear();
    let pieces: &[libc::iovec] = match s {
        WriteSpec::Plain { addr, len } => {
            let Ok(l) = usize::try_from(len) else {
                return false;
            };
            if l > MAX_COPY {
                return false;
            }
            out.reserve(l);
            // SAFETY: a plain write spec is a host rx buffer of ours, readable for `len`
            // bytes while the caller holds it (until this function returns). The copy
            // goes into spare capacity reserved above; only then is the length set.
            unsafe {
                std::ptr::copy_nonoverlapping(addr as *const u8, out.as_mut_ptr(), l);
                out.set_len(l);
            }
            return true;
        }
        WriteSpec::Vectored { n } => op.iov.get(..n).unwrap_or(&[]),
    };
    let total: usize = pieces.iter().map(|v| v.iov_len).sum();
    if total > MAX_COPY {
        return false;
    }
    out.reserve(total);
    for v in pieces {
        // SAFETY: the iovecs were just filled by the write spec: our header and head in
        // the op, a host rx buffer, or guest pages that `GuestTxQueue` keeps mapped until
        // the frame is completed, which the caller has not done yet. The copy goes
        // through raw pointers (no reference over guest memory) into spare capacity.
        unsafe {
            std::ptr::copy_nonoverlapping(
                v.iov_base as *const u8,
                out.as_mut_ptr().add(out.len()),
                v.iov_len,
            );
            out.set_len(out.len() + v.iov_len);
        }
    }
    true
}
