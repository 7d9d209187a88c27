"""HTTP/1.1 message heads and framing for the proxy (RFC 9112), with no I/O.

The proxy forwards heads and bodies byte for byte; it only needs to know where each message
ends (so a connection can carry the next one), whether the connection stays open, which host
a request is for, and whether it asks to switch protocols. Because the bytes go on unchanged,
the proxy must read a request exactly as any backend would, or a request could hide another
one from it (request smuggling). So a request is held to the grammar of RFC 9112 strictly:
lines end with CRLF and nothing else; no NUL, bare CR or other control character (a field
value may hold HTAB); no folded lines; field names are tokens with the colon right after them;
one Content-Length of digits, or Transfer-Encoding ending in one ``chunked``, never both. What
does not fit is refused with a 400 (501 for a transfer coding the proxy does not know, 431 for
a head that is too large, 505 for another HTTP version) and the connection is closed.
Responses come from the user's own tasks and are read more leniently.
"""

from __future__ import annotations

import re

CRLF = b"\r\n"
HEAD_END = b"\r\n\r\n"
MAX_HEAD = 64 * 1024

# Body framing.
NO_BODY = -1
CHUNKED = -2
UNTIL_CLOSE = -3  # responses only

_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")
MAX_CHUNK_SIZE_DIGITS = 15
MAX_LENGTH_DIGITS = 18

# The grammar, as regular expressions run over the whole head at C speed (a few scans,
# whatever the number of lines, none of which can backtrack):
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
# request-line = method SP request-target SP HTTP-version (the target: visible ASCII)
_REQUEST_LINE = re.compile(rb"(" + _TCHAR + rb"+) ([\x21-\x7e]+) (HTTP/[0-9]\.[0-9])")
# field-line CRLF, any number of them: a token, a colon, then SP, HTAB, visible ASCII or
# obs-text (0x80-0xFF) up to the CRLF; no other control character.
_FIELD_LINES = re.compile(rb"(?:" + _TCHAR + rb"+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
_FIELD_LINE = re.compile(_TCHAR + rb"+:[\t\x20-\x7e\x80-\xff]*")
# The fields the proxy needs, in the lowered head (the lines are known to be well formed).
_FIELDS = re.compile(rb"\r\n(content-length|transfer-encoding|connection|host|upgrade|expect"
                     rb"|x-forwarded-for|x-forwarded-proto|x-forwarded-host):([^\r\n]*)")
_CLIENT_FORWARDED = re.compile(rb"\r\nx-forwarded-(?:for|proto|host):", re.IGNORECASE)
_XFF = re.compile(rb"\r\nx-forwarded-for:([^\r\n]*)", re.IGNORECASE)
_WS = b" \t"
# uri-host [ ":" port ]: an IP literal or a reg-name (RFC 3986), as Host and the authority of
# an absolute-form target carry it.
_AUTHORITY = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::[0-9]*)?")
_ABSOLUTE_FORM = re.compile(rb"([A-Za-z][A-Za-z0-9+\-.]*)://([^/?#]*)([/?][^#]*)?")
_ORIGIN_FORM = re.compile(rb"/[^#]*")
# Transfer codings the proxy can pass on (the IANA registry's, less "identity", which
# RFC 9112 removed); anything else gets 501.
KNOWN_CODINGS = frozenset({b"chunked", b"gzip", b"x-gzip", b"deflate", b"compress",
                           b"x-compress"})


