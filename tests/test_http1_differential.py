"""The proxy's request parser against two independent ones, h11 (pure Python) and httptools
(llhttp, Node's parser), over one corpus of ambiguous and malformed requests.

A request that both of them refuse is one some backend may read differently from the proxy;
the proxy must never accept it. (Where one of them accepts, the proxy may go either way; it
is stricter than both in places.) The valid requests must pass all three, and where the proxy
and h11 both take a request they must agree on where it ends: that agreement is what keeps a
second request from hiding in the first one's body.
"""

from __future__ import annotations

import h11
import httptools
import pytest

from taskmuxd.proxy.http1 import HEAD_END, BadMessage, parse_request, scanner

HOST = b"Host: web.shop.localhost\r\n"


def request(*lines: bytes, start: bytes = b"GET / HTTP/1.1", body: bytes = b"") -> bytes:
    return start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n" + body


SMUGGLED = (b"GET /admin/smuggled HTTP/1.1\r\nHost: a.localhost\r\n"
            b"X-Forwarded-For: 6.6.6.6\r\n\r\n")
assert len(SMUGGLED) == 77
CHUNKS = b"5\r\nhello\r\n0\r\n\r\n"

MALFORMED: dict[str, bytes] = {
    "smuggling repro: bare LF hides a second Content-Length": (
        b"POST /first HTTP/1.1\r\nHost: web.shop.localhost\r\nX-A: a\nContent-Length: 0\r\n"
        b"Content-Length: 77\r\n\r\n" + SMUGGLED),
    "bare LF line ends": b"GET / HTTP/1.1\nHost: web.shop.localhost\n\n",
    "bare LF ending the request line": b"GET / HTTP/1.1\n" + HOST + b"\r\n",
    "bare CR in a value": request(HOST[:-2], b"X-A: a\rContent-Length: 5", body=b"hello"),
    "bare CR ending a line": request(HOST[:-2], b"X-A: a\r\rX-B: b"),
    "NUL in a value": request(HOST[:-2], b"X-A: a\x00b"),
    "NUL in the target": request(HOST[:-2], start=b"GET /a\x00b HTTP/1.1"),
    "NUL in a name": request(HOST[:-2], b"X-\x00A: b"),
    "control character in a value": request(HOST[:-2], b"X-A: a\x01b"),
    "escape character in a value": request(HOST[:-2], b"X-A: a\x1bb"),
    "DEL in a value": request(HOST[:-2], b"X-A: a\x7fb"),
    "vertical tab in a value": request(HOST[:-2], b"X-A: a\x0bb"),
    "obs-fold": request(HOST[:-2], b"X-A: a", b" b"),
    "obs-fold with a tab": request(HOST[:-2], b"X-A: a", b"\tb"),
    "obs-fold after the request line": request(b" " + HOST[:-2]),
    "space before colon": request(b"Host : web.shop.localhost"),
    "tab before colon": request(HOST[:-2], b"Content-Length\t: 5", start=b"POST / HTTP/1.1",
                                body=b"hello"),
    "space in a name": request(HOST[:-2], b"X A: b"),
    "no colon": request(HOST[:-2], b"just words"),
    "empty name": request(HOST[:-2], b": b"),
    "invalid character in a name": request(HOST[:-2], b"X(A): b"),
    "non-ASCII name": request(HOST[:-2], b"X-\xe9: b"),
    "CL + CL conflicting": request(HOST[:-2], b"Content-Length: 5", b"Content-Length: 6",
                                   start=b"POST / HTTP/1.1", body=b"hello!"),
    "CL list conflicting": request(HOST[:-2], b"Content-Length: 5, 6",
                                   start=b"POST / HTTP/1.1", body=b"hello!"),
    "negative CL": request(HOST[:-2], b"Content-Length: -5", start=b"POST / HTTP/1.1"),
    "CL with +": request(HOST[:-2], b"Content-Length: +5", start=b"POST / HTTP/1.1",
                         body=b"hello"),
    "CL hex": request(HOST[:-2], b"Content-Length: 0x5", start=b"POST / HTTP/1.1",
                      body=b"hello"),
    "CL with a space inside": request(HOST[:-2], b"Content-Length: 1 2",
                                      start=b"POST / HTTP/1.1", body=b"x" * 12),
    "CL empty": request(HOST[:-2], b"Content-Length:", start=b"POST / HTTP/1.1"),
    "CL too large": request(HOST[:-2], b"Content-Length: 99999999999999999999999",
                            start=b"POST / HTTP/1.1"),
    "CL + TE": request(HOST[:-2], b"Content-Length: 3", b"Transfer-Encoding: chunked",
                       start=b"POST / HTTP/1.1", body=CHUNKS),
    "TE + CL": request(HOST[:-2], b"Transfer-Encoding: chunked", b"Content-Length: 3",
                       start=b"POST / HTTP/1.1", body=CHUNKS),
    "TE xchunked": request(HOST[:-2], b"Transfer-Encoding: xchunked",
                           start=b"POST / HTTP/1.1", body=CHUNKS),
    "TE chunked, identity": request(HOST[:-2], b"Transfer-Encoding: chunked, identity",
                                    start=b"POST / HTTP/1.1", body=CHUNKS),
    "TE chunked twice": request(HOST[:-2], b"Transfer-Encoding: chunked",
                                b"Transfer-Encoding: chunked", start=b"POST / HTTP/1.1",
                                body=CHUNKS),
    "TE with a vertical tab": request(HOST[:-2], b"Transfer-Encoding:\x0bchunked",
                                      start=b"POST / HTTP/1.1", body=CHUNKS),
    "TE with a NUL": request(HOST[:-2], b"Transfer-Encoding: chunked\x00",
                             start=b"POST / HTTP/1.1", body=CHUNKS),
    "TE name with a space": request(HOST[:-2], b"Transfer-Encoding : chunked",
                                    start=b"POST / HTTP/1.1", body=CHUNKS),
    "TE folded": request(HOST[:-2], b"Transfer-Encoding:", b" chunked",
                         start=b"POST / HTTP/1.1", body=CHUNKS),
    "TE in HTTP/1.0 with CL": request(HOST[:-2], b"Transfer-Encoding: chunked",
                                      b"Content-Length: 3", start=b"POST / HTTP/1.0",
                                      body=CHUNKS),
    "chunk size too large": request(HOST[:-2], b"Transfer-Encoding: chunked",
                                    start=b"POST / HTTP/1.1",
                                    body=b"1" + b"0" * 20 + b"\r\nx\r\n0\r\n\r\n"),
    "chunk size negative": request(HOST[:-2], b"Transfer-Encoding: chunked",
                                   start=b"POST / HTTP/1.1", body=b"-5\r\nhello\r\n0\r\n\r\n"),
    "chunk size not hex": request(HOST[:-2], b"Transfer-Encoding: chunked",
                                  start=b"POST / HTTP/1.1", body=b"5g\r\nhello\r\n0\r\n\r\n"),
    "chunk data without CRLF": request(HOST[:-2], b"Transfer-Encoding: chunked",
                                       start=b"POST / HTTP/1.1",
                                       body=b"5\r\nhelloXX0\r\n\r\n"),
    "chunk size line with a bare CR": request(HOST[:-2], b"Transfer-Encoding: chunked",
                                              start=b"POST / HTTP/1.1",
                                              body=b"5\rhello\r\n0\r\n\r\n"),
    "request line: two spaces": request(HOST[:-2], start=b"GET  / HTTP/1.1"),
    "request line: tab separator": request(HOST[:-2], start=b"GET\t/ HTTP/1.1"),
    "request line: trailing space": request(HOST[:-2], start=b"GET / HTTP/1.1 "),
    "request line: no version": request(HOST[:-2], start=b"GET /"),
    "request line: lowercase version": request(HOST[:-2], start=b"GET / http/1.1"),
    "request line: bad version": request(HOST[:-2], start=b"GET / HTTP/1.x"),
    "request line: version with a letter": request(HOST[:-2], start=b"GET / HTTPS/1.1"),
    "request line: invalid method character": request(HOST[:-2], start=b"G(T / HTTP/1.1"),
    "request line: empty method": request(HOST[:-2], start=b" / HTTP/1.1"),
    "request line: space in the target": request(HOST[:-2], start=b"GET /a b HTTP/1.1"),
    "request line: non-ASCII target": request(HOST[:-2], start=b"GET /\xe9 HTTP/1.1"),
    "two Host headers": request(HOST[:-2], b"Host: api.blog.localhost"),
    "no Host in HTTP/1.1": request(b"Accept: */*"),
    "Host with a space": request(b"Host: web.shop.localhost evil"),
}

