"""The request-smuggling corpus for bench/hostile.py, and a raw TLS client to send it.

Each case is a request whose framing or routing is ambiguous, most of them carrying a second,
hidden request ``GET /admin/smuggled?case=NAME`` with a spoofed ``X-Forwarded-For: 6.6.6.6``.
The proxy must refuse every one (400, or 431 for an oversized head, 421 for a name the
connection's TLS server name does not cover, 501 for a transfer coding it does not know), and
no hidden request may reach the backend.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

SMUGGLED_PATH = "/admin/smuggled"


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[str, str], bytes]  # (host, case name) -> bytes sent
    expect: frozenset[int]
    sni_project: str | None = None  # TLS server name of another project (else the host)


def smuggled(host: str, name: str) -> bytes:
    return (f"GET {SMUGGLED_PATH}?case={name} HTTP/1.1\r\nHost: {host}\r\n"
            "X-Forwarded-For: 6.6.6.6\r\n\r\n").encode()


def _post(host: str, name: str, fields: bytes) -> bytes:
    return (f"POST /case/{name} HTTP/1.1\r\nHost: {host}\r\n".encode() + fields)


def _hidden_length(sep: bytes) -> Callable[[str, str], bytes]:
    """A header value hides a Content-Length: 0 behind ``sep``; the proxy sees only the one
    that covers the smuggled request."""
    def build(host: str, name: str) -> bytes:
        s = smuggled(host, name)
        return _post(host, name, b"X-A: a" + sep + b"Content-Length: 0\r\nContent-Length: "
                     + str(len(s)).encode() + b"\r\n\r\n") + s
    return build


def _hidden_chunked(sep: bytes) -> Callable[[str, str], bytes]:
    """A hidden Transfer-Encoding: chunked; the body ends at once for the backend."""
    def build(host: str, name: str) -> bytes:
        body = b"0\r\n\r\n" + smuggled(host, name)
        return _post(host, name, b"X-A: a" + sep + b"Transfer-Encoding: chunked\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n") + body
    return build


def _with_fields(fields: bytes, body: Callable[[str, str], bytes] | None = None
                 ) -> Callable[[str, str], bytes]:
    def build(host: str, name: str) -> bytes:
        payload = body(host, name) if body else b"0\r\n\r\n" + smuggled(host, name)
        return _post(host, name, fields.replace(b"{n}", str(len(payload)).encode())
                     + b"\r\n") + payload
    return build


def _get(extra: bytes, line_end: bytes = b"\r\n") -> Callable[[str, str], bytes]:
    def build(host: str, name: str) -> bytes:
        return (f"GET /case/{name} HTTP/1.1".encode() + line_end + f"Host: {host}".encode()
                + line_end + extra + b"\r\n")
    return build


def _sni_mismatch(host: str, name: str) -> bytes:
    return smuggled(host, name)


E400 = frozenset({400})
CASES = [
    Case("control: a plain GET", _get(b""), frozenset({200})),
    Case("bare LF hides a Content-Length", _hidden_length(b"\n"), E400),
    Case("bare CR hides a Content-Length", _hidden_length(b"\r"), E400),
    Case("NUL and a bare LF hide a Content-Length", _hidden_length(b"\x00\n"), E400),
    Case("bare LF hides Transfer-Encoding", _hidden_chunked(b"\n"), E400),
    Case("bare CR hides Transfer-Encoding", _hidden_chunked(b"\r"), E400),
    Case("two Content-Lengths", _with_fields(b"Content-Length: 0\r\nContent-Length: {n}\r\n"),
         E400),
    Case("Content-Length list", _with_fields(b"Content-Length: {n}, 0\r\n"), E400),
    Case("Transfer-Encoding and Content-Length",
         _with_fields(b"Transfer-Encoding: chunked\r\nContent-Length: {n}\r\n"), E400),
    Case("obs-fold Transfer-Encoding",
         _with_fields(b"Content-Length: {n}\r\nTransfer-Encoding:\r\n chunked\r\n"), E400),
    Case("space before the colon",
         _with_fields(b"Content-Length: {n}\r\nTransfer-Encoding : chunked\r\n"), E400),
    Case("vertical tab in Transfer-Encoding",
         _with_fields(b"Content-Length: {n}\r\nTransfer-Encoding:\x0bchunked\r\n"),
         frozenset({400, 501})),
    Case("Transfer-Encoding xchunked",
         _with_fields(b"Content-Length: {n}\r\nTransfer-Encoding: xchunked\r\n"),
         frozenset({400, 501})),
    Case("control character in a value", _get(b"X-A: a\x01b\r\n"), E400),
    Case("DEL in a value", _get(b"X-A: a\x7fb\r\n"), E400),
    Case("NUL in a value", _get(b"X-A: a\x00b\r\n"), E400),
    Case("bare LF ends the request line", _get(b"", line_end=b"\n"), E400),
    Case("two Host headers", _get(b"Host: other.localhost\r\n"), E400),
    Case("a 90 KB head", _get(b"X-Big: " + b"b" * 90_000 + b"\r\n"), frozenset({431})),
    Case("TLS name of one project, Host of another", _sni_mismatch, frozenset({421}),
         sni_project="decoy"),
]


STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def exchange(port: int, server_name: str, payload: bytes, quiet: float = 1.5,
             limit: float = 5.0) -> tuple[list[int], str]:
    """Send ``payload`` over TLS; return the statuses of every answer and how it ended."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    data = b""
    ended = "closed by the proxy"
    start = time.monotonic()
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=limit)
    except OSError as exc:
        return [], f"cannot connect: {exc}"
    with contextlib.closing(raw):
        try:
            tls = ctx.wrap_socket(raw, server_hostname=server_name)
        except OSError as exc:
            return [], f"TLS refused: {exc}"
        with contextlib.closing(tls):
            try:
                tls.sendall(payload)
            except OSError as exc:
                ended = f"send failed ({type(exc).__name__})"
            tls.settimeout(quiet)
            while time.monotonic() - start < limit:
                try:
                    chunk = tls.recv(65536)
                except TimeoutError:
                    ended = "left open"
                    break
                except OSError as exc:
                    ended = f"reset ({type(exc).__name__})"
                    break
                if not chunk:
                    break
                data += chunk
    return [int(m) for m in STATUS.findall(data)], ended
