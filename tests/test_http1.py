"""The proxy's HTTP/1.1 head parsing and body framing (pure functions, no sockets)."""

from __future__ import annotations

import pytest

from taskmuxd.proxy.http1 import (
    CHUNKED,
    NO_BODY,
    UNTIL_CLOSE,
    BadMessage,
    ChunkedScanner,
    LengthScanner,
    forwarded_request,
    parse_request,
    parse_response,
)


def req(*lines: str, start: str = "GET / HTTP/1.1") -> bytes:
    return ("\r\n".join([start, *lines]) + "\r\n\r\n").encode()


def test_a_plain_request() -> None:
    head = parse_request(req("Host: Web.Shop.localhost:8443", "Accept: */*"))
    assert (head.method, head.target, head.version) == (b"GET", b"/", b"HTTP/1.1")
    assert head.host == "web.shop.localhost:8443"
    assert head.framing == NO_BODY and head.close is False


@pytest.mark.parametrize(("lines", "start", "close"), [
    ((), "GET / HTTP/1.1", False),
    (("Connection: close",), "GET / HTTP/1.1", True),
    ((), "GET / HTTP/1.0", True),
    (("Connection: Keep-Alive",), "GET / HTTP/1.0", False),
])
def test_keep_alive_rules(lines: tuple[str, ...], start: str, close: bool) -> None:
    assert parse_request(req("Host: a", *lines, start=start)).close is close


def test_framing_of_requests() -> None:
    assert parse_request(req("Host: a", "Content-Length: 12")).framing == 12
    assert parse_request(req("Host: a", "Content-Length: 0")).framing == NO_BODY
    assert parse_request(req("Host: a", "Content-Length: 007")).framing == 7
    assert parse_request(req("Host: a", "Transfer-Encoding: gzip, chunked")).framing == CHUNKED
    head = parse_request(req("Host: a", "Expect: 100-continue", "Content-Length: 3"))
    assert head.expect_continue


def test_upgrade_needs_connection_upgrade() -> None:
    head = parse_request(req("Host: a", "Connection: keep-alive, Upgrade",
                             "Upgrade: websocket"))
    assert head.upgrade == b"websocket"
    assert parse_request(req("Host: a", "Upgrade: websocket")).upgrade == b""


def test_absolute_form_names_the_host() -> None:
    head = parse_request(req(start="GET http://api.shop.localhost/x HTTP/1.0"))
    assert head.host == "api.shop.localhost"
    head = parse_request(req("Host: API.shop.localhost:8443",
                             start="GET https://api.shop.localhost:8443 HTTP/1.1"))
    assert head.host == "api.shop.localhost:8443"
    assert parse_request(req("Host: a", start="OPTIONS * HTTP/1.1")).target == b"*"