class BadMessage(Exception):
    """A head or a body the proxy refuses to forward; ``status`` is the answer to send."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class Head:
    """One parsed head; ``raw`` is the head exactly as received."""

    __slots__ = ("close", "expect_continue", "forwarded", "forwarded_for", "framing", "host",
                 "method", "raw", "status", "target", "upgrade", "version")

    def __init__(self, raw: bytes, version: bytes) -> None:
        self.raw = raw
        self.version = version  # b"HTTP/1.1"
        self.framing = NO_BODY  # a length >= 0, NO_BODY, CHUNKED or UNTIL_CLOSE
        self.close = False  # the connection ends after this message
        self.upgrade = b""
        self.host = ""
        self.expect_continue = False
        self.forwarded = False  # the client sent X-Forwarded-* headers of its own
        self.forwarded_for: list[bytes] = []
        self.method = b""  # requests
        self.target = b""
        self.status = 0  # responses

    @property
    def lines(self) -> list[bytes]:
        """The header lines, as received."""
        return self.raw[:-4].split(CRLF)[1:]


# -- requests: the strict grammar ------------------------------------------------------------

def parse_request(data: bytes) -> Head:
    """The head of a request (``data`` ends with the empty line), checked against RFC 9112;
    raises BadMessage saying what is wrong."""
    if not data.endswith(HEAD_END):
        raise BadMessage("incomplete head")
    if len(data) > MAX_HEAD:
        raise BadMessage(f"the request head is larger than {MAX_HEAD // 1024} KiB", 431)
    first = data.find(CRLF)
    start = data[:first]
    line = _REQUEST_LINE.fullmatch(start)
    if line is None:
        raise BadMessage(_request_line_problem(start))
    method, target, version = line.groups()
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadMessage(f"unsupported protocol {version.decode()}", 505)
    fields = data[first + 2:-2]
    if _FIELD_LINES.fullmatch(fields) is None:
        raise BadMessage(_field_problem(fields))
    head = Head(data, version)
    head.method, head.target = method, target
    lengths, codings, conn, hosts = _request_fields(head)
    if not hosts and version == b"HTTP/1.1":
        raise BadMessage("the request has no Host header")
    if codings is not None:
        _check_codings(version, codings, lengths)
        head.framing = CHUNKED
    elif lengths:
        n = _length(lengths)
        head.framing = n if n else NO_BODY
    _check_target(head)
    head.close = not _keep_alive(version, conn)
    if head.upgrade and b"upgrade" not in conn:
        head.upgrade = b""
    return head


def _request_line_problem(start: bytes) -> str:
    if any(b < 0x20 or b == 0x7F for b in start):
        return "a control character (or a bare CR or LF) in the request line"
    return f"malformed request line {start[:80]!r}"


def _field_problem(fields: bytes) -> str:
    """Why the header lines do not fit the grammar (the first line that does not)."""
    for line in fields.split(CRLF):
        if not line or _FIELD_LINE.fullmatch(line):
            continue
        shown = repr(line[:60])
        if line[:1] in (b" ", b"\t"):
            return f"folded header line {shown} (obsolete line folding is not allowed)"
        if b"\n" in line or b"\r" in line:
            return f"a bare CR or LF in the header line {shown}"
        if b"\x00" in line:
            return f"a NUL byte in the header line {shown}"
        name, colon, _ = line.partition(b":")
        if not colon:
            return f"malformed header line {shown} (no colon)"
        if name[-1:] in (b" ", b"\t"):
            return f"malformed header line {shown} (white space before the colon)"
        if not name or not set(name) <= _TOKEN:
            return f"malformed header line {shown} (invalid character in the name)"
        return f"a control character in the header line {shown}"
    return "malformed header lines"  # (the lines of a head always end with CRLF)


def _request_fields(head: Head) -> tuple[list[bytes], list[bytes] | None, list[bytes], int]:
    """Read the fields the proxy needs; return (Content-Length values, transfer codings or
    None without Transfer-Encoding, connection options, how many Host headers)."""
    lengths: list[bytes] = []
    codings: list[bytes] | None = None
    conn: list[bytes] = []
    hosts = 0
    for name, found in _FIELDS.findall(head.raw.lower()):
        value = found.strip(_WS)
        c = name[0]
        if c == 99:  # c: content-length, connection
            if name == b"content-length":
                lengths.extend(v.strip(_WS) for v in value.split(b","))
            else:
                conn.extend(v.strip(_WS) for v in value.split(b","))
        elif c == 116:  # t: transfer-encoding
            codings = codings or []
            codings.extend(v.strip(_WS) for v in value.split(b",") if v.strip(_WS))
        elif c == 117:  # u: upgrade
            head.upgrade = value
        elif c == 104:  # h: host
            hosts += 1
            if hosts > 1:
                raise BadMessage("more than one Host header")
            if _AUTHORITY.fullmatch(value) is None:
                raise BadMessage(f"invalid Host {value[:80]!r}")
            head.host = value.decode("latin-1")
        elif c == 101:  # e: expect
            head.expect_continue = value == b"100-continue"
        else:  # x-forwarded-*
            head.forwarded = True
            if name == b"x-forwarded-for":
                head.forwarded_for.append(value)
    if head.forwarded_for:  # keep the client's spelling (the lowered copy was for matching)
        head.forwarded_for = [m.strip(_WS) for m in _XFF.findall(head.raw)]
    return lengths, codings, conn, hosts


def _check_codings(version: bytes, codings: list[bytes], lengths: list[bytes]) -> None:
    if version == b"HTTP/1.0":
        raise BadMessage("Transfer-Encoding in an HTTP/1.0 request")
    if lengths:
        raise BadMessage("both Transfer-Encoding and Content-Length")
    for coding in codings:
        if coding not in KNOWN_CODINGS:
            raise BadMessage(f"unsupported transfer coding {coding[:40]!r}", 501)
    if not codings or codings[-1] != b"chunked":
        raise BadMessage("Transfer-Encoding does not end with chunked")
    if codings.count(b"chunked") != 1:
        raise BadMessage("Transfer-Encoding applies chunked more than once")


def _length(values: list[bytes]) -> int:
    if len(values) != 1:
        raise BadMessage("more than one Content-Length")
    value = values[0]
    if not value.isdigit() or len(value.lstrip(b"0")) > MAX_LENGTH_DIGITS:
        raise BadMessage(f"invalid Content-Length {value[:40]!r}")
    return int(value)


def _check_target(head: Head) -> None:
    """The request-target's form fits the method; an absolute-form target names the host."""
    method, target = head.method, head.target
    if method == b"CONNECT":
        if _AUTHORITY.fullmatch(target) is None:
            raise BadMessage(f"invalid CONNECT target {target[:80]!r}")
        return
    if target == b"*":
        if method != b"OPTIONS":
            raise BadMessage("the target * is only for OPTIONS")
        return
    if target[:1] == b"/":
        if _ORIGIN_FORM.fullmatch(target) is None:
            raise BadMessage(f"invalid request target {target[:80]!r}")
        return
    absolute = _ABSOLUTE_FORM.fullmatch(target)
    if absolute is None or absolute.group(1).lower() not in (b"http", b"https") \
            or _AUTHORITY.fullmatch(absolute.group(2)) is None or not absolute.group(2):
        raise BadMessage(f"invalid request target {target[:80]!r}")
    # RFC 9112 3.2.2: the target's authority names the host; a Host that says otherwise
    # would let the proxy and the task disagree about it.
    authority = absolute.group(2).decode("latin-1").lower()
    if head.host and head.host.lower() != authority:
        raise BadMessage("the Host header and the request target name different hosts")
    head.host = authority


