"""HTTP/1.1 message heads and framing for the proxy (RFC 9112), with no I/O.

The proxy forwards heads and bodies byte for byte; it only needs to know where each message
ends (so a connection can carry the next one), whether the connection stays open, which host
a request is for, and whether it asks to switch protocols. Anything ambiguous about a
request's framing is refused (400) rather than guessed, so that the proxy and the backend can
never disagree about where a request ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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

# Headers the proxy sets itself; a client's own copies are dropped, not trusted.
_REPLACED = (b"x-forwarded-proto", b"x-forwarded-host")


class BadMessage(Exception):
    """A head or a body the proxy refuses to forward; ``status`` is the answer to send."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(slots=True)
class Head:
    """One parsed head. ``lines`` keeps every header line exactly as received."""

    start: bytes  # the request or status line
    lines: list[bytes]
    version: bytes  # b"HTTP/1.1"
    framing: int = NO_BODY  # a length >= 0, NO_BODY, CHUNKED or UNTIL_CLOSE
    close: bool = False  # the connection ends after this message
    upgrade: bytes = b""
    host: str = ""
    expect_continue: bool = False
    forwarded_for: list[bytes] = field(default_factory=list)
    # requests
    method: bytes = b""
    target: bytes = b""
    # responses
    status: int = 0


def _split_head(data: bytes) -> tuple[bytes, list[bytes]]:
    if not data.endswith(HEAD_END):
        raise BadMessage("incomplete head")
    lines = data[:-4].split(CRLF)
    start = lines[0]
    if not start:
        raise BadMessage("empty start line")
    return start, lines[1:]


def _scan(head: Head, *, request: bool) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """Read the headers the proxy needs; return (content-length values, transfer-encoding
    codings, connection tokens)."""
    lengths: list[bytes] = []
    codings: list[bytes] = []
    conn: list[bytes] = []
    for line in head.lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name[-1:] in (b" ", b"\t"):
            raise BadMessage(f"malformed header line {line[:60]!r}")
        if line[:1] in (b" ", b"\t"):
            raise BadMessage("folded header lines are not allowed")
        lname = name.lower()
        if not lname.startswith((b"c", b"t", b"h", b"u", b"e", b"x")):
            continue  # none of the headers below; most lines stop here
        value = value.strip(b" \t")
        if lname == b"content-length":
            lengths.extend(v.strip() for v in value.split(b","))
        elif lname == b"transfer-encoding":
            codings.extend(v.strip().lower() for v in value.split(b",") if v.strip())
        elif lname == b"connection":
            conn.extend(v.strip().lower() for v in value.split(b","))
        elif lname == b"host" and request:
            if head.host:
                raise BadMessage("more than one Host header")
            head.host = value.decode("latin-1")
        elif lname == b"upgrade":
            head.upgrade = value
        elif lname == b"expect" and request:
            head.expect_continue = value.lower() == b"100-continue"
        elif lname == b"x-forwarded-for" and request:
            head.forwarded_for.append(value)
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
    start, lines = _split_head(data)
    parts = start.split(b" ")
    if len(parts) != 3 or not parts[0] or not set(parts[0]) <= _TOKEN or not parts[1]:
        raise BadMessage(f"malformed request line {start[:80]!r}")
    method, target, version = parts
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise BadMessage(f"unsupported protocol {version[:20]!r}", 505)
    head = Head(start=start, lines=lines, version=version, method=method, target=target)
    lengths, codings, conn = _scan(head, request=True)
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
    start, lines = _split_head(data)
    version, _, rest = start.partition(b" ")
    code = rest[:3]
    if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise BadMessage(f"malformed status line {start[:80]!r}", 502)
    head = Head(start=start, lines=lines, version=version, status=int(code))
    lengths, codings, conn = _scan(head, request=False)
    head.close = not _keep_alive(version, conn)
    status = head.status
    if status < 200 or status in (204, 304) or request_method == b"HEAD":
        head.framing = NO_BODY
    elif codings:
        head.framing = CHUNKED if codings[-1] == b"chunked" else UNTIL_CLOSE
    elif lengths:
        try:
            n = _length(lengths)
        except BadMessage:
            raise BadMessage("the backend sent an invalid Content-Length", 502) from None
        head.framing = n if n else NO_BODY
    else:
        head.framing = UNTIL_CLOSE
    if head.framing == UNTIL_CLOSE:
        head.close = True
    return head


def forwarded_request(head: Head, client_ip: str, original_host: str) -> bytes:
    """The request head to send upstream: the client's head unchanged but for the
    ``X-Forwarded-*`` headers, which the proxy sets."""
    out = [head.start]
    for line in head.lines:
        c = line[:1]
        if c in (b"x", b"X"):
            lname = line.partition(b":")[0].lower()
            if lname in _REPLACED or lname == b"x-forwarded-for":
                continue
        out.append(line)
    chain = b", ".join([*head.forwarded_for, client_ip.encode()])
    out.append(b"X-Forwarded-For: " + chain)
    out.append(b"X-Forwarded-Proto: https")
    out.append(b"X-Forwarded-Host: " + original_host.encode("latin-1"))
    out.append(b"")
    out.append(b"")
    return CRLF.join(out)


def chunk_size(line: bytes) -> int:
    """The size in a chunk-size line (``1a;ext=1\\r\\n``)."""
    digits = line.split(b";", 1)[0].strip(b" \t\r\n")
    if not digits or len(digits) > MAX_CHUNK_SIZE_DIGITS or not set(digits) <= _HEX:
        raise BadMessage(f"malformed chunk size {line[:40]!r}")
    return int(digits, 16)
