"""HTTP/2 header lists to HTTP/1.1 fields and back (pure functions, no I/O)."""

from __future__ import annotations

import itertools

import h2.exceptions
import pytest
from h2.utilities import HeaderValidationFlags, validate_headers

from taskmuxd.proxy import h2headers, pages
from taskmuxd.proxy.h1client import Part, ResponseReader
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


def test_a_head_as_the_task_connection_reads_it_drops_the_same_fields() -> None:
    reader = ResponseReader()
    reader.expect(b"GET")
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Hop\r\n"
            b"Keep-Alive: timeout=5\r\nX-Hop: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"Content-Length: 0\r\n\r\n")
    part = reader.feed(head)[0]
    assert isinstance(part, Part)
    out = h2headers.from_task(part.status, part.fields, reader.named)
    assert out == h2headers.response(200, [
        (b"Content-Type", b"text/plain"), (b"Connection", b"keep-alive, X-Hop"),
        (b"Keep-Alive", b"timeout=5"), (b"X-Hop", b"1"), (b"Set-Cookie", b"a=1"),
        (b"Set-Cookie", b"b=2"), (b"Content-Length", b"0")])
    assert out == [(b":status", b"200"), (b"content-type", b"text/plain"),
                   (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"content-length", b"0")]


def test_a_page_of_the_proxy_becomes_headers_and_body() -> None:
    raw = pages.not_ready("web.p.localhost", "p", "web", "stopped", html_ok=False, close=True)
    fields, body = h2headers.page(raw)
    names = [n for n, _ in fields]
    assert fields[0] == (b":status", b"502") and b"connection" not in names
    assert dict(fields)[b"content-length"] == str(len(body)).encode()
    assert b"taskmux start web" in body


def test_a_method_that_is_not_a_token_is_refused() -> None:
    with pytest.raises(h2headers.Malformed):
        h2headers.request([(b":method", b"GET /x HTTP/1.1\r\nX:"), *BASE[1:]], True, "::1")
    for method in (b"G T", b"", b"G(T"):
        fields = [(b":method", method), *[f for f in BASE if f[0] != b":method"]]
        with pytest.raises(BadMessage, match="invalid :method"):
            h2headers.request(fields, True, "127.0.0.1")


# -- the checks h2 is told not to make, against h2's own -------------------------------------

_FLAGS = HeaderValidationFlags(is_client=False, is_trailer=False, is_response_header=False,
                               is_push_promise=False)
_TRAILER_FLAGS = HeaderValidationFlags(is_client=False, is_trailer=True,
                                       is_response_header=False, is_push_promise=False)
_CONNECT = [(b":method", b"CONNECT"), (b":authority", b"web.p.localhost:8443")]
_WS = [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"https"),
       (b":authority", b"web.p.localhost:8443"), (b":path", b"/ws")]
# Header lists to start from, and fields to add, drop or put first: alone and two at a time
# they make some thousands of lists, valid and not.
_STARTS = [BASE, _CONNECT, _WS, BASE[1:], BASE[:2] + BASE[3:], [BASE[0], *BASE[2:]],
           [BASE[0], BASE[1], BASE[3]], [*BASE[:3], (b":path", b"")]]
_FIELDS = [
    (b"accept", b"*/*"), (b"X-Upper", b"1"), (b"x-a", b""), (b"", b"1"), (b"x y", b"1"),
    (b"x:y", b"1"), (b"x\x00", b"1"), (b"x\xe9", b"1"), (b"x(y)", b"1"), (b"x-a", b" a"),
    (b"x-a", b"a\t"), (b"x-a", b"a\rb"), (b"x-a", b"a\nb"), (b"x-a", b"a\x00b"),
    (b"x-a", b"a\x01b"), (b"x-a", b"a\x7fb"), (b"x-a", b"a \tb\xe9"), (b"te", b"trailers"),
    (b"te", b"Trailers"), (b"te", b"gzip"), (b"connection", b"close"), (b"keep-alive", b"1"),
    (b"proxy-connection", b"x"), (b"transfer-encoding", b"chunked"), (b"upgrade", b"h2c"),
    (b"host", b"web.p.localhost:8443"), (b"host", b"WEB.p.localhost:8443"),
    (b"host", b"other.localhost"), (b":method", b"POST"), (b":path", b"/x"),
    (b":status", b"200"), (b":foo", b"1"), (b":", b"1"), (b":protocol", b"websocket"),
    (b":scheme", b"http"), (b":authority", b"web.p.localhost:8443"), (b"cookie", b"a=1"),
    (b"content-length", b"0"),
]


def _h2_refuses(fields: list[tuple[bytes, bytes]], flags: HeaderValidationFlags) -> bool:
    try:
        list(validate_headers(fields, flags))
    except h2.exceptions.ProtocolError:
        return True
    return False


def _lists() -> list[list[tuple[bytes, bytes]]]:
    out = []
    for start in _STARTS:
        out.append(start)
        for field in _FIELDS:
            out.append([*start, field])
            out.append([field, *start])
        for a, b in itertools.combinations(_FIELDS, 2):
            out.append([*start, a, b])
    return out