def _keep_alive(version: bytes, conn: list[bytes]) -> bool:
    if b"close" in conn:
        return False
    return version == b"HTTP/1.1" or b"keep-alive" in conn


# -- responses: from the user's own tasks, read leniently ------------------------------------

# - a header line that starts with white space (obsolete line folding);
_FOLDED = re.compile(rb"\r\n[ \t]")
# - a header line without a colon, or with white space in or after its name (the name is
#   taken possessively, so the scan never backtracks).
_MALFORMED = re.compile(rb"\r\n[^\r\n: \t]*+[ \t\r]")


def _response_fields(head: Head) -> tuple[list[bytes], list[bytes], list[bytes]]:
    body = head.raw[:-2]  # the head without its final empty line
    if _FOLDED.search(body):
        raise BadMessage("folded header lines are not allowed")
    bad = _MALFORMED.search(body)
    if bad:
        raise BadMessage(f"malformed header line {bad.group(0)[2:62]!r}")
    lengths: list[bytes] = []
    codings: list[bytes] = []
    conn: list[bytes] = []
    for name, found in _FIELDS.findall(head.raw.lower()):
        value = found.strip(_WS)
        if name == b"content-length":
            lengths.extend(v.strip(_WS) for v in value.split(b","))
        elif name == b"connection":
            conn.extend(v.strip(_WS) for v in value.split(b","))
        elif name == b"transfer-encoding":
            codings.extend(v.strip(_WS) for v in value.split(b",") if v.strip(_WS))
        elif name == b"upgrade":
            head.upgrade = value
    return lengths, codings, conn


def parse_response(data: bytes, request_method: bytes) -> Head:
    if not data.endswith(HEAD_END):
        raise BadMessage("incomplete head", 502)
    start = data[:data.find(CRLF)]
    version, _, rest = start.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise BadMessage(f"malformed status line {start[:80]!r}", 502)
    head = Head(data, version)
    head.status = status = int(code)
    try:
        lengths, codings, conn = _response_fields(head)
    except BadMessage as exc:
        raise BadMessage(f"the task's answer: {exc.reason}", 502) from None
    head.close = not _keep_alive(version, conn)
    if status < 200 or status in (204, 304) or request_method == b"HEAD":
        head.framing = NO_BODY
    elif codings:
        head.framing = CHUNKED if codings[-1] == b"chunked" else UNTIL_CLOSE
    elif lengths:
        if len(set(lengths)) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
            raise BadMessage("the task sent an invalid Content-Length", 502)
        n = int(lengths[0])
        head.framing = n if n else NO_BODY
    else:
        head.framing = UNTIL_CLOSE
    if head.framing == UNTIL_CLOSE:
        head.close = True
    return head


def forwarded_request(head: Head, client_ip: str, original_host: str) -> bytes:
    """The request head to send upstream: the client's head unchanged but for the
    ``X-Forwarded-*`` headers, which the proxy sets (a client's own are not trusted, except
    that X-Forwarded-For is extended, as proxies in a chain do)."""
    raw = head.raw
    chain = b", ".join([*head.forwarded_for, client_ip.encode()])
    added = (b"X-Forwarded-For: " + chain + b"\r\nX-Forwarded-Proto: https\r\n"
             b"X-Forwarded-Host: " + original_host.encode("latin-1") + b"\r\n\r\n")
    if not head.forwarded:
        return raw[:-2] + added
    kept = [line for line in raw[:-4].split(CRLF)
            if not _CLIENT_FORWARDED.match(b"\r\n" + line)]
    return CRLF.join(kept) + CRLF + added


