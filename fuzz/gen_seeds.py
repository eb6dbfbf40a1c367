#!/usr/bin/env python3
"""Writes the committed seed corpus fuzz/seeds/<target>/ (a handful of meaningful inputs
per target, a few KB in all). Run from anywhere: python3 fuzz/gen_seeds.py. The input
layouts are documented at the top of each fuzz_targets/<target>.rs."""

import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")
F_NEXT, F_WRITE, F_INDIRECT = 1, 2, 4


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ether(dst, src, etype, payload=b""):
    return bytes(dst) + bytes(src) + struct.pack(">H", etype) + payload


BCAST = [0xFF] * 6
MAC_A = [2, 0, 0, 0, 0, 1]
MAC_B = [2, 0, 0, 0, 0, 2]


def ipv4_udp(n=64):
    udp = struct.pack(">HHHH", 1000, 2000, 8 + n, 0) + bytes(n)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]))
    return ip + udp


# --- chain_walk: qsize u16, head u16, mode u8, table bytes -------------------------
def desc(addr, ln, flags, nxt):
    return struct.pack("<QIHH", addr, ln, flags, nxt)


def chain_walk():
    hdr = lambda qs, head, mode: struct.pack("<HHB", qs - 1, head, mode)
    # one readable buffer (TX)
    put("chain_walk", "tx_single", hdr(8, 0, 0) + desc(0x2000, 1500, 0, 0))
    # header + data (TX), data crossing region A/B
    put("chain_walk", "tx_two_cross", hdr(8, 0, 0) + desc(0x2000, 12, F_NEXT, 1)
        + desc(0xFF00, 0x200, 0, 0))
    # RX writable chain of three
    put("chain_walk", "rx_three", hdr(8, 0, 1) + desc(0x2000, 2048, F_WRITE | F_NEXT, 1)
        + desc(0x3000, 2048, F_WRITE | F_NEXT, 2) + desc(0x4000, 2048, F_WRITE, 0))
    # control: readable then writable
    put("chain_walk", "ctrl", hdr(8, 0, 2) + desc(0x2000, 2, F_NEXT, 1)
        + desc(0x2002, 1, F_NEXT, 2) + desc(0x2010, 1, F_WRITE, 0))
    # loop 0 -> 1 -> 0
    put("chain_walk", "loop", hdr(8, 0, 0) + desc(0x2000, 64, F_NEXT, 1)
        + desc(0x2000, 64, F_NEXT, 0))
    # indirect table of two at 0x1000 (offset in body: 0x1000)
    body = desc(0x1000, 32, F_INDIRECT, 0).ljust(0x1000, b"\0")
    body += desc(0x2000, 12, F_NEXT, 1) + desc(0x2100, 100, 0, 0)
    put("chain_walk", "indirect", hdr(8, 0, 4) + body)
    # buffer in the hole between regions B and C, and one beyond memory
    put("chain_walk", "hole", hdr(8, 0, 1) + desc(0x2F000, 64, F_WRITE, 0))
    put("chain_walk", "overflow", hdr(8, 0, 0) + desc(0xFFFFFFFFFFFFFF00, 0x1000, 0, 0))


# --- ctrl_apply: acked u64, max_pairs u16, class, cmd, data -------------------------
def ctrl_apply():
    allf = struct.pack("<QH", (1 << 64) - 1, 4)
    put("ctrl_apply", "rx_promisc", allf + bytes([0, 0, 1]))
    put("ctrl_apply", "rx_nobcast", allf + bytes([0, 5, 1]))
    tables = struct.pack("<I", 1) + bytes(MAC_A) + struct.pack("<I", 2) + bytes(
        [1, 0, 0x5E, 0, 0, 1]) + bytes([0x33, 0x33, 0, 0, 0, 1])
    put("ctrl_apply", "mac_table", allf + bytes([1, 0]) + tables)
    put("ctrl_apply", "mac_addr", allf + bytes([1, 1]) + bytes(MAC_B))
    put("ctrl_apply", "vlan_add", allf + bytes([2, 0]) + struct.pack("<H", 100))
    put("ctrl_apply", "announce", allf + bytes([3, 0]))
    put("ctrl_apply", "mq_pairs", allf + bytes([4, 0]) + struct.pack("<H", 3))
    put("ctrl_apply", "offloads", allf + bytes([5, 0]) + struct.pack("<Q", 0x3))
    put("ctrl_apply", "not_negotiated", struct.pack("<QH", 0, 1) + bytes([0, 0, 1]))


