"""A task's $PORT: assigned once, kept across restarts, and cleared of leftovers.

Before a start, a listener still holding the task's port is ended only when it is provably a
leftover of this same task (it carries the task's run marker). Anything else gets the task a
new port and an event; a stranger is never signalled.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from taskmuxd import proctree
from taskmuxd.projects import ownership, portscan

if TYPE_CHECKING:
    from taskmuxd.projects.projectview import ProjectView
    from taskmuxd.projects.task import TaskRuntime

log = logging.getLogger("taskmuxd.ports")


async def claim_port(project: ProjectView, task: TaskRuntime) -> int:
    rec = task.record
    if rec.port is None:
        rec.port = portscan.free_port()
        return rec.port
    if not portscan.in_use(rec.port):
        return rec.port
    holders = await asyncio.to_thread(portscan.listeners, rec.port)
    # A holder is this task's leftover only when it carries the task's run marker: a process
    # group id or a uid proves nothing (both are reused).
    prefix = ownership.task_prefix(project.services.paths.home, project.name, task.name)
    marked = {p.pid for p in await asyncio.to_thread(proctree.find_marked, prefix)}
    leftovers = [h for h in holders if h.pid in marked]
    if holders and len(leftovers) == len(holders):
        await ownership.clear_leftovers(prefix, task.config.stop_grace_period)
        project.services.events.emit("leftover_killed", project.name, task.name, port=rec.port,
                                     pids=[h.pid for h in leftovers])
        for _ in range(40):
            if not portscan.in_use(rec.port):
                return rec.port
            await asyncio.sleep(0.05)
    old = rec.port
    rec.port = portscan.free_port()
    project.services.events.emit("port_reassigned", project.name, task.name, old_port=old,
                       new_port=rec.port, held_by=[h.pid for h in holders])
    log.warning("%s/%s: port %d is held by pid(s) %s that are not this task's; using %d",
                project.name, task.name, old, [h.pid for h in holders] or "?", rec.port)
    return rec.port