@pytest.mark.parametrize(("head", "status", "why"), [
    (req("Host: a", "Content-Length: 3", "Transfer-Encoding: chunked"), 400, "both"),
    (req("Host: a", "Content-Length: 3", "Content-Length: 4"), 400, "Content-Length"),
    (req("Host: a", "Content-Length: -3"), 400, "Content-Length"),
    (req("Host: a", "Content-Length: 7, 7"), 400, "more than one Content-Length"),
    (req("Host: a", "Content-Length: 7", "Content-Length: 7"), 400, "more than one"),
    (req("Host: a", "Content-Length: +7"), 400, "Content-Length"),
    (req("Host: a", "Transfer-Encoding: chunked, gzip"), 400, "does not end with chunked"),
    (req("Host: a", "Transfer-Encoding: chunked, chunked"), 400, "more than once"),
    (req("Host: a", "Transfer-Encoding: xchunked"), 501, "unsupported transfer coding"),
    (req("Host: a", "Transfer-Encoding:"), 400, "does not end with chunked"),
    (req("Host: a", "Transfer-Encoding: chunked", start="POST / HTTP/1.0"), 400, "HTTP/1.0"),
    (req("Host: a", "X-A: a\nContent-Length: 0"), 400, "bare CR or LF"),
    (req("Host: a", "X-A: a\rContent-Length: 0"), 400, "bare CR or LF"),
    (req("Host: a", "X-A: a\x00b"), 400, "NUL"),
    (req("Host: a", "X-A: a\x01b"), 400, "control character"),
    (req("Host: a", "X-A: a\x7fb"), 400, "control character"),
    (req("Host: a", "X\tA: b"), 400, "invalid character in the name"),
    (req("Host: a", "X-A\t: b"), 400, "white space before the colon"),
    (req("Host: a", ": b"), 400, "invalid character in the name"),
    (req("Host: a b"), 400, "invalid Host"),
    (req("Host: a/b"), 400, "invalid Host"),
    (req("Host: a", start="GET /a\x00 HTTP/1.1"), 400, "control character"),
    (req("Host: a", start="GET / HTTP/1.1\n"), 400, "control character"),
    (req("Host: a", start="GET  / HTTP/1.1"), 400, "request line"),
    (req("Host: a", start="GET / HTTP/1.1 "), 400, "request line"),
    (req("Host: a", start="GET / http/1.1"), 400, "request line"),
    (req("Host: a", start="GET x HTTP/1.1"), 400, "request target"),
    (req("Host: a", start="GET * HTTP/1.1"), 400, "only for OPTIONS"),
    (req("Host: a", start="GET /#frag HTTP/1.1"), 400, "request target"),
    (req("Host: a", start="GET ftp://a/ HTTP/1.1"), 400, "request target"),
    (req("Host: a", start="GET http://u@a/ HTTP/1.1"), 400, "request target"),
    (req("Host: b", start="GET http://a/ HTTP/1.1"), 400, "different hosts"),
    (req("Host: a", "X: " + "y" * 70000), 431, "larger than"),
    (req("Host : a"), 400, "malformed header"),
    (req("Host: a", "X-Long: one", " two"), 400, "folded"),
    (req("Host: a", "no colon here"), 400, "malformed header"),
    (req("Host: a", "Host: b"), 400, "more than one Host"),
    (req("Host: a", start="GET / HTTP/2.0"), 505, "unsupported protocol"),
    (req("Accept: */*"), 400, "no Host"),
    (req("Host: a", start="GET /"), 400, "request line"),
    (req("Host: a", start="G(T / HTTP/1.1"), 400, "request line"),
])
def test_ambiguous_requests_are_refused(head: bytes, status: int, why: str) -> None:
    with pytest.raises(BadMessage) as info:
        parse_request(head)
    assert info.value.status == status and why in info.value.reason


@pytest.mark.parametrize(("lines", "method", "framing", "close"), [
    (("HTTP/1.1 200 OK", "Content-Length: 5"), b"GET", 5, False),
    (("HTTP/1.1 200 OK", "Content-Length: 5"), b"HEAD", NO_BODY, False),
    (("HTTP/1.1 204 No Content",), b"GET", NO_BODY, False),
    (("HTTP/1.1 304 Not Modified", "Content-Length: 5"), b"GET", NO_BODY, False),
    (("HTTP/1.1 100 Continue",), b"POST", NO_BODY, False),
    (("HTTP/1.1 200 OK", "Transfer-Encoding: chunked"), b"GET", CHUNKED, False),
    (("HTTP/1.1 200 OK",), b"GET", UNTIL_CLOSE, True),
    (("HTTP/1.0 200 OK", "Content-Length: 1"), b"GET", 1, True),
    (("HTTP/1.1 200 OK", "Content-Length: 1", "Connection: close"), b"GET", 1, True),
])
def test_framing_of_responses(lines: tuple[str, ...], method: bytes, framing: int,
                              close: bool) -> None:
    head = parse_response(("\r\n".join(lines) + "\r\n\r\n").encode(), method)
    assert (head.framing, head.close) == (framing, close)


def test_a_broken_response_is_the_backends_fault() -> None:
    with pytest.raises(BadMessage) as info:
        parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", b"GET")
    assert info.value.status == 502