# -- chunked bodies ---------------------------------------------------------------------------

# chunk-size [ chunk-ext ] CRLF, the extensions taken as any visible text after a ";".
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]+)(?:[ \t]*;[\t\x20-\x7e\x80-\xff]*)?\r\n")


def chunk_size(line: bytes, strict: bool = True) -> int:
    """The size in a chunk-size line (``1a;ext=1\\r\\n``); ``strict``: exactly the grammar,
    else (a task's response) white space and a bare LF are let pass."""
    if strict:
        match = _CHUNK_LINE.fullmatch(line)
        if match is None:
            raise BadMessage(f"malformed chunk size line {line[:40]!r}")
        digits = match.group(1).lstrip(b"0") or b"0"
    else:
        digits = line.split(b";", 1)[0].strip(b" \t\r\n")
        if not digits or not set(digits) <= _HEX:
            raise BadMessage(f"malformed chunk size {line[:40]!r}")
    if len(digits) > MAX_CHUNK_SIZE_DIGITS:
        raise BadMessage(f"chunk size too large {line[:40]!r}")
    return int(digits, 16)


# -- body scanners: where a body ends, fed as bytes arrive (the bytes are forwarded as is) ----

class BodyScanner:
    """Counts off one message body; ``feed`` returns (bytes of ``data`` that belong to the
    body, whether the body ended)."""

    def feed(self, data: bytes) -> tuple[int, bool]:
        raise NotImplementedError

    def eof(self) -> bool:
        """Whether the end of the connection is a proper end of this body."""
        return False


class LengthScanner(BodyScanner):
    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def feed(self, data: bytes) -> tuple[int, bool]:
        take = min(self.remaining, len(data))
        self.remaining -= take
        return take, self.remaining == 0


class UntilCloseScanner(BodyScanner):
    def feed(self, data: bytes) -> tuple[int, bool]:
        return len(data), False

    def eof(self) -> bool:
        return True


_SIZE, _DATA, _DATA_END, _TRAILER = range(4)
MAX_LINE = 8 * 1024


class ChunkedScanner(BodyScanner):
    """Chunk-size lines, chunk data and its CRLF, then trailer lines up to an empty one.
    ``strict`` (requests): every line ends with CRLF and fits the grammar, and a line is
    claimed (``feed`` counts it) only once it is whole; the caller feeds the rest again with
    the next bytes."""

    __slots__ = ("line", "remaining", "state", "strict")

    def __init__(self, strict: bool = True) -> None:
        self.state = _SIZE
        self.remaining = 0
        self.line = b""
        self.strict = strict

    def feed(self, data: bytes) -> tuple[int, bool]:
        pos, end = 0, len(data)
        while pos < end:
            if self.state == _DATA:
                take = min(self.remaining, end - pos)
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state, self.remaining = _DATA_END, 2
                continue
            if self.state == _DATA_END:
                take = min(self.remaining, end - pos)
                expect = b"\r\n"[2 - self.remaining:2 - self.remaining + take]
                if data[pos:pos + take] != expect:
                    raise BadMessage("chunk data not followed by CRLF")
                pos += take
                self.remaining -= take
                if not self.remaining:
                    self.state = _SIZE
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                if self.strict:
                    # Leave a partial line with the caller until its LF arrives: bytes go
                    # on to the task only once they are known to be well-formed.
                    if end - pos > MAX_LINE:
                        raise BadMessage("chunk line too long")
                    return pos, False
                self.line += data[pos:]
                if len(self.line) > MAX_LINE:
                    raise BadMessage("chunk line too long")
                return end, False
            line = self.line + data[pos:nl + 1]
            self.line = b""
            pos = nl + 1
            if self.state == _SIZE:
                size = chunk_size(line, self.strict)
                if size:
                    self.state, self.remaining = _DATA, size
                else:
                    self.state = _TRAILER
            elif line == b"\r\n" or (line == b"\n" and not self.strict):
                return pos, True  # the empty line after the trailers
            elif self.strict and (line[-2:] != b"\r\n"
                                  or _FIELD_LINE.fullmatch(line[:-2]) is None):
                raise BadMessage(f"malformed trailer line {line[:60]!r}")
        return pos, False


def scanner(framing: int, strict: bool = True) -> BodyScanner | None:
    """The scanner for a message's framing; None when it has no body."""
    if framing > 0:
        return LengthScanner(framing)
    if framing == CHUNKED:
        return ChunkedScanner(strict)
    if framing == UNTIL_CLOSE:
        return UntilCloseScanner()
    return None
