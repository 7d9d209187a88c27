"""The dashboard's HTTP/1.1 side: one ``SiteSide`` per TLS connection the proxy hands over
(its own certificate and ALPN ``http/1.1`` only), parsed by h11, answered by ``Dashboard``.

Bounded like the proxy: a request head of at most ``MAX_HEAD`` bytes, a body of at most
``MAX_BODY``, one request at a time per connection (reading pauses while one is answered),
and a live stream (server-sent events) per connection at most, ``MAX_STREAMS`` in all, each
with a bounded queue (a reader that falls behind is cut off; its browser reconnects).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Protocol

import h11

from taskmuxd.dashboard import security
from taskmuxd.dashboard.exchange import Request, Response

if TYPE_CHECKING:
    from taskmuxd.proxy.frontend import Proxy

log = logging.getLogger("taskmuxd.dashboard")

MAX_HEAD = 16 * 1024
MAX_BODY = 16 * 1024


class Site(Protocol):
    """What answers the requests of a ``SiteSide`` (``taskmuxd.dashboard.app.Dashboard``)."""

    async def respond(self, req: Request) -> Response: ...


class SiteSide(asyncio.Protocol):
    def __init__(self, site: Site, proxy: Proxy, client: str) -> None:
        self.site = site
        self.proxy = proxy
        self.client = client
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.transport: asyncio.Transport | None = None
        self.idle_since: float | None = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self._req: h11.Request | None = None
        self._body = bytearray()
        self._head_bytes = 0  # received since the last request ended
        self._drained = asyncio.Event()
        self._drained.set()
        self._streaming = False

    # -- the transport --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.proxy.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.proxy.clients.discard(self)
        self.proxy.limits.release(self.client)
        if self.task is not None:
            self.task.cancel()
        self._drained.set()

    def pause_writing(self) -> None:
        self._drained.clear()

    def resume_writing(self) -> None:
        self._drained.set()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def eof_received(self) -> bool | None:
        with contextlib.suppress(h11.RemoteProtocolError):
            self.conn.receive_data(b"")
        if self._streaming:  # the reader of a live stream is gone: close, which ends it
            return False
        return self.task is not None

    def data_received(self, data: bytes) -> None:
        if self._req is None:  # bytes of a head (h11 checks its bound only between reads)
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD + MAX_BODY:
                self._fail(431, f"a request head may be at most {MAX_HEAD} bytes")
                return
        try:
            self.conn.receive_data(data)
            self._events()
        except h11.RemoteProtocolError as exc:
            self._fail(exc.error_status_hint, str(exc))

    def _events(self) -> None:
        while self.task is None and not self.closed:
            event = self.conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.idle_since = None
                self._req, self._body = event, bytearray()
                size = sum(len(k) + len(v) + 4 for k, v in event.headers) + len(event.target)
                if size > MAX_HEAD:
                    self._fail(431, f"a request head may be at most {MAX_HEAD} bytes")
                    return
            elif isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) > MAX_BODY:
                    self._fail(413, f"a request body may be at most {MAX_BODY} bytes")
                    return
            elif isinstance(event, h11.EndOfMessage) and self._req is not None:
                req = self._request(self._req, bytes(self._body))
                self._req = None
                self._head_bytes = 0
                assert self.transport is not None
                self.transport.pause_reading()
                self.task = asyncio.create_task(self._answer(req))
            elif isinstance(event, h11.ConnectionClosed):
                self.close()
                return

    def _request(self, head: h11.Request, body: bytes) -> Request:
        headers: dict[str, str] = {}
        for name, value in head.headers:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return Request(head.method.decode("ascii", "replace"),
                       head.target.decode("latin-1"), headers, body, self.client)

    def _fail(self, status: int, reason: str) -> None:
        """A request that cannot be parsed: say so and close."""
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with contextlib.suppress(h11.LocalProtocolError):
                self._write(Response(status, reason.encode(), "text/plain; charset=utf-8"),
                            close=True)
        self.close()

    # -- answering ------------------------------------------------------------------------

    async def _answer(self, req: Request) -> None:
        try:
            try:
                resp = await self.site.respond(req)
            except Exception:
                log.exception("the dashboard failed to answer %s %s", req.method, req.target)
                resp = Response(500, b'{"error": "internal error"}')
            close = self.conn.their_state != h11.DONE or req.header("connection") == "close"
            if resp.stream is not None:
                await self._stream(resp)
                return
            self._write(resp, close)
            if close or self.conn.our_state is h11.MUST_CLOSE:
                self.close()
                return
            self.conn.start_next_cycle()
            self.idle_since = time.monotonic()
        except (h11.LocalProtocolError, ConnectionError):
            self.close()
        finally:
            self.task = None
        if not self.closed and self.transport is not None:
            self.transport.resume_reading()
            self._events()

    def _head(self, resp: Response, extra: list[tuple[str, str]]) -> h11.Response:
        headers = [("content-type", resp.content_type), ("cache-control", "no-store"),
                   *security.SECURITY_HEADERS, *resp.headers, *extra]
        return h11.Response(status_code=resp.status, headers=headers)

    def _write(self, resp: Response, close: bool) -> None:
        assert self.transport is not None
        extra = [("content-length", str(len(resp.body)))]
        if close:
            extra.append(("connection", "close"))
        out = self.conn.send(self._head(resp, extra)) or b""
        out += self.conn.send(h11.Data(data=resp.body)) or b"" if resp.body else b""
        out += self.conn.send(h11.EndOfMessage()) or b""
        self.transport.write(out)

    async def _stream(self, resp: Response) -> None:
        assert self.transport is not None and resp.stream is not None
        self.transport.write(self.conn.send(self._head(resp, [])) or b"")
        # Read while the stream runs, so that the client's going away ends it at once
        # (``eof_received``) rather than at the next write that fails, a keep-alive or two
        # later. What the client sends meanwhile is bounded as any request head is.
        self._streaming = True
        self.transport.resume_reading()
        chunks = resp.stream()
        try:
            async for chunk in chunks:
                if self.closed:
                    return
                self.transport.write(self.conn.send(h11.Data(data=chunk)) or b"")
                await self._drained.wait()
        finally:
            await chunks.aclose()  # its cleanup now, also when the connection is gone
        self.transport.write(self.conn.send(h11.EndOfMessage()) or b"")
        self.close()
