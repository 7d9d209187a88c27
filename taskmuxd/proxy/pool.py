"""Kept-alive HTTP/1.1 connections to tasks, shared by the proxy's HTTP/2 streams.

An HTTP/2 connection carries many requests at once, and each needs its own HTTP/1.1
connection to the task while it is under way. When an exchange ends cleanly (both messages
complete, neither side asked to close), its connection goes at once to the stream that has
waited longest for that port, else back here, idle, for the next one.

At most ``MAX_PER_PORT`` connections to a port are lent out or being opened at a time; further
streams wait their turn, first come first served. A dev server answers from one thread (Vite,
webpack: Node), so a page of hundreds of modules gains nothing from hundreds of connections,
and each new one costs both sides a connect and its set-up; a handful, each reused the moment
its answer ends, serves the page as fast. Two things keep the cap from starving anyone: a
connection that became a WebSocket leaves the count, and when none of a port's connections
came back for ``STALL_SECONDS`` while streams wait (long-lived answers such as server-sent
events hold them all), each waiting stream gets a connection of its own as before the cap.
Up to ``MAX_IDLE_PER_PORT`` idle connections per port; they close after a while or as soon
as the task closes them.

``h1client`` writes the requests and reads the answers (it decodes chunked bodies, which
HTTP/2 does not carry, and knows when a connection can be reused).
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import TYPE_CHECKING, Protocol

from taskmuxd.proxy.h1client import RequestWriter, ResponseReader
from taskmuxd.proxy.turnbatch import TurnBatch

if TYPE_CHECKING:
    from taskmuxd.proxy.proxyview import BackendOpener

MAX_PER_PORT = 16  # connections lent out or opening per port (see bench/browser_load.py)
STALL_SECONDS = 0.25  # no connection came back for this long: the waiting streams open more
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


class Waiter(Protocol):
    """A stream waiting for a connection (``BackendPool.wait``)."""

    def take(self, conn: BackendConn) -> bool:
        """Use ``conn`` from now on (at once, in the caller's turn of the event loop), or
        say False when no longer waiting."""
        ...

    def fail(self, exc: BaseException) -> None:
        """No connection can be had."""
        ...


class _Handed:
    """A waiter for ``BackendPool.get``: the connection comes as a future's result."""

    def __init__(self, future: asyncio.Future[BackendConn]) -> None:
        self.future = future

    def take(self, conn: BackendConn) -> bool:
        if self.future.done():
            return False
        self.future.set_result(conn)
        return True

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)


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
        self.counted = False  # lent out, counted against MAX_PER_PORT
        self.idle_since = 0.0  # (loop time) when it went idle in the pool
        self.unsent: list[bytes] = []  # written this turn, not yet to the transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.owner is not None:
            with self.pool.batch:
                self.owner.backend_data(data)
        else:  # bytes nobody asked for: the task is out of step
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        self.pool.uncount(self)
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

    def send_prepared(self, method: bytes, target: bytes, wire: bytes, remaining: int,
                      chunked: bool, upgrade: bool = False) -> None:
        """``send_head`` for fields already written as lines (``RequestWriter.prepared``)."""
        self.reader.expect(method, upgrade)
        self._write(self.writer.prepared(method, target, wire, remaining, chunked))

    def send_data(self, data: bytes) -> None:
        """Send request body bytes; raises BadMessage beyond its Content-Length."""
        self._write(self.writer.data(data))

    def send_end(self) -> None:
        """End the request body; raises BadMessage short of its Content-Length."""
        self._write(self.writer.end())

    def _write(self, data: bytes) -> None:
        """Queue ``data``; it goes out with what else this turn of the event loop writes
        (``BackendPool.send_soon``)."""
        if data and self.transport is not None:
            if not self.unsent:
                self.pool.send_soon(self)
            self.unsent.append(data)

    def send_now(self) -> None:
        """Write what ``_write`` queued, in one piece (one system call)."""
        if self.unsent:
            data = self.unsent[0] if len(self.unsent) == 1 else b"".join(self.unsent)
            self.unsent.clear()
            if self.transport is not None and not self.transport.is_closing():
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
        self.send_now()  # (a close comes after what was written)
        if self.transport is not None:
            self.transport.close()
        self.pool.uncount(self)