# --- config_space: op, offset u32, size u16 | len u8 + data -------------------------
def config_space():
    get = lambda off, size: bytes([0]) + struct.pack("<IH", off, size)
    setc = lambda off, data: bytes([1]) + struct.pack("<I", off) + bytes([len(data)]) + bytes(data)
    put("config_space", "qemu_read", get(0, 12) + get(0, 60))
    put("config_space", "write_mac", setc(0, MAC_B) + get(0, 6))
    put("config_space", "partial", setc(4, [9, 9]) + get(6, 2) + setc(6, [1, 0]))
    put("config_space", "huge", get(0xFFFFFFFE, 4) + get(0, 0xFFFF))


# --- rx_place / tx_pop: records (off u16, len u16, flags, next, kind, extra) ---------
def rec(off, ln, flags, nxt, kind=0, extra=0):
    return struct.pack("<HHBBBB", off, ln, flags, nxt, kind, extra)


def rx_place():
    lens = lambda *ls: b"".join(struct.pack("<H", l) for l in ls)
    # mergeable: 4 single 2 KiB buffers, two frames
    recs = b"".join(rec(0x800 * i, 2048, F_WRITE, 0) for i in range(4))
    put("rx_place", "mrg_simple", bytes([0, 4, 1]) + lens(1500, 60) + bytes([0, 1, 2, 3]) + recs)
    # mergeable: a 4000-byte frame over three 1500-byte buffers
    recs = b"".join(rec(0x800 * i, 1500, F_WRITE, 0) for i in range(3))
    put("rx_place", "mrg_spans", bytes([0, 3, 0]) + lens(4000) + bytes([0, 1, 2]) + recs)
    # non-mergeable: one chain of three descriptors (big packets)
    recs = rec(0, 1000, F_WRITE | F_NEXT, 1) + rec(0x1000, 1000, F_WRITE | F_NEXT, 2) + rec(0x2000, 1000, F_WRITE, 0)
    put("rx_place", "plain_chain", bytes([1, 1, 0]) + lens(2500) + bytes([0]) + recs)
    # non-mergeable: frame too big for the buffer
    put("rx_place", "plain_toobig", bytes([1, 1, 0]) + lens(3000) + bytes([0]) + rec(0, 1500, F_WRITE, 0))
    # indirect RX chain: descriptor 0 points at the indirect area, 2 entries there
    recs = rec(0, 32, F_INDIRECT, 0, kind=4) + b"".join(rec(0, 0, 0, 0) for _ in range(63))
    recs += rec(0x100, 800, F_WRITE | F_NEXT, 1) + rec(0x900, 800, F_WRITE, 0)
    put("rx_place", "indirect", bytes([1, 1, 0]) + lens(1200) + bytes([0]) + recs)
    # hostile: read-only buffer, out of memory, loop, zero-length, straddling the end
    recs = rec(0, 2048, 0, 0) + rec(0, 2048, F_WRITE, 0, kind=6) + rec(0, 64, F_WRITE | F_NEXT, 2) \
        + rec(0, 0, F_WRITE, 0) + rec(0x10, 2048, F_WRITE, 0, kind=5) + rec(0x40, 64, F_WRITE | F_NEXT, 2)
    put("rx_place", "hostile", bytes([0, 6, 3]) + lens(100, 100, 100, 100) + bytes([0, 1, 2, 3, 4, 5]) + recs)
    put("rx_place", "bad_head", bytes([1, 2, 1]) + lens(64, 64) + bytes([0xF3, 0]) + rec(0, 2048, F_WRITE, 0))


