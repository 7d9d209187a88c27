"""Real HTTP and WebSocket servers standing in for tasks, and an HTTPS client that connects
to the proxy by address while naming the task's host (these names need no DNS)."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import http.server
import json
import socket
import socketserver
import ssl
import threading
from collections.abc import Iterator
from typing import Any

STREAM_CHUNKS = 3
PROTOCOL_PAGE = (b"<!doctype html><html><body><script>document.body.textContent = 'PROTOCOL:' + "
                 b"performance.getEntriesByType('navigation')[0].nextHopProtocol;</script>"
                 b"</body></html>")


class Gate:
    """Lets a test hold a streaming response between two chunks."""

    def __init__(self) -> None:
        self.events = [threading.Event() for _ in range(STREAM_CHUNKS)]


class Backend(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: BackendServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:  # every request the backend took, as it read it
            self.server.seen.append((self.command, self.path,
                                     self.headers.get_all("X-Forwarded-For") or []))
        return ok

    def _send(self, status: int, body: bytes, headers: list[tuple[str, str]] = ()) -> None:  # type: ignore[assignment]
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("X-Backend", self.server.name)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/cookies":
            self._send(200, b"cookies", [("Set-Cookie", "a=1; Path=/"),
                                         ("Set-Cookie", "b=2; HttpOnly"),
                                         ("x-MiXeD-case", "Kept  As Is")])
        elif path in ("/stream", "/sse"):
            self._stream(sse=path == "/sse")
        elif path == "/proto":  # a page that shows the protocol the browser used
            self._send(200, PROTOCOL_PAGE, [("Content-Type", "text/html; charset=utf-8")])
        elif path == "/big":
            self._big(int(self.path.split("=")[1]))
        else:
            self._echo(b"")

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.send_header("X-Backend", self.server.name)
        self.end_headers()

    def do_POST(self) -> None:
        if self.path == "/early":  # answer without reading the upload
            self.close_connection = True
            self._send(413, b"too big", [("Connection", "close")])
            return
        self._echo(self._read_body())

    do_PUT = do_POST

    def _echo(self, body: bytes) -> None:
        info = {"backend": self.server.name, "method": self.command, "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_size": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
                "client": self.client_address[0], "client_port": self.client_address[1]}
        self._send(200, json.dumps(info).encode(), [("Content-Type", "application/json")])

    def _big(self, size: int) -> None:
        """``size`` bytes of a repeatable pattern, written in pieces."""
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        piece = bytes(range(256)) * 256
        sent = 0
        while sent < size:
            chunk = piece[:size - sent]
            self.wfile.write(chunk)
            sent += len(chunk)

    def _stream(self, sse: bool) -> None:
        gate = self.server.gate
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if sse else "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        for i in range(STREAM_CHUNKS):
            data = (f"data: event {i}\n\n" if sse else f"chunk {i}\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
            # Wait until the client has seen this chunk: a proxy that buffered would hang.
            if not gate.events[i].wait(20):
                return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class BackendServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: str, name: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self.name = name
        self.gate = Gate()
        self.seen: list[tuple[str, str, list[str]]] = []
        super().__init__((address, 0), Backend)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@contextlib.contextmanager
def backend(name: str, address: str = "127.0.0.1") -> Iterator[BackendServer]:
    server = BackendServer(address, name)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def ca_context(ca_path: str) -> ssl.SSLContext:
    """A client context that trusts the taskmux CA and nothing else."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca_path)
    return ctx


def wss_echo(host: str, port: int, ctx: ssl.SSLContext, messages: list[str | bytes],
             subprotocols: list[str] | None = None,
             timeout: float = 10.0) -> tuple[str | None, list[str | bytes]]:
    """Open ``wss://host/socket`` through the proxy at 127.0.0.1:``port``, send each message
    and read one reply to each; returns the agreed subprotocol and the replies.

    The asyncio client, on one thread: the sync client reads on a thread of its own while the
    caller writes, and one OpenSSL connection must not be used by two threads at once (under
    load that race ended a test with "[SSL] internal error")."""
    import asyncio

    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    async def exchange() -> tuple[str | None, list[str | bytes]]:
        offered = [Subprotocol(p) for p in subprotocols] if subprotocols else None
        async with connect(f"wss://{host}/socket", host="127.0.0.1", port=port, ssl=ctx,
                           server_hostname=host, subprotocols=offered,
                           open_timeout=timeout) as ws:
            replies: list[str | bytes] = []
            for message in messages:
                await ws.send(message)
                replies.append(await asyncio.wait_for(ws.recv(), timeout))
            return ws.subprotocol, replies

    return asyncio.run(exchange())


class ProxyConnection(http.client.HTTPSConnection):
    """HTTPS to ``host`` through the proxy at 127.0.0.1:``port``: SNI and Host say ``host``."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext,
                 timeout: float = 20.0) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._tls = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self._tls.wrap_socket(raw, server_hostname=self.host)


def get(host: str, port: int, ctx: ssl.SSLContext, path: str = "/",
        headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPResponse, bytes]:
    conn = ProxyConnection(host, port, ctx)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, resp, body
    finally:
        conn.close()


def h2_client(ca_path: str, http1: bool = False, timeout: float = 30.0) -> Any:
    """An httpx client speaking HTTP/2 to the proxy: it trusts only the taskmux CA, and
    reaches every ``*.localhost`` name at 127.0.0.1 (with SNI and :authority as named)."""
    import httpcore
    import httpx

    class Loopback(httpcore.SyncBackend):
        def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                        local_address: str | None = None,
                        socket_options: Any = None) -> httpcore.NetworkStream:
            return super().connect_tcp("127.0.0.1", port, timeout, local_address,
                                       socket_options)

    transport = httpx.HTTPTransport(http1=http1, http2=True)
    transport._pool = httpcore.ConnectionPool(ssl_context=ca_context(ca_path), http1=http1,
                                              http2=True, network_backend=Loopback(),
                                              max_connections=10)
    return httpx.Client(transport=transport, timeout=timeout)
