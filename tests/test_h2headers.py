"""HTTP/2 header lists to HTTP/1.1 fields and back (pure functions, no I/O)."""

from __future__ import annotations

import pytest

from taskmuxd.proxy import h2headers, pages
from taskmuxd.proxy.http1 import BadMessage

BASE = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"web.p.localhost:8443"),
        (b":path", b"/a?b=1")]


def test_a_request_becomes_http1_fields() -> None:
    req = h2headers.request([*BASE, (b"cookie", b"a=1"), (b"accept", b"text/html"),
                             (b"cookie", b"b=2"), (b"x-forwarded-for", b"203.0.113.7"),
                             (b"x-forwarded-host", b"evil"), (b"te", b"trailers")],
                            end_stream=True, client_ip="127.0.0.1")
    assert (req.method, req.path, req.authority) == (b"GET", b"/a?b=1", "web.p.localhost:8443")
    assert req.accept_html and not req.has_body
    assert req.headers == [
        (b"host", b"web.p.localhost:8443"), (b"accept", b"text/html"),
        (b"cookie", b"a=1; b=2"), (b"x-forwarded-for", b"203.0.113.7, 127.0.0.1"),
        (b"x-forwarded-proto", b"https"), (b"x-forwarded-host", b"web.p.localhost:8443")]


def test_bodies_keep_their_length_or_go_chunked() -> None:
    sized = h2headers.request([*BASE, (b"content-length", b"12")], False, "::1")
    assert sized.length == 12 and (b"content-length", b"12") in sized.headers
    open_ended = h2headers.request(BASE, False, "::1")
    assert (b"transfer-encoding", b"chunked") in open_ended.headers


def test_a_websocket_connect_becomes_an_upgrade() -> None:
    req = h2headers.request([(b":method", b"CONNECT"), (b":protocol", b"websocket"),
                             (b":scheme", b"https"), (b":authority", b"chat.p.localhost"),
                             (b":path", b"/ws"), (b"sec-websocket-version", b"13")],
                            False, "127.0.0.1")
    fields = dict(req.headers)
    assert req.websocket and req.method == b"GET" and not req.has_body
    assert fields[b"upgrade"] == b"websocket" and fields[b"connection"] == b"upgrade"
    assert len(fields[b"sec-websocket-key"]) == 24 and b"transfer-encoding" not in fields


@pytest.mark.parametrize(("extra", "problem"), [
    ([(b"x(y)", b"1")], "invalid header name"),
    ([(b"x-a", b"a\x01b")], "control character"),
    ([(b"content-length", b"1"), (b"content-length", b"2")], "Content-Length"),
    ([(b"content-length", b"-1")], "Content-Length"),
    ([(b"host", b"a.localhost"), (b"host", b"b.localhost")], "more than one Host"),
])
def test_what_http1_would_refuse_is_refused(extra: list[tuple[bytes, bytes]],
                                            problem: str) -> None:
    with pytest.raises(BadMessage, match=problem):
        h2headers.request([*BASE, *extra], False, "127.0.0.1")


@pytest.mark.parametrize(("name", "value", "problem"), [
    (b":authority", b"user@web.p.localhost", "invalid :authority"),
    (b":authority", b"web.p.localhost/x", "invalid :authority"),
    (b":path", b"relative", "invalid :path"),
    (b":path", b"/caf\xc3\xa9", "invalid :path"),
    (b":path", b"*", "only for OPTIONS"),
])
def test_bad_pseudo_headers(name: bytes, value: bytes, problem: str) -> None:
    fields = [(n, value if n == name else v) for n, v in BASE]
    with pytest.raises(BadMessage, match=problem):
        h2headers.request(fields, True, "127.0.0.1")


def test_a_response_drops_its_connection_fields_and_keeps_each_cookie() -> None:
    out = h2headers.response(200, [
        (b"Content-Type", b"text/plain"), (b"Connection", b"close, X-Hop"),
        (b"Keep-Alive", b"timeout=5"), (b"X-Hop", b"1"), (b"Transfer-Encoding", b"chunked"),
        (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2")])
    assert out == [(b":status", b"200"), (b"content-type", b"text/plain"),
                   (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]


def test_a_page_of_the_proxy_becomes_headers_and_body() -> None:
    raw = pages.not_ready("web.p.localhost", "p", "web", "stopped", html_ok=False, close=True)
    fields, body = h2headers.page(raw)
    names = [n for n, _ in fields]
    assert fields[0] == (b":status", b"502") and b"connection" not in names
    assert dict(fields)[b"content-length"] == str(len(body)).encode()
    assert b"taskmux start web" in body


def test_a_method_that_is_not_a_token_is_refused() -> None:
    for method in (b"GET /x HTTP/1.1\r\nX:", b"G T", b""):
        fields = [(b":method", method), *[f for f in BASE if f[0] != b":method"]]
        with pytest.raises(BadMessage, match="invalid :method"):
            h2headers.request(fields, True, "127.0.0.1")
