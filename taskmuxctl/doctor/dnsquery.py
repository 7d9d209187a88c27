"""One DNS A query over UDP, built and read with ``struct`` (the client stays stdlib-only;
the daemon's dnslib is not needed to ask a question)."""

from __future__ import annotations

import os
import socket
import struct

TYPE_A = 1
CLASS_IN = 1


def build_query(name: str, qid: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # recursion desired, 1 question
    labels = b"".join(bytes([len(p)]) + p for p in name.rstrip(".").encode("idna").split(b"."))
    return header + labels + b"\x00" + struct.pack("!HH", TYPE_A, CLASS_IN)


def _skip_name(data: bytes, pos: int) -> int:
    while True:
        length = data[pos]
        if length & 0xC0 == 0xC0:  # a compression pointer ends the name
            return pos + 2
        if length == 0:
            return pos + 1
        pos += 1 + length


def parse_answer(data: bytes, qid: int) -> list[str]:
    """The IPv4 addresses in a response to query ``qid``; ValueError for anything else."""
    if len(data) < 12:
        raise ValueError("short DNS response")
    rid, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", data[:12])
    if rid != qid or not flags & 0x8000:
        raise ValueError("not a response to this query")
    rcode = flags & 0x000F
    if rcode:
        raise ValueError({3: "NXDOMAIN", 2: "SERVFAIL", 5: "REFUSED"}.get(rcode, f"rcode {rcode}"))
    pos = 12
    for _ in range(qdcount):
        pos = _skip_name(data, pos) + 4
    out = []
    for _ in range(ancount):
        pos = _skip_name(data, pos)
        rtype, _rclass, _ttl, rdlength = struct.unpack("!HHIH", data[pos:pos + 10])
        pos += 10
        if rtype == TYPE_A and rdlength == 4:
            out.append(socket.inet_ntoa(data[pos:pos + 4]))
        pos += rdlength
    return out


def query_a(name: str, server: str, port: int, timeout: float = 2.0) -> list[str]:
    qid = int.from_bytes(os.urandom(2), "big")
    with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET,
                       socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(build_query(name, qid), (server, port))
        data, _ = sock.recvfrom(4096)
    return parse_answer(data, qid)