def tx_pop():
    # VERSION_1: 12-byte header then frame in one descriptor; header + frame split
    recs = rec(0, 12 + 60, 0, 0) + rec(0x1000, 12, F_NEXT, 2) + rec(0x2000, 1500, 0, 0)
    put("tx_pop", "two_frames", bytes([0, 2]) + bytes([0, 1]) + recs)
    # legacy 10-byte header
    put("tx_pop", "legacy", bytes([1, 1]) + bytes([0]) + rec(0, 10 + 60, 0, 0))
    # refused frames (full destination) and several heads
    recs = b"".join(rec(0x400 * i, 200, 0, 0) for i in range(6))
    put("tx_pop", "refused", bytes([2, 6]) + bytes(range(6)) + recs)
    # indirect TX chain
    recs = rec(0, 32, F_INDIRECT, 0, kind=4) + b"".join(rec(0, 0, 0, 0) for _ in range(63))
    recs += rec(0x100, 12, F_NEXT, 1) + rec(0x900, 300, 0, 0)
    put("tx_pop", "indirect", bytes([0, 1]) + bytes([0]) + recs)
    # hostile: zero length, writable, loop, out of memory, short header, bad head
    recs = rec(0, 0, 0, 0) + rec(0, 100, F_WRITE, 0) + rec(0, 64, F_NEXT, 2) + rec(0, 64, F_NEXT, 2) \
        + rec(0, 100, 0, 0, kind=6) + rec(0, 4, 0, 0)
    put("tx_pop", "hostile", bytes([0, 7]) + bytes([0, 1, 2, 4, 5, 0xF5, 3]) + recs)


# --- vhost_user_msgs: records req, flags, len, fdinfo, payload ----------------------
def vu(req, payload=b"", reply=True, fds=0, lie=0):
    flags = 0x08 if reply else 0x00
    fdinfo = (fds << 4) | (0x80 | lie if lie else 0)
    return bytes([req, flags, len(payload), fdinfo]) + payload


def vhost_user_msgs():
    PF = 1 << 30
    features = (1 << 32) | (1 << 28) | (1 << 15) | (1 << 5) | (1 << 17) | (1 << 16) | PF
    start = vu(3, reply=False) + vu(1, reply=False) + vu(15, reply=False) \
        + vu(16, struct.pack("<Q", 0x1 | 0x2 | 0x8 | 0x200 | 0x8000), reply=False)
    put("vhost_user_msgs", "early_enable", start + vu(18, struct.pack("<II", 0, 1))
        + vu(2, struct.pack("<Q", features)))
    region = struct.pack("<QQQQ", 0, 1 << 20, 0x7F0000000000, 0)
    memtable = vu(5, struct.pack("<II", 1, 0) + region, fds=1)
    rings = b""
    for q in range(3):
        rings += vu(8, struct.pack("<II", q, 256)) + vu(10, struct.pack("<II", q, 0))
        rings += vu(9, struct.pack("<IIQQQQ", q, 0, 0x7F0000000000 + 0x10000 * q,
                                   0x7F0000000000 + 0x10000 * q + 0x2000,
                                   0x7F0000000000 + 0x10000 * q + 0x1000, 0))
        rings += vu(12, struct.pack("<Q", q), fds=1) + vu(13, struct.pack("<Q", q), fds=1)
        rings += vu(18, struct.pack("<II", q, 1))
    put("vhost_user_msgs", "qemu_start", start + vu(2, struct.pack("<Q", features)) + memtable + rings)
    add = vu(37, struct.pack("<Q", 0) + region, fds=1)
    put("vhost_user_msgs", "mem_slots", start + vu(2, struct.pack("<Q", features)) + vu(36) + add + add
        + vu(38, struct.pack("<Q", 0) + region, fds=1))
    put("vhost_user_msgs", "region_bigger_than_file", start + vu(2, struct.pack("<Q", features))
        + vu(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 24, 0x7F0000000000, 0), fds=1) + rings)
    put("vhost_user_msgs", "config", start + vu(2, struct.pack("<Q", features))
        + vu(24, struct.pack("<III", 0, 12, 0) + bytes(12))
        + vu(25, struct.pack("<III", 0, 6, 0) + bytes(MAC_B)))
    put("vhost_user_msgs", "lying_size", vu(3) + vu(1, lie=9) + vu(2, struct.pack("<Q", features)))


# --- bin_parsers: selector, text -----------------------------------------------------
def bin_parsers():
    for i, s in enumerate([
        "vhost-user:path=/run/vm1.sock,queues=2,mac=52:54:00:12:34:56,vlan=10",
        "vhost-user:path=/run/vm2.sock,client,offloads=on,qmp=/run/vm2.qmp,qmp-nic=net0",
        "tap:ifname=tap0,vlan=20",
        "afpacket:ifname=veth0",
    ]):
        put("bin_parsers", f"port{i}", b"\x00" + s.encode())
    put("bin_parsers", "change", b"\x01vlan=none")
    put("bin_parsers", "change_vlan", b"\x01vlan=100")
    put("bin_parsers", "toml", b"\x02" + b"""workers = 2

[[port]]
kind = "vhost-user"
path = "/run/vm1.sock"
queues = 2
vlan = 10

[[port]]
kind = "tap"
ifname = "tap0"
""")
    put("bin_parsers", "ctl_add", b"\x03" + json.dumps({"cmd": "add-port", "spec": {"kind": "tap", "ifname": "tap1"}}).encode())
    put("bin_parsers", "ctl_set", b"\x03" + json.dumps({"cmd": "set-port", "name": "tap1", "change": {"vlan": 5}}).encode())
    put("bin_parsers", "ctl_ports", b'\x03{"cmd":"ports"}')


