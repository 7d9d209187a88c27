"""One client connection of the proxy: read a request, route it, relay it, repeat.

Heads pass through byte for byte apart from the ``X-Forwarded-*`` headers; bodies are copied
as they arrive, in their own framing (so chunked stays chunked and a server-sent event reaches
the browser when the task writes it). Each client connection keeps its own connection to the
backend while consecutive requests go to the same task. A ``101 Switching Protocols`` turns
the pair into a raw tunnel (WebSockets). When the task cannot be reached the client gets a
page saying why, never a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from taskmuxd.proxy import pages
from taskmuxd.proxy.http1 import (
    CHUNKED,
    CRLF,
    HEAD_END,
    NO_BODY,
    UNTIL_CLOSE,
    BadMessage,
    Head,
    chunk_size,
    forwarded_request,
    parse_request,
    parse_response,
)
from taskmuxd.routes import APEX, CATCH_ALL, Backend, normalize

if TYPE_CHECKING:
    from taskmuxd.proxy.server import Proxy

log = logging.getLogger("taskmuxd.proxy")

IDLE_TIMEOUT = 120.0  # seconds a kept-alive client connection may sit between requests
CONNECT_TIMEOUT = 5.0
COPY_SIZE = 256 * 1024
SMALL_BODY = 64 * 1024  # bodies up to this size are sent with their head in one write

_CONNECT_ERRORS = (OSError, asyncio.TimeoutError)


class ClientGone(Exception):
    """The client closed its side; nothing more can be sent to it."""


class Upstream:
    __slots__ = ("port", "reader", "reused", "writer")

    def __init__(self, port: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.port = port
        self.reader = reader
        self.writer = writer
        self.reused = False

    def close(self) -> None:
        self.writer.close()


async def copy_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      n: int) -> None:
    while n > 0:
        chunk = await reader.read(min(n, COPY_SIZE))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", n)
        n -= len(chunk)
        writer.write(chunk)
        await writer.drain()


async def copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readuntil(CRLF)
        size = chunk_size(line)
        writer.write(line)
        if size == 0:
            while True:  # trailer fields, then the empty line
                line = await reader.readuntil(CRLF)
                writer.write(line)
                if line == CRLF:
                    break
            await writer.drain()
            return
        await copy_length(reader, writer, size + 2)  # the data and its CRLF


async def copy_until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        chunk = await reader.read(COPY_SIZE)
        if not chunk:
            return
        writer.write(chunk)
        await writer.drain()


async def copy_body(framing: int, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
    if framing >= 0:
        await copy_length(reader, writer, framing)
    elif framing == CHUNKED:
        await copy_chunked(reader, writer)
    elif framing == UNTIL_CLOSE:
        await copy_until_eof(reader, writer)


class ProxyConnection:
    def __init__(self, proxy: Proxy, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.client_ip = str(peer[0]) if peer else "unknown"
        self.upstream: Upstream | None = None
        self.html_ok = False

    # -- the connection's loop ------------------------------------------------------------

    async def serve(self) -> None:
        try:
            while await self._one_request():
                pass
        except (ClientGone, ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except OSError as exc:  # ssl.SSLError and friends: the client's side broke
            log.debug("client connection from %s ended: %s", self.client_ip, exc)
        finally:
            self._drop_upstream()
            self.writer.close()

    async def _one_request(self) -> bool:
        """Serve one request; True when the connection may carry another."""
        try:
            async with asyncio.timeout(IDLE_TIMEOUT):
                data = await self.reader.readuntil(HEAD_END)
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                await self._answer(pages.bad_request(400, "the request ended early",
                                                     html_ok=False, close=True))
            return False
        except asyncio.LimitOverrunError:
            await self._answer(pages.bad_request(431, "the request head is too large",
                                                 html_ok=False, close=True))
            return False
        try:
            req = parse_request(data)
        except BadMessage as exc:
            await self._answer(pages.bad_request(exc.status, exc.reason, html_ok=False,
                                                 close=True))
            return False
        self.proxy.requests += 1
        self.html_ok = _wants_html(req)
        if req.method == b"CONNECT":
            await self._answer(pages.bad_request(
                405, "this is a reverse proxy for taskmux tasks, not a forward proxy",
                html_ok=self.html_ok, close=True))
            return False
        if not req.host:
            await self._answer(pages.bad_request(400, "the request has no Host header",
                                                 html_ok=self.html_ok, close=True))
            return False
        return await self._route(req)

    async def _route(self, req: Head) -> bool:
        name = normalize(req.host)
        project, backend = self.proxy.routes.lookup(name)
        # A page of our own ends the connection when a request body would follow.
        close = req.close or req.framing != NO_BODY
        kw = {"html_ok": self.html_ok, "close": close, "head_only": req.method == b"HEAD"}
        if project is None:
            page = pages.unknown_project(name, self.proxy.routes.project_of(name),
                                         self.proxy.routes.projects(), **kw)
        elif backend is None:
            page = pages.unknown_host(name, project, _host_list(self.proxy, project), **kw)
        elif not backend.ready or backend.port is None:
            page = pages.not_ready(name, backend.project, backend.task, backend.state, **kw)
        else:
            return await self._forward(req, name, backend)
        await self._answer(page)
        return not close

    # -- forwarding -----------------------------------------------------------------------

    async def _forward(self, req: Head, name: str, backend: Backend) -> bool:
        assert backend.port is not None
        head = forwarded_request(req, self.client_ip, req.host)
        for attempt in (1, 2):
            try:
                up = await self._upstream(backend.port)
            except _CONNECT_ERRORS as exc:
                await self._unreachable(req, name, backend, exc)
                return not (req.close or req.framing != NO_BODY)
            pump = await self._send_request(req, head, up)
            try:
                return await self._relay_response(req, up, pump)
            except _StaleUpstream:
                # A kept-alive backend connection closed before answering (the backend's
                # idle timeout raced our request): try once on a fresh one.
                self._drop_upstream()
                if attempt == 2 or req.framing != NO_BODY:
                    await self._unreachable(req, name, backend,
                                            ConnectionError("connection closed"))
                    return False
        return False  # pragma: no cover - the loop always returns

    async def _upstream(self, port: int) -> Upstream:
        up = self.upstream
        if up is not None:
            if up.port == port and not up.reader.at_eof() and not up.writer.is_closing():
                up.reused = True
                return up
            self._drop_upstream()
        reader, writer = await self.proxy.connect_backend(port)
        self.upstream = Upstream(port, reader, writer)
        return self.upstream

    def _drop_upstream(self) -> None:
        if self.upstream is not None:
            self.upstream.close()
            self.upstream = None

    async def _send_request(self, req: Head, head: bytes,
                            up: Upstream) -> asyncio.Task[None] | None:
        framing = req.framing
        if framing == NO_BODY:
            up.writer.write(head)
            return None
        if 0 <= framing <= SMALL_BODY and not req.expect_continue:
            body = await self.reader.readexactly(framing)
            up.writer.write(head + body)
            return None
        up.writer.write(head)
        return asyncio.create_task(self._pump_request_body(req, up))

    async def _pump_request_body(self, req: Head, up: Upstream) -> None:
        try:
            await copy_body(req.framing, self.reader, up.writer)
        except BadMessage:
            up.close()
            raise
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            up.close()  # the backend then ends its answer, and the relay with it
            raise ClientGone() from None

    async def _relay_response(self, req: Head, up: Upstream,
                              pump: asyncio.Task[None] | None) -> bool:
        try:
            keep = await self._relay(req, up, pump)
        finally:
            if pump is not None and not pump.done():
                # The task answered before the upload finished (or the client went away):
                # the rest of the upload has no place to go, so both connections end here.
                await self._cancel(pump)
                self._drop_upstream()
                keep = False
        if pump is not None and (pump.cancelled() or pump.exception() is not None):
            self._drop_upstream()
            return False
        return keep

    async def _relay(self, req: Head, up: Upstream, pump: asyncio.Task[None] | None) -> bool:
        sent = False
        try:
            while True:
                try:
                    data = await up.reader.readuntil(HEAD_END)
                except asyncio.IncompleteReadError as exc:
                    if up.reused and not exc.partial and not sent and pump is None:
                        raise _StaleUpstream() from None
                    raise
                resp = parse_response(data, req.method)
                if resp.status == 101:
                    await self._write(data)
                    await self._tunnel(up)
                    return False
                if resp.status < 200:  # 100 Continue and other interim answers
                    sent = True
                    await self._write(data)
                    continue
                break
            if 0 < resp.framing <= SMALL_BODY:
                data += await up.reader.readexactly(resp.framing)
                sent = True
                await self._write(data)
            else:
                sent = True
                await self._write(data)
                await copy_body(resp.framing, up.reader, self.writer)
                await self.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, BadMessage,
                asyncio.LimitOverrunError) as exc:
            self._drop_upstream()
            if not sent and not self.writer.is_closing():
                self.proxy.backend_failures += 1
                await self._answer(pages.response(
                    502, "backend-failed", f"{normalize(req.host)}: the task's answer broke",
                    "The task closed the connection or sent something that is not HTTP "
                    f"({exc.__class__.__name__}); see its log.",
                    html_ok=self.html_ok, close=True))
            return False
        if resp.close:
            self._drop_upstream()
        return not (req.close or resp.close)

    async def _tunnel(self, up: Upstream) -> None:
        """Relay raw bytes both ways until the backend closes (WebSockets and friends)."""
        async def client_to_backend() -> None:
            with contextlib.suppress(ConnectionError, OSError):
                await copy_until_eof(self.reader, up.writer)
                if up.writer.can_write_eof():
                    up.writer.write_eof()

        upward = asyncio.create_task(client_to_backend())
        try:
            with contextlib.suppress(ConnectionError, OSError):
                await copy_until_eof(up.reader, self.writer)
        finally:
            await self._cancel(upward)
            self._drop_upstream()

    async def _unreachable(self, req: Head, name: str, backend: Backend,
                           exc: BaseException) -> None:
        self.proxy.unreachable += 1
        close = req.close or req.framing != NO_BODY
        reason = str(exc) or exc.__class__.__name__
        assert backend.port is not None
        await self._answer(pages.unreachable(name, backend.project, backend.task, backend.port,
                                             reason, html_ok=self.html_ok, close=close,
                                             head_only=req.method == b"HEAD"))

    # -- writing to the client ------------------------------------------------------------

    async def _write(self, data: bytes) -> None:
        if self.writer.is_closing():
            raise ClientGone()
        self.writer.write(data)
        await self.writer.drain()

    async def _answer(self, page: bytes) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self._write(page)

    @staticmethod
    async def _cancel(task: asyncio.Task[None] | None) -> None:
        if task is None:
            return
        if not task.done():
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # we are being cancelled ourselves, not just the helper
        except (ClientGone, BadMessage, OSError, asyncio.IncompleteReadError):
            pass


class _StaleUpstream(Exception):
    pass


def _wants_html(req: Head) -> bool:
    for line in req.lines:
        if line[:7].lower() == b"accept:":
            return b"text/html" in line
    return False


def _host_list(proxy: Proxy, project: str) -> list[str]:
    hosts = []
    for b in proxy.routes.backends(project):
        if b.host == APEX:
            hosts.append(f"{project}.{proxy.routes.tld} (@)")
        elif b.host == CATCH_ALL:
            hosts.append("* (any other name)")
        else:
            hosts.append(f"{b.host}.{project}.{proxy.routes.tld}")
    return sorted(hosts)
