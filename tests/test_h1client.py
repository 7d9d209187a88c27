"""The proxy's own HTTP/1.1 client side (``h1client``) against h11 over one corpus of task
answers: what h11 refuses, the proxy refuses too (and it is stricter in places: folded
lines, conflicting lengths, transfer codings it cannot decode); on what both take they agree
on the status, the fields, the body bytes, where the answer ends and whether the
connection can be used again. Every answer is also fed a byte at a time, which must read
the same as in one piece. The requests it writes are read back by h11 as the same request.
"""

from __future__ import annotations

import h11
import pytest

from taskmuxd.proxy.h1client import (
    END,
    HEAD,
    INFO,
    SWITCHED,
    Event,
    Part,
    RequestWriter,
    ResponseReader,
)
from taskmuxd.proxy.http1 import MAX_HEAD, BadMessage


def answer(*lines: bytes, start: bytes = b"HTTP/1.1 200 OK", body: bytes = b"") -> bytes:
    return start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


CHUNKED = b"Transfer-Encoding: chunked"

MALFORMED: dict[str, bytes] = {
    "bare LF line ends": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
    "bare CR in a value": answer(b"X-A: a\rb", b"Content-Length: 0"),
    "NUL in a value": answer(b"X-A: a\x00b", b"Content-Length: 0"),
    "control character in a value": answer(b"X-A: a\x01b", b"Content-Length: 0"),
    "DEL in a value": answer(b"X-A: a\x7fb", b"Content-Length: 0"),
    "obs-fold": answer(b"X-A: a", b" b", b"Content-Length: 0"),
    "obs-fold with a tab": answer(b"X-A: a", b"\tb", b"Content-Length: 0"),
    "space before colon": answer(b"Content-Length : 2", body=b"hi"),
    "space in a name": answer(b"X A: b", b"Content-Length: 0"),
    "no colon": answer(b"just words", b"Content-Length: 0"),
    "empty name": answer(b": b", b"Content-Length: 0"),
    "invalid character in a name": answer(b"X(A): b", b"Content-Length: 0"),
    "CL + CL conflicting": answer(b"Content-Length: 2", b"Content-Length: 3", body=b"hi!"),
    "CL list conflicting": answer(b"Content-Length: 2, 3", body=b"hi!"),
    "CL + CL spelled differently": answer(b"Content-Length: 2", b"Content-Length: 02",
                                          body=b"hi"),
    "negative CL": answer(b"Content-Length: -2"),
    "CL with +": answer(b"Content-Length: +2", body=b"hi"),
    "CL hex": answer(b"Content-Length: 0x2", body=b"hi"),
    "CL with a space inside": answer(b"Content-Length: 1 2", body=b"x" * 12),
    "CL empty": answer(b"Content-Length:"),
    "CL too large": answer(b"Content-Length: 99999999999999999999999"),
    "CL + TE": answer(b"Content-Length: 3", CHUNKED, body=b"2\r\nhi\r\n0\r\n\r\n"),
    "TE gzip": answer(b"Transfer-Encoding: gzip", body=b"xx"),
    "TE gzip, chunked": answer(b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
    "TE chunked twice": answer(CHUNKED, CHUNKED, body=b"0\r\n\r\n"),
    "chunk size too large": answer(CHUNKED, body=b"1" + b"0" * 20 + b"\r\nx\r\n0\r\n\r\n"),
    "chunk size negative": answer(CHUNKED, body=b"-2\r\nhi\r\n0\r\n\r\n"),
    "chunk size not hex": answer(CHUNKED, body=b"2g\r\nhi\r\n0\r\n\r\n"),
    "chunk size empty": answer(CHUNKED, body=b"\r\nhi\r\n0\r\n\r\n"),
    "chunk data without CRLF": answer(CHUNKED, body=b"2\r\nhiXX0\r\n\r\n"),
    "chunk size line with a bare LF": answer(CHUNKED, body=b"2\nhi\r\n0\r\n\r\n"),
    "chunk size with white space after it": answer(CHUNKED, body=b"2 \r\nhi\r\n0\r\n\r\n"),
    "trailer without a colon": answer(CHUNKED, body=b"0\r\nnonsense\r\n\r\n"),
    "status line: no version": b"200 OK\r\nContent-Length: 0\r\n\r\n",
    "status line: HTTP/2": answer(b"Content-Length: 0", start=b"HTTP/2.0 200 OK"),
    "status line: two-digit status": answer(b"Content-Length: 0", start=b"HTTP/1.1 20 OK"),
    "status line: letters in the status": answer(b"Content-Length: 0", start=b"HTTP/1.1 2x0 OK"),
    "status line: tab separator": answer(b"Content-Length: 0", start=b"HTTP/1.1\t200 OK"),
    "status line: lowercase version": answer(b"Content-Length: 0", start=b"http/1.1 200 OK"),
    "status line: control character in the reason":
        answer(b"Content-Length: 0", start=b"HTTP/1.1 200 O\x01K"),
    "101 to a request that asked for no upgrade":
        answer(b"Upgrade: websocket", b"Connection: upgrade", start=b"HTTP/1.1 101 Switching"),
}

VALID: dict[str, bytes] = {
    "a length": answer(b"Content-Type: text/plain", b"Content-Length: 5", body=b"hello"),
    "CL with leading zeros": answer(b"Content-Length: 005", body=b"hello"),
    "CL with white space around": answer(b"Content-Length: \t5 ", body=b"hello"),
    "CL repeated, the same": answer(b"Content-Length: 5", b"Content-Length: 5", body=b"hello"),
    "CL list, the same": answer(b"Content-Length: 5, 5", body=b"hello"),
    "CL list and CL, the same": answer(b"X-A: 1", b"Content-Length: 5,5", b"X-B: 2",
                                       b"Content-Length: 5", body=b"hello"),
    "empty body": answer(b"Content-Length: 0"),
    "chunked": answer(CHUNKED, body=b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    "chunked with extensions and trailers": answer(
        CHUNKED, body=b"5;name=value\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
    "TE in capitals": answer(b"Transfer-Encoding: Chunked", body=b"2\r\nhi\r\n0\r\n\r\n"),
    "chunk size in capitals, leading zeros": answer(
        CHUNKED, body=b"00A\r\n0123456789\r\n0\r\n\r\n"),
    "until close": answer(b"Content-Type: text/plain", body=b"all of it"),
    "Connection: close": answer(b"Connection: close", b"Content-Length: 2", body=b"hi"),
    "Connection: keep-alive, Keep-Alive": answer(b"Connection: keep-alive",
                                                 b"Keep-Alive: timeout=5",
                                                 b"Content-Length: 2", body=b"hi"),
    "HTTP/1.0": answer(b"Content-Length: 2", start=b"HTTP/1.0 200 OK", body=b"hi"),
    "no reason phrase": answer(b"Content-Length: 2", start=b"HTTP/1.1 200", body=b"hi"),
    "empty reason phrase": answer(b"Content-Length: 2", start=b"HTTP/1.1 200 ", body=b"hi"),
    "reason with obs-text": answer(b"Content-Length: 0", start=b"HTTP/1.1 200 \xe9t\xe9"),
    "a tab and obs-text in a value": answer(b"X-A: a\tb \xe9\xff", b"Content-Length: 0"),
    "empty value": answer(b"X-Empty:", b"Content-Length: 0"),
    "several Set-Cookie": answer(b"Set-Cookie: a=1", b"Set-Cookie: b=2", b"Content-Length: 0"),
    "204 without a length": answer(start=b"HTTP/1.1 204 No Content"),
    "304 with a length and no body": answer(b"Content-Length: 50",
                                            start=b"HTTP/1.1 304 Not Modified"),
    "100 Continue first": answer(start=b"HTTP/1.1 100 Continue")
        + answer(b"Content-Length: 2", body=b"hi"),
    "103 Early Hints first": answer(b"Link: </a.js>; rel=preload",
                                    start=b"HTTP/1.1 103 Early Hints")
        + answer(b"Content-Length: 2", body=b"hi"),
    "bytes after the answer": answer(b"Content-Length: 2", body=b"hi") + b"extra",
}


def ours(data: bytes, method: bytes = b"GET", upgrade: bool = False,
         byte_at_a_time: bool = False) -> tuple[list[object], bytes, bool]:
    """What the proxy reads: the parts (bodies joined), what follows, whether reusable."""
    reader = ResponseReader()
    reader.expect(method, upgrade)
    events: list[Event] = []
    pieces = [data[i:i + 1] for i in range(len(data))] if byte_at_a_time else [data]
    for piece in pieces:
        events.extend(reader.feed(piece))
    if END not in events and not any(isinstance(e, Part) and e.kind == SWITCHED
                                     for e in events):
        events.extend(reader.eof())
    parts: list[object] = []
    for event in events:
        if isinstance(event, bytes):
            if parts and isinstance(parts[-1], bytes):
                parts[-1] += event
            else:
                parts.append(event)
        else:
            parts.append(event._replace(fields=[
                (n, v.lower() if n == b"transfer-encoding" else v) for n, v in event.fields]))
    reusable = reader.done and not reader.close and not reader.rest
    return parts, reader.rest, reusable


def theirs(data: bytes, method: bytes = b"GET", upgrade: bool = False
           ) -> tuple[list[object], bytes, bool]:
    """What h11 reads, in the same form."""
    conn = h11.Connection(h11.CLIENT)
    fields = [(b"host", b"t")]
    if upgrade:
        fields += [(b"connection", b"upgrade"), (b"upgrade", b"websocket")]
    conn.send(h11.Request(method=method, target=b"/", headers=fields))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    parts: list[object] = []
    ended = False
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA and not ended:
            conn.receive_data(b"")
            ended = True
            continue
        if event is h11.NEED_DATA or event is h11.PAUSED \
                or isinstance(event, h11.ConnectionClosed):
            break
        if isinstance(event, h11.InformationalResponse):
            kind = SWITCHED if event.status_code == 101 else INFO
            parts.append(Part(kind, event.status_code, list(event.headers)))
            if kind == SWITCHED:
                break
        elif isinstance(event, h11.Response):
            # (h11 lowers the value of Transfer-Encoding, which does not go on to HTTP/2)
            parts.append(Part(HEAD, event.status_code, [
                (n, v.lower() if n == b"transfer-encoding" else v) for n, v in event.headers]))
        elif isinstance(event, h11.Data):
            if parts and isinstance(parts[-1], bytes):
                parts[-1] += bytes(event.data)
            else:
                parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            parts.append(END)
            if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
                break
    rest = conn.trailing_data[0]
    try:
        conn.start_next_cycle()
        reusable = not rest and not ended  # (a connection the task closed is not reused)
    except h11.LocalProtocolError:
        reusable = False
    return parts, bytes(rest), reusable


def accepts(read: object, data: bytes, **kw: object) -> bool:
    try:
        read(data, **kw)  # type: ignore[operator]
    except (BadMessage, h11.RemoteProtocolError):
        return False
    return True


@pytest.mark.parametrize("name", list(MALFORMED))
def test_the_proxy_refuses_every_malformed_answer(name: str) -> None:
    data = MALFORMED[name]
    assert not accepts(ours, data), name
    assert not accepts(ours, data, byte_at_a_time=True), name


def test_most_of_the_malformed_answers_h11_refuses_too() -> None:
    """The corpus is not a list of our own quirks: h11 refuses most of it."""
    refused = [n for n, d in MALFORMED.items() if not accepts(theirs, d)]
    assert len(refused) >= len(MALFORMED) * 2 // 3, sorted(set(MALFORMED) - set(refused))


@pytest.mark.parametrize("name", list(VALID))
def test_valid_answers_read_the_same_as_h11_reads_them(name: str) -> None:
    data = VALID[name]
    expected = theirs(data)
    assert ours(data) == expected, name
    assert ours(data, byte_at_a_time=True) == expected, name


@pytest.mark.parametrize("name", ["a length", "chunked", "204 without a length"])
def test_the_answer_to_head_has_no_body(name: str) -> None:
    data = VALID[name].partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert ours(data, method=b"HEAD") == theirs(data, method=b"HEAD")


def test_a_switch_leaves_the_new_protocols_bytes() -> None:
    data = answer(b"Upgrade: websocket", b"Connection: Upgrade", b"Sec-WebSocket-Accept: x",
                  start=b"HTTP/1.1 101 Switching Protocols", body=b"\x81\x02hi")
    parts, rest, _ = ours(data, upgrade=True)
    their_parts, their_rest, _ = theirs(data, upgrade=True)
    assert parts == their_parts and rest == their_rest == b"\x81\x02hi"


def test_a_body_cut_short_by_the_task_is_an_error() -> None:
    for data in (answer(b"Content-Length: 5", body=b"hel"),
                 answer(CHUNKED, body=b"5\r\nhel"), b"HTTP/1.1 200 OK\r\nContent-"):
        assert not accepts(ours, data), data
        assert not accepts(theirs, data), data


def test_the_head_and_its_fields_are_bounded() -> None:
    reader = ResponseReader()
    reader.expect(b"GET")
    with pytest.raises(BadMessage, match="larger than"):
        reader.feed(b"HTTP/1.1 200 OK\r\n" + b"X-A: " + b"a" * MAX_HEAD)
    many = answer(*[b"X-%d: 1" % i for i in range(600)], b"Content-Length: 0")
    assert len(many) < MAX_HEAD
    with pytest.raises(BadMessage, match="fields"):
        ours(many)
    reader = ResponseReader()
    reader.expect(b"GET")
    with pytest.raises(BadMessage, match="chunk line"):
        reader.feed(answer(CHUNKED, body=b"5;" + b"x" * 10_000))


def test_a_large_body_comes_through_in_pieces_without_being_joined() -> None:
    reader = ResponseReader()
    reader.expect(b"GET")
    size = 1 << 20
    events = reader.feed(answer(b"Content-Length: %d" % size))
    piece = b"x" * 65536
    for _ in range(size // len(piece)):
        got = reader.feed(piece)
        assert got[0] is piece  # the bytes as read, not copied
    assert got[-1] == END and reader.done and not reader.close
    assert isinstance(events[0], Part) and events[0].status == 200


def h11_request(data: bytes) -> tuple[h11.Request, bytes]:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    req = conn.next_event()
    assert isinstance(req, h11.Request)
    body = b""
    while True:
        event = conn.next_event()
        if isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return req, body
        else:
            raise AssertionError(f"the request did not end: {event!r}")


def test_requests_written_read_back_the_same_in_h11() -> None:
    fields = [(b"host", b"web.shop.localhost"), (b"accept", b"*/*"),
              (b"x-forwarded-for", b"127.0.0.1")]
    writer = RequestWriter()
    data = writer.head(b"GET", b"/a?b=c", fields) + writer.end()
    req, body = h11_request(data)
    assert (req.method, req.target, list(req.headers), body) == (b"GET", b"/a?b=c", fields, b"")
    assert not writer.sending
    data = writer.head(b"POST", b"/up", [*fields, (b"transfer-encoding", b"chunked")])
    data += writer.data(b"hello") + writer.data(b"") + writer.data(b" world") + writer.end()
    assert h11_request(data)[1] == b"hello world"
    data = writer.head(b"PUT", b"/up", [*fields, (b"content-length", b"11")])
    data += writer.data(b"hello") + writer.data(b" world") + writer.end()
    assert h11_request(data)[1] == b"hello world"


def test_a_request_body_must_match_its_length() -> None:
    writer = RequestWriter()
    writer.head(b"PUT", b"/", [(b"host", b"t"), (b"content-length", b"3")])
    with pytest.raises(BadMessage):
        writer.data(b"four")
    writer.data(b"ab")
    with pytest.raises(BadMessage):
        writer.end()


def test_remembered_field_lines_read_the_same_and_stay_bounded() -> None:
    """Field lines are parsed once and remembered (``_LINES_SEEN``): with every line of the
    corpus remembered, each answer still reads as h11 reads it and each malformed one is
    still refused; the memory starts over once full and keeps no long line."""
    from taskmuxd.proxy import h1client

    for data in VALID.values():
        ours(data)
    assert h1client._LINES_SEEN and h1client._STATUS_SEEN and h1client._CONNECTION_SEEN
    assert any(http10 for _, http10 in h1client._STATUS_SEEN.values())  # (both kinds seen)
    assert any(b"close" in tokens for tokens in h1client._CONNECTION_SEEN.values())
    for name, data in VALID.items():
        assert ours(data) == theirs(data), name
    for name, data in MALFORMED.items():
        assert not accepts(ours, data), name
    # The same name in another case is its own line, with the same lowered name.
    parts, _, _ = ours(answer(b"X-Case: a", b"x-case: a", b"X-CASE:  a ", b"Content-Length: 0"))
    assert parts[0] == Part(HEAD, 200, [(b"x-case", b"a")] * 3 + [(b"content-length", b"0")])
    ours(answer(b"X-Long: " + b"a" * 300, b"Content-Length: 0"))
    assert all(len(line) <= h1client._MAX_REMEMBERED_LINE for line in h1client._LINES_SEEN)
    for i in range(h1client._MAX_REMEMBERED_LINES + 10):
        ours(answer(b"X-N: %d" % i, b"Content-Length: 0"))
    assert len(h1client._LINES_SEEN) <= h1client._MAX_REMEMBERED_LINES
    for i in range(h1client._MAX_REMEMBERED_STATUS + 10):
        ours(answer(b"Connection: x%d" % i, b"Content-Length: 0",
                    start=b"HTTP/1.1 200 R%d" % i))
    assert len(h1client._STATUS_SEEN) <= h1client._MAX_REMEMBERED_STATUS
    assert len(h1client._CONNECTION_SEEN) <= h1client._MAX_REMEMBERED_STATUS