def test_forwarded_headers_replace_the_clients_and_keep_everything_else() -> None:
    raw = req("Host: web.a.localhost", "x-Custom:  Spaced   Value ", "X-Forwarded-Proto: http",
              "x-forwarded-for: 203.0.113.9", "X-Forwarded-Host: evil", "Cookie: a=1")
    head = parse_request(raw)
    out = forwarded_request(head, "127.0.0.1", "web.a.localhost").decode()
    lines = out.split("\r\n")
    assert lines[:4] == ["GET / HTTP/1.1", "Host: web.a.localhost",
                         "x-Custom:  Spaced   Value ", "Cookie: a=1"]
    assert lines[4:] == ["X-Forwarded-For: 203.0.113.9, 127.0.0.1", "X-Forwarded-Proto: https",
                         "X-Forwarded-Host: web.a.localhost", "", ""]
    plain = parse_request(req("Host: b"))
    assert forwarded_request(plain, "::1", "b").endswith(
        b"Host: b\r\nX-Forwarded-For: ::1\r\nX-Forwarded-Proto: https\r\n"
        b"X-Forwarded-Host: b\r\n\r\n")


def feed_all(scanner: ChunkedScanner | LengthScanner, data: bytes, step: int) -> int:
    """Feed ``data`` in pieces of ``step`` bytes, keeping what the scanner did not claim for
    the next feed (as the proxy does); return where the body ended."""
    consumed, pending, i = 0, b"", 0
    while True:
        if i < len(data):
            pending += data[i:i + step]
            i += step
        n, done = scanner.feed(pending)
        consumed += n
        pending = pending[n:]
        if done:
            return consumed
        if i >= len(data) and not n:
            raise AssertionError("the body did not end")


BODY = b"4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nX-Trailer: yes\r\n\r\n"


@pytest.mark.parametrize("step", [1, 2, 3, 7, len(BODY) + 5])
def test_chunked_bodies_end_where_they_end(step: int) -> None:
    assert feed_all(ChunkedScanner(), BODY + b"GET /next", step) == len(BODY)


def test_a_partial_chunk_line_is_not_claimed_until_it_is_whole() -> None:
    scanner = ChunkedScanner()
    assert scanner.feed(b"5\r\nhello\r\n1") == (len(b"5\r\nhello\r\n"), False)
    assert scanner.feed(b"1") == (0, False)
    with pytest.raises(BadMessage):
        scanner.feed(b"1\rGET /smuggled HTTP/1.1\r\n")


def test_chunked_framing_errors() -> None:
    with pytest.raises(BadMessage, match="chunk size"):
        ChunkedScanner().feed(b"zz\r\n")
    with pytest.raises(BadMessage, match="CRLF"):
        ChunkedScanner().feed(b"2\r\nabXY")
    with pytest.raises(BadMessage, match="too long"):
        ChunkedScanner().feed(b"1" * 9000)


@pytest.mark.parametrize("body", [
    b"5\nhello\r\n0\r\n\r\n",  # a bare LF ends the size line
    b"5\r\r\nhello\r\n0\r\n\r\n",
    b" 5\r\nhello\r\n0\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",  # white space without an extension
    b"-5\r\nhello\r\n0\r\n\r\n",
    b"0x5\r\nhello\r\n0\r\n\r\n",
    b"1" + b"0" * 16 + b"\r\n",  # 2**64: too large
    b"5;a=\x00\r\nhello\r\n0\r\n\r\n",
    b"0\r\nX-T: a\nb\r\n\r\n",  # a bare LF in a trailer
    b"0\r\nbad trailer\r\n\r\n",
    b"0\r\n\n",
])
def test_request_chunks_follow_the_grammar(body: bytes) -> None:
    with pytest.raises(BadMessage):
        feed_all(ChunkedScanner(), body, len(body))


def test_chunk_sizes_extensions_and_leading_zeros() -> None:
    body = b"0005 ; name=\"v\"\r\nhello\r\n00\r\nX-T: 1\r\n\r\n"
    assert feed_all(ChunkedScanner(), body, 1) == len(body)
    # A task's answer is read more leniently (white space, a bare LF).
    lax = b"5 \nhello\r\n0\n\n"
    assert feed_all(ChunkedScanner(strict=False), lax, 3) == len(lax)


def test_length_scanner() -> None:
    scanner = LengthScanner(5)
    assert scanner.feed(b"abc") == (3, False)
    assert scanner.feed(b"defgh") == (2, True)
