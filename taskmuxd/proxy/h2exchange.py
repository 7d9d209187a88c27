"""One HTTP/2 request stream and its HTTP/1.1 exchange with the task.

The request is checked (``h2headers``) and routed as on HTTP/1.1: a page of the proxy's own
for an unknown name or a task that is not up, 421 for a name outside the connection's
project, else the request goes to the task on a pooled connection, its body passed on as it
arrives (chunked when the client gave no length), and the answer comes back as HEADERS and
DATA frames as the task writes it (a server-sent event reaches the browser at once).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

import h2.exceptions
from h2.errors import ErrorCodes

from taskmuxd.proxy import h2headers, pages
from taskmuxd.proxy.h1client import ENDED, HEAD, INFO, SWITCHED, Event
from taskmuxd.proxy.http1 import BadMessage
from taskmuxd.routes import normalize

if TYPE_CHECKING:
    from taskmuxd.proxy.h2view import StreamSide
    from taskmuxd.proxy.pool import BackendConn

log = logging.getLogger("taskmuxd.proxy")

# Fields of the task's 101 that mean something only to its HTTP/1.1 handshake.
_UPGRADE_ONLY = frozenset({b"sec-websocket-accept"})


class Exchange:
    __slots__ = ("ended", "from_client_done", "gone", "headers_sent", "out", "out_end",
                 "pending", "req", "request_sent", "retried", "side", "slot", "stream_id",
                 "tunnel", "unacked", "up", "up_full", "waiting_on")

    def __init__(self, side: StreamSide[Exchange], stream_id: int) -> None:
        self.side = side
        self.stream_id = stream_id
        self.req: h2headers.Request | None = None
        self.up: BackendConn | None = None
        self.waiting_on: int | None = None  # the port whose pool queue holds this stream
        self.pending: list[tuple[bytes, int]] = []  # request data until the task is reached
        self.from_client_done = False
        self.request_sent = False  # the whole request went to the task
        self.up_full = False  # the task's connection pushes back
        self.unacked = 0  # flow-controlled bytes passed on while it pushed back
        self.out: deque[bytes] = deque()  # response data waiting for the client's window
        self.out_end = False  # end the stream once ``out`` is sent
        self.headers_sent = False
        self.ended = False  # our side of the stream is closed (or reset)
        self.retried = False
        self.gone = False
        self.tunnel = False  # a WebSocket: raw bytes both ways after the task's 101
        self.slot = False  # holds a place in the client's connection count (``take_slot``)

    # -- the request ----------------------------------------------------------------------

    def start(self, fields: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        self.from_client_done = end_stream
        try:
            req = h2headers.request(fields, end_stream, self.side.client_ip)
            if req.websocket and end_stream:
                raise BadMessage("a WebSocket CONNECT that ends its stream at once")
        except h2headers.Malformed:
            raise  # (the connection ends)
        except BadMessage as exc:
            self._page(pages.bad_request(exc.status, exc.reason, html_ok=False, close=False))
            return
        self.req = req
        if req.method == b"CONNECT":
            self._page(pages.bad_request(
                405, "this is a reverse proxy for taskmux tasks, not a forward proxy: over "
                "HTTP/2 it takes CONNECT only for WebSockets (:protocol websocket)",
                html_ok=False, close=False))
            return
        side, routes = self.side, self.side.proxy.routes
        host = req.authority
        if side.sni_project is not None and host != side.sni_host:
            if routes.project_of(host) != side.sni_project:
                self._page(pages.bad_request(
                    421, f"this connection is for project {side.sni_project}, not for "
                    f"{normalize(host)}: open a new connection for that name",
                    html_ok=req.accept_html, close=False))
                return
            side.sni_host = host  # (the next request for it needs no second look)
        project, backend = routes.lookup(host)
        if backend is not None and backend.ready and backend.port is not None:
            port = backend.port
            if side.take_slot():
                self.slot = True
                self._connect(port)
                return
            name, head_only, html_ok = normalize(host), req.method == b"HEAD", req.accept_html
            self._page(pages.response(
                503, "too-many-connections", f"{name}: too many connections",
                f"This client already holds {side.proxy.limits.per_client} connections "
                "to tasks (proxy_max_connections_per_client); retry when some finish.",
                html_ok=html_ok, close=False, head_only=head_only))
            return
        name, head_only, html_ok = normalize(host), req.method == b"HEAD", req.accept_html
        if project is None:
            page = pages.unknown_project(name, routes.project_of(name), routes.projects(),
                                         html_ok=html_ok, close=False, head_only=head_only)
        elif backend is None:
            from taskmuxd.proxy.forward import _host_list

            page = pages.unknown_host(name, project, _host_list(side.proxy, project),
                                      html_ok=html_ok, close=False, head_only=head_only)
        else:
            page = pages.not_ready(name, backend.project, backend.task, backend.state,
                                   html_ok=html_ok, close=False, head_only=head_only)
        self._page(page)

    def _connect(self, port: int) -> None:
        """Send the request on a kept-alive connection at once, else wait in the pool's
        queue for the next one free (``take``)."""
        up = self.side.pool.take_idle(port, self)
        if up is not None:
            self.up = up
            self._sent_or_reset(port)
            return
        self.waiting_on = port
        self.side.pool.wait(port, self)

    def take(self, conn: BackendConn) -> bool:
        """The pool hands this waiting stream a connection (see ``pool.Waiter``)."""
        if self.gone or self.waiting_on is None:
            return False
        self.waiting_on = None
        conn.owner = self
        conn.reading(True)
        self.up = conn
        self._sent_or_reset(conn.port)
        self.side.flush()
        return True

    def fail(self, exc: BaseException) -> None:
        """No connection to the task could be had."""
        port, self.waiting_on = self.waiting_on, None
        if not self.gone and port is not None:
            self._unreachable(port, exc)

    def _sent_or_reset(self, port: int) -> None:
        try:
            self._send_request()
        except Exception:
            log.exception("sending a request to the task on port %d failed", port)
            self._reset(ErrorCodes.INTERNAL_ERROR)

    def _send_request(self) -> None:
        up, req = self.up, self.req
        assert up is not None and req is not None
        # (``h2headers.request`` checked the method, target and every field.)
        up.send_prepared(req.method, req.path, req.wire, req.remaining, req.chunked,
                         req.websocket)
        if req.websocket:  # the upgrade request has no body; the client's data waits
            self._request_end()
            self.update_reading()
            return
        pending, self.pending = self.pending, []
        for data, size in pending:
            self._pass_on(data, size)
        if self.from_client_done:
            self._request_end()
        self.update_reading()

    def from_client(self, data: bytes, size: int) -> None:
        if self.req is not None and self.req.websocket and not self.tunnel:
            if self.up is not None or self.waiting_on is not None:
                self.pending.append((data, size))  # (until the task switched)
            else:
                self.side.acknowledge(self.stream_id, size)
            return
        if self.up is not None:
            self._pass_on(data, size)
        elif self.waiting_on is not None:
            self.pending.append((data, size))
        else:  # answered already: drop it, but give the window back
            self.side.acknowledge(self.stream_id, size)

    def _pass_on(self, data: bytes, size: int) -> None:
        assert self.up is not None
        if self.tunnel:
            if data and self.up.transport is not None:
                self.up.transport.write(data)
        elif data:
            try:
                self.up.send_data(data)
            except BadMessage:  # more than its Content-Length (h2 checks too)
                self._reset(ErrorCodes.PROTOCOL_ERROR)
                return
        if self.up_full:
            self.unacked += size
        else:
            self.side.acknowledge(self.stream_id, size)

    def client_done(self) -> None:
        self.from_client_done = True
        if self.tunnel:  # the client closed its side of the WebSocket's stream
            if self.up is not None and self.up.transport is not None \
                    and self.up.transport.can_write_eof():
                self.up.transport.write_eof()
            return
        if self.up is not None:
            self._request_end()

    def _request_end(self) -> None:
        assert self.up is not None
        if self.request_sent:
            return
        self.request_sent = True
        try:
            self.up.send_end()
        except BadMessage:  # fewer bytes than its Content-Length
            self._reset(ErrorCodes.PROTOCOL_ERROR)

    def backend_full(self, full: bool) -> None:
        self.up_full = full
        if not full and self.unacked:
            size, self.unacked = self.unacked, 0
            self.side.acknowledge(self.stream_id, size)

    # -- the response ---------------------------------------------------------------------

    def backend_data(self, data: bytes) -> None:
        up = self.up
        assert up is not None
        if self.tunnel:
            self.out.append(data)
            self.flush()
            return
        try:
            self._parts(up.reader.feed(data))
        except BadMessage as exc:
            self._backend_failed(f"the task's answer is not valid HTTP/1.1 ({exc.reason})")
        except Exception:
            log.exception("relaying a response to %s failed", self.side.client_ip)
            self._reset(ErrorCodes.INTERNAL_ERROR)
        self.side.flush()

    def _parts(self, events: list[Event]) -> None:
        for event in events:
            if self.up is None:  # (the stream was reset meanwhile)
                return
            if isinstance(event, bytes):
                self.out.append(event)
                continue
            kind = event.kind
            if kind == HEAD:  # (``named`` is of the last head read: this one)
                self._send_headers(h2headers.from_task(event.status, event.fields,
                                                       self.up.reader.named), end=False)
            elif kind == ENDED:
                self.out_end = True
                self._release()
            elif kind == INFO:
                if event.status in (100, 103):  # Continue, Early Hints: passed on
                    self._send_headers(h2headers.response(event.status, event.fields),
                                       end=False, final=False)
            elif kind == SWITCHED:
                self._switched(event.fields)
                return
        self.flush()  # (after the whole read: its last DATA can end the stream)

    def _switched(self, fields: list[tuple[bytes, bytes]]) -> None:
        """The task took the WebSocket: 200 to the client, then raw bytes both ways."""
        up = self.up
        assert up is not None
        fields = [(n, v) for n, v in h2headers.from_task(200, fields, up.reader.named)
                  if n not in _UPGRADE_ONLY]  # (the 101 is the last head read)
        self._send_headers(fields, end=False)
        self.tunnel = True
        self.side.pool.uncount(up)  # (held as long as the WebSocket lasts: off the cap)
        rest = up.reader.rest
        if rest:
            self.out.append(rest)
        pending, self.pending = self.pending, []
        for data, size in pending:
            self._pass_on(data, size)
        if self.from_client_done:
            self.client_done()
        self.flush()

    def backend_lost(self) -> None:
        up, self.up = self.up, None
        if self.gone or up is None:
            return
        if self.tunnel:  # the task closed the WebSocket's connection: end the stream
            self.out_end = True
            self.flush()
            self.side.flush()
            return
        try:  # a body that ends with the connection ends here
            self.up = up
            self._parts(up.reader.eof())
        except BadMessage:
            pass
        self.up = None
        if self.out_end:
            self.side.flush()
            return
        if self.headers_sent:
            self._reset(ErrorCodes.INTERNAL_ERROR)  # cut short: nothing can repair it
        elif up.reused and not self.retried and self.req is not None \
                and not self.req.has_body:
            # The task closed a kept-alive connection just as the request went out (its
            # idle timeout raced us): send it once more on a fresh one.
            self.retried = True
            port = up.port
            self.request_sent = False
            self._connect(port)
            return
        else:
            self._backend_failed("the task closed the connection without answering")
        self.side.flush()

    def _release(self) -> None:
        """The task's answer is complete: its connection goes back to the pool when the
        request was complete too, else it closes (and the client may stop sending)."""
        up, self.up = self.up, None
        assert up is not None
        if self.request_sent:
            self.side.pool.put(up)
            return
        up.close()

    def flush(self) -> None:
        """Send queued response data as far as the client's windows allow."""
        if self.ended or self.gone:
            return
        conn = self.side.conn
        try:
            while self.out:
                window = min(conn.local_flow_control_window(self.stream_id),
                             conn.max_outbound_frame_size)
                if window <= 0:
                    break
                chunk = self.out[0]
                if len(chunk) <= window:
                    self.out.popleft()
                    last = self.out_end and not self.out
                    conn.send_data(self.stream_id, chunk, end_stream=last)
                    if last:
                        self.ended = True
                        self._finish()
                        break
                else:
                    self.out[0] = chunk[window:]
                    conn.send_data(self.stream_id, chunk[:window])
            if not self.out and self.out_end and not self.ended:
                self.ended = True
                conn.end_stream(self.stream_id)
                self._finish()
        except h2.exceptions.StreamClosedError:
            self.abandon()
            return
        self.update_reading()
        self.side.flush()

    def update_reading(self) -> None:
        if self.up is not None:
            self.up.reading(not self.out and not self.side.out_paused)

    # -- our own answers ------------------------------------------------------------------

    def _send_headers(self, fields: list[tuple[bytes, bytes]], end: bool,
                      final: bool = True) -> None:
        if self.ended or self.gone:
            return
        try:
            self.side.conn.send_headers(self.stream_id, fields, end_stream=end)
        except h2.exceptions.StreamClosedError:
            self.abandon()
            return
        except h2.exceptions.ProtocolError as exc:  # a header h2 will not send
            log.debug("response refused by h2: %s", exc)
            self._reset(ErrorCodes.INTERNAL_ERROR)
            return
        self.headers_sent = final
        if end:
            self.ended = True
            self._finish()

    def _page(self, raw: bytes) -> None:
        fields, body = h2headers.page(raw)
        self._send_headers(fields, end=not body)
        if body and not self.ended:
            self.out.append(body)
            self.out_end = True
            self.flush()
        self.side.flush()

    def _unreachable(self, port: int, exc: BaseException) -> None:
        req = self.req
        assert req is not None
        backend = self.side.proxy.routes.lookup(req.authority)[1]
        self.side.proxy.unreachable += 1
        task = backend.task if backend is not None else "?"
        project = backend.project if backend is not None else "?"
        self._page(pages.unreachable(normalize(req.authority), project, task, port,
                                     str(exc) or exc.__class__.__name__,
                                     html_ok=req.accept_html, close=False,
                                     head_only=req.method == b"HEAD"))

    def _backend_failed(self, reason: str) -> None:
        self.side.proxy.backend_failures += 1
        up, self.up = self.up, None
        if up is not None:
            up.close()
        if self.headers_sent or self.req is None:
            self._reset(ErrorCodes.INTERNAL_ERROR)
            return
        self._page(pages.response(
            502, "backend-failed", f"{normalize(self.req.authority)}: the task's answer broke",
            f"{reason}; see the task's log.", html_ok=self.req.accept_html, close=False))

    # -- ending ---------------------------------------------------------------------------

    def _reset(self, code: int) -> None:
        if not self.side.closing:
            try:
                self.side.conn.reset_stream(self.stream_id, code)
            except h2.exceptions.ProtocolError:
                pass
        self.ended = True
        self.abandon()
        self.side.flush()

    def _finish(self) -> None:
        """Our side of the stream is complete."""
        if not self.from_client_done and not self.side.closing:
            # The answer is out before the request ended: ask the client to stop sending
            # (RST_STREAM NO_ERROR, RFC 9113 8.1); what it sent meanwhile is dropped.
            try:
                self.side.conn.reset_stream(self.stream_id, ErrorCodes.NO_ERROR)
            except h2.exceptions.ProtocolError:
                pass
        if self.unacked:
            size, self.unacked = self.unacked, 0
            self.side.acknowledge(self.stream_id, size)
        self.side.finished(self)

    def abandon(self) -> None:
        """The stream is over (reset by either side, or the connection ended): drop the
        task's connection unless it already went back to the pool."""
        if self.gone:
            return
        self.gone = True
        self.out.clear()
        if self.waiting_on is not None:
            port, self.waiting_on = self.waiting_on, None
            self.side.pool.withdraw(port, self)
        up, self.up = self.up, None
        if up is not None:
            up.close()
        if self.unacked:
            size, self.unacked = self.unacked, 0
            self.side.acknowledge(self.stream_id, size)
        self.side.finished(self)
