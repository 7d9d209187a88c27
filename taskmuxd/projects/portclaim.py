"""A task's $PORT: assigned once, kept across restarts, and cleared of leftovers.

Before a start, a listener still holding the task's port is killed only when it is a leftover
of this same task (its previous process group, our uid). Anything else gets the task a new
port and an event; a stranger is never signalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import TYPE_CHECKING

from taskmuxd.projects import ports

if TYPE_CHECKING:
    from taskmuxd.projects.project import Project
    from taskmuxd.projects.task import TaskRuntime

log = logging.getLogger("taskmuxd.ports")


async def claim_port(project: Project, task: TaskRuntime, prev_pgid: int | None) -> int:
    rec = task.record
    if rec.port is None:
        rec.port = ports.free_port()
        return rec.port
    if not ports.in_use(rec.port):
        return rec.port
    holders = await asyncio.to_thread(ports.listeners, rec.port)
    mine = os.getuid()
    leftovers = [h for h in holders if h.uid == mine and prev_pgid and h.pgid == prev_pgid]
    if holders and len(leftovers) == len(holders):
        for h in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(h.pid, signal.SIGTERM)
        project.s.events.emit("leftover_killed", project.name, task.name, port=rec.port,
                           pids=[h.pid for h in leftovers])
        for _ in range(50):
            if not ports.in_use(rec.port):
                return rec.port
            await asyncio.sleep(0.05)
        for h in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(h.pid, signal.SIGKILL)
        for _ in range(40):
            if not ports.in_use(rec.port):
                return rec.port
            await asyncio.sleep(0.05)
    old = rec.port
    rec.port = ports.free_port()
    project.s.events.emit("port_reassigned", project.name, task.name, old_port=old,
                       new_port=rec.port, held_by=[h.pid for h in holders])
    log.warning("%s/%s: port %d is held by pid(s) %s that are not this task's; using %d",
                project.name, task.name, old, [h.pid for h in holders] or "?", rec.port)
    return rec.port
