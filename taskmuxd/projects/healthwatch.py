"""Probing a running task on its schedule and feeding the verdict to its state machine.

Probes of every kind run every ``health_interval`` (every half second until the task is first
healthy, so that dependents are not kept waiting); a failure counts only after
``health_grace``, and only ``health_retries`` consecutive failures make the task unhealthy.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from taskmuxd.health import probe
from taskmuxd.policy import Ev, Event, TaskState

if TYPE_CHECKING:
    from taskmuxd.projects.project import Project
    from taskmuxd.projects.task import TaskRuntime

FAST_PROBE = 0.5  # seconds between probes until a task is first healthy


async def watch_health(project: Project, task: TaskRuntime, run_id: int) -> None:
    started = time.monotonic()
    h = task.health
    while task.record.run_id == run_id and task.state == TaskState.RUNNING:
        result = await probe(project.probe_spec(task))
        if task.record.run_id != run_id or task.state != TaskState.RUNNING:
            return
        h.last, h.last_at = result, time.time()
        cfg = task.config
        if result.ok:
            if h.ok is False:
                project.s.events.emit("health_recovered", project.name, task.name,
                                   method=result.method)
            h.ok, h.failures = True, 0
        else:
            h.last_failure = result
            in_grace = time.monotonic() - started < cfg.health_grace
            if not (in_grace and h.ok is None):
                h.failures += 1
                project.s.events.emit("health_check_failed", project.name, task.name,
                                   attempt=h.failures, method=result.method,
                                   reason=result.detail)
                if h.failures >= cfg.health_retries and h.ok is not False:
                    h.ok = False
                    project.feed(task, Event(Ev.UNHEALTHY))
        project.touch()
        await asyncio.sleep(next_probe_in(h.ok, cfg.health_interval))


def next_probe_in(ok: bool | None, interval: float) -> float:
    """Seconds to the next probe, whatever its kind (HTTP, command or the port): every
    ``FAST_PROBE`` until the task is first judged, then every ``health_interval``."""
    return min(FAST_PROBE, interval) if ok is None else interval