class BackendPool:
    def __init__(self, proxy: BackendOpener) -> None:
        self.proxy = proxy
        self.loop = asyncio.get_running_loop()  # (made by the first HTTP/2 client, in it)
        self.idle: dict[int, list[BackendConn]] = {}
        # Streams waiting for a connection to a port, first come first served.
        self.waiting: dict[int, deque[Waiter]] = {}
        self.opening: set[asyncio.Task[None]] = set()
        self.busy: dict[int, int] = {}  # per port: connections lent out or being opened
        self.opens: dict[int, int] = {}  # per port: connections being opened
        self.progress: dict[int, float] = {}  # per port: (loop time) a connection last came
        self._stall_timers: dict[int, asyncio.TimerHandle] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._unsent: list[BackendConn] = []  # connections with writes queued this turn
        # Work for the end of this turn of the loop: these writes, and the HTTP/2 clients'.
        self.batch = TurnBatch(self.loop)

    def send_soon(self, conn: BackendConn) -> None:
        """Write ``conn``'s queued bytes at the end of this turn of the event loop, with
        every other connection's: a browser's requests arrive by the dozen in one read, and
        the task then hears of them together rather than being woken for each one while
        the rest are still being read (on a busy machine each wake-up cost the proxy the
        processor for a while)."""
        if not self._unsent:
            self.batch.later(self._send_all)
        self._unsent.append(conn)

    def _send_all(self) -> None:
        conns, self._unsent = self._unsent, []
        for conn in conns:
            conn.send_now()

    async def get(self, port: int, owner: Owner) -> BackendConn:
        """A connection to the task on ``port`` for ``owner``: an idle one, else the next
        one free (a new one while fewer than ``MAX_PER_PORT`` are lent out). Raises OSError
        or TimeoutError when a new one cannot be opened and no other is under way."""
        while True:
            conn = self.take_idle(port, owner)
            if conn is not None:
                return conn
            waiter = _Handed(asyncio.get_running_loop().create_future())
            self.wait(port, waiter)
            try:
                conn = await waiter.future
            except asyncio.CancelledError:  # (one may have come just now)
                self.withdraw(port, waiter)
                handed = waiter.future
                if handed.done() and not handed.cancelled() and handed.exception() is None:
                    spare = handed.result()
                    if not self._hand_over(spare):
                        self._keep_idle(spare)
                raise
            if conn.usable():  # (a handed-back one may have closed before this ran)
                conn.owner = owner
                conn.reading(True)
                return conn
            conn.close()

    def wait(self, port: int, waiter: Waiter) -> None:
        """Queue ``waiter`` for the next connection to ``port`` free (none is idle); its
        ``take`` is called with it, or ``fail`` when none can be had."""
        self.waiting.setdefault(port, deque()).append(waiter)
        self._pump(port)

    def withdraw(self, port: int, waiter: Waiter) -> None:
        """``waiter`` no longer waits (its stream ended)."""
        queue = self.waiting.get(port)
        if queue is not None:
            try:
                queue.remove(waiter)
            except ValueError:
                pass
            if not queue:
                del self.waiting[port]
        self._disarm(port)

    def _pump(self, port: int, beyond_cap: bool = False) -> None:
        """Open connections for the streams waiting on ``port``, as far as the cap allows
        (or, after a stall, one for each)."""
        queue = self.waiting.get(port)
        if not queue:
            return
        wanted = len(queue) - self.opens.get(port, 0)
        if not beyond_cap:
            wanted = min(wanted, MAX_PER_PORT - self.busy.get(port, 0))
        loop = self.loop
        for _ in range(wanted):
            self.busy[port] = self.busy.get(port, 0) + 1
            self.opens[port] = self.opens.get(port, 0) + 1
            task = loop.create_task(self._open(port))
            self.opening.add(task)
            task.add_done_callback(self.opening.discard)
        self._arm(port)

    def _arm(self, port: int) -> None:
        """Check for a stall later while more streams wait than connections are opening."""
        queue = self.waiting.get(port)
        if queue and len(queue) > self.opens.get(port, 0) and port not in self._stall_timers:
            loop = self.loop
            self.progress.setdefault(port, loop.time())
            self._stall_timers[port] = loop.call_later(STALL_SECONDS, self._check_stall, port)

    def _check_stall(self, port: int) -> None:
        self._stall_timers.pop(port, None)
        queue = self.waiting.get(port)
        if not queue:
            return
        loop = self.loop
        since = loop.time() - self.progress.get(port, 0.0)
        if since >= STALL_SECONDS:
            self._pump(port, beyond_cap=True)
        elif len(queue) > self.opens.get(port, 0):
            self._stall_timers[port] = loop.call_later(STALL_SECONDS - since,
                                                       self._check_stall, port)

    def _opened(self, port: int) -> None:
        left = self.opens.get(port, 0) - 1
        if left > 0:
            self.opens[port] = left
        else:
            self.opens.pop(port, None)

    async def _open(self, port: int) -> None:
        try:
            _, conn = await self.proxy.connect_backend(port, lambda: BackendConn(self, port))
        except (OSError, TimeoutError) as exc:
            self._opened(port)
            self._uncount_port(port, pump=False)  # (not at once: it would fail again)
            if not self.busy.get(port):  # nothing else under way could serve them: fail
                waiters = self.waiting.pop(port, deque())
                self._disarm(port)
                for waiter in waiters:
                    waiter.fail(exc)
            else:  # one under way may come back; else try again after a stall
                self._arm(port)
            return
        except asyncio.CancelledError:
            self._opened(port)
            self._uncount_port(port)
            raise
        assert isinstance(conn, BackendConn)
        self._opened(port)
        conn.counted = True  # (it was counted while it was being opened)
        if conn.closed:  # (closed before its opening finished)
            conn.counted = False
            self._uncount_port(port)
            return
        if not self._hand_over(conn):  # every stream got one meanwhile (or is gone)
            self._keep_idle(conn)

    def uncount(self, conn: BackendConn) -> None:
        """``conn`` is no longer lent out (back idle, closed, or a WebSocket now)."""
        if conn.counted:
            conn.counted = False
            self._uncount_port(conn.port)

    def _uncount_port(self, port: int, pump: bool = True) -> None:
        busy = self.busy.get(port, 0) - 1
        if busy > 0:
            self.busy[port] = busy
        else:
            self.busy.pop(port, None)
        if pump and self.waiting.get(port):
            self._pump(port)

    def _disarm(self, port: int) -> None:
        if not self.waiting.get(port):
            timer = self._stall_timers.pop(port, None)
            if timer is not None:
                timer.cancel()

    def _hand_over(self, conn: BackendConn) -> bool:
        """Give ``conn`` to the first stream waiting for its port, if any."""
        port = conn.port
        queue = self.waiting.get(port)
        while queue:
            waiter = queue.popleft()
            if not queue:
                del self.waiting[port]
                self._disarm(port)
            if waiter.take(conn):
                self.progress[port] = self.loop.time()
                return True
            queue = self.waiting.get(port)
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
                conn.counted = True
                self.busy[port] = self.busy.get(port, 0) + 1
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
        self.uncount(conn)
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
        loop = self.loop
        conn.idle_since = loop.time()
        if self._sweeper is None:
            self._sweeper = loop.call_later(IDLE_SECONDS / 2, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle for more than ``IDLE_SECONDS`` (one timer for the pool, not
        one for each connection put back)."""
        self._sweeper = None
        loop = self.loop
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
        for timer in self._stall_timers.values():
            timer.cancel()
        self._stall_timers.clear()
        for task in list(self.opening):
            task.cancel()
        queues = list(self.waiting.values())
        self.waiting.clear()
        for queue in queues:
            for waiter in queue:
                waiter.fail(ConnectionError("the proxy is stopping"))
        for idle in list(self.idle.values()):
            for conn in list(idle):
                self._unpool(conn)
                conn.close()
        self.idle.clear()
