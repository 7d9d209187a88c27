"""Carrying out the supervisor's ``Probe`` actions: run one probe of the task's current run at
the time asked, and feed the result back as a ``ProbeResult``.

When to probe, and what a result means (fast first probes, the startup grace, consecutive
failures), is the machine's to decide (``taskmuxd.supervisor.verdict``).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from taskmuxd.healthprobes import probe
from taskmuxd.policy import TaskState
from taskmuxd.supervisor import messages as m
from taskmuxd.supervisor.verdict import FAST_PROBE, next_probe_in

if TYPE_CHECKING:
    from taskmuxd.projects.projectview import ProjectView
    from taskmuxd.projects.task import TaskRuntime

__all__ = ["FAST_PROBE", "cancel", "next_probe_in", "schedule"]


def schedule(project: ProjectView, task: TaskRuntime, at: float) -> None:
    """Probe the current run at ``at`` (monotonic seconds; the loop's clock)."""
    cancel(task)
    run_id = task.record.run_id
    task.probe_timer = asyncio.get_running_loop().call_at(
        at, lambda: _begin(project, task, run_id))


def cancel(task: TaskRuntime) -> None:
    if task.probe_timer is not None:
        task.probe_timer.cancel()
        task.probe_timer = None
    if task.health_task is not None:
        task.health_task.cancel()
        task.health_task = None


def _begin(project: ProjectView, task: TaskRuntime, run_id: int) -> None:
    task.probe_timer = None
    task.health_task = project.services.spawn(_probe_once(project, task, run_id),
                                              f"health {project.name}/{task.name}")


async def _probe_once(project: ProjectView, task: TaskRuntime, run_id: int) -> None:
    result = await probe(project.probe_spec(task))
    if task.record.run_id != run_id or task.state != TaskState.RUNNING:
        return
    task.health_task = None
    h = task.health
    h.last, h.last_at = result, time.time()
    if not result.ok:
        h.last_failure = result
    project.handle(m.ProbeResult(task.name, result.ok, result.detail, result.method))
