"""Watching the state directory's file system: say when it is full, catch up once it is not.

A full disk must not stop the daemon or lose a transition: every write that fails is dropped
and counted where it happens (events, state files, task log lines) and the daemon carries on.
This subsystem is what makes that visible and self-healing: ``status`` (and so ``taskmux
status`` and ``doctor``) says the disk is full and what to do; when space returns it writes
``daemon.pid`` if a full disk kept it from being written at start, and records that writing
works again. State files retry on their own (``Project.flush``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any

from taskmuxctl.core import diskspace
from taskmuxctl.core.fsutil import read_pid
from taskmuxd.daemonlock import write_pid_file

if TYPE_CHECKING:
    from taskmuxctl.core.eventlog import EventLog
    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.settings import Settings

log = logging.getLogger("taskmuxd.disk")

INTERVAL = 2.0  # seconds between looks at the file system


class DiskWatch:
    name = "disk"

    def __init__(self, paths: Paths, events: EventLog, interval: float = INTERVAL) -> None:
        self.paths = paths
        self.events = events
        self.interval = interval
        self.state: dict[str, Any] = diskspace.space(paths.home)
        self.full_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def full(self) -> bool:
        """Full by the numbers, or events could not be written for want of space."""
        events = self.events
        return bool(self.state.get("full")) or (
            events.dropped > 0 and events.last_error is not None
            and diskspace.is_full(events.last_error))

    async def start(self) -> None:
        self.look()
        self._task = asyncio.create_task(self._loop(), name="disk-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def settings_changed(self, old: Settings, new: Settings) -> None:
        pass

    def status(self) -> dict[str, Any]:
        out = dict(self.state)
        out["full"] = self.full
        out["events_dropped"] = self.events.dropped
        out["summary"] = diskspace.summary(out)
        if self.full:
            out["message"] = diskspace.full_status(self.paths.home)
        return out

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.look()

    def look(self) -> None:
        """Read the file system's free space; on a change between full and not, say so."""
        paths = self.paths
        self.state = diskspace.space(paths.home)
        loop_now = asyncio.get_running_loop().time()
        if self.state["full"] and self.full_since is None:
            self.full_since = loop_now
            log.warning("%s", diskspace.summary(self.state))
        elif not self.state["full"] and (self.full_since is not None or self.full):
            self.full_since = None
            log.info("there is room on %s again (%s free)", self.state["mount"],
                     diskspace.size(self.state["free"]))
            self.events.emit("disk_space_back", None, None, path=paths.home,
                                    free=self.state["free"])
        if not self.state["full"] and read_pid(paths.pid_file) != os.getpid():
            self._write_pid()

    def _write_pid(self) -> None:
        try:
            write_pid_file(self.paths)
        except OSError as exc:
            log.debug("still cannot write %s: %s", self.paths.pid_file, exc)
        else:
            log.info("wrote %s (a full disk had kept it from being written)",
                     self.paths.pid_file)
