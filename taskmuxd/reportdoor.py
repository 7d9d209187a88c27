"""The report door: runners' reports, one message on a connection each, read without the
RPC layer.

A start or stop of a hundred tasks brings two hundred reports (``runner.started``,
``runner.exited``, ``runner.notify``; see ``taskmuxd.reportwire`` for the runner's side). On
``ctl.sock`` each cost an accepted connection with its asyncio stream, a JSON-RPC dispatch and
a check of its parameters by signature; here each is an ``accept`` and one ``recvmsg`` on
bare non-blocking sockets (``SOCK_SEQPACKET``: the report arrives whole), done in bursts from
one reader the loop watches.

What comes through the door is input from a process running as the user, and is treated as
hostile: the peer's uid (``SO_PEERCRED``, set by the kernel at the connect) must be the
daemon's or root's; a report is at most ``reportwire.MAX_REPORT`` bytes (a larger one is cut
by the kernel and dropped whole); it must be a JSON object naming one of the runner methods,
with ``project`` and ``task`` short strings, ``run_id`` a non-negative integer and ``record``
an object of at most ``MAX_RECORD_KEYS`` keys; what fails is counted and dropped. At most
``BURST`` connections are taken per wake-up, so a flood cannot hold the loop; a connection
whose report has not arrived when it is accepted waits for it at most ``PENDING_SECONDS``,
and at most ``MAX_PENDING`` such wait at once. Reports that arrive while the daemon still
adopts its tasks are held (at most ``MAX_HELD``) and handed over in order once it has.

Linux only (``SO_PEERCRED``): elsewhere the door is not opened and runners use ``ctl.sock``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Callable, Mapping
from typing import Any

from taskmuxd import reportwire
from taskmuxd.privatesock import listen_private

log = logging.getLogger("taskmuxd.reports")

Report = Callable[[str, str, int, dict[str, Any]], None]

BURST = 256  # connections taken per wake-up of the loop at most
BACKLOG = 1024  # connections the kernel queues for the door (capped by somaxconn)
MAX_PENDING = 256  # accepted connections waiting for their report at most
PENDING_SECONDS = 2.0  # how long one waits at most
MAX_HELD = 4096  # reports held while the daemon adopts its tasks at most
MAX_NAME = 256  # characters of a project or task name at most
MAX_RECORD_KEYS = 64
MAX_RUN_ID = 2**63 - 1
_UCRED = struct.Struct("3i")
AVAILABLE = hasattr(socket, "SO_PEERCRED") and hasattr(socket, "SOCK_SEQPACKET")


def parse(data: bytes, methods: Mapping[str, Report]) -> tuple[Report, str, str, int,
                                                                dict[str, Any]] | str:
    """The handler and arguments of one report, or why it is refused."""
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(msg, dict):
        return "not an object"
    handler = methods.get(msg.get("method"))  # type: ignore[arg-type]
    if handler is None:
        return "not a runner report"
    params = msg.get("params")
    if not isinstance(params, dict):
        return "no params"
    project, task, run_id, record = (params.get("project"), params.get("task"),
                                     params.get("run_id"), params.get("record"))
    if not (isinstance(project, str) and 0 < len(project) <= MAX_NAME
            and isinstance(task, str) and 0 < len(task) <= MAX_NAME):
        return "bad project or task"
    if type(run_id) is not int or not 0 <= run_id <= MAX_RUN_ID:
        return "bad run_id"
    if not isinstance(record, dict) or len(record) > MAX_RECORD_KEYS:
        return "bad record"
    return handler, project, task, run_id, record


class ReportDoor:
    """``reports.sock`` beside the control socket; ``methods`` maps a runner method to what
    takes its report; ``ready`` is set once the reports may be taken (tasks adopted)."""

    name = "reports"

    def __init__(self, ctl_socket: str, methods: Mapping[str, Report], owner_uid: int,
                 ready: asyncio.Event) -> None:
        self.path = reportwire.door_of(ctl_socket)
        self.methods = methods
        self.allowed_uids = frozenset((owner_uid, 0))
        self.ready = ready
        self.sock: socket.socket | None = None
        self.held: list[tuple[Report, str, str, int, dict[str, Any]]] = []
        self.taken = 0
        self.refused = 0
        self.wakes = 0  # times the loop woke the door
        self.pending: dict[int, tuple[socket.socket, asyncio.TimerHandle]] = {}
        self._release: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not AVAILABLE:
            return
        try:
            sock = listen_private(self.path, socket.SOCK_SEQPACKET, BACKLOG)
        except OSError as exc:
            log.warning("no report door (%s): runners report on the control socket", exc)
            return
        sock.setblocking(False)
        self.sock = sock
        loop = asyncio.get_running_loop()
        loop.add_reader(sock.fileno(), self._drain)
        if not self.ready.is_set():
            self._release = loop.create_task(self._release_held())

    async def _release_held(self) -> None:
        await self.ready.wait()
        held, self.held = self.held, []
        for report in held:
            self._take(report)

    async def stop(self) -> None:
        if self._release is not None:
            self._release.cancel()
        loop = asyncio.get_running_loop()
        for conn, timer in list(self.pending.values()):
            timer.cancel()
            loop.remove_reader(conn.fileno())
            conn.close()
        self.pending.clear()
        if self.sock is None:
            return
        loop.remove_reader(self.sock.fileno())
        self.sock.close()
        self.sock = None
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    def status(self) -> dict[str, Any]:
        return {"open": self.sock is not None, "taken": self.taken, "refused": self.refused,
                "wakes": self.wakes}

    def settings_changed(self, old: object, new: object) -> None:
        pass

    def _drain(self) -> None:
        """Take the queued connections (up to ``BURST``), each one's report in order."""
        sock = self.sock
        if sock is None:
            return
        self.wakes += 1
        for _ in range(BURST):
            try:
                conn, _addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the rest wait in the backlog
                log.warning("report door: %s", exc)
                return
            try:
                uid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                    _UCRED.size))[1]
            except OSError:
                uid = None
            if uid not in self.allowed_uids:
                conn.close()
                self._refuse(f"from uid {uid}")
                continue
            conn.setblocking(False)
            self._read(conn)

    def _read(self, conn: socket.socket) -> None:
        """Read the connection's one report, or wait for it (bounded in number and time)."""
        try:
            data, _anc, flags, _addr = conn.recvmsg(reportwire.MAX_REPORT)
        except (BlockingIOError, InterruptedError):
            if conn.fileno() in self.pending:
                return
            if len(self.pending) >= MAX_PENDING:
                conn.close()
                self._refuse("too many waiting")
                return
            loop = asyncio.get_running_loop()
            timer = loop.call_later(PENDING_SECONDS, self._expire, conn)
            self.pending[conn.fileno()] = (conn, timer)
            loop.add_reader(conn.fileno(), self._ready, conn)
            return
        except OSError:
            data, flags = b"", 0
        self._forget(conn)
        conn.close()
        if not data:
            self._refuse("no report")
            return
        if flags & socket.MSG_TRUNC:
            self._refuse("too large")
            return
        why = parse(data, self.methods)
        if isinstance(why, str):
            self._refuse(why)
        elif self.ready.is_set():
            self._take(why)
        elif len(self.held) < MAX_HELD:
            self.held.append(why)
        else:
            self._refuse("too many held")  # the runner's record file says it, at adoption

    def _ready(self, conn: socket.socket) -> None:
        self._read(conn)

    def _expire(self, conn: socket.socket) -> None:
        self._forget(conn)
        conn.close()
        self._refuse("no report in time")

    def _forget(self, conn: socket.socket) -> None:
        entry = self.pending.pop(conn.fileno(), None)
        if entry is not None:
            entry[1].cancel()
            asyncio.get_running_loop().remove_reader(conn.fileno())

    def _refuse(self, why: str) -> None:
        self.refused += 1
        log.debug("report refused: %s", why)

    def _take(self, report: tuple[Report, str, str, int, dict[str, Any]]) -> None:
        handler, project, task, run_id, record = report
        try:
            handler(project, task, run_id, record)
        except ValueError as exc:  # a record the one reader refused
            self.refused += 1
            log.warning("report on %s/%s refused: %s", project, task, exc)
            return
        except Exception:
            self.refused += 1
            log.exception("report on %s/%s failed", project, task)
            return
        self.taken += 1
