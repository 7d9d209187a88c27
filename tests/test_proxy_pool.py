"""The proxy's pool of kept-alive task connections (``pool``), against a real HTTP/1.1
server on loopback; the proxy itself is reduced to the two things the pool asks of it (how
to connect to a task, and the connection limits)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from taskmuxd.connlimits import ConnectionLimits
from taskmuxd.proxy import pool as pool_mod
from taskmuxd.proxy.h1client import END
from taskmuxd.proxy.pool import IDLE_SECONDS, MAX_PER_PORT, POOL_CLIENT, BackendConn, BackendPool


class Task:
    """A task that answers every request with an empty 200, counting its connections."""

    def __init__(self) -> None:
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                        ) -> None:
        self.accepted += 1
        self.writers.append(writer)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


class ProxyStandIn:
    def __init__(self) -> None:
        self.limits = ConnectionLimits(1024, 512)
        self.connects = 0
        self.refuse = False  # (the task's listen queue is full, say)

    async def connect_backend(self, port: int, factory: Callable[[], BackendConn]
                              ) -> tuple[asyncio.BaseTransport, BackendConn]:
        if self.refuse:
            raise ConnectionRefusedError("refused")
        self.connects += 1
        return await asyncio.get_running_loop().create_connection(factory, "127.0.0.1", port)


class Exchange:
    """Sends one GET on a connection and waits for the whole answer."""

    def __init__(self) -> None:
        self.done = asyncio.get_running_loop().create_future()
        self.conn: BackendConn | None = None

    def backend_data(self, data: bytes) -> None:
        assert self.conn is not None
        for event in self.conn.reader.feed(data):
            if event == END and not self.done.done():
                self.done.set_result(None)

    def backend_lost(self) -> None:
        pass

    def backend_full(self, full: bool) -> None:
        pass

    async def run(self, pool: BackendPool, conn: BackendConn) -> None:
        self.conn = conn
        conn.send_head(b"GET", b"/", [(b"host", b"t")])
        conn.send_end()
        await asyncio.wait_for(self.done, 10)
        pool.put(conn)


async def _with_task(test: Callable[[BackendPool, ProxyStandIn, Task, int], object]) -> None:
    task = Task()
    server = await asyncio.start_server(task.connected, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    proxy = ProxyStandIn()
    pool = BackendPool(proxy)  # type: ignore[arg-type]
    try:
        await test(pool, proxy, task, port)  # type: ignore[misc]
    finally:
        pool.close()
        server.close()
        for writer in task.writers:
            writer.close()
        await asyncio.gather(*(w.wait_closed() for w in task.writers),
                             return_exceptions=True)
        await server.wait_closed()


def test_a_page_of_streams_shares_a_few_connections_kept_for_the_next_load() -> None:
    async def test(pool: BackendPool, proxy: ProxyStandIn, task: Task, port: int) -> None:
        async def one(exchange: Exchange) -> None:
            await exchange.run(pool, await pool.get(port, exchange))

        for _ in range(2):  # two "page loads" of 60 requests at once
            await asyncio.gather(*(one(Exchange()) for _ in range(60)))
        # Never more than the cap at once, and the second load opened none.
        assert proxy.connects == MAX_PER_PORT and task.accepted == MAX_PER_PORT
        assert len(pool.idle[port]) == MAX_PER_PORT and not pool.busy and not pool.waiting

    asyncio.run(_with_task(test))


async def _hold_all(pool: BackendPool, port: int) -> list[BackendConn]:
    """Take as many connections as the cap allows and keep them."""
    return list(await asyncio.gather(*(pool.get(port, Exchange())
                                       for _ in range(MAX_PER_PORT))))


def test_streams_beyond_the_cap_wait_and_are_served_first_come_first_served(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_mod, "STALL_SECONDS", 3600.0)  # (no escape in this test)

    async def test(pool: BackendPool, proxy: ProxyStandIn, task: Task, port: int) -> None:
        held = await _hold_all(pool, port)
        assert proxy.connects == MAX_PER_PORT and pool.busy[port] == MAX_PER_PORT
        late = [Exchange() for _ in range(3)]
        waiting = [asyncio.get_running_loop().create_task(pool.get(port, e)) for e in late]
        await asyncio.sleep(0)
        assert len(pool.waiting[port]) == 3 and not pool.opening  # no new connection
        owner = held[0].owner
        assert isinstance(owner, Exchange)
        await owner.run(pool, held[0])  # its answer ends: it goes to the first waiting
        assert await asyncio.wait_for(waiting[0], 10) is held[0] and held[0].owner is late[0]
        assert not waiting[1].done() and not waiting[2].done()
        held[1].close()  # a connection that closes makes room for a new one
        second = await asyncio.wait_for(waiting[1], 10)
        assert second not in held and proxy.connects == MAX_PER_PORT + 1
        assert not waiting[2].done() and pool.busy[port] == MAX_PER_PORT
        waiting[2].cancel()
        await asyncio.gather(waiting[2], return_exceptions=True)
        assert not pool.waiting and not pool._stall_timers

    asyncio.run(_with_task(test))


class Waiting:
    """A stream in the pool's queue (``pool.Waiter``), gone or not."""

    def __init__(self, gone: bool = False) -> None:
        self.gone = gone
        self.got: BackendConn | None = None

    def take(self, conn: BackendConn) -> bool:
        if self.gone:
            return False
        self.got = conn
        return True

    def fail(self, exc: BaseException) -> None:
        raise AssertionError(f"unexpected failure: {exc}")


