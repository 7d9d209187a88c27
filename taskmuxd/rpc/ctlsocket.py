"""The control socket: accept, check the peer's uid, read NDJSON, dispatch, answer.

Each request line runs as its own task (a slow call does not hold up the connection), up to a
per-connection limit; responses carry the request id. On close the server stops accepting,
lets calls in flight finish within a deadline, then closes every connection.

A method that pushes notifications later (``events.subscribe``) finds its connection through
:data:`CURRENT` and may ask for a callback once its reply is written (so nothing it pushes
can overtake the reply) and when the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from taskmuxctl.core.protocol import Code, FrameTooLarge, LineFramer
from taskmuxd.memtrim import Trimmer
from taskmuxd.privatesock import listen_private
from taskmuxd.rpc.dispatch import Dispatcher, _dump, error_response
from taskmuxd.rpc.early import answerer
from taskmuxd.rpc.peercred import peer_of

log = logging.getLogger("taskmuxd.rpc")

MAX_IN_FLIGHT_PER_CONNECTION = 64
READ_CHUNK = 65536

class Connection:
    """One client connection; responses are written under its lock."""

    def __init__(self, writer: asyncio.StreamWriter, peer_uid: int, peer_pid: int | None,
                 before_write: list[Callable[[], None]] | None = None) -> None:
        self.writer = writer
        self.before_write = before_write if before_write is not None else []
        self.peer_uid = peer_uid
        self.peer_pid = peer_pid
        self._lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()
        self.on_close: list[Callable[[], None]] = []

    async def send_raw(self, payload: bytes) -> None:
        if self.writer.is_closing():
            return
        async with self._lock:
            for hook in self.before_write:  # e.g. the turn's events, written before the answer
                hook()
            self.writer.write(payload)
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()


class Call:
    """The connection a call came on, and what to run once its reply is written."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.after_reply: list[Callable[[], None]] = []


CURRENT: contextvars.ContextVar[Call | None] = contextvars.ContextVar("rpc_call", default=None)


class RpcServer:
    def __init__(
        self,
        path: str,
        methods: Callable[[], dict[str, Callable[..., Awaitable[Any]]]] | None,
        owner_uid: int,
        early: dict[str, Callable[[], Any]] | None = None,
    ) -> None:
        """``methods`` None: serve only ``early`` (``taskmuxd.rpc.early``) and hold the rest
        until ``attach``."""
        self.path = path
        self.owner_uid = owner_uid
        self.allowed_uids = frozenset((owner_uid, 0))
        self._dispatcher = Dispatcher(methods, answerer(early) if early else None)
        self._trimmer = Trimmer()
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[Connection] = set()
        self._in_flight: set[asyncio.Task[None]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.calls_served = 0
        # Run before anything is written to a client (``eventbatch``: the turn's events).
        self.before_reply: list[Callable[[], None]] = []

    async def start(self) -> None:
        """Bind and listen. The caller holds the instance lock, so a file at ``path`` is stale."""
        sock = listen_private(self.path, socket.SOCK_STREAM, 128)
        self._server = await asyncio.start_unix_server(self._accept, sock=sock,
                                                       limit=READ_CHUNK)

    @property
    def serving(self) -> bool:
        return self._server is not None

    def attach(self, methods: Callable[[], dict[str, Callable[..., Awaitable[Any]]]]) -> None:
        """The full method table: requests held since the start go through it now."""
        self._dispatcher.attach(methods)

    def refuse(self, code: int, message: str, data: Any = None) -> None:
        """The daemon will not finish starting: held requests get this error."""
        self._dispatcher.refuse(code, message, data)

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """Run one method as a caller on the socket would (params checked, errors mapped) and
        return its result; an error reply raises RpcError. For the daemon's own web
        dashboard, so that it goes through the same door as every client."""
        import json

        from taskmuxctl.core.protocol import RpcError

        line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                           "params": params or {}}).encode()
        reply = await self._dispatcher.handle(line)
        obj = json.loads(reply or b"{}")
        if "error" in obj:
            err = obj["error"]
            raise RpcError(int(err.get("code", Code.INTERNAL_ERROR)), str(err.get("message")),
                           err.get("data"))
        return obj.get("result")

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    async def close(self, grace: float) -> None:
        """Stop accepting, give calls in flight ``grace`` seconds, then close everything."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self._in_flight:
            log.info("waiting up to %.0fs for %d call(s) in flight", grace, len(self._in_flight))
            _done, pending = await asyncio.wait(set(self._in_flight), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("cancelled %d call(s) still running at the deadline", len(pending))
                await asyncio.wait(pending)
        for conn in list(self._connections):
            conn.writer.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(set(self._handlers))
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        try:
            peer = peer_of(sock)
        except OSError as exc:
            log.warning("refused a connection whose peer cannot be identified: %s", exc)
            writer.write(_dump(error_response(
                Code.PERMISSION_DENIED, "cannot identify the connecting process; refused")))
            return
        if peer.uid not in self.allowed_uids:
            log.warning("refused a connection from uid %d (pid %s): only uid(s) %s may use "
                        "this daemon", peer.uid, peer.pid, sorted(self.allowed_uids))
            writer.write(_dump(error_response(
                Code.PERMISSION_DENIED,
                f"permission denied: this daemon serves uid {self.owner_uid} only, and you are "
                f"uid {peer.uid}; run your own daemon with TASKMUX_HOME set to a directory of "
                "your own",
                {"uid": peer.uid})))
            await writer.drain()
            return
        conn = Connection(writer, peer.uid, peer.pid, self.before_reply)
        self._connections.add(conn)
        framer = LineFramer()
        slots = asyncio.Semaphore(MAX_IN_FLIGHT_PER_CONNECTION)
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                try:
                    lines = framer.feed(data)
                except FrameTooLarge as exc:
                    log.warning("closing a connection that sent %s", exc)
                    await conn.send_raw(_dump(error_response(
                        Code.MESSAGE_TOO_LARGE,
                        f"message too large: a request line may be at most {exc.limit} bytes",
                        {"limit": exc.limit})))
                    break
                for line in lines:
                    await slots.acquire()
                    task = asyncio.create_task(self._call(conn, line, slots))
                    for owner in (self._in_flight, conn.tasks):
                        owner.add(task)
                        task.add_done_callback(owner.discard)
            if conn.tasks:  # the peer stopped sending; its calls still get their answers
                await asyncio.wait(set(conn.tasks))
        finally:
            self._connections.discard(conn)
            for hook in conn.on_close:
                try:
                    hook()
                except Exception:
                    log.exception("a connection close hook failed")

    async def _call(self, conn: Connection, line: bytes, slots: asyncio.Semaphore) -> None:
        call = Call(conn)
        CURRENT.set(call)  # this task's own context: seen by the method it runs
        try:
            try:
                reply = await self._dispatcher.handle(line)
            except Exception as exc:  # a bug: the caller still gets a well-formed answer
                log.exception("a request line could not be handled")
                reply = _dump(error_response(Code.INTERNAL_ERROR, "Internal error",
                                             f"{type(exc).__name__}: {str(exc)[:200]}"))
            self.calls_served += 1
            if reply is not None:
                await conn.send_raw(reply)
            for hook in call.after_reply:
                hook()
            self._trimmer.note(len(line) + len(reply or b""))
        finally:
            slots.release()