# --- qmp_reader: QEMU's side of a session --------------------------------------------
def qmp_reader():
    greet = json.dumps({"QMP": {"version": {"qemu": {"major": 8, "minor": 2, "micro": 0}}, "capabilities": []}})
    ok = lambda i, ret: json.dumps({"return": ret, "id": i})
    info = {"name": "net0", "promiscuous": False, "multicast": "normal", "unicast": "normal",
            "vlan": "normal", "broadcast-allowed": True, "multicast-overflow": False,
            "unicast-overflow": False, "main-mac": "52:54:00:12:34:56", "vlan-table": [],
            "unicast-table": [], "multicast-table": ["01:00:5e:00:00:01"]}
    put("qmp_reader", "session", "n" + "\n".join([greet, ok(1, {}), ok(2, [info]),
        json.dumps({"event": "NIC_RX_FILTER_CHANGED", "data": {"name": "net0"}}), ok(3, [info])]) + "\n")
    put("qmp_reader", "greeting_only", "n" + greet + "\n")
    put("qmp_reader", "not_json", "n" + greet + "\n{not json\n")
    put("qmp_reader", "error_reply", "n" + greet + "\n" + ok(1, {}) + "\n" + json.dumps({"error": {"class": "GenericError", "desc": "no"}, "id": 2}) + "\n")
    # no NIC named: the watcher resolves it (qom-list)
    put("qmp_reader", "resolve", greet + "\n" + ok(1, {}) + "\n" + ok(2, [{"name": "net0", "type": "child<virtio-net-pci>"}]) + "\n")


# --- the switch targets ---------------------------------------------------------------
def switch_targets():
    f = ether(BCAST, MAC_A, 0x0806, bytes(28))
    for t in ["frame_decide"]:
        # ingress port byte, 12-byte virtio-net header, frame
        put(t, "arp_bcast", bytes([0]) + bytes(12) + f)
        put(t, "udp", bytes([1]) + bytes(12) + ether(MAC_A, MAC_B, 0x0800, ipv4_udp()))
        put(t, "vlan", bytes([0x81]) + bytes(12) + ether(MAC_A, MAC_B, 0x8100, struct.pack(">HH", 10, 0x0800) + ipv4_udp()))
    put("mcast_parse", "igmpv2_report", bytes([0, 1, 0, 1, 8]) + bytes([0x16, 0, 0, 0, 239, 1, 1, 1]))
    put("mcast_parse", "igmpv3_report", bytes([0, 1, 0, 1, 16]) + bytes([0x22, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 239, 1, 1, 1]))
    put("mcast_parse", "raw_ip", bytes([0, 1, 0, 0, 28]) + ipv4_udp(0))
    hdr = struct.pack("<BBHHHH", 1, 1, 54, 1448, 34, 16)
    put("offload", "tso4", hdr + bytes([0xFF, 0x80 | 20]) + ether(MAC_A, MAC_B, 0x0800, ipv4_udp(3000)))
    put("offload", "plain", bytes(10) + bytes([0, 0]) + ether(MAC_A, MAC_B, 0x0800, ipv4_udp()))


# --- vxlan: mode, VNI (3 bytes BE), inner_max u16 LE, then buffer or ctl+hdr+frame ----
VNI = 4242
AF_INET, AF_INET6 = 2, 10


def vx_params(mode, vni=VNI, inner_max=1450):
    return bytes([mode]) + struct.pack(">I", vni)[1:] + struct.pack("<H", inner_max)


def vx_header(vni=VNI, flags=0x08):
    return bytes([flags, 0, 0, 0]) + struct.pack(">I", vni)[1:] + b"\0"


def sockaddr(ip):
    if len(ip) == 4:
        name = struct.pack("<H", AF_INET) + struct.pack(">H", 4789) + bytes(ip) + bytes(8)
    else:
        name = struct.pack("<H", AF_INET6) + struct.pack(">HI", 4789, 0) + bytes(ip) + bytes(4)
    return name, len(name)


