"""A minimal DNS A query over UDP (tests only): what a server answers for a name."""
from __future__ import annotations

import os
import socket
import struct


def query_a(server: str, name: str, timeout: float = 1.0, port: int = 53) -> list[str] | None:
    """The A records server answers for name ([] for NXDOMAIN or no data), or None when no
    answer comes (nothing listens, or it times out)."""
    qid = int.from_bytes(os.urandom(2), "big")
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", 1, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + question, (server, port))
            data = s.recv(4096)
        except OSError:  # refused (ICMP) or timed out
            return None
    rid, _flags, _qd, ancount = struct.unpack(">HHHH", data[:8])
    if rid != qid:
        return None
    pos, found = 12 + len(question), []
    for _ in range(ancount):
        pos = _skip_name(data, pos)
        rtype, _cls, _ttl, rdlen = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            found.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += rdlen
    return found


def _skip_name(data: bytes, pos: int) -> int:
    while data[pos]:
        if data[pos] & 0xC0 == 0xC0:  # a pointer ends the name
            return pos + 2
        pos += data[pos] + 1
    return pos + 1
