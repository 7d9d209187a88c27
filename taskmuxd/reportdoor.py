"""The report door: runners' reports, one datagram each, read without the RPC layer.

A start or stop of a hundred tasks brings two hundred reports (``runner.started``,
``runner.exited``, ``runner.notify``; see ``taskmuxd.reportwire`` for the runner's side). On
``ctl.sock`` each cost an accepted connection with its stream, a JSON-RPC dispatch and a check
of its parameters by signature; here each is one ``recvmsg`` on a datagram socket the loop
watches, read in bursts.

What comes through the door is input from a process running as the user, and is treated as
hostile: the sender's uid (``SCM_CREDENTIALS``, set by the kernel) must be the daemon's or
root's; a datagram is at most ``reportwire.MAX_REPORT`` bytes (a larger one is cut by the
kernel and dropped whole); it must be a JSON object naming one of the runner methods, with
``project`` and ``task`` short strings, ``run_id`` a non-negative integer and ``record`` an
object of at most ``MAX_RECORD_KEYS`` keys; what fails is counted and dropped. At most
``BURST`` reports are read per wake-up, so a flood cannot hold the loop. Reports that arrive
while the daemon still adopts its tasks are held (at most ``MAX_HELD``) and handed over in
order once it has.

Linux only (``SO_PASSCRED``): elsewhere the door is not opened and runners use ``ctl.sock``.
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

log = logging.getLogger("taskmuxd.reports")

Report = Callable[[str, str, int, dict[str, Any]], None]

BURST = 256  # reports read per wake-up of the loop at most
MAX_HELD = 4096  # reports held while the daemon adopts its tasks at most
MAX_NAME = 256  # characters of a project or task name at most
MAX_RECORD_KEYS = 64
MAX_RUN_ID = 2**63 - 1
RCVBUF = 1 << 20  # the door's receive buffer: a hundred reports at once fit
_UCRED = struct.Struct("3i")
_CMSG_SPACE = socket.CMSG_SPACE(_UCRED.size) if hasattr(socket, "CMSG_SPACE") else 0
AVAILABLE = hasattr(socket, "SO_PASSCRED") and hasattr(socket, "SCM_CREDENTIALS")


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
        self._release: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not AVAILABLE:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # the caller holds the instance lock: a file here is stale
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            old_umask = os.umask(0o177)
            try:
                sock.bind(self.path)
            finally:
                os.umask(old_umask)
            os.chmod(self.path, 0o600)
        except OSError as exc:
            sock.close()
            log.warning("no report door (%s): runners report on the control socket", exc)
            return
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
        if self.sock is None:
            return
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
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
        """Read what is queued (up to ``BURST``) and take each report in order."""
        sock = self.sock
        if sock is None:
            return
        self.wakes += 1
        for _ in range(BURST):
            try:
                data, anc, flags, _addr = sock.recvmsg(reportwire.MAX_REPORT, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("report door: %s", exc)
                return
            why = self._check(data, anc, flags)
            if isinstance(why, str):
                self.refused += 1
                log.debug("report refused: %s", why)
                continue
            if self.ready.is_set():
                self._take(why)
            elif len(self.held) < MAX_HELD:
                self.held.append(why)
            else:
                self.refused += 1  # the runner's record file says it, at the adoption

    def _check(self, data: bytes, anc: list[tuple[int, int, bytes]],
               flags: int) -> tuple[Report, str, str, int, dict[str, Any]] | str:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            return "too large"
        uid = None
        for level, kind, raw in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS \
                    and len(raw) >= _UCRED.size:
                uid = _UCRED.unpack_from(raw)[1]
        if uid not in self.allowed_uids:
            return f"from uid {uid}"
        return parse(data, self.methods)

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