def test_a_connection_handed_back_goes_at_once_to_the_first_stream_still_waiting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_mod, "STALL_SECONDS", 3600.0)

    async def test(pool: BackendPool, proxy: ProxyStandIn, task: Task, port: int) -> None:
        held = await _hold_all(pool, port)
        gone, first, second = Waiting(gone=True), Waiting(), Waiting()
        for waiter in (gone, first, second):
            pool.wait(port, waiter)
        pool.withdraw(port, second)  # (its stream was reset)
        owner = held[0].owner
        assert isinstance(owner, Exchange)
        owner.done = asyncio.get_running_loop().create_future()
        owner.conn = held[0]
        held[0].send_head(b"GET", b"/", [(b"host", b"t")])
        held[0].send_end()
        await asyncio.wait_for(owner.done, 10)
        pool.put(held[0])  # in the same turn: skips the stream that is gone
        assert first.got is held[0] and second.got is None and gone.got is None
        assert not pool.waiting and not pool._stall_timers and not pool.opening

    asyncio.run(_with_task(test))


def test_when_held_connections_never_come_back_waiting_streams_open_their_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_mod, "STALL_SECONDS", 0.01)

    async def test(pool: BackendPool, proxy: ProxyStandIn, task: Task, port: int) -> None:
        await _hold_all(pool, port)  # (long answers, server-sent events: held for good)
        extra = await asyncio.wait_for(
            asyncio.gather(*(pool.get(port, Exchange()) for _ in range(3))), 10)
        assert proxy.connects == MAX_PER_PORT + 3 and len(set(extra)) == 3

    asyncio.run(_with_task(test))


def test_a_connection_that_became_a_websocket_leaves_the_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_mod, "STALL_SECONDS", 3600.0)

    async def test(pool: BackendPool, proxy: ProxyStandIn, task: Task, port: int) -> None:
        held = await _hold_all(pool, port)
        waiting = asyncio.get_running_loop().create_task(pool.get(port, Exchange()))
        await asyncio.sleep(0)
        assert not pool.opening
        pool.uncount(held[0])  # (what an exchange does on the task's 101)
        pool.uncount(held[0])  # (counted off once only)
        conn = await asyncio.wait_for(waiting, 10)
        assert conn not in held and pool.busy[port] == MAX_PER_PORT
        held[0].close()  # the WebSocket ends: not counted off again
        assert pool.busy[port] == MAX_PER_PORT

    asyncio.run(_with_task(test))


