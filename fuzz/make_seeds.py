#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/.

Each seed is a small, meaningful input in the layout its fuzz target documents
(the comment at the top of fuzz_targets/<target>.rs): IOCTL buffers built
byte by byte as OpenVPN's dco_win.c fills them (the same buffers as the tests
in src/uapi/decode.rs), the real OpenVPN packets of
tests/fixtures/openvpn-2.6, and TCP SYN packets with valid checksums.

Run from anywhere: python3 fuzz/make_seeds.py. The output is deterministic;
the seeds are committed, so run it only after changing an input layout.
"""

import pathlib
import struct

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(bytes(data))


# --- uapi_decode: selector (function - 1), u16 LE output size, input -------

def le(v):
    return struct.pack("<i", v)


def sin(ip, port):
    """28-byte address union holding SOCKADDR_IN (AF_INET = 2)."""
    b = struct.pack("<H", 2) + struct.pack(">H", port) + bytes(ip)
    return b + bytes(28 - len(b))


def sin6(ip, port, flowinfo=0, scope=0):
    """28-byte SOCKADDR_IN6 (Windows AF_INET6 = 23)."""
    return struct.pack("<H", 23) + struct.pack(">H", port) + struct.pack("<I", flowinfo) + bytes(ip) + struct.pack("<I", scope)


V6 = bytes.fromhex("20010db8000000000000000000000042")


def key_direction(fill, length, tail):
    return bytes((fill + i) & 0xFF for i in range(32)) + bytes([length]) + bytes([tail]) * 8


def crypto(slot, cipher, key_len, key_id, peer):
    b = key_direction(0x10, key_len, 0xE0) + key_direction(0x80, key_len, 0xD0)
    b += bytes(2) + le(slot) + le(cipher) + bytes([key_id]) + bytes(3) + le(peer)
    assert len(b) == 100
    return b


def ioctl(function, out_len, payload):
    return bytes([function - 1]) + struct.pack("<H", out_len) + payload


def uapi():
    t = "uapi_decode"
    write(t, "new_peer_udp4", ioctl(1, 0, sin([0, 0, 0, 0], 0) + sin([198, 51, 100, 7], 1194) + le(0)))
    write(t, "new_peer_tcp6", ioctl(1, 0, sin6(bytes(16), 0) + sin6(V6, 443, 7, 3) + le(1)))
    write(t, "get_stats", ioctl(2, 64, b""))
    write(t, "new_key_aes256", ioctl(3, 0, crypto(0, 1, 32, 2, 0x00FFFFFF)))
    write(t, "new_key_chacha", ioctl(3, 0, crypto(1, 2, 32, 0, 5)))
    write(t, "set_peer", ioctl(5, 0, le(10) + le(60) + le(1400)))
    write(t, "get_version", ioctl(8, 12, b""))
    write(t, "new_key_v2_epoch", ioctl(9, 0, crypto(0, 1, 16, 1, 0) + struct.pack("<I", 2)))
    write(t, "set_mode_mp", ioctl(10, 0, le(1)))
    write(t, "mp_start_vpn_v6", ioctl(11, 32, sin6(bytes(16), 1194) + le(0)))
    local = bytes([2, 0]) + bytes(26)  # dco_new_peer fills only the family
    write(t, "mp_new_peer", ioctl(12, 0, local + sin([203, 0, 113, 9], 50000) + bytes([10, 8, 0, 6]) + bytes(16) + le(5)))
    write(t, "mp_set_peer", ioctl(13, 0, le(5) + le(10) + le(60) + le(-1)))
    write(t, "notify_event", ioctl(14, 144, b""))
    write(t, "mp_del_peer", ioctl(15, 0, le(5)))
    write(t, "mp_add_iroute_v6", ioctl(17, 0, V6 + le(64) + le(5) + le(1)))
    write(t, "mp_del_iroute_v4", ioctl(18, 0, bytes([10, 9, 0, 0]) + bytes(12) + le(16) + le(5) + le(0)))
    write(t, "get_peer_stats_all", ioctl(19, 80, le(-1)))
    write(t, "get_peer_stats_short", ioctl(19, 3, le(-1)))
    # Function 20 does not exist: the raw-code form (selector 0xF0).
    write(t, "unknown_code", bytes([0xF0]) + struct.pack("<I", 0x00220050) + struct.pack("<H", 0) + le(0))


# --- data_packet: mode byte, then a datagram (raw) or a description --------

def fixtures():
    for path in sorted((ROOT / "tests/fixtures/openvpn-2.6").glob("*.txt")):
        fields = {}
        for line in path.read_text().splitlines():
            if line.startswith("#") or "=" not in line:
                continue
            k, v = (s.strip() for s in line.split("=", 1))
            fields[k] = v
        yield path.stem, bytes.fromhex(fields["wire"])


def data_packet():
    t = "data_packet"
    for name, wire in fixtures():
        write(t, "raw_" + name, b"\x00" + wire)
    # P_CONTROL_HARD_RESET_CLIENT_V2 (opcode 7, key id 0) with a session id,
    # and a P_DATA_V2 header alone.
    write(t, "raw_control_reset", b"\x00" + bytes([7 << 3]) + bytes(range(8)) + bytes(5))
    write(t, "raw_data_header_only", b"\x00" + bytes([0x48, 0, 0, 1]))
    # Mutate mode: flags (bit 0 epoch), peer id (3), packet id (4, or epoch
    # selector 1 + counter 6), plaintext length (2), pattern seed, mutations.
    std = b"\x01" + b"\x00" + b"\x00\x00\x07" + struct.pack(">I", 1) + struct.pack(">H", 48) + b"\x2a"
    write(t, "mutate_standard_bitflip", std + b"\x00" + struct.pack(">H", 10))
    write(t, "mutate_standard_truncate", std + b"\x01" + struct.pack(">H", 30))
    write(t, "mutate_standard_extend", std + bytes([2 | (4 << 2)]) + b"\xde\xad\xbe\xef")
    epoch = b"\x01" + b"\x01" + b"\x00\x00\x00" + b"\x00" + bytes(5) + b"\x01" + struct.pack(">H", 16) + b"\x07"
    write(t, "mutate_epoch_set_byte", epoch + b"\x03" + struct.pack(">H", 0) + b"\x49")
    future = b"\x01" + b"\x01" + b"\x00\x00\x01" + b"\x02" + bytes(5) + b"\x09" + struct.pack(">H", 100) + b"\x00"
    write(t, "mutate_epoch_future_flip_tag", future + bytes([0xE0]) + struct.pack(">H", 0xFFFF))


# --- tcp_stream: chunk-size count, sizes, stream ---------------------------

def framed(*packets):
    return b"".join(struct.pack(">H", len(p)) + p for p in packets)


def tcp_stream():
    t = "tcp_stream"
    packets = [wire for _, wire in fixtures()][:3]
    write(t, "whole", b"\x00" + framed(*packets))
    write(t, "byte_by_byte", b"\x01\x01" + framed(*packets))
    write(t, "odd_chunks", b"\x03" + bytes([1, 5, 130]) + framed(*packets))
    write(t, "largest_frame", b"\x02" + bytes([100, 160]) + framed(bytes(range(256)) * 8))
    write(t, "zero_length", b"\x00" + framed(packets[0]) + b"\x00\x00" + framed(packets[1]))
    write(t, "too_long", b"\x01\x03" + framed(packets[0]) + b"\x08\x01" + bytes(10))
    write(t, "partial_tail", b"\x00" + framed(packets[0]) + b"\x00\x40" + bytes(20))


# --- mss_clamp: u16 MSS, flags, packet --------------------------------------

def csum(data):
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(">%dH" % (len(data) // 2), data))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def tcp(flags, options, payload=b""):
    assert len(options) % 4 == 0
    off = (20 + len(options)) // 4
    return struct.pack(">HHIIBBHHH", 49152, 443, 0x11223344, 0, off << 4, flags, 64240, 0, 0) + options + payload


def ipv4(segment):
    total = 20 + len(segment)
    h = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 0x1234, 0x4000, 64, 6, 0, bytes([10, 8, 0, 2]), bytes([10, 8, 0, 1]))
    h = h[:10] + struct.pack(">H", ~csum(h) & 0xFFFF) + h[12:]
    pseudo = h[12:20] + struct.pack(">BBH", 0, 6, len(segment))
    c = ~csum(pseudo + segment) & 0xFFFF
    return h + segment[:16] + struct.pack(">H", c) + segment[18:]


def ipv6(segment):
    src = bytes.fromhex("fd000000000000000000000000000002")
    dst = bytes.fromhex("fd000000000000000000000000000001")
    h = struct.pack(">IHBB", 0x60000000, len(segment), 6, 64) + src + dst
    pseudo = src + dst + struct.pack(">IxxxB", len(segment), 6)
    c = ~csum(pseudo + segment) & 0xFFFF
    return h + segment[:16] + struct.pack(">H", c) + segment[18:]


def mss_clamp():
    t = "mss_clamp"
    syn, synack = 0x02, 0x12
    mss1460 = bytes([2, 4]) + struct.pack(">H", 1460)
    # Linux's SYN options: MSS, SACK permitted, timestamps, NOP, window scale.
    linux = mss1460 + bytes([4, 2, 8, 10]) + bytes(8) + bytes([1, 3, 3, 7])
    write(t, "syn4_linux", struct.pack(">H", 1360) + b"\x00" + ipv4(tcp(syn, linux)))
    write(t, "synack4_below_limit", struct.pack(">H", 1500) + b"\x00" + ipv4(tcp(synack, mss1460)))
    write(t, "syn6", struct.pack(">H", 1400) + b"\x00" + ipv6(tcp(syn, bytes([2, 4]) + struct.pack(">H", 1440))))
    # One NOP first: the MSS value straddles two checksummed words.
    odd = bytes([1]) + mss1460 + bytes([0, 0, 0])
    write(t, "syn4_odd_alignment", struct.pack(">H", 1200) + b"\x00" + ipv4(tcp(syn, odd)))
    write(t, "syn4_two_mss_fixups", struct.pack(">H", 536) + b"\x03" + ipv4(tcp(syn, mss1460 + mss1460)))
    write(t, "ack4_with_data", struct.pack(">H", 1360) + b"\x00" + ipv4(tcp(0x10, b"", b"hello")))


# --- control_sequence: operations on one adapter (fuzz_targets/control_sequence.rs)
# Addresses and output sizes are indices into the target's ADDRS and OUT_LENS.

A_LOCAL4, A_REMOTE4, A_LOCAL6, A_ANY4, A_ANY6, A_LISTEN6 = 0, 1, 2, 4, 5, 7
A_CLIENT1, A_CLIENT2, A_TCP6 = 8, 10, 12
R_REMOTE4, R_CLIENT1, R_CLIENT2 = 0, 2, 3          # the network's sockets (REMOTES)
OUT_0, OUT_12, OUT_32, OUT_40, OUT_64, OUT_144, OUT_2048 = 0, 3, 4, 6, 7, 10, 11


def op_new_peer(local, remote, tcp=False, listen=False, shape=0):
    return bytes([1, local, remote, (1 if tcp else 0) | (2 if listen else 0), OUT_0, shape])


def op_new_key(slot, key_id, peer, material, v2=False, epoch=False, chacha=False, key_len=0, shape=0):
    flags = (1 if v2 or epoch else 0) | (2 if epoch else 0)
    return bytes([2, flags, slot, 1 if chacha else 0, key_len, key_id, peer, material, shape])


def op_set_peer(interval, timeout, peer=None, mss=0, shape=0):
    return bytes([3, 0 if peer is None else 1, peer or 0, interval, timeout, mss, shape])


def op_mp_new_peer(remote, vpn4, vpn6, peer, shape=0):
    return bytes([4, remote, vpn4, vpn6, peer, shape])


SMALL = {"set_mode_mp": 0x1E, "start_vpn": 1, "del_peer": 2, "swap_keys": 3, "mp_swap_keys": 4,
         "mp_del_peer": 5, "get_stats": 6, "get_version": 7, "notify_event": 8, "get_peer_stats": 9}


def op_small(which, peer=0, out=OUT_0):
    return bytes([5, SMALL[which], peer, out])


def op_mp_start_vpn(listen, out=OUT_32, shape=0):
    return bytes([6, listen, 0, out, shape])


def op_iroute(prefix, netbits, peer, delete=False, v6=False):
    return bytes([7, (1 if delete else 0) | (2 if v6 else 0), prefix, netbits, peer, 0])


def op_read(out=OUT_2048):
    return bytes([8, out])


def op_write(payload, to=0, prefix=False):
    return bytes([9, 1 if prefix else 0, to, len(payload)]) + payload


def op_cancel(back):
    return bytes([10, back])


def op_timer(seconds):
    return bytes([11]) + struct.pack("<H", seconds * 1000 // 16)


def op_datagram(remote, to, payload):
    return bytes([12, remote, to, len(payload)]) + payload


def op_data(remote, to, payload):
    return bytes([13, remote, to, len(payload)]) + payload


def op_tcp(what, payload=b""):
    return bytes([14, what, len(payload)]) + payload


OP_CLEANUP, OP_PUMP = bytes([15]), bytes([16])

SESSION = bytes(range(1, 9))
HARD_RESET_CLIENT = bytes([7 << 3]) + SESSION + bytes([0]) + struct.pack(">I", 0)
HARD_RESET_SERVER = bytes([8 << 3]) + SESSION[::-1] + bytes([1]) + struct.pack(">I", 0) + SESSION + struct.pack(">I", 0)
CONTROL_V1 = bytes([4 << 3]) + SESSION + bytes([0]) + struct.pack(">I", 1) + b"\x16\x03\x01" + bytes(40)
PING = bytes([0x45, 0, 0, 28]) + bytes(4) + bytes([64, 1, 0, 0, 10, 8, 0, 1, 10, 8, 0, 2]) + bytes([8, 0, 0, 0, 0, 1, 0, 1])


def control_sequence():
    t = "control_sequence"
    # OpenVPN 2.6 P2P UDP client: version, NEW_PEER, TLS over ReadFile/WriteFile,
    # key, keepalive, START_VPN, data, renegotiation, ping timeout, DEL_PEER.
    write(t, "p2p_udp_client_26", b"".join([
        op_small("get_version", out=OUT_12),
        op_new_peer(A_LOCAL4, A_REMOTE4),
        op_read(),
        op_write(HARD_RESET_CLIENT),
        op_datagram(R_REMOTE4, A_LOCAL4, HARD_RESET_SERVER),
        op_read(),
        op_write(CONTROL_V1),
        op_new_key(0, 0, 1, 0x11),
        op_set_peer(10, 60),
        op_small("start_vpn"),
        op_data(R_REMOTE4, A_LOCAL4, PING),
        op_timer(11),
        op_small("get_peer_stats", peer=0xF0, out=OUT_64),
        op_new_key(1, 1, 1, 0x22),
        op_small("swap_keys"),
        op_data(R_REMOTE4, A_LOCAL4, PING),
        op_timer(61),
        op_read(),
        op_small("del_peer"),
        OP_CLEANUP,
    ]))
    # OpenVPN 2.6 P2P TCP over IPv6: NEW_PEER parks until connected, framed
    # control packets, ChaCha20-Poly1305, then the server resets.
    write(t, "p2p_tcp6_client_26", b"".join([
        op_new_peer(A_ANY6, A_TCP6, tcp=True, listen=True),
        OP_PUMP,
        op_read(),
        op_write(HARD_RESET_CLIENT),
        op_tcp(2, HARD_RESET_SERVER),
        op_read(),
        op_new_key(0, 0, 3, 0x33, chacha=True),
        op_set_peer(10, 120),
        op_small("start_vpn"),
        op_tcp(2, CONTROL_V1),
        op_small("get_stats", out=OUT_64),
        op_read(),
        op_tcp(1),
        op_read(),
        op_small("del_peer"),
        OP_CLEANUP,
    ]))
    # OpenVPN 2.7 P2P client with epoch data keys (NEW_KEY_V2) and a rekey.
    write(t, "p2p_udp6_epoch_27", b"".join([
        op_small("get_version", out=OUT_12),
        op_new_peer(A_LOCAL6, 3),
        op_datagram(1, A_LOCAL6, HARD_RESET_SERVER),
        op_read(),
        op_new_key(0, 1, 5, 0x44, epoch=True),
        op_set_peer(5, 30, mss=100),
        op_small("start_vpn"),
        op_data(1, A_LOCAL6, PING),
        op_new_key(1, 2, 5, 0x55, epoch=True, key_len=1),
        op_small("swap_keys"),
        op_small("get_peer_stats", peer=5, out=OUT_40),
        op_timer(6),
        OP_CLEANUP,
    ]))
    # OpenVPN 2.7 MP server: SET_MODE, MP_START_VPN, NOTIFY_EVENT waiting,
    # two clients with keys, an iroute, data, MP_DEL_PEER, keepalive expiry.
    write(t, "mp_server_27", b"".join([
        op_small("get_version", out=OUT_12),
        op_small("set_mode_mp"),
        op_mp_start_vpn(A_LISTEN6),
        op_small("notify_event", out=OUT_144),
        op_read(),
        op_datagram(R_CLIENT1, A_LISTEN6, HARD_RESET_CLIENT),
        op_write(HARD_RESET_SERVER, to=A_CLIENT1, prefix=True),
        op_mp_new_peer(A_CLIENT1, 2, 2, 1),
        op_new_key(0, 0, 1, 0x66, v2=True),
        op_set_peer(10, 60, peer=1),
        op_iroute(3, 24, 1),
        op_data(R_CLIENT1, A_LISTEN6, PING),
        op_mp_new_peer(A_CLIENT2, 3, 0, 2),
        op_new_key(0, 0, 2, 0x77, epoch=True),
        op_set_peer(5, 20, peer=2),
        op_small("mp_swap_keys", peer=2),
        op_small("get_peer_stats", peer=0xF0, out=OUT_64),
        op_small("mp_del_peer", peer=1),
        op_small("notify_event", out=OUT_144),
        op_timer(30),
        op_small("notify_event", out=OUT_144),
        op_iroute(3, 24, 1, delete=True),
        OP_CLEANUP,
    ]))
    # Hostile use of one handle: unknown and damaged IOCTLs, keys without a
    # peer, reads until the queue is full, cancels, a second handle.
    write(t, "bad_input_and_reopen", b"".join([
        bytes([0, 23, OUT_0, 4, 1, 2, 3, 4]),
        op_new_key(0, 0, 0, 0x01),
        op_new_peer(A_LOCAL4, A_REMOTE4, shape=6 | (3 << 3)),
        op_write(CONTROL_V1),
        op_small("set_mode_mp"),
        op_small("set_mode_mp"),
        op_small("notify_event", out=OUT_12),
        op_small("notify_event", out=OUT_144),
        *[op_read() for _ in range(17)],
        op_cancel(0),
        op_cancel(3),
        op_mp_start_vpn(A_ANY4, out=OUT_12),
        op_iroute(1, 40, 0),
        OP_CLEANUP,
        op_new_peer(A_LOCAL4, A_REMOTE4),
        op_small("start_vpn"),
        op_read(),
        op_cancel(0),
    ]))


if __name__ == "__main__":
    uapi()
    data_packet()
    tcp_stream()
    mss_clamp()
    control_sequence()