def test_what_h2_calls_malformed_is_malformed_here_too() -> None:
    """With h2's inbound checks off, ``request`` refuses (``Malformed``, so the connection
    ends) every header list h2 refuses, and refuses nothing as malformed that h2 takes."""
    lists = _lists()
    assert len(lists) > 5000
    refused = 0
    for fields in lists:
        h2_refuses = _h2_refuses(fields, _FLAGS)
        try:
            h2headers.request(fields, False, "127.0.0.1")
            malformed = False
        except h2headers.Malformed:
            malformed = True
        except BadMessage:
            malformed = False
        assert malformed == h2_refuses, fields
        refused += h2_refuses
    assert refused > 1000 and len(lists) - refused > 200  # (a corpus of both kinds)


def test_trailers_h2_refuses_are_refused() -> None:
    for field in _FIELDS:
        h2_refuses = _h2_refuses([field], _TRAILER_FLAGS)
        try:
            h2headers.trailers([field])
            malformed = False
        except h2headers.Malformed:
            malformed = True
        assert malformed == h2_refuses, field


# -- requests taken from a template (all but their :path seen before) -------------------------

_PATHS = [b"/src/m1.js", b"/", b"*", b"", b"/a b", b"/\x01", b"src", b"/%zz?q=\xe9"]


def _outcome(call: object, fields: list[tuple[bytes, bytes]], end: bool, ip: str) -> object:
    """What ``call`` makes of a header list: the request (the random WebSocket key left
    out), or the error it raises."""
    try:
        req = call(fields, end, ip)  # type: ignore[operator]
    except BadMessage as exc:
        return type(exc).__name__, exc.status, exc.reason
    assert isinstance(req, h2headers.Request)
    shown = {name: getattr(req, name) for name in h2headers.Request.__slots__}
    shown["headers"] = [f for f in req.headers if f[0] != b"sec-websocket-key"]
    shown["wire"] = b"" if req.websocket else req.wire
    return shown


def _with_path(fields: list[tuple[bytes, bytes]], path: bytes) -> list[tuple[bytes, bytes]]:
    return [(n, path) if n == b":path" else (n, v) for n, v in fields]


def test_a_request_from_a_template_is_the_request_checked_in_full(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every list of the corpus, asked once and then again with each of several paths
    (valid and not): the same request or the same error as when every field is checked."""
    checked = h2headers._checked
    calls = [0]

    def counted(fields: list[tuple[bytes, bytes]], end: bool, ip: str) -> h2headers.Request:
        calls[0] += 1
        return checked(fields, end, ip)

    monkeypatch.setattr(h2headers, "_checked", counted)
    monkeypatch.setattr(h2headers, "_MAX_TEMPLATES", 100_000)  # (none dropped meanwhile)
    h2headers._TEMPLATES.clear()
    asked = 0
    chromium = [BASE[0], BASE[2], BASE[1], BASE[3]]  # (its order of pseudo-headers)
    lists = [*_lists(), *([*chromium, a, b] for a, b in itertools.combinations(_FIELDS, 2))]
    for fields in lists:
        for end, ip in ((False, "127.0.0.1"), (True, "::1")):
            first = _outcome(h2headers.request, fields, end, ip)
            assert first == _outcome(checked, fields, end, ip), fields
            for path in _PATHS:
                other = _with_path(fields, path)
                assert _outcome(h2headers.request, other, end, ip) == _outcome(
                    checked, other, end, ip), other
            asked += 1 + len(_PATHS)
    assert len(h2headers._TEMPLATES) > 150
    assert asked - calls[0] > 500  # (answered from templates, without _checked)
    h2headers._TEMPLATES.clear()


def test_templates_are_used_and_bounded() -> None:
    h2headers._TEMPLATES.clear()
    first = h2headers.request([*BASE, (b"accept", b"*/*")], True, "::1")
    again = h2headers.request(_with_path([*BASE, (b"accept", b"*/*")], b"/m2.js"), True, "::1")
    assert len(h2headers._TEMPLATES) == 1 and again.path == b"/m2.js"
    assert again.headers == first.headers and again.headers is not first.headers
    assert again.wire is first.wire  # (taken from the template, not written again)
    big = [*BASE, (b"x-big", b"a" * h2headers._MAX_TEMPLATE_BYTES)]
    h2headers.request(big, True, "::1")
    assert len(h2headers._TEMPLATES) == 1  # (too large to keep)
    for i in range(h2headers._MAX_TEMPLATES + 5):
        h2headers.request([*BASE, (b"x-n", b"%d" % i)], True, "::1")
    assert len(h2headers._TEMPLATES) <= h2headers._MAX_TEMPLATES


def test_prepared_lines_are_the_head_the_fields_make() -> None:
    """``Request.wire`` and its framing against ``RequestWriter.head`` over the fields."""
    from taskmuxd.proxy.h1client import RequestWriter

    made = 0
    for fields in _lists():
        for end in (False, True):
            try:
                req = h2headers._checked(fields, end, "127.0.0.1")
            except BadMessage:
                continue
            if req.method == b"CONNECT" and not req.websocket:
                continue  # (refused with a page: nothing goes to the task)
            plain, ready = RequestWriter(), RequestWriter()
            expected = plain.head(req.method, req.path, req.headers)
            assert ready.prepared(req.method, req.path, req.wire, req.remaining,
                                  req.chunked) == expected
            assert (ready.chunked, ready.remaining, ready.sending) == (
                plain.chunked, plain.remaining, plain.sending), fields
            made += 1
    assert made > 200
