"""One client connection of the proxy, as asyncio protocols: read a request, route it, relay
it, repeat.

Heads pass through byte for byte apart from the ``X-Forwarded-*`` headers; bodies are copied
as they arrive, in their own framing (chunked stays chunked, a server-sent event reaches the
browser when the task writes it); the framing scanners in ``http1`` only find where each
message ends. Each client connection keeps its own connection to the backend while
consecutive requests go to the same task. A ``101 Switching Protocols`` turns the pair into a
raw tunnel (WebSockets). Write buffers push back on the other side's reading, so a slow reader
never makes the proxy buffer without bound. When the task cannot be reached the client gets a
page saying why, never a reset.

Callbacks rather than coroutines: a request costs no task, no future and no extra system call
beyond the reads and writes themselves.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from taskmuxd.proxy import pages
from taskmuxd.proxy.http1 import (
    CRLF,
    HEAD_END,
    MAX_HEAD,
    NO_BODY,
    BadMessage,
    BodyScanner,
    Head,
    forwarded_request,
    parse_request,
    parse_response,
    scanner,
)
from taskmuxd.proxy.tlsconn import TlsTransport
from taskmuxd.routes import APEX, CATCH_ALL, Backend, normalize

if TYPE_CHECKING:
    from taskmuxd.proxy.proxyview import ProxyView

log = logging.getLogger("taskmuxd.proxy")

IDLE_TIMEOUT = 120.0  # seconds a client connection may wait for (the rest of) a request head
PIPELINE_LIMIT = 256 * 1024  # bytes read ahead of the request being served before pausing
LINGER = 2.0  # seconds a refused client's remaining bytes are read and dropped before closing
# A byte that can never be part of a request head: a LF without its CR, a CR without its LF
# (looked at only once the next byte is there), a NUL. Seen before the head is complete, it
# is refused at once instead of waiting for a CRLF CRLF that a sloppy client never sends.
_BAD_HEAD_BYTE = re.compile(rb"(?<!\r)\n|\r(?!\n)|\x00")


class Upstream(asyncio.Protocol):
    """The connection to a task's port; it hands everything to its client side."""

    def __init__(self, client: ClientSide, port: int) -> None:
        self.client = client
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.reused = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.client.upstream_data(self, data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client.upstream_lost(self)

    def pause_writing(self) -> None:
        self.client.pause_reading("upstream-full")

    def resume_writing(self) -> None:
        self.client.resume_reading("upstream-full")

    def usable(self, port: int) -> bool:
        return (self.port == port and not self.closed and self.transport is not None
                and not self.transport.is_closing())

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class ClientSide(asyncio.Protocol):
    """The client's (TLS) connection: requests in, responses out.

    ``admitted``: the client address under which the connection counts in the proxy's
    limits (its place is given back when the connection is lost). ``sni_project``: the
    project the TLS server name fell under; a request for another project's host gets 421.
    """

    def __init__(self, proxy: ProxyView, admitted: str | None = None,
                 sni_project: str | None = None) -> None:
        self.proxy = proxy
        self.admitted = admitted
        self.sni_project = sni_project
        self.transport: asyncio.Transport | None = None
        self.client_ip = "unknown"
        self.scanned = 0  # how far self.buf was searched for the end of a head
        self.buf = b""  # request bytes not yet handled
        self.rbuf = b""  # response bytes not yet handled
        self.req: Head | None = None
        self.req_body: BodyScanner | None = None
        self.req_done = True
        self.resp: Head | None = None
        self.resp_body: BodyScanner | None = None
        self.resp_started = False
        self.resp_done = True
        self.up: Upstream | None = None
        self.fwd_head = b""
        self.backend: Backend | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.retried = False
        self.tunnel = False
        self.closing = False
        self.idle_since: float | None = time.monotonic()
        self._paused: set[str] = set()
        self._up_paused = False
        self._advancing = False

    # -- the client's transport -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client_ip = str(peer[0]) if peer else "unknown"
        self.proxy.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.proxy.clients.discard(self)
        if self.admitted is not None:
            self.proxy.limits.release(self.admitted)
            self.admitted = None
        if self.connecting is not None:
            self.connecting.cancel()
        self._drop_upstream()

    def data_received(self, data: bytes) -> None:
        if self.tunnel:
            if self.up is not None:
                self.up.write(data)
            return
        self.buf = self.buf + data if self.buf else data
        self._safely(self._advance)

    def eof_received(self) -> bool:
        if self.tunnel and self.up is not None and self.up.transport is not None \
                and self.up.transport.can_write_eof():
            self.up.transport.write_eof()
        return False

    def pause_writing(self) -> None:  # the client reads slower than the task writes
        self._up_paused = True
        if self.up is not None and self.up.transport is not None:
            self.up.transport.pause_reading()

    def resume_writing(self) -> None:
        self._up_paused = False
        if self.up is not None and self.up.transport is not None:
            self.up.transport.resume_reading()

    def pause_reading(self, reason: str) -> None:
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
        self._paused.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._paused:
            return
        self._paused.discard(reason)
        if not self._paused and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    # -- requests -------------------------------------------------------------------------

    def _safely(self, step: Callable[[], None]) -> None:
        try:
            step()
        except BadMessage as exc:
            self._page(pages.bad_request(exc.status, exc.reason, html_ok=self.html_ok,
                                         close=True), close=True)
        except Exception:
            log.exception("proxy connection from %s failed", self.client_ip)
            self.close()

    def _advance(self) -> None:
        """Handle as much of the buffered request bytes as the connection's state allows."""
        self._advancing = True
        try:
            self._advance_loop()
        finally:
            self._advancing = False

    def _advance_loop(self) -> None:
        while not self.closing:
            if self.req_body is not None:
                if not self.buf or self.up is None:
                    return
                n, done = self.req_body.feed(self.buf)
                if not n and not done:
                    return  # a chunk line not yet whole: wait for the rest of it
                if n == len(self.buf):
                    self.up.write(self.buf)
                    self.buf = b""
                else:
                    self.up.write(self.buf[:n])
                    self.buf = self.buf[n:]
                if done:
                    self.req_body = None
                    self.req_done = True
                continue
            if not (self.req_done and self.resp_done) or self.connecting is not None:
                if len(self.buf) > PIPELINE_LIMIT:
                    self.pause_reading("pipeline")
                return
            if self.buf[:2] == CRLF and self.buf[2:4] != CRLF:
                # RFC 9112 2.2: one empty line before a request is ignored (some clients
                # send one after a body). More than one reads as an empty head: 400.
                self.buf = self.buf[2:]
                continue
            # Search only the bytes not searched yet (a head that trickles in a byte at a
            # time must not cost its length squared).
            start = max(self.scanned - 3, 0)
            end = self.buf.find(HEAD_END, start)
            if end < 0:
                bad = _BAD_HEAD_BYTE.search(self.buf, start)
                self.scanned = len(self.buf)
                if bad is not None and not (bad.start() == len(self.buf) - 1
                                            and self.buf[-1:] == b"\r"):  # (LF may follow)
                    raise BadMessage("a bare CR or LF, or a NUL, in the request head")
                if len(self.buf) > MAX_HEAD:
                    raise BadMessage(f"the request head is larger than {MAX_HEAD // 1024} KiB",
                                     431)
                return
            self.scanned = 0
            head, self.buf = self.buf[:end + 4], self.buf[end + 4:]
            self._request(head)

    def _request(self, data: bytes) -> None:
        req = parse_request(data)
        self.proxy.requests += 1
        self.idle_since = None
        self.req = req
        if req.method == b"CONNECT":
            self._page(pages.bad_request(
                405, "this is a reverse proxy for taskmux tasks, not a forward proxy",
                html_ok=self.html_ok, close=True), close=True)
            return
        if not req.host:
            self._page(pages.bad_request(400, "the request has no Host header",
                                         html_ok=self.html_ok, close=True), close=True)
            return
        routes = self.proxy.routes
        if self.sni_project is not None and routes.project_of(req.host) != self.sni_project:
            # The connection was opened (and its certificate chosen) for another project.
            self._page(pages.bad_request(
                421, f"this connection is for project {self.sni_project}, not for "
                f"{normalize(req.host)}: open a new connection for that name",
                html_ok=self.html_ok, close=True), close=True)
            return
        project, backend = routes.lookup(req.host)
        if backend is not None and backend.ready and backend.port is not None:
            self._forward(req, backend)
            return
        # A page of our own ends the connection when a request body would follow.
        close = req.close or req.framing != NO_BODY
        head_only = req.method == b"HEAD"
        name = normalize(req.host)
        if project is None:
            page = pages.unknown_project(name, routes.project_of(name), routes.projects(),
                                         html_ok=self.html_ok, close=close, head_only=head_only)
        elif backend is None:
            page = pages.unknown_host(name, project, _host_list(self.proxy, project),
                                      html_ok=self.html_ok, close=close, head_only=head_only)
        else:
            page = pages.not_ready(name, backend.project, backend.task, backend.state,
                                   html_ok=self.html_ok, close=close, head_only=head_only)
        self._page(page, close)

    def _forward(self, req: Head, backend: Backend) -> None:
        assert backend.port is not None
        self.req, self.backend = req, backend
        self.req_done = self.resp_done = False
        self.resp_started = self.retried = False
        self.fwd_head = forwarded_request(req, self.client_ip, req.host)
        up = self.up
        if up is not None and up.usable(backend.port):
            up.reused = True
            self._send_head()
            return
        self._drop_upstream()
        self._connect()

    def _connect(self) -> None:
        self.pause_reading("connect")
        self.connecting = asyncio.get_running_loop().create_task(self._connecting())

    async def _connecting(self) -> None:
        backend = self.backend
        assert backend is not None and backend.port is not None
        port = backend.port
        try:
            _, up = await self.proxy.connect_backend(port, lambda: Upstream(self, port))
        except (OSError, TimeoutError) as exc:
            self.connecting = None
            self.resume_reading("connect")
            if not self.closing:
                self._unreachable(exc)
            return
        self.connecting = None
        if self.closing:
            up.close()
            return
        self.up = up
        if self._up_paused and up.transport is not None:
            up.transport.pause_reading()
        self.resume_reading("connect")
        self._send_head()
        self._safely(self._advance)

    def _send_head(self) -> None:
        assert self.up is not None and self.req is not None
        self.rbuf = b""
        self.up.write(self.fwd_head)
        self.req_body = scanner(self.req.framing)
        self.req_done = self.req_body is None

    # -- responses ------------------------------------------------------------------------

    def upstream_data(self, up: Upstream, data: bytes) -> None:
        if up is not self.up:
            return
        if self.tunnel:
            self._write(data)
            return
        if self.resp_done:  # bytes nobody asked for: the task is out of step; drop it
            self._drop_upstream()
            return
        self.rbuf = self.rbuf + data if self.rbuf else data
        try:
            self._relay()
        except BadMessage as exc:
            self._backend_failed(exc.reason)
        except Exception:
            log.exception("relaying a response to %s failed", self.client_ip)
            self.close()

    def _relay(self) -> None:
        out: list[bytes] = []
        complete = False
        assert self.req is not None
        while self.rbuf:
            if self.resp_body is None:
                end = self.rbuf.find(HEAD_END)
                if end < 0:
                    if len(self.rbuf) > MAX_HEAD:
                        raise BadMessage("the task's response head is too large", 502)
                    break
                head, self.rbuf = self.rbuf[:end + 4], self.rbuf[end + 4:]
                resp = parse_response(head, self.req.method)
                self.resp_started = True
                out.append(head)
                if resp.status == 101:
                    out.append(self.rbuf)
                    self.rbuf = b""
                    self._write(b"".join(out))
                    self._start_tunnel()
                    return
                if resp.status < 200:  # 100 Continue and other interim answers
                    continue
                self.resp = resp
                self.resp_body = scanner(resp.framing, strict=False)
                if self.resp_body is None:
                    complete = True
                    break
                continue
            n, done = self.resp_body.feed(self.rbuf)
            if n == len(self.rbuf):
                out.append(self.rbuf)
                self.rbuf = b""
            else:
                out.append(self.rbuf[:n])
                self.rbuf = self.rbuf[n:]
            if done:
                complete = True
                break
        if out:
            self._write(out[0] if len(out) == 1 else b"".join(out))
        if complete:
            self._response_complete()

    def _response_complete(self) -> None:
        req, resp = self.req, self.resp
        assert req is not None and resp is not None
        self.resp_done = True
        self.resp_body = None
        if resp.close or self.rbuf:
            self._drop_upstream()
        if not self.req_done or req.close or resp.close:
            # (an answer before the upload finished leaves no place for the rest of it)
            self.close()
            return
        self._cycle_end()

    def _cycle_end(self) -> None:
        self.req = self.resp = None
        self.req_done = self.resp_done = True
        self.idle_since = time.monotonic()
        self.resume_reading("pipeline")
        if self.buf and not self._advancing:
            self._safely(self._advance)

    def upstream_lost(self, up: Upstream) -> None:
        if up is not self.up:
            return
        self.up = None
        if self.closing:
            return
        if self.tunnel:
            self.close()
            return
        if self.resp_done:
            return  # an idle kept-alive connection closed: fine
        if self.resp_body is not None and self.resp_body.eof():
            self.resp_done = True  # a body that ends with the connection
            self.close()
            return
        if self.resp_started:
            self.close()  # cut short: nothing can repair it
            return
        assert self.req is not None
        if up.reused and not self.retried and self.req.framing == NO_BODY:
            # The backend closed a kept-alive connection just as the request went out (its
            # idle timeout raced us): send it once more on a fresh one.
            self.retried = True
            self._connect()
            return
        self._backend_failed("the task closed the connection without answering")

    def _start_tunnel(self) -> None:
        self.tunnel = True
        self.req_body = None
        for reason in ("pipeline", "connect"):
            self.resume_reading(reason)
        if self.buf and self.up is not None:
            self.up.write(self.buf)
            self.buf = b""

    # -- our own answers ------------------------------------------------------------------

    @property
    def html_ok(self) -> bool:
        """Whether the request being answered prefers HTML (a browser) to plain text."""
        return self.req is not None and _ACCEPTS_HTML.search(self.req.raw) is not None

    def _unreachable(self, exc: BaseException) -> None:
        assert self.req is not None and self.backend is not None
        req, b, port = self.req, self.backend, self.backend.port
        assert port is not None
        self.proxy.unreachable += 1
        close = req.close or req.framing != NO_BODY
        self._page(pages.unreachable(normalize(req.host), b.project, b.task, port,
                                     str(exc) or exc.__class__.__name__, html_ok=self.html_ok,
                                     close=close, head_only=req.method == b"HEAD"), close)

    def _backend_failed(self, reason: str) -> None:
        self.proxy.backend_failures += 1
        self._drop_upstream()
        if self.resp_started or self.req is None:
            self.close()
            return
        self._page(pages.response(
            502, "backend-failed", f"{normalize(self.req.host)}: the task's answer broke",
            f"{reason}; see the task's log.", html_ok=self.html_ok, close=True), close=True)

    def _page(self, page: bytes, close: bool) -> None:
        self._write(page)
        if close:
            self.close(linger=True)
        else:
            self.req_body = None
            self._cycle_end()

    # -- plumbing -------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(data)

    def _drop_upstream(self) -> None:
        if self.up is not None:
            up, self.up = self.up, None
            up.close()

    def close(self, linger: bool = False) -> None:
        """Close after what was written is flushed; ``linger``: the client may still be
        sending (a refused request), so read and drop its bytes a while first."""
        if self.closing:
            return
        self.closing = True
        self._drop_upstream()
        if self.transport is None:
            return
        if linger and isinstance(self.transport, TlsTransport):
            self.transport.close_lingering(LINGER)
        else:
            self.transport.close()


_ACCEPTS_HTML = re.compile(rb"\r\naccept:[^\r\n]*text/html", re.IGNORECASE)


def _host_list(proxy: ProxyView, project: str) -> list[str]:
    hosts = []
    for b in proxy.routes.backends(project):
        if b.host == APEX:
            hosts.append(f"{project}.{proxy.routes.tld} (@)")
        elif b.host == CATCH_ALL:
            hosts.append("* (any other name)")
        else:
            hosts.append(f"{b.host}.{project}.{proxy.routes.tld}")
    return sorted(hosts)
