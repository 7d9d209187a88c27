"""Kept-alive HTTP/1.1 connections to tasks, shared by the proxy's HTTP/2 streams.

An HTTP/2 connection carries many requests at once, and each needs its own HTTP/1.1
connection to the task while it is under way. When an exchange ends cleanly (both messages
complete, neither side asked to close), its connection goes back here and the next stream
for that port takes it instead of opening a new one. A stream that finds none idle starts a
connection and waits for whichever comes first: that connection, or one another stream hands
back meanwhile (a page of hundreds of modules then needs far fewer connections than streams;
a connection that arrives when nobody waits any more is kept idle). Up to ``MAX_IDLE_PER_PORT``
idle connections per port, as many as one client can have streams, so that a reload finds a
whole page's worth kept alive; they close after a while or as soon as the task closes them.

``h1client`` writes the requests and reads the answers (it decodes chunked bodies, which
HTTP/2 does not carry, and knows when a connection can be reused).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import TYPE_CHECKING, Protocol

from taskmuxd.proxy.h1client import RequestWriter, ResponseReader

if TYPE_CHECKING:
    from taskmuxd.proxy.frontend import Proxy

MAX_IDLE_PER_PORT = 128  # (at least h2side.MAX_STREAMS)
# Idle connections count in the proxy's connection limits under this name, so that the pool
# stays inside the descriptor budget too.
POOL_CLIENT = "(idle task connections)"
IDLE_SECONDS = 30.0


class Owner(Protocol):
    """What a connection reports to the exchange using it."""

    def backend_data(self, data: bytes) -> None: ...
    def backend_lost(self) -> None: ...
    def backend_full(self, full: bool) -> None: ...


class BackendConn(asyncio.Protocol):
    def __init__(self, pool: BackendPool, port: int) -> None:
        self.pool = pool
        self.port = port
        self.reader = ResponseReader()
        self.writer = RequestWriter()
        self.transport: asyncio.Transport | None = None
        self.owner: Owner | None = None
        self.reused = False
        self.closed = False
        self.pooled = False  # idle in the pool, counted in the proxy's limits
        self.idle_since = 0.0  # (loop time) when it went idle in the pool

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.owner is not None:
            self.owner.backend_data(data)
        else:  # bytes nobody asked for: the task is out of step
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        owner, self.owner = self.owner, None
        if owner is not None:
            owner.backend_lost()

    def pause_writing(self) -> None:
        if self.owner is not None:
            self.owner.backend_full(True)

    def resume_writing(self) -> None:
        if self.owner is not None:
            self.owner.backend_full(False)

    def send_head(self, method: bytes, target: bytes, fields: list[tuple[bytes, bytes]],
                  upgrade: bool = False) -> None:
        """Send a request's head (its fields checked already); its answer is read next."""
        self.reader.expect(method, upgrade)
        self._write(self.writer.head(method, target, fields))

    def send_data(self, data: bytes) -> None:
        """Send request body bytes; raises BadMessage beyond its Content-Length."""
        self._write(self.writer.data(data))

    def send_end(self) -> None:
        """End the request body; raises BadMessage short of its Content-Length."""
        self._write(self.writer.end())

    def _write(self, data: bytes) -> None:
        if data and self.transport is not None:
            self.transport.write(data)

    def reading(self, on: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if on:
            self.transport.resume_reading()
        else:
            self.transport.pause_reading()

    def usable(self) -> bool:
        return not self.closed and self.transport is not None \
            and not self.transport.is_closing() and not self.writer.sending \
            and self.reader.done and not self.reader.rest

    def reusable(self) -> bool:
        """Whether the exchange that just ended leaves the connection fit for another."""
        return self.usable() and not self.reader.close

    def close(self) -> None:
        self.closed = True
        self.owner = None
        if self.transport is not None:
            self.transport.close()


class BackendPool:
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.idle: dict[int, list[BackendConn]] = {}
        # Streams waiting for a connection to a port, first come first served.
        self.waiting: dict[int, deque[asyncio.Future[BackendConn]]] = {}
        self.opening: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def get(self, port: int, owner: Owner) -> BackendConn:
        """A connection to the task on ``port`` for ``owner``: an idle one, else the first of
        a new one and one handed back by another exchange. Raises OSError or TimeoutError
        when the new one cannot be opened and none was handed back meanwhile."""
        while True:
            conn = self.take_idle(port, owner)
            if conn is not None:
                return conn
            loop = asyncio.get_running_loop()
            handed: asyncio.Future[BackendConn] = loop.create_future()
            self.waiting.setdefault(port, deque()).append(handed)
            task = loop.create_task(self._open(port, handed))
            self.opening.add(task)
            task.add_done_callback(self.opening.discard)
            try:
                conn = await handed
            except asyncio.CancelledError:  # (the stream ended; one may have come just now)
                if handed.done() and not handed.cancelled() and handed.exception() is None:
                    spare = handed.result()
                    if not self._hand_over(spare):
                        self._keep_idle(spare)
                raise
            finally:
                self._withdraw(port, handed)
            if conn.usable():  # (a handed-back one may have closed before this ran)
                conn.owner = owner
                conn.reading(True)
                return conn
            conn.close()

    async def _open(self, port: int, handed: asyncio.Future[BackendConn]) -> None:
        try:
            _, conn = await self.proxy.connect_backend(port, lambda: BackendConn(self, port))
        except (OSError, TimeoutError) as exc:
            if not handed.done():
                handed.set_exception(exc)
            return
        assert isinstance(conn, BackendConn)
        if not handed.done():
            handed.set_result(conn)
        elif not self._hand_over(conn):  # the stream got one meanwhile (or is gone)
            self._keep_idle(conn)

    def _withdraw(self, port: int, handed: asyncio.Future[BackendConn]) -> None:
        queue = self.waiting.get(port)
        if queue is not None:
            if handed in queue:
                queue.remove(handed)
            if not queue:
                del self.waiting[port]

    def _hand_over(self, conn: BackendConn) -> bool:
        """Give ``conn`` to the first stream waiting for its port, if any."""
        queue = self.waiting.get(conn.port)
        while queue:
            handed = queue.popleft()
            if not handed.done():
                handed.set_result(conn)
                return True
        return False

    def take_idle(self, port: int, owner: Owner) -> BackendConn | None:
        """A kept-alive connection to ``port`` for ``owner``, if one is idle."""
        idle = self.idle.get(port)
        while idle:
            conn = idle.pop()
            self._unpool(conn)
            if conn.usable():
                conn.reused = True
                conn.owner = owner
                conn.reading(True)
                return conn
            conn.close()
        return None

    def put(self, conn: BackendConn) -> None:
        """Take back ``conn`` after an exchange; keep it if it can carry another."""
        conn.owner = None
        if not conn.reusable():
            conn.close()
            return
        conn.reused = True
        if self._hand_over(conn):
            return
        self._keep_idle(conn)

    def _keep_idle(self, conn: BackendConn) -> None:
        if not conn.usable():
            conn.close()
            return
        idle = self.idle.setdefault(conn.port, [])
        if len(idle) >= MAX_IDLE_PER_PORT or not self.proxy.limits.admit(POOL_CLIENT):
            conn.close()
            return
        conn.pooled = True
        conn.reading(True)  # so that a close by the task is seen at once
        idle.append(conn)
        loop = asyncio.get_running_loop()
        conn.idle_since = loop.time()
        if self._sweeper is None:
            self._sweeper = loop.call_later(IDLE_SECONDS / 2, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for more than ``IDLE_SECONDS`` (one timer for the pool, not
        one for each connection put back)."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        before = loop.time() - IDLE_SECONDS
        for idle in list(self.idle.values()):
            for conn in [c for c in idle if c.idle_since <= before]:
                conn.close()
                self.forget(conn)
        if self.idle:
            self._sweeper = loop.call_later(IDLE_SECONDS / 2, self._sweep)

    def _unpool(self, conn: BackendConn) -> None:
        if conn.pooled:
            conn.pooled = False
            self.proxy.limits.release(POOL_CLIENT)

    def forget(self, conn: BackendConn) -> None:
        self._unpool(conn)
        idle = self.idle.get(conn.port)
        if idle and conn in idle:
            idle.remove(conn)
            if not idle:
                del self.idle[conn.port]

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for task in list(self.opening):
            task.cancel()
        for queue in list(self.waiting.values()):
            for handed in queue:
                if not handed.done():
                    handed.set_exception(ConnectionError("the proxy is stopping"))
        self.waiting.clear()
        for idle in list(self.idle.values()):
            for conn in list(idle):
                self._unpool(conn)
                conn.close()
        self.idle.clear()
