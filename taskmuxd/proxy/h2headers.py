"""Header lists between HTTP/2 (the browser) and HTTP/1.1 (the task), with no I/O.

A request's header list is checked here in one pass, h2's own inbound checks being switched
off (they cost more than the rest of a request together): what RFC 9113 calls malformed
(8.2.1, 8.2.2, 8.3: names with upper-case letters, controls, white space or a colon; CR, LF
or NUL in a value, or white space around it; connection-specific fields, TE other than
"trailers"; pseudo-headers unknown, repeated, after a regular field or missing; an empty
:path; several Host, or a Host that differs from :authority) raises ``Malformed``, and the
connection ends with PROTOCOL_ERROR as h2 would end it. What goes on to the task must also
be a request that every HTTP/1.1 server reads the same way, so the rules of ``http1`` hold
here too (a 400 answer, ``BadMessage``): the method and field names are tokens, values hold
no control character but HTAB, ``:authority`` and ``Host`` are one valid authority, and
``:path`` is origin-form (``*`` for OPTIONS). tests/test_h2headers.py holds the checks to
h2's over a corpus of header lists.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from taskmuxd.proxy.http1 import BadMessage

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
# RFC 9113 8.2.1: a name without 0x00-0x20, A-Z, 0x7f-0xff or a colon; a value without NUL,
# CR or LF, and without SP or HTAB at either end. (The common case in one match: visible
# characters and obs-text, HTAB and SP inside only.)
_H2_NAME = re.compile(rb"[\x21-\x39\x3b-\x40\x5b-\x7e]+")
_PLAIN_VALUE = re.compile(
    rb"(?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?")
_H2_BAD_VALUE = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")
_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
_CONNECTION_SPECIFIC = frozenset({b"connection", b"proxy-connection", b"keep-alive",
                                  b"transfer-encoding", b"upgrade"})
_METHOD = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_COMMON_METHODS = frozenset({b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS",
                             b"PATCH", b"CONNECT", b"TRACE"})  # (tokens: no match needed)
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
# Ordinary fields (passed on as they are) already found valid, and whether each is an Accept
# that takes HTML: a browser repeats most of its fields in every request, and these need no
# second look. (Bounded: it starts over when full.)
_KNOWN: dict[tuple[bytes, bytes], bool] = {}
_MAX_KNOWN = 4096
# Likewise the pseudo-headers other than :path whose values were found plain (the checks on
# what they hold, below the loop, still run), and the :authority values found valid.
_KNOWN_PSEUDO: set[tuple[bytes, bytes]] = set()
_KNOWN_AUTHORITIES: set[bytes] = set()
_UNREMEMBERED = frozenset({b":path", b":protocol"})


# Requests found valid, by everything but their :path (see ``request``), and the most of
# them kept and the largest header list (bytes of names and values) kept as one.
_TEMPLATES: dict[tuple[object, ...], Request] = {}
_MAX_TEMPLATES = 256
_MAX_TEMPLATE_BYTES = 8192


class Malformed(BadMessage):
    """A header list RFC 9113 calls malformed (the connection ends with PROTOCOL_ERROR)."""


class Request:
    """An HTTP/2 request, checked, as the HTTP/1.1 request the task gets."""

    __slots__ = ("accept_html", "authority", "chunked", "has_body", "headers", "length",
                 "method", "path", "remaining", "websocket", "wire")

    def __init__(self) -> None:
        self.method = b""
        self.path = b""
        self.authority = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.length: int | None = None  # Content-Length, when the client sent one
        self.has_body = True
        self.accept_html = False
        self.websocket = False  # extended CONNECT (RFC 8441): an HTTP/1.1 upgrade to the task
        # ``headers`` as HTTP/1.1 field lines (and the blank line ending the head), and the
        # framing they announce: the Content-Length, or chunked (``h1client.RequestWriter``).
        self.wire = b""
        self.remaining = 0
        self.chunked = False


def request(fields: Iterable[tuple[bytes, bytes]], end_stream: bool,
            client_ip: str) -> Request:
    """Check an HTTP/2 request's header list and turn it into HTTP/1.1 fields for the task
    (``Host`` first, cookies joined into one field, ``X-Forwarded-*`` set as on HTTP/1.1);
    raises BadMessage saying what is wrong.

    A browser's requests for a page's modules differ in their :path only (the rest is the
    same dozen fields, Referer included), and a request's only checks that look at its
    :path are that it is present once, among the pseudo-headers, and a valid origin-form
    target. So a request found valid is kept as a template under everything else: its
    header list with the :path left out (where it stood), whether the stream ended, the
    client's address. Another list the same but for a :path that is a valid target (one
    match) is the same request with that path, without the field-by-field checks again;
    any other goes the whole way (``_checked``), which says what is wrong with it.
    tests/test_h2headers.py holds the two ways to each other."""
    if not isinstance(fields, list):
        fields = list(fields)
    key: tuple[object, ...] | None = None
    index = 0
    for index, field in enumerate(fields):  # (the pseudo-headers come first)
        name = field[0]
        if name == b":path":
            key = (end_stream, client_ip, index, tuple(fields[:index]),
                   tuple(fields[index + 1:]))
            break
        if index >= 4 or name[:1] != b":":
            break
    if key is None:
        return _checked(fields, end_stream, client_ip)
    path = fields[index][1]
    template = _TEMPLATES.get(key)
    if template is not None and _PATH.fullmatch(path) is not None:
        return _copy(template, path)
    req = _checked(fields, end_stream, client_ip)
    if req.method != b"CONNECT" and not req.websocket and path != b"*" \
            and len(fields) <= 64 \
            and sum(len(n) + len(v) for n, v in fields) <= _MAX_TEMPLATE_BYTES:
        if len(_TEMPLATES) >= _MAX_TEMPLATES:
            _TEMPLATES.clear()
        _TEMPLATES[key] = _copy(req, req.path)  # (its own list of fields)
    return req


def _copy(template: Request, path: bytes) -> Request:
    """``template`` with ``path`` for its :path."""
    req = Request.__new__(Request)
    req.method = template.method
    req.path = path
    req.authority = template.authority
    req.headers = list(template.headers)
    req.length = template.length
    req.has_body = template.has_body
    req.accept_html = template.accept_html
    req.websocket = template.websocket
    req.wire = template.wire
    req.remaining = template.remaining
    req.chunked = template.chunked
    return req


def _checked(fields: list[tuple[bytes, bytes]], end_stream: bool, client_ip: str) -> Request:
    """``request``, every field checked."""
    req = Request()
    req.has_body = not end_stream
    pseudo: dict[bytes, bytes] = {}
    hosts: list[bytes] = []
    cookies: list[bytes] = []
    chain: list[bytes] = []
    lengths: list[bytes] = []
    kept: list[tuple[bytes, bytes]] = []
    regular = False
    problem: BadMessage | None = None  # (raised once the list is known not malformed)
    known = _KNOWN
    for field in fields:
        html = known.get(field)
        if html is not None:
            regular = True
            kept.append(field)
            if html:
                req.accept_html = True
            continue
        name, value = field
        fine = True
        if field in _KNOWN_PSEUDO:  # (a :method, :scheme or :authority found fine before)
            if regular:
                raise Malformed(f"the pseudo-header {name[:20]!r} after a regular field")
            if name in pseudo:
                raise Malformed(f"the pseudo-header {name[:20]!r} more than once")
            pseudo[name] = value
            continue
        if _PLAIN_VALUE.fullmatch(value) is None:
            found = _value_problem(name, value)  # (raises Malformed)
            problem = problem or found
            fine = found is None
        if name[:1] == b":":
            if regular:
                raise Malformed(f"the pseudo-header {name[:20]!r} after a regular field")
            if name not in _PSEUDO:
                raise Malformed(f"the pseudo-header {name[:20]!r} in a request")
            if name in pseudo:
                raise Malformed(f"the pseudo-header {name[:20]!r} more than once")
            pseudo[name] = value
            if fine and name not in _UNREMEMBERED:
                if len(_KNOWN_PSEUDO) >= _MAX_KNOWN:
                    _KNOWN_PSEUDO.clear()
                _KNOWN_PSEUDO.add(field)
            continue
        regular = True
        if _TOKEN.fullmatch(name) is None:
            if _H2_NAME.fullmatch(name) is None:
                raise Malformed(f"invalid header name {name[:40]!r}")
            problem = problem or BadMessage(f"invalid header name {name[:40]!r}")
            fine = False
        if name == b"cookie":
            cookies.append(value)
        elif name == b"host":
            if hosts:
                raise Malformed("more than one Host header")
            hosts.append(value)
        elif name == b"x-forwarded-for":
            chain.append(value)
        elif name == b"content-length":
            lengths.append(value)
        elif name in _CONNECTION_SPECIFIC:
            raise Malformed(f"the connection-specific field {name.decode()}")
        elif name == b"te":
            if value.lower() != b"trailers":
                raise Malformed("TE other than trailers")
        elif name not in _DROPPED:
            html = name == b"accept" and b"text/html" in value
            req.accept_html = req.accept_html or html
            kept.append((name, value))
            if fine:
                if len(known) >= _MAX_KNOWN:
                    known.clear()
                known[name, value] = html
    _check_pseudo(pseudo, hosts)
    if problem is not None:
        raise problem
    req.method = pseudo.get(b":method", b"")
    if req.method not in _COMMON_METHODS and _METHOD.fullmatch(req.method) is None:
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
    ip = client_ip.encode()
    out.append((b"x-forwarded-for", b", ".join([*chain, ip]) if chain else ip))
    out.append((b"x-forwarded-proto", b"https"))
    out.append((b"x-forwarded-host", authority))
    req.headers = out
    parts: list[bytes] = []
    for name, value in out:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    req.wire = b"".join(parts)
    if not req.websocket:
        if req.length is not None:
            req.remaining = req.length
        elif req.has_body:
            req.chunked = True
    return req


def _value_problem(name: bytes, value: bytes) -> BadMessage | None:
    """What is wrong with a value that is not visible text with HTAB and SP inside: raises
    Malformed (RFC 9113), returns BadMessage (HTTP/1.1) or None (nothing)."""
    if _H2_BAD_VALUE.search(value) is not None:
        raise Malformed(f"CR, LF, NUL or white space around the value of {name[:40]!r}")
    if _VALUE.fullmatch(value) is None:
        return BadMessage(f"a control character in the value of {name[:40].decode('latin-1')}")
    return None


def _check_pseudo(pseudo: dict[bytes, bytes], hosts: list[bytes]) -> None:
    """RFC 9113 8.3.1 and RFC 8441 4: the pseudo-headers a request must and must not have."""
    method = pseudo.get(b":method")
    if method is None:
        raise Malformed("no :method")
    if method == b"CONNECT" and b":protocol" not in pseudo:
        if b":scheme" in pseudo or b":path" in pseudo:
            raise Malformed("a plain CONNECT with :scheme or :path")
    else:
        if b":scheme" not in pseudo or b":path" not in pseudo:
            raise Malformed("no :scheme or no :path")
        if not pseudo[b":path"]:
            raise Malformed("an empty :path")
        if b":protocol" in pseudo and method != b"CONNECT":
            raise Malformed(":protocol without CONNECT")
    authority = pseudo.get(b":authority")
    if authority is None and not hosts:
        raise Malformed("neither :authority nor Host")
    if authority is not None and hosts and hosts[0] != authority:
        raise Malformed(":authority and Host differ")


def trailers(fields: Iterable[tuple[bytes, bytes]]) -> None:
    """Raise Malformed for trailers RFC 9113 forbids (they do not go on to the task)."""
    for name, value in fields:
        if name[:1] == b":":
            raise Malformed("a pseudo-header in trailers")
        if _H2_NAME.fullmatch(name) is None:
            raise Malformed(f"invalid header name {name[:40]!r}")
        if _PLAIN_VALUE.fullmatch(value) is None and _H2_BAD_VALUE.search(value):
            raise Malformed(f"CR, LF, NUL or white space around the value of {name[:40]!r}")
        if name in _CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers"):
            raise Malformed(f"the connection-specific field {name[:40]!r}")


def _authority(pseudo: bytes | None, hosts: list[bytes]) -> bytes:
    if len(hosts) > 1:
        raise BadMessage("more than one Host header")
    if pseudo is None and not hosts:
        raise BadMessage("the request has neither :authority nor Host")
    if pseudo is not None and hosts and hosts[0].lower() != pseudo.lower():
        raise BadMessage(":authority and Host name different hosts")
    authority = pseudo if pseudo is not None else hosts[0]
    if authority in _KNOWN_AUTHORITIES:
        return authority
    if _AUTHORITY.fullmatch(authority) is None or b"@" in authority:
        raise BadMessage(f"invalid :authority {authority[:80]!r}")
    if len(_KNOWN_AUTHORITIES) >= _MAX_KNOWN:
        _KNOWN_AUTHORITIES.clear()
    _KNOWN_AUTHORITIES.add(authority)
    return authority


def response(status: int, fields: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An HTTP/1.1 response head as an HTTP/2 header list: names lowered, the fields of its
    connection (and those its Connection header names) left out; several Set-Cookie stay
    several fields."""
    listed: list[tuple[bytes, bytes]] = []
    named: list[bytes] = []
    for name, value in fields:
        lowered = name.lower()
        if lowered == b"connection":
            named.extend(v.strip().lower() for v in value.split(b","))
        listed.append((lowered, value))
    return from_task(status, listed, named)


def from_task(status: int, fields: list[tuple[bytes, bytes]], named: list[bytes]
              ) -> list[tuple[bytes, bytes]]:
    """``response`` for a head as ``h1client`` reads it: names in lower case already, and
    ``named`` what its Connection fields name."""
    drop = _HOP_BY_HOP
    for name in named:
        if name not in drop:
            drop = drop.union(named)
            break
    code = _STATUS.get(status)
    if code is None:
        code = str(status).encode()
    return [(b":status", code), *[f for f in fields if f[0] not in drop]]


_STATUS = {n: str(n).encode() for n in range(100, 600)}


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
