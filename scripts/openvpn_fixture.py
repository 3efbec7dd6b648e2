#!/usr/bin/env python3
"""Turns one captured OpenVPN session into P_DATA_V2 test fixtures.

Called by capture-openvpn-fixtures.sh with the session's directory, which
holds client.log (OpenVPN --verb 9), veth.pcap (the UDP transport, Ethernet)
and tun.pcap (the client's tun device, raw IP). Writes two fixtures for the
client -> server direction: <out> for an ICMP echo request and
<out minus .txt>-keepalive.txt for OpenVPN's keepalive ping.

What OpenVPN 2.6 logs, and how each fixture value is taken from it:
  "Outgoing Data Channel: CIPHER KEY: <hex>"   (verb 7)  -> key
  "Data Channel: cipher '<c>', peer-id: <n>"   (verb 2+) -> cross-check of peer_id
  per packet, at verb 9, in this order:
  "ENCRYPT IV: <packet id 4><implicit IV 8>"             -> nonce, nonce_tail
  "ENCRYPT FROM: <plaintext>"   cut after ~31 bytes with "[more...]"
  "ENCRYPT AD: <header 4><packet id 4>"
  "ENCRYPT TO: <whole datagram>" cut likewise
The wire bytes come from veth.pcap, matched by AD and the logged prefix; the
plaintext of the echo request comes from tun.pcap (matched against the logged
prefix), the keepalive's plaintext is short enough to be logged whole.
Only the standard library is needed; if the `cryptography` package is present
the AEAD is also checked here.
"""

import argparse
import datetime
import os
import re
import struct
import sys

# OpenVPN ping.c: the keepalive ping's payload.
KEEPALIVE = bytes.fromhex("2a187bf3641eb4cb07ed2d0a981fc748")
HEADER_LEN = 4
PACKET_ID_LEN = 4
TAG_LEN = 16
OVERHEAD = HEADER_LEN + PACKET_ID_LEN + TAG_LEN


def fail(msg):
    sys.exit(f"openvpn_fixture: {msg}")


def hex_field(text):
    """Hex bytes of a log field; (bytes, truncated)."""
    truncated = "[more...]" in text
    digits = re.sub(r"[^0-9a-fA-F]", "", text.replace("[more...]", ""))
    if len(digits) % 2:
        digits = digits[:-1]  # a cut in the middle of a byte
    return bytes.fromhex(digits), truncated


def parse_log(path):
    key = None
    peer_id = None
    records = []
    cur = None
    line_re = re.compile(r"^\S+ \S+ us=\d+ (.*)$")
    with open(path, errors="replace") as f:
        for raw in f:
            m = line_re.match(raw.rstrip("\n"))
            msg = m.group(1) if m else raw.rstrip("\n")
            if msg.startswith("Outgoing Data Channel: CIPHER KEY: "):
                if key is not None:
                    fail("more than one outgoing data-channel key in the log (renegotiation?)")
                key, cut = hex_field(msg.split(": ", 2)[2])
                if cut:
                    fail("data-channel key truncated in the log")
            m2 = re.match(r"Data Channel: cipher '([^']+)', peer-id: (\d+)", msg)
            if m2:
                peer_id = (m2.group(1), int(m2.group(2)))
            for field in ("IV", "FROM", "AD", "TO"):
                prefix = f"ENCRYPT {field}: "
                if msg.startswith(prefix):
                    if field == "IV":
                        cur = {}
                        records.append(cur)
                    if cur is None or field in cur:
                        fail(f"unexpected order of ENCRYPT lines at: {msg}")
                    cur[field] = hex_field(msg[len(prefix):])
    if key is None:
        fail("no 'Outgoing Data Channel: CIPHER KEY' line (is --verb at least 7?)")
    if peer_id is None:
        fail("no 'Data Channel: cipher ..., peer-id' line")
    records = [r for r in records if len(r) == 4]
    if not records:
        fail("no ENCRYPT records (is --verb 9?)")
    return key, peer_id, records


def pcap_packets(path):
    """(linktype, [frame bytes]) of a classic little- or big-endian pcap."""
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        fail(f"{path}: not a pcap file")
    linktype = struct.unpack(e + "I", data[20:24])[0]
    frames = []
    off = 24
    while off + 16 <= len(data):
        incl, orig = struct.unpack(e + "II", data[off + 8 : off + 16])
        frame = data[off + 16 : off + 16 + incl]
        if incl != orig:
            fail(f"{path}: truncated capture")
        frames.append(frame)
        off += 16 + incl
    return linktype, frames