VALID: dict[str, bytes] = {
    "plain GET": request(HOST[:-2], b"Accept: */*"),
    "POST with a length": request(HOST[:-2], b"Content-Length: 5", start=b"POST / HTTP/1.1",
                                  body=b"hello"),
    "CL with leading zeros": request(HOST[:-2], b"Content-Length: 005",
                                     start=b"POST / HTTP/1.1", body=b"hello"),
    "CL with white space around": request(HOST[:-2], b"Content-Length: \t5 ",
                                          start=b"POST / HTTP/1.1", body=b"hello"),
    "chunked with extensions and trailers": request(
        HOST[:-2], b"Transfer-Encoding: chunked", start=b"POST /up HTTP/1.1",
        body=b"5;name=value\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
    "TE spelled in capitals": request(HOST[:-2], b"Transfer-Encoding: Chunked",
                                      start=b"POST / HTTP/1.1", body=CHUNKS),
    "TE with white space": request(HOST[:-2], b"Transfer-Encoding:  chunked ",
                                   start=b"POST / HTTP/1.1", body=CHUNKS),
    "a tab and obs-text in a value": request(HOST[:-2], b"X-A: a\tb \xe9\xff"),
    "empty value": request(HOST[:-2], b"X-Empty:"),
    "query string": request(HOST[:-2], start=b"GET /search?q=a%20b&x=[1] HTTP/1.1"),
    "absolute form": request(HOST[:-2], start=b"GET http://web.shop.localhost/x?y HTTP/1.1"),
    "absolute form, Host in capitals": request(
        b"Host: WEB.shop.localhost", start=b"GET https://web.shop.localhost/ HTTP/1.1"),
    "OPTIONS *": request(HOST[:-2], start=b"OPTIONS * HTTP/1.1"),
    "HTTP/1.0 without Host": request(start=b"GET / HTTP/1.0"),
    "HTTP/1.0 keep-alive": request(HOST[:-2], b"Connection: keep-alive",
                                   start=b"GET / HTTP/1.0"),
    "WebSocket upgrade": request(HOST[:-2], b"Connection: Upgrade", b"Upgrade: websocket",
                                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                                 b"Sec-WebSocket-Version: 13"),
    "extension method": request(HOST[:-2], b"Content-Length: 0", start=b"PROPFIND / HTTP/1.1"),
    "Host with a port": request(b"Host: web.shop.localhost:8443"),
    "pipelined requests": request(HOST[:-2], b"Content-Length: 5", start=b"POST / HTTP/1.1",
                                  body=b"hello" + request(HOST[:-2])),
}


def taskmux_end(data: bytes) -> int | None:
    """Where the proxy takes the first request to end (None: not yet); raises BadMessage."""
    end = data.find(HEAD_END)
    if end < 0:
        raise BadMessage("no end of head")
    head = parse_request(data[:end + 4])
    body = scanner(head.framing)
    if body is None:
        return end + 4
    n, done = body.feed(data[end + 4:])
    return end + 4 + n if done else None


def taskmux_accepts(data: bytes) -> bool:
    try:
        taskmux_end(data)
    except BadMessage:
        return False
    return True


def h11_end(data: bytes) -> int | None:
    """Where h11 takes the first request to end (None: not yet); raises if it refuses."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            return None
        if isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
            return len(data) - len(conn.trailing_data[0])


def h11_accepts(data: bytes) -> bool:
    try:
        h11_end(data)
    except h11.RemoteProtocolError:
        return False
    return True


class _Events:
    def __init__(self) -> None:
        self.head_done = False

    def on_headers_complete(self) -> None:
        self.head_done = True


def httptools_accepts(data: bytes) -> bool:
    events = _Events()
    parser = httptools.HttpRequestParser(events)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        return True
    except httptools.HttpParserError:
        return False
    return events.head_done


@pytest.mark.parametrize("name", list(MALFORMED))
def test_the_proxy_refuses_what_both_other_parsers_refuse(name: str) -> None:
    data = MALFORMED[name]
    verdicts = (taskmux_accepts(data), h11_accepts(data), httptools_accepts(data))
    assert verdicts != (True, False, False), f"{name}: only taskmux accepts {data!r}"


def test_the_corpus_is_mostly_refused_by_all_three() -> None:
    """The corpus is not a set of requests everyone takes: most cases are refused by all."""
    assert len(MALFORMED) >= 40
    refused_by_all = [n for n, d in MALFORMED.items()
                      if not (taskmux_accepts(d) or h11_accepts(d) or httptools_accepts(d))]
    assert len(refused_by_all) >= len(MALFORMED) // 2, refused_by_all
    # And the proxy refuses every single case, stricter than either of the others.
    assert [n for n, d in MALFORMED.items() if taskmux_accepts(d)] == []


@pytest.mark.parametrize("name", list(VALID))
def test_valid_requests_pass_all_three_and_end_in_the_same_place(name: str) -> None:
    data = VALID[name]
    assert taskmux_accepts(data), name
    assert h11_accepts(data), name
    assert httptools_accepts(data), name
    ours, theirs = taskmux_end(data), h11_end(data)
    assert ours == theirs, (name, ours, theirs)
