"""HTTP/1.1 message heads and framing for the proxy (RFC 9112), with no I/O.

The proxy forwards heads and bodies byte for byte; it only needs to know where each message
ends (so a connection can carry the next one), whether the connection stays open, which host
a request is for, and whether it asks to switch protocols. Anything ambiguous about a
request's framing is refused (400) rather than guessed, so that the proxy and the backend can
never disagree about where a request ends.
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

# The head is checked and read with a few scans over all of it (C speed, whatever the number
# of header lines) instead of a Python loop per line:
# - a header line that starts with white space (obsolete line folding);
_FOLDED = re.compile(rb"\r\n[ \t]")
# - a header line without a colon, or with white space in or after its name (the name is
#   taken possessively, so the scan never backtracks);
_MALFORMED = re.compile(rb"\r\n[^\r\n: \t]*+[ \t\r]")
# - the fields the proxy needs, in the lowered head.
_FIELDS = re.compile(rb"\r\n(content-length|transfer-encoding|connection|host|upgrade|expect"
                     rb"|x-forwarded-for|x-forwarded-proto|x-forwarded-host):([^\r\n]*)")
_CLIENT_FORWARDED = re.compile(rb"\r\nx-forwarded-(?:for|proto|host):", re.IGNORECASE)
_XFF = re.compile(rb"\r\nx-forwarded-for:([^\r\n]*)", re.IGNORECASE)
_WS = b" \t"


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


def _fields(head: Head, request: bool) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Check the head's lines and read the fields the proxy needs; return (content-length
    values, transfer codings, connection options)."""
    raw = head.raw
    body = raw[:-2]  # the head without its final empty line
    if _FOLDED.search(body):
        raise BadMessage("folded header lines are not allowed")
    bad = _MALFORMED.search(body)
    if bad:
        raise BadMessage(f"malformed header line {bad.group(0)[2:62]!r}")
    lengths: list[bytes] = []
    codings: list[bytes] = []
    conn: list[bytes] = []
    for name, found in _FIELDS.findall(raw.lower()):
        value = found.strip(_WS)
        c = name[0]
        if c == 99:  # c: content-length, connection
            if name == b"content-length":
                lengths.extend(v.strip(_WS) for v in value.split(b","))
            else:
                conn.extend(v.strip(_WS) for v in value.split(b","))
        elif c == 116:  # t: transfer-encoding
            codings.extend(v.strip(_WS) for v in value.split(b",") if v.strip(_WS))
        elif c == 117:  # u: upgrade
            head.upgrade = value
        elif not request:
            continue
        elif c == 104:  # h: host
            if head.host:
                raise BadMessage("more than one Host header")
            head.host = value.decode("latin-1")
        elif c == 101:  # e: expect
            head.expect_continue = value == b"100-continue"
        else:  # x-forwarded-*
            head.forwarded = True
            if name == b"x-forwarded-for":
                head.forwarded_for.append(value)
    if head.forwarded_for:  # keep the client's spelling (the lowered copy was for matching)
        head.forwarded_for = [m.strip(_WS) for m in _XFF.findall(raw)]
    return lengths, codings, conn


def _length(values: list[bytes]) -> int:
    if len(set(values)) != 1 or not values[0].isdigit() or len(values[0]) > 18:
        raise BadMessage("invalid Content-Length")
    return int(values[0])


def _keep_alive(version: bytes, conn: list[bytes]) -> bool:
    if b"close" in conn:
        return False
    return version == b"HTTP/1.1" or b"keep-alive" in conn


def parse_request(data: bytes) -> Head:
    if not data.endswith(HEAD_END):
        raise BadMessage("incomplete head")
    start = data[:data.find(CRLF)]
    parts = start.split(b" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN or not parts[1]:
        raise BadMessage(f"malformed request line {start[:80]!r}")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadMessage(f"unsupported protocol {version[:20]!r}", 505)
    head = Head(data, version)
    head.method, head.target = method, target
    lengths, codings, conn = _fields(head, request=True)
    if codings:
        if lengths:
            raise BadMessage("both Transfer-Encoding and Content-Length")
        if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            raise BadMessage("unsupported Transfer-Encoding", 501)
        head.framing = CHUNKED
    elif lengths:
        n = _length(lengths)
        head.framing = n if n else NO_BODY
    if not head.host and target[:1] != b"/" and b"://" in target:
        # absolute-form: the authority of the target names the host
        head.host = target.split(b"://", 1)[1].split(b"/", 1)[0].decode("latin-1")
    head.close = not _keep_alive(version, conn)
    if head.upgrade and b"upgrade" not in conn:
        head.upgrade = b""
    return head


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
        lengths, codings, conn = _fields(head, request=False)
    except BadMessage as exc:
        raise BadMessage(f"the task's answer: {exc.reason}", 502) from None
    head.close = not _keep_alive(version, conn)
    if status < 200 or status in (204, 304) or request_method == b"HEAD":
        head.framing = NO_BODY
    elif codings:
        head.framing = CHUNKED if codings[-1] == b"chunked" else UNTIL_CLOSE
    elif lengths:
        try:
            n = _length(lengths)
        except BadMessage:
            raise BadMessage("the task sent an invalid Content-Length", 502) from None
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


def chunk_size(line: bytes) -> int:
    """The size in a chunk-size line (``1a;ext=1\\r\\n``)."""
    digits = line.split(b";", 1)[0].strip(b" \t\r\n")
    if not digits or len(digits) > MAX_CHUNK_SIZE_DIGITS or not set(digits) <= _HEX:
        raise BadMessage(f"malformed chunk size {line[:40]!r}")
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
    """Chunk-size lines, chunk data and its CRLF, then trailer lines up to an empty one."""

    __slots__ = ("line", "remaining", "state")

    def __init__(self) -> None:
        self.state = _SIZE
        self.remaining = 0
        self.line = b""

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
                self.line += data[pos:]
                if len(self.line) > MAX_LINE:
                    raise BadMessage("chunk line too long")
                return end, False
            line = self.line + data[pos:nl + 1]
            self.line = b""
            pos = nl + 1
            if self.state == _SIZE:
                size = chunk_size(line)
                if size:
                    self.state, self.remaining = _DATA, size
                else:
                    self.state = _TRAILER
            elif line in (b"\r\n", b"\n"):  # the empty line after the trailers
                return pos, True
        return pos, False


def scanner(framing: int) -> BodyScanner | None:
    """The scanner for a message's framing; None when it has no body."""
    if framing > 0:
        return LengthScanner(framing)
    if framing == CHUNKED:
        return ChunkedScanner()
    if framing == UNTIL_CLOSE:
        return UntilCloseScanner()
    return None
