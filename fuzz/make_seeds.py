#!/usr/bin/env python3
"""Writes the committed seed corpus (fuzz/corpus/TARGET/*): a few well-formed inputs per
target, so each bounded CI run starts past the parsers' first checks. Re-run after
changing a target's input format: python3 fuzz/make_seeds.py"""
import os, struct

here = os.path.dirname(os.path.abspath(__file__))

def put(target, name, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

def eth(dst, src, ethertype, payload, vlan=None):
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return bytes(dst) + bytes(src) + tag + struct.pack("!H", ethertype) + payload

def ipv4(proto, payload, src=(198, 18, 0, 1), dst=(198, 18, 0, 2), ttl=64, opts=b""):
    ihl = 5 + len(opts) // 4
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(opts) + len(payload), 0, 0, ttl,
                    proto, 0, bytes(src), bytes(dst)) + opts
    s = sum(struct.unpack("!%dH" % (len(h) // 2), h))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    h = h[:10] + struct.pack("!H", ~s & 0xffff) + h[12:]
    return h + payload

A = [0x02, 0, 0, 0, 0, 0x01]
B = [0x02, 0, 0, 0, 0, 0x02]
BCAST = [0xff] * 6
udp = struct.pack("!HHHH", 1234, 5678, 8 + 18, 0) + b"x" * 18
tcp = struct.pack("!HHIIBBHHH", 1234, 80, 1, 0, 0x50, 0x02, 65535, 0, 0) + b"y" * 64
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, bytes(A), bytes([198, 18, 0, 1]),
                  bytes(6), bytes([198, 18, 0, 2]))
hdr0 = bytes(12)
# virtio_net_hdr: flags=NEEDS_CSUM, gso TCPV4, hdr_len 54, gso_size 1448, csum_start 34, off 16
hdr_tso = struct.pack("<BBHHHHH", 1, 1, 54, 1448, 34, 16, 1)
hdr_csum = struct.pack("<BBHHHHH", 1, 0, 0, 0, 34, 6, 1)

# frame_decide: port byte, 12-byte vnet header, frame.
put("frame_decide", "unicast_udp", bytes([0]) + hdr0 + eth(B, A, 0x0800, ipv4(17, udp)))
put("frame_decide", "broadcast_arp", bytes([2]) + hdr0 + eth(BCAST, A, 0x0806, arp))
put("frame_decide", "tagged_vlan20", bytes([1]) + hdr0 + eth(B, A, 0x0800, ipv4(17, udp), vlan=20))
put("frame_decide", "igmp_report", bytes([2]) + hdr0 + eth([1, 0, 0x5e, 0, 0, 0x16], A, 0x0800,
    ipv4(2, struct.pack("!BBH4s", 0x16, 0, 0, bytes([239, 1, 2, 3])), dst=(239, 1, 2, 3), ttl=1,
         opts=bytes([0x94, 4, 0, 0]))))

# offload: 10-byte vnet header, destination offload bits, control byte, frame.
big = eth(B, A, 0x0800, ipv4(6, struct.pack("!HHIIBBHHH", 1234, 80, 1, 0, 0x50, 0x18, 65535, 0, 0) + b"z" * 4000))
put("offload", "tso_v4_fixup", hdr_tso[:10] + bytes([0, 0x80 | 40]) + big)
put("offload", "csum_udp", hdr_csum[:10] + bytes([0, 20]) + eth(B, A, 0x0800, ipv4(17, udp)))
put("offload", "passthrough", bytes(10) + bytes([0xff, 0]) + eth(B, A, 0x0800, ipv4(6, tcp)))

# mcast_parse: chunks [port, vid, step, mode, len, bytes].
igmp_v2 = struct.pack("!BBH4s", 0x16, 0, 0, bytes([239, 1, 2, 3]))
igmp_leave = struct.pack("!BBH4s", 0x17, 0, 0, bytes([239, 1, 2, 3]))
igmp_query = struct.pack("!BBH4s", 0x11, 100, 0, bytes(4))
def chunk(port, vid, step, mode, b):
    return bytes([port, vid, step, mode, len(b)]) + b
put("mcast_parse", "join_leave", chunk(1, 1, 1, 1, igmp_v2) + chunk(1, 1, 5, 1, igmp_leave))
put("mcast_parse", "query_join", chunk(2, 1, 1, 1, igmp_query) + chunk(0, 1, 1, 1, igmp_v2))
put("mcast_parse", "mld_report", chunk(1, 1, 1, 2, struct.pack("!BBHHH", 143, 0, 0, 0, 1) +
    struct.pack("!BBH16s", 4, 0, 0, bytes([0xff, 0x0e] + [0] * 13 + [1]))))

# chain_walk: exp, flags, head (LE), guest memory image (table at GPA 0).
def desc(addr, length, flags, nxt):
    return struct.pack("<QIHH", addr, length, flags, nxt)
NEXT, WRITE, INDIRECT = 1, 2, 4
mem = desc(0x1000, 12, NEXT, 1) + desc(0x1100, 1500, 0, 0)
put("chain_walk", "tx_two", bytes([8, 0, 0, 0]) + mem)
put("chain_walk", "rx_one", bytes([8, 1 << 1, 0, 0]) + desc(0x2000, 1526, WRITE, 0))
ind = desc(0x800, 48, INDIRECT, 0).ljust(0x800, b"\0") + desc(0x1000, 12, NEXT, 1) + desc(0x1100, 64, NEXT, 2) + desc(0x3f00, 512, 0, 0)
put("chain_walk", "indirect", bytes([8, 1, 0, 0]) + ind)
put("chain_walk", "ctrl", bytes([4, 2 << 1, 0, 0]) + desc(0x1000, 2, NEXT, 1) + desc(0x1100, 1, NEXT | WRITE, 0))
put("chain_walk", "loop", bytes([8, 0, 0, 0]) + desc(0x1000, 12, NEXT, 1) + desc(0x1100, 12, NEXT, 0))
put("chain_walk", "cross_region", bytes([8, 0, 0, 0]) + desc(0x3f00, 0x200, 0, 0))

# ctrl_apply: acked features (LE u64), max pairs, then [len, class, command, data...].
feat = (1 << 17) | (1 << 18) | (1 << 19) | (1 << 20) | (1 << 21) | (1 << 22) | (1 << 23) | (1 << 2) | (1 << 7)
def cmd(b):
    return bytes([len(b)]) + b
seq = (cmd(bytes([0, 0, 1])) + cmd(bytes([0, 1, 1])) +
       cmd(bytes([1, 0]) + struct.pack("<I", 1) + bytes(B) + struct.pack("<I", 1) + bytes([1, 0, 0x5e, 0, 0, 1])) +
       cmd(bytes([1, 1]) + bytes(A)) + cmd(bytes([2, 0]) + struct.pack("<H", 10)) +
       cmd(bytes([2, 1]) + struct.pack("<H", 10)) + cmd(bytes([3, 0])) +
       cmd(bytes([4, 0]) + struct.pack("<H", 2)) + cmd(bytes([5, 0]) + struct.pack("<Q", 1 << 7)))
put("ctrl_apply", "every_class", struct.pack("<Q", feat) + bytes([4]) + seq)
put("ctrl_apply", "not_negotiated", struct.pack("<Q", 0) + bytes([1]) + seq)
