"""Header lists between HTTP/2 (the browser) and HTTP/1.1 (the task), with no I/O.

The h2 library already refuses what RFC 9113 forbids outright (upper-case names, CR, LF or
NUL in a value, connection-specific fields, misplaced or repeated pseudo-headers). What goes
on to the task must also be a request that every HTTP/1.1 server reads the same way, so the
rules of ``http1`` hold here too: the method and field names are tokens, values hold no
control character but HTAB, ``:authority`` and ``Host`` are one valid authority, and
``:path`` is origin-form (``*`` for OPTIONS).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from taskmuxd.proxy.http1 import BadMessage

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_AUTHORITY = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?")
_PATH = re.compile(rb"/[\x21-\x7e]*")  # (as an HTTP/1.1 request-target: visible ASCII)
# Fields the proxy sets or that mean something only on one hop.
_DROPPED = frozenset({b"host", b"te", b"x-forwarded-proto", b"x-forwarded-host",
                      b"x-forwarded-for", b"content-length"})
# Response fields that belong to the task's HTTP/1.1 connection, not to the message.
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                         b"transfer-encoding", b"upgrade", b"te", b"trailer"})
_MAX_LENGTH_DIGITS = 18


class Request:
    """An HTTP/2 request, checked, as the HTTP/1.1 request the task gets."""

    __slots__ = ("accept_html", "authority", "has_body", "headers", "length", "method", "path",
                 "websocket")

    def __init__(self) -> None:
        self.method = b""
        self.path = b""
        self.authority = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.length: int | None = None  # Content-Length, when the client sent one
        self.has_body = True
        self.accept_html = False
        self.websocket = False  # extended CONNECT (RFC 8441): an HTTP/1.1 upgrade to the task


def request(fields: Iterable[tuple[bytes, bytes]], end_stream: bool,
            client_ip: str) -> Request:
    """Check an HTTP/2 request's header list and turn it into HTTP/1.1 fields for the task
    (``Host`` first, cookies joined into one field, ``X-Forwarded-*`` set as on HTTP/1.1);
    raises BadMessage saying what is wrong."""
    req = Request()
    req.has_body = not end_stream
    pseudo: dict[bytes, bytes] = {}
    hosts: list[bytes] = []
    cookies: list[bytes] = []
    chain: list[bytes] = []
    lengths: list[bytes] = []
    kept: list[tuple[bytes, bytes]] = []
    for name, value in fields:
        if name[:1] == b":":
            pseudo[name] = value
            continue
        if _TOKEN.fullmatch(name) is None:
            raise BadMessage(f"invalid header name {name[:40]!r}")
        if _VALUE.fullmatch(value) is None:
            raise BadMessage(f"a control character in the value of {name[:40].decode()}")
        if name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            hosts.append(value)
        elif name == b"x-forwarded-for":
            chain.append(value)
        elif name == b"content-length":
            lengths.append(value)
        elif name not in _DROPPED:
            if name == b"accept" and b"text/html" in value:
                req.accept_html = True
            kept.append((name, value))
    req.method = pseudo.get(b":method", b"")
    if _METHOD.fullmatch(req.method) is None:
        raise BadMessage(f"invalid :method {req.method[:40]!r}")
    if req.method == b"CONNECT":
        if pseudo.get(b":protocol") != b"websocket":
            return req  # refused by the caller, with a page
        # A WebSocket over HTTP/2 becomes the HTTP/1.1 upgrade the task knows (RFC 8441 5).
        req.websocket = True
        req.method = b"GET"
        req.has_body = False
        lengths = []
    authority = _authority(pseudo.get(b":authority"), hosts)
    req.authority = authority.decode("ascii")
    req.path = path = pseudo.get(b":path", b"")
    if path == b"*":
        if req.method != b"OPTIONS":
            raise BadMessage("the target * is only for OPTIONS")
    elif _PATH.fullmatch(path) is None:
        raise BadMessage(f"invalid :path {path[:80]!r}")
    if lengths:
        if len(set(lengths)) != 1 or not lengths[0].isdigit() \
                or len(lengths[0].lstrip(b"0")) > _MAX_LENGTH_DIGITS:
            raise BadMessage(f"invalid Content-Length {lengths[0][:40]!r}")
        req.length = int(lengths[0])
    out = [(b"host", authority)]
    out.extend(kept)
    if cookies:  # RFC 9113 8.2.3: one field on HTTP/1.1
        out.append((b"cookie", b"; ".join(cookies)))
    if req.websocket:
        import base64
        import os

        out.extend([(b"connection", b"upgrade"), (b"upgrade", b"websocket"),
                    (b"sec-websocket-key", base64.b64encode(os.urandom(16)))])
    elif req.length is not None:
        out.append((b"content-length", lengths[0]))
    elif req.has_body:
        out.append((b"transfer-encoding", b"chunked"))
    out.append((b"x-forwarded-for", b", ".join([*chain, client_ip.encode()])))
    out.append((b"x-forwarded-proto", b"https"))
    out.append((b"x-forwarded-host", authority))
    req.headers = out
    return req


def _authority(pseudo: bytes | None, hosts: list[bytes]) -> bytes:
    if len(hosts) > 1:
        raise BadMessage("more than one Host header")
    if pseudo is None and not hosts:
        raise BadMessage("the request has neither :authority nor Host")
    if pseudo is not None and hosts and hosts[0].lower() != pseudo.lower():
        raise BadMessage(":authority and Host name different hosts")
    authority = pseudo if pseudo is not None else hosts[0]
    if _AUTHORITY.fullmatch(authority) is None or b"@" in authority:
        raise BadMessage(f"invalid :authority {authority[:80]!r}")
    return authority


def response(status: int, fields: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The task's HTTP/1.1 response head as an HTTP/2 header list: names lowered, the
    fields of its connection (and those its Connection header names) left out; several
    Set-Cookie stay several fields."""
    listed: list[tuple[bytes, bytes]] = []
    named: set[bytes] = set()
    for name, value in fields:
        lowered = name.lower()
        if lowered == b"connection":
            named.update(v.strip().lower() for v in value.split(b","))
        listed.append((lowered, value))
    out = [(b":status", str(status).encode())]
    out.extend((n, v) for n, v in listed if n not in _HOP_BY_HOP and n not in named)
    return out


def page(raw: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """One of the proxy's own HTTP/1.1 pages (``pages``) as an HTTP/2 header list and body."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields.append((name, value.strip()))
    return response(status, fields), body