def recvmsg_buf(ip, payload, flags=0):
    name, namelen = sockaddr(ip)
    return struct.pack("<IIII", namelen, 0, len(payload), flags) + name.ljust(28, b"\0") + payload


def ipv4_tcp(n, csum=0):
    tcp = struct.pack(">HHIIBBHHH", 1000, 5001, 1, 0, 0x50, 0x18, 65535, csum, 0) + bytes(
        (i % 251 for i in range(n)))
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0,
                     bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2]))
    return ip + tcp


def ipv6_tcp(n):
    tcp = struct.pack(">HHIIBBHHH", 1000, 5001, 1, 0, 0x50, 0x18, 65535, 0, 0) + bytes(n)
    src = bytes([0x20, 0x01, 0x0d, 0xb8] + [0] * 11 + [1])
    dst = bytes([0x20, 0x01, 0x0d, 0xb8] + [0] * 11 + [2])
    return struct.pack(">IHBB", 0x60000000, len(tcp), 6, 64) + src + dst + tcp


def csum16(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(">%dH" % (len(b) // 2), b))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_tcp_seg(seq, flags, n):
    """An IPv4 TCP segment with valid IP and TCP checksums (a GRO candidate)."""
    src, dst = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
    payload = bytes(((seq + i) % 251 for i in range(n)))
    tcp = struct.pack(">HHIIBBHHH", 1000, 5001, seq, 7, 0x50, flags, 65535, 0, 0) + payload
    c = csum16(src + dst + struct.pack(">BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack(">H", c) + tcp[18:]
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack(">H", csum16(ip)) + ip[12:]
    return ip + tcp


def gro_buf(ip, seg, payload):
    name, namelen = sockaddr(ip)
    cmsg = struct.pack("<QiiI", 20, 17, 104, seg) + bytes(4)
    return (struct.pack("<IIII", namelen, len(cmsg), len(payload), 0) + name.ljust(28, b"\0")
            + cmsg + payload)


def vxlan():
    v4 = [198, 18, 100, 2]
    v6 = [0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00] + [0] * 9 + [2]
    mapped = [0] * 10 + [0xFF, 0xFF] + v4
    arp = ether(BCAST, MAC_A, 0x0806, bytes(28)).ljust(60, b"\0")
    udp = ether(MAC_A, MAC_B, 0x0800, ipv4_udp())
    rx = lambda name, ip, payload, **kw: put("vxlan", name, vx_params(0) + recvmsg_buf(ip, payload, **kw))
    rx("rx_arp_v4", v4, vx_header() + arp)
    rx("rx_udp_v6", v6, vx_header() + udp)
    rx("rx_mapped", mapped, vx_header() + udp)
    rx("rx_tcp6", v6, vx_header() + ether(MAC_A, MAC_B, 0x86DD, ipv6_tcp(100)))
    rx("rx_bad_flags", v4, vx_header(flags=0) + arp)
    rx("rx_wrong_vni", v4, vx_header(VNI + 1) + arp)
    rx("rx_truncated", v4, vx_header() + arp[:13])
    rx("rx_msg_trunc", v4, vx_header() + arp, flags=0x20)
    rx("rx_stranger", [198, 18, 100, 3], vx_header() + arp)
    # A whole TCP segmentation frame from a sender on the same kernel: passed on as TSO.
    rx("rx_tcp_whole", v4, vx_header() + ether(MAC_A, MAC_B, 0x0800, ipv4_tcp(3000)))
    rx("rx_udp_big", v4, vx_header() + ether(MAC_A, MAC_B, 0x0800, ipv4_udp(2000)))
    # A UDP_GRO run: three in-order segments of one flow (coalesced), then one of another
    # sequence number and one with the I flag clear.
    segs = [vx_header() + ether(MAC_A, MAC_B, 0x0800, ipv4_tcp_seg(1 + 100 * i, f, 100))
            for i, f in enumerate([0x10, 0x10, 0x18])]
    segs.append(vx_header() + ether(MAC_A, MAC_B, 0x0800, ipv4_tcp_seg(9999, 0x10, 100)))
    segs.append(vx_header(flags=0) + ether(MAC_A, MAC_B, 0x0800, ipv4_tcp_seg(401, 0x10, 100)))
    put("vxlan", "rx_gro_run", vx_params(2) + gro_buf(v4, len(segs[0]), b"".join(segs)))
    tx = lambda name, ctl, hdr, frame, inner_max=1450: put(
        "vxlan", name, vx_params(1, inner_max=inner_max) + bytes([ctl]) + hdr + frame)
    plain = bytes(12)
    tx("tx_arp", 0, plain, arp)
    tx("tx_udp", 0, plain, udp)
    tso4 = struct.pack("<BBHHHHH", 1, 1, 54, 1448, 34, 16, 0)
    tx("tx_tso4", 0x80, tso4, ether(MAC_A, MAC_B, 0x0800, ipv4_tcp(6000)))
    tso6 = struct.pack("<BBHHHHH", 1, 4, 74, 1428, 54, 16, 0)
    tx("tx_tso6", 0x80, tso6, ether(MAC_A, MAC_B, 0x86DD, ipv6_tcp(3000)), inner_max=1430)
    csum = struct.pack("<BBHHHHH", 1, 0, 0, 0, 34, 16, 0)
    tx("tx_csum", 0x80, csum, ether(MAC_A, MAC_B, 0x0800, ipv4_tcp(500)))
    # A full-sized TCP segment of a guest whose MTU is the underlay's: cut in two.
    tx("tx_tcp_full", 0, plain, ether(MAC_A, MAC_B, 0x0800, ipv4_tcp(1446)))
    uso = struct.pack("<BBHHHHH", 1, 5, 42, 1000, 34, 6, 0)
    tx("tx_uso", 0x80, uso, ether(MAC_A, MAC_B, 0x0800, ipv4_udp(4000)))
    tx("tx_udp_big", 0, plain, ether(MAC_A, MAC_B, 0x0800, ipv4_udp(2000)))



# --- packed_walk: qsize u16, mode u8, lens u8, ring bytes (16-byte descriptors) -----
P_AVAIL, P_USED = 1 << 7, 1 << 15


def pdesc(addr, ln, id_, flags):
    return struct.pack("<QIHH", addr, ln, id_, flags)


def packed_walk():
    av = P_AVAIL  # available in the first round (wrap counter 1)
    put("packed_walk", "tx_single", struct.pack("<HBB", 8, 0, 0) + pdesc(0x2000, 1500, 0, av))
    put("packed_walk", "tx_chain", struct.pack("<HBB", 8, 0, 0)
        + pdesc(0x2000, 12, 5, av | F_NEXT) + pdesc(0x3000, 60, 5, av) + pdesc(0x4000, 64, 6, av))
    put("packed_walk", "rx_mergeable", struct.pack("<HBB", 4, 1 | 16, 100)
        + b"".join(pdesc(0x2000 + 0x800 * i, 2048, i, av | F_WRITE) for i in range(4)))
    table = pdesc(0x3000, 12, 0, 0) + pdesc(0x3100, 100, 0, 0)
    ring = pdesc(0x1000, len(table), 2, av | F_INDIRECT)
    put("packed_walk", "indirect", struct.pack("<HBB", 4, 4, 0)
        + ring + bytes(0x1000 - len(ring)) + table)
    put("packed_walk", "ctrl", struct.pack("<HBB", 2, 2, 1)
        + pdesc(0x2000, 2, 1, av | F_NEXT) + pdesc(0x2100, 1, 1, av | F_WRITE))
    # Hostile: a list around the whole ring, an ID past the ring, an ID reused, wrong
    # wrap colours inside a list.
    put("packed_walk", "too_long", struct.pack("<HBB", 2, 0, 0)
        + pdesc(0x2000, 64, 0, av | F_NEXT) + pdesc(0x2000, 64, 0, av | F_NEXT))
    put("packed_walk", "bad_id", struct.pack("<HBB", 4, 0, 0) + pdesc(0x2000, 64, 9, av))
    put("packed_walk", "id_reuse", struct.pack("<HBB", 4, 0, 0)
        + pdesc(0x2000, 64, 1, av) + pdesc(0x2000, 64, 1, av))
    put("packed_walk", "bad_wrap", struct.pack("<HBB", 4, 1, 0)
        + pdesc(0x2000, 64, 0, av | F_WRITE | F_NEXT) + pdesc(0x2000, 64, 0, P_USED | F_WRITE))


if __name__ == "__main__":
    for fn in [chain_walk, ctrl_apply, config_space, rx_place, tx_pop, vhost_user_msgs,
               bin_parsers, qmp_reader, switch_targets, vxlan, packed_walk]:
        fn()