def test_a_released_connection_goes_to_a_stream_waiting_for_one() -> None:
    async def test(pool: BackendPool, proxy: ProxyStandIn, task: Task, port: int) -> None:
        first = Exchange()
        conn = await pool.get(port, first)
        first.conn = conn
        conn.send_head(b"GET", b"/", [(b"host", b"t")])
        conn.send_end()
        await asyncio.wait_for(first.done, 10)
        second = Exchange()
        waiting = asyncio.get_running_loop().create_task(pool.get(port, second))
        await asyncio.sleep(0)  # it starts a connection of its own and waits
        assert pool.waiting[port] and pool.opening
        pool.put(conn)  # ... and gets this one first
        assert await asyncio.wait_for(waiting, 10) is conn and conn.owner is second
        # The connection it started is not wasted: it is kept idle for the next stream.
        await asyncio.wait_for(asyncio.gather(*pool.opening), 10)
        assert proxy.connects == 2 and not pool.waiting
        assert len(pool.idle[port]) == 1 and pool.idle[port][0] is not conn
        conn.close()

    asyncio.run(_with_task(test))


def test_a_connection_that_fails_reaches_the_waiting_stream_as_an_error() -> None:
    async def test(pool: BackendPool, proxy: ProxyStandIn, task: Task, port: int) -> None:
        with socket_closed() as closed_port:
            try:
                await pool.get(closed_port, Exchange())
            except OSError:
                pass
            else:
                raise AssertionError("a connection to a closed port was handed out")
        assert not pool.waiting

    asyncio.run(_with_task(test))


def test_a_failed_connection_fails_every_waiting_stream_only_when_none_is_under_way(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_mod, "STALL_SECONDS", 3600.0)

    async def test(pool: BackendPool, proxy: ProxyStandIn, task: Task, port: int) -> None:
        owner = Exchange()
        held = await pool.get(port, owner)
        proxy.refuse = True
        waiting = asyncio.get_running_loop().create_task(pool.get(port, Exchange()))
        await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*pool.opening), 10)
        assert not waiting.done()  # the one under way will do
        await owner.run(pool, held)
        assert await asyncio.wait_for(waiting, 10) is held
        held.close()  # now none is under way: a refusal reaches all who wait
        waiters = [asyncio.get_running_loop().create_task(pool.get(port, Exchange()))
                   for _ in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*waiters, return_exceptions=True), 10)
        assert all(isinstance(r, ConnectionRefusedError) for r in results)
        assert not pool.waiting and not pool.busy and not pool._stall_timers

    asyncio.run(_with_task(test))


def test_idle_connections_close_after_a_while_and_only_those() -> None:
    async def test(pool: BackendPool, proxy: ProxyStandIn, task: Task, port: int) -> None:
        exchanges = [Exchange() for _ in range(3)]
        conns = await asyncio.gather(*(pool.get(port, e) for e in exchanges))
        await asyncio.gather(*(e.run(pool, c) for e, c in zip(exchanges, conns, strict=True)))
        assert len(pool.idle[port]) == 3 and pool._sweeper is not None
        # One went idle long ago (the clock is moved by hand, not waited for).
        old = pool.idle[port][0]
        old.idle_since -= IDLE_SECONDS + 1
        pool._sweep()
        assert old.closed and old not in pool.idle[port] and len(pool.idle[port]) == 2
        assert proxy.limits.by_client.get(POOL_CLIENT) == 2
        assert pool._sweeper is not None  # (two are still idle)
        for conn in pool.idle[port]:
            conn.idle_since -= IDLE_SECONDS + 1
        pool._sweep()
        assert port not in pool.idle and pool._sweeper is None
        assert POOL_CLIENT not in proxy.limits.by_client

    asyncio.run(_with_task(test))


def socket_closed() -> _ClosedPort:
    return _ClosedPort()


class _ClosedPort:
    """A loopback port nothing listens on (bound, never listening, for the test's span)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