def udp_payloads(path, src_ip):
    """UDP payloads of IPv4 datagrams from src_ip in an Ethernet capture."""
    linktype, frames = pcap_packets(path)
    if linktype != 1:
        fail(f"{path}: expected Ethernet, got linktype {linktype}")
    out = []
    for fr in frames:
        if fr[12:14] != b"\x08\x00":
            continue
        ip = fr[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 17 or ip[12:16] != src_ip:
            continue
        total = struct.unpack(">H", ip[2:4])[0]
        udp = ip[ihl:total]
        ulen = struct.unpack(">H", udp[4:6])[0]
        out.append(udp[8:ulen])
    return out


def tun_packets(path):
    linktype, frames = pcap_packets(path)
    if linktype not in (101, 12, 228):  # LINKTYPE_RAW / DLT_RAW / IPV4
        fail(f"{path}: expected raw IP, got linktype {linktype}")
    return frames


def aead_check(cipher, key, nonce, wire, plaintext):
    try:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
    except ImportError:
        return "not checked here (python cryptography not installed)"
    aead = ChaCha20Poly1305(key) if cipher == "CHACHA20-POLY1305" else AESGCM(key)
    ad, tag, ct = wire[:8], wire[8:24], wire[24:]
    if aead.decrypt(nonce, ct + tag, ad) != plaintext:
        fail("AEAD check: decryption does not give the plaintext")
    if aead.encrypt(nonce, plaintext, ad) != ct + tag:
        fail("AEAD check: encryption does not give the wire bytes")
    return "checked here with python cryptography"


def build(cipher, key, logged_peer_id, rec, wires, plaintext, kind, how_plaintext):
    nonce, cut = rec["IV"]
    if cut or len(nonce) != 12:
        fail(f"bad ENCRYPT IV {nonce.hex()}")
    ad, cut = rec["AD"]
    if cut or len(ad) != HEADER_LEN + PACKET_ID_LEN:
        fail(f"bad ENCRYPT AD {ad.hex()}")
    to_prefix = rec["TO"][0]
    matches = [w for w in wires if w[:8] == ad and w.startswith(to_prefix)]
    if len(matches) != 1:
        fail(f"{len(matches)} captured datagrams match ENCRYPT AD {ad.hex()}")
    wire = matches[0]
    if len(wire) != OVERHEAD + len(plaintext):
        fail(f"wire length {len(wire)} != {OVERHEAD} + plaintext length {len(plaintext)}")
    # The cross-check the fixture exists for: nonce = packet id as sent || implicit IV.
    if nonce[:4] != wire[4:8]:
        fail(f"logged nonce {nonce.hex()} does not start with the packet id {wire[4:8].hex()}")
    if wire[0] >> 3 != 9:
        fail(f"opcode {wire[0] >> 3} is not P_DATA_V2")
    key_id = wire[0] & 7
    peer_id = int.from_bytes(wire[1:4], "big")
    if (cipher, peer_id) != logged_peer_id:
        fail(f"log says {logged_peer_id}, wire says {(cipher, peer_id)}")
    checked = aead_check(cipher, key, nonce, wire, plaintext)
    return {
        "kind": kind,
        "cipher": cipher,
        "key": key,
        "nonce_tail": nonce[4:],
        "peer_id": peer_id,
        "key_id": key_id,
        "packet_id": int.from_bytes(wire[4:8], "big"),
        "nonce": nonce,
        "wire": wire,
        "plaintext": plaintext,
        "how_plaintext": how_plaintext,
        "checked": checked,
    }


def write_fixture(path, fx, args, when):
    lines = [
        f"# One real OpenVPN P_DATA_V2 data packet ({fx['kind']}), client -> server,",
        "# standard AEAD layout: header(4) packet_id(4) tag(16) ciphertext.",
        f"# OpenVPN: {args.version}",
        f"# Captured: {when}",
        f"# Command: {args.command}",
        "# Session: two network namespaces, UDP, TLS with a PKI generated for this run",
        "# and deleted after it, --disable-dco --verb 9; the key belongs to that",
        "# discarded session only.",
        "# Sources: key = client log 'Outgoing Data Channel: CIPHER KEY';",
        "# nonce = client log 'ENCRYPT IV' (packet_id || nonce_tail); wire = the UDP",
        "# payload captured on the veth;",
        f"# plaintext = {fx['how_plaintext']}.",
        f"# AEAD: {fx['checked']}.",
        "# Integers are decimal, byte strings hex.",
        f"cipher = {fx['cipher']}",
        f"key = {fx['key'].hex()}",
        f"nonce_tail = {fx['nonce_tail'].hex()}",
        f"peer_id = {fx['peer_id']}",
        f"key_id = {fx['key_id']}",
        f"packet_id = {fx['packet_id']}",
        f"nonce = {fx['nonce'].hex()}",
        f"wire = {fx['wire'].hex()}",
        f"plaintext = {fx['plaintext'].hex()}",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {path}: packet_id {fx['packet_id']}, {len(fx['wire'])} bytes on the wire", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cipher", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--version", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    key, logged_peer_id, records = parse_log(os.path.join(args.dir, "client.log"))
    tails = {r["IV"][0][4:] for r in records}
    if len(tails) != 1:
        fail(f"implicit IV changed within the session: {sorted(t.hex() for t in tails)}")
    wires = udp_payloads(os.path.join(args.dir, "veth.pcap"), bytes([10, 231, 0, 2]))
    tun = tun_packets(os.path.join(args.dir, "tun.pcap"))
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    # An ICMP echo request the client sent: IPv4, protocol 1, type 8.
    echo = None
    for rec in records:
        prefix, cut = rec["FROM"]
        if len(prefix) < 21 or prefix[0] != 0x45 or prefix[9] != 1 or prefix[20] != 8:
            continue
        same = [p for p in tun if p.startswith(prefix)]
        if len(same) == 1:
            how = "the inner packet captured on the client's tun device"
            how += ", matching the logged 'ENCRYPT FROM' prefix" if cut else ""
            echo = build(args.cipher, key, logged_peer_id, rec, wires, same[0], "ICMP echo request", how)
            break
    if echo is None:
        fail("no ICMP echo request found in both the log and the tun capture")
    write_fixture(args.out, echo, args, when)

    ping = next((r for r in records if r["FROM"] == (KEEPALIVE, False)), None)
    if ping is None:
        fail("no keepalive ping sent by the client (session too short?)")
    fx = build(
        args.cipher, key, logged_peer_id, ping, wires, KEEPALIVE, "keepalive ping",
        "OpenVPN's keepalive ping, logged whole as 'ENCRYPT FROM'",
    )
    write_fixture(re.sub(r"\.txt$", "", args.out) + "-keepalive.txt", fx, args, when)


if __name__ == "__main__":
    main()
