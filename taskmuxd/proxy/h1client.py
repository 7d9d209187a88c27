"""The client side of HTTP/1.1 for the proxy's HTTP/2 streams: requests written to a task,
its responses read, with no I/O (``pool`` does the reading and writing).

HTTP/2 carries neither chunked framing nor the fields of a hop, so unlike the HTTP/1.1 path
(which forwards a response's bytes as they are) each response is parsed into a status,
fields and body bytes, chunked bodies decoded. The grammar is held strictly, like requests
in ``http1`` (what goes to the browser must be one message that every reader sees the
same): a status line ``HTTP/1.x NNN reason``; lines end with CRLF; field names are tokens
with the colon right after them; values hold no control character but HTAB; no folded
lines; Content-Length digits only and one value however often repeated; Transfer-Encoding
only ``chunked`` and never with Content-Length; chunk sizes hex, at most 15 digits, each
chunk followed by CRLF. A head is at most ``MAX_HEAD`` bytes and ``MAX_FIELDS`` fields.
Anything else is a ``BadMessage`` (the stream gets a 502, or a reset once its head is out).

A body runs to its Content-Length, to the end of its chunks, or (with neither) to the end
of the connection. The connection can carry another exchange when both messages are
complete, the answer was HTTP/1.1 without ``Connection: close`` and nothing followed it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from taskmuxd.proxy.http1 import CRLF, HEAD_END, MAX_HEAD, MAX_LINE, BadMessage, chunk_size

MAX_FIELDS = 512

# Kinds of ``Part``: an answer's head, a 1xx other than 101 (interim), a 101 after which
# the connection carries another protocol (``ResponseReader.rest`` holds the bytes that
# followed it), the end of the answer.
HEAD, INFO, SWITCHED, ENDED = range(4)


class Part(NamedTuple):
    kind: int
    status: int
    fields: list[tuple[bytes, bytes]]


END = Part(ENDED, 0, [])
# What ``ResponseReader.feed`` returns, in order: heads and END as Parts, body bytes as bytes.
Event = bytes | Part

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?")
_TCHAR = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_FIELD_LINES = re.compile(rb"(?:" + _TCHAR + rb"+:[\t\x20-\x7e\x80-\xff]*\r\n)*")
# One field line (without its CRLF): the name and the value.
_FIELD_LINE = re.compile(rb"(" + _TCHAR + rb"+):([\t\x20-\x7e\x80-\xff]*)")
# Field lines already parsed, and what they parsed to (bounded: lines of up to
# _MAX_REMEMBERED_LINE bytes, _MAX_REMEMBERED_LINES of them, then it starts over).
_LINES_SEEN: dict[bytes, tuple[bytes, bytes]] = {}
_MAX_REMEMBERED_LINES = 4096
_MAX_REMEMBERED_LINE = 256
# Status lines and Connection values already parsed, likewise: (status, HTTP/1.0) and the
# tokens (lowered) of each.
_STATUS_SEEN: dict[bytes, tuple[int, bool]] = {}
_CONNECTION_SEEN: dict[bytes, tuple[bytes, ...]] = {}
_MAX_REMEMBERED_STATUS = 256
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_DIGITS = re.compile(rb"[0-9]{1,18}")

# Reader states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE, \
    _SWITCHED = range(9)


class ResponseReader:
    """Reads the answers to the requests ``RequestWriter`` sends, one at a time."""

    __slots__ = ("buf", "chunk_left", "close", "method", "named", "remaining", "state",
                 "trailer_size", "upgrade")

    def __init__(self) -> None:
        self.buf = b""
        self.state = _DONE  # (no request yet)
        self.method = b""
        self.upgrade = False
        self.remaining = 0
        self.chunk_left = 0
        self.trailer_size = 0
        self.close = False  # the connection ends with this answer
        self.named: list[bytes] = []  # what the last head's Connection fields name (lowered)

    def expect(self, method: bytes, upgrade: bool = False) -> None:
        """A request went out (``upgrade``: asking to switch protocols): read its answer
        next."""
        self.method = method
        self.upgrade = upgrade
        self.state = _HEAD
        self.close = False

    @property
    def done(self) -> bool:
        return self.state == _DONE

    @property
    def rest(self) -> bytes:
        """Bytes read beyond the answer (after a 101: the new protocol's first bytes)."""
        return self.buf

    def feed(self, data: bytes) -> list[Event]:
        """The events ``data`` completes; raises BadMessage."""
        buf = self.buf + data if self.buf else data
        events: list[Event] = []
        state = self.state
        while True:
            if state == _LENGTH:
                remaining = self.remaining
                if len(buf) <= remaining:
                    if buf:
                        events.append(buf)
                    remaining -= len(buf)
                    buf = b""
                    if remaining:
                        self.remaining = remaining
                        break
                else:
                    events.append(buf[:remaining])
                    buf = buf[remaining:]
                events.append(END)
                state = _DONE
                break
            if state == _HEAD:
                end = buf.find(HEAD_END)
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise BadMessage(f"a response head larger than {MAX_HEAD // 1024} KiB")
                    break
                if end + 4 > MAX_HEAD:
                    raise BadMessage(f"a response head larger than {MAX_HEAD // 1024} KiB")
                head, buf = buf[:end + 4], buf[end + 4:]
                state = self._head(head, events)
                if state == _SWITCHED:
                    break
                continue
            if state == _CHUNK_DATA:
                left = self.chunk_left
                if not buf:
                    break
                if len(buf) <= left:
                    events.append(buf)
                    self.chunk_left = left - len(buf)
                    buf = b""
                    if self.chunk_left:
                        break
                else:
                    events.append(buf[:left])
                    buf = buf[left:]
                    self.chunk_left = 0
                state = _CHUNK_END
                continue
            if state == _CHUNK_END:
                if len(buf) < 2:
                    if buf and buf != b"\r":
                        raise BadMessage("chunk data not followed by CRLF")
                    break
                if buf[:2] != CRLF:
                    raise BadMessage("chunk data not followed by CRLF")
                buf = buf[2:]
                state = _CHUNK_SIZE
                continue
            if state in (_CHUNK_SIZE, _TRAILER):
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > MAX_LINE:
                        raise BadMessage("chunk line too long")
                    break
                line, buf = buf[:nl + 1], buf[nl + 1:]
                if state == _CHUNK_SIZE:
                    size = chunk_size(line)
                    if size:
                        self.chunk_left = size
                        state = _CHUNK_DATA
                    else:
                        state = _TRAILER
                        self.trailer_size = 0
                    continue
                if line == CRLF:  # the empty line after the trailers (which are dropped)
                    events.append(END)
                    state = _DONE
                    break
                self.trailer_size += len(line)
                if self.trailer_size > MAX_HEAD or _FIELD_LINES.fullmatch(line) is None \
                        or not line.endswith(CRLF):
                    raise BadMessage(f"malformed trailer line {line[:60]!r}")
                continue
            if state == _UNTIL_CLOSE:
                if buf:
                    events.append(buf)
                    buf = b""
                break
            break  # _DONE or _SWITCHED: whatever follows stays in ``rest``
        self.state = state
        self.buf = buf
        return events

    def eof(self) -> list[Event]:
        """The task closed the connection: the end of a body that runs until then; raises
        BadMessage when an answer was cut short."""
        if self.state == _UNTIL_CLOSE:
            self.state = _DONE
            return [END]
        if self.state in (_DONE, _SWITCHED):
            return []
        raise BadMessage("the task closed the connection in the middle of its answer")

    def _head(self, head: bytes, events: list[Event]) -> int:
        """Parse one head, add its event; the state that follows it."""
        first = head.find(CRLF)
        status_line = head[:first]
        seen = _STATUS_SEEN.get(status_line)
        if seen is None:
            line = _STATUS_LINE.fullmatch(status_line)
            if line is None:
                raise BadMessage(f"malformed status line {head[:min(first, 80)]!r}")
            # (an HTTP/1.0 answer: the connection is not reused)
            seen = int(line.group(2)), line.group(1) == b"0"
            if len(status_line) <= _MAX_REMEMBERED_LINE:
                if len(_STATUS_SEEN) >= _MAX_REMEMBERED_STATUS:
                    _STATUS_SEEN.clear()
                _STATUS_SEEN[status_line] = seen
        status, close = seen
        block = head[first + 2:-2]
        fields, framing = _fields(block)
        if len(fields) > MAX_FIELDS:
            raise BadMessage(f"more than {MAX_FIELDS} fields in the response head")
        length: bytes | None = None
        chunked = False
        repeated = False
        named: list[bytes] = []
        for name, value in framing:
            if name == b"content-length":
                if value.isdigit() and len(value) <= 18:  # (the usual: one plain value)
                    if length is not None:
                        if value != length:
                            raise BadMessage("conflicting Content-Length values")
                        repeated = True
                    length = value
                    continue
                for each in value.split(b","):
                    digits = each.strip(b" \t")
                    if _DIGITS.fullmatch(digits) is None:
                        raise BadMessage(f"invalid Content-Length {value[:40]!r}")
                    if length is not None:
                        if digits != length:
                            raise BadMessage("conflicting Content-Length values")
                        repeated = True
                    length = digits
                repeated = repeated or digits != value
            elif name == b"transfer-encoding":
                if chunked or value.lower() != b"chunked":
                    raise BadMessage(f"unsupported Transfer-Encoding {value[:40]!r}")
                chunked = True
            else:  # Connection
                tokens = _CONNECTION_SEEN.get(value)
                if tokens is None:
                    tokens = tuple(v.strip(b" \t") for v in value.lower().split(b","))
                    if len(value) <= _MAX_REMEMBERED_LINE:
                        if len(_CONNECTION_SEEN) >= _MAX_REMEMBERED_STATUS:
                            _CONNECTION_SEEN.clear()
                        _CONNECTION_SEEN[value] = tokens
                close = close or b"close" in tokens
                named.extend(tokens)
        self.named = named
        if repeated:  # one Content-Length on, as one value
            at = next(i for i, (name, _) in enumerate(fields) if name == b"content-length")
            fields = [f for f in fields if f[0] != b"content-length"]
            assert length is not None
            fields.insert(at, (b"content-length", length))
        if status < 200:
            if status == 101:
                if not self.upgrade:
                    raise BadMessage("101 Switching Protocols to a request that asked for "
                                     "no upgrade")
                events.append(Part(SWITCHED, status, fields))
                return _SWITCHED
            events.append(Part(INFO, status, fields))
            return _HEAD
        if chunked and length is not None:
            raise BadMessage("both Transfer-Encoding and Content-Length")
        self.close = close
        events.append(Part(HEAD, status, fields))
        if self.method == b"HEAD" or status in (204, 304):
            events.append(END)
            return _DONE
        if chunked:
            return _CHUNK_SIZE
        if length is not None:
            n = int(length)
            if not n:
                events.append(END)
                return _DONE
            self.remaining = n
            return _LENGTH
        self.close = True
        return _UNTIL_CLOSE


def _fields(block: bytes) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """The field lines of a head (each ending in CRLF), as (lowered name, value without
    surrounding blanks), and those of them that frame the message (``_FRAMING``); raises
    BadMessage when a line breaks the grammar. A task sends most of its lines again in
    every answer (``Content-Type: text/javascript``, ``Connection: keep-alive``...): lines
    seen before are taken from ``_LINES_SEEN``."""
    lines = block.split(CRLF)
    lines.pop()  # (after the last CRLF: nothing, since the head ends with its blank line)
    seen = _LINES_SEEN
    fields = []
    framing = []
    for line in lines:
        field = seen.get(line)
        if field is None:
            match = _FIELD_LINE.fullmatch(line)
            if match is None:
                raise BadMessage(_field_problem(block))
            field = (match.group(1).lower(), match.group(2).strip(b" \t"))
            if len(line) <= _MAX_REMEMBERED_LINE:
                if len(seen) >= _MAX_REMEMBERED_LINES:
                    seen.clear()
                seen[line] = field
        fields.append(field)
        if field[0] in _FRAMING:
            framing.append(field)
    return fields, framing


def _field_problem(block: bytes) -> str:
    for line in block.split(CRLF):
        if not line:
            continue
        if _FIELD_LINES.fullmatch(line + CRLF) is not None:
            continue
        shown = repr(line[:60])
        if line[:1] in (b" ", b"\t"):
            return f"a folded header line {shown} (obsolete line folding is not allowed)"
        if b":" not in line:
            return f"a header line without a colon {shown}"
        return f"a malformed header line {shown}"
    return "a bare CR or LF in the response head"


class RequestWriter:
    """The bytes of one request at a time: its head, then its body in the framing the head
    announced (Content-Length, counted; chunked; or none)."""

    __slots__ = ("chunked", "remaining", "sending")

    def __init__(self) -> None:
        self.chunked = False
        self.remaining = 0
        self.sending = False  # a request is under way (its body not yet complete)

    def head(self, method: bytes, target: bytes, fields: list[tuple[bytes, bytes]]) -> bytes:
        """The request's head; its fields were checked (``h2headers.request``)."""
        self.chunked = False
        self.remaining = 0
        parts = [method, b" ", target, b" HTTP/1.1\r\n"]
        for name, value in fields:
            parts += (name, b": ", value, CRLF)
            if name == b"content-length":
                self.remaining = int(value)
            elif name == b"transfer-encoding":
                self.chunked = True
        parts.append(CRLF)
        self.sending = True
        return b"".join(parts)

    def prepared(self, method: bytes, target: bytes, wire: bytes, remaining: int,
                 chunked: bool) -> bytes:
        """``head`` for fields already written as lines (``h2headers.Request.wire``, with
        the framing they announce)."""
        self.chunked = chunked
        self.remaining = remaining
        self.sending = True
        return method + b" " + target + b" HTTP/1.1\r\n" + wire

    def data(self, data: bytes) -> bytes:
        """Body bytes as they go on the wire; raises BadMessage beyond the Content-Length."""
        if self.chunked:
            return b"%x\r\n%s\r\n" % (len(data), data) if data else b""
        if len(data) > self.remaining:
            raise BadMessage("more request body than its Content-Length")
        self.remaining -= len(data)
        return data

    def end(self) -> bytes:
        """The end of the body; raises BadMessage short of the Content-Length."""
        self.sending = False
        if self.chunked:
            return b"0\r\n\r\n"
        if self.remaining:
            raise BadMessage("less request body than its Content-Length")
        return b""
