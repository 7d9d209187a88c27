"""Readiness a task reports itself, fed to supervision as probe results.

Two sources, both observed by the task's runner and kept in its record (so a daemon that
restarts, or was down at the moment, still knows): a line of output matching
``ready_log_line``, and ``READY=1`` on the task's ``NOTIFY_SOCKET`` (``ready = "notify"``).
Until one arrives the task is running but not healthy, so dependents wait; it has
``startup_timeout`` seconds from its start (0: no limit), after which the verdict is a failed
probe and the task is unhealthy (restarted per its policy). Once ready, its health probes, if
it has any (``health_url``, ``health_check``), take over as liveness checks.

Liveness from the task itself: with ``watchdog_sec``, a runner that saw no ``WATCHDOG=1`` for
that long records a miss, which arrives here as a failed probe (unhealthy at once). The last
``STATUS=`` text is shown by ``status`` and ``inspect``.

The verdicts take the path health probes take (``Health`` fields, the ``health_*`` events,
``Ev.UNHEALTHY`` through ``Project.feed``); nothing here changes a task's state otherwise.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import TYPE_CHECKING, Any

from taskmuxctl.paths import MAX_SOCKET_PATH
from taskmuxd.health import ProbeResult
from taskmuxd.notifyproto import clean_status
from taskmuxd.policy import Ev, Event, TaskState
from taskmuxd.projects.healthwatch import watch_health

if TYPE_CHECKING:
    from taskmuxd.projects.project import Project
    from taskmuxd.projects.task import TaskRuntime

FIELDS = ("ready_at", "ready_by", "ready_detail", "notify_status", "watchdog_missed_at",
          "watchdog_reason")
MAX_TEXT = 300  # characters kept of any text a runner reports


def take(project: Project, task: TaskRuntime, record: dict[str, Any], judge: bool) -> None:
    """The readiness facts of a runner's record (its report, or the file read on adoption).
    With ``judge``, a watchdog miss of the current run makes the task unhealthy (adoption
    judges it in ``after_launch``, once the task is back under watch)."""
    run_id = record.get("run_id")
    if run_id != task.record.run_id:
        return
    if task.reported.get("run_id") != run_id:
        task.reported = {"run_id": run_id}
    for key in FIELDS:
        value = record.get(key)
        if isinstance(value, str):
            value = clean_status(value[:MAX_TEXT]) if key == "notify_status" else value[:MAX_TEXT]
        elif value is not None and not isinstance(value, int | float):
            continue
        if value is not None:
            task.reported[key] = value
    if judge:
        task.reported["heard"] = True  # from the runner as it happened (not on adoption)
        judge_watchdog(project, task)
    project.touch()


def judge_watchdog(project: Project, task: TaskRuntime) -> None:
    rep = task.reported
    if rep.get("run_id") != task.record.run_id or rep.get("watchdog_missed_at") is None \
            or rep.get("judged") or task.state != TaskState.RUNNING:
        return
    rep["judged"] = True
    fail(project, task, ProbeResult(False, "watchdog", str(
        rep.get("watchdog_reason") or "the watchdog was not fed")))


def after_launch(project: Project, task: TaskRuntime, run_id: int) -> bool:
    """The task runs (launched, or adopted): whether its readiness is judged here (it has a
    readiness source) rather than by probes alone. A watchdog miss recorded while no daemon
    listened is judged now."""
    judge_watchdog(project, task)
    if task.state != TaskState.RUNNING:
        return True
    if not task.config.ready_source:
        return False
    task.health_task = project.s.spawn(watch(project, task, run_id),
                                       f"readiness {project.name}/{task.name}")
    return True


def fail(project: Project, task: TaskRuntime, result: ProbeResult) -> None:
    """A failed verdict that makes the task unhealthy at once (no retries: the task itself
    said, or its start-up took too long)."""
    h = task.health
    h.last = h.last_failure = result
    h.last_at = time.time()
    h.failures += 1
    project.s.events.emit("health_check_failed", project.name, task.name, attempt=h.failures,
                          method=result.method, reason=result.detail)
    if h.ok is not False:
        h.ok = False
        project.feed(task, Event(Ev.UNHEALTHY))


def is_ready(task: TaskRuntime, run_id: int) -> bool:
    return task.reported.get("run_id") == run_id and task.reported.get("ready_at") is not None


async def watch(project: Project, task: TaskRuntime, run_id: int) -> None:
    """Wait for the task to say it is ready (or for ``startup_timeout``), then let its probes
    judge liveness, if it has any."""
    cfg = task.config
    source = cfg.ready_source or "log"
    started = task.record.started_wall or time.time()

    def settled() -> bool:
        return task.record.run_id != run_id or task.state != TaskState.RUNNING \
            or is_ready(task, run_id)

    limit = cfg.startup_timeout
    left = started + limit - time.time() if limit > 0 else float("inf")
    await project.changed.wait_for(settled, max(left, 0.0))
    if task.record.run_id != run_id or task.state != TaskState.RUNNING:
        return
    h = task.health
    if not is_ready(task, run_id):
        what = "no line matched ready_log_line" if source == "log" else "no READY=1 came"
        fail(project, task, ProbeResult(False, source, f"not ready within startup_timeout "
                                        f"({limit:g}s): {what}"))
        project.touch()
        return
    if h.ok is None:
        h.ok = True
        h.last = ProbeResult(True, source, str(task.reported.get("ready_detail") or "ready"))
        h.last_at = time.time()
        if task.reported.get("heard"):  # an adopted task was announced by the last daemon
            project.s.events.emit("task_ready", project.name, task.name, by=source,
                                  detail=h.last.detail)
        project.touch()
    if cfg.health_url or cfg.health_check:
        await watch_health(project, task, run_id)


def socket_path(project: Project, task: TaskRuntime) -> str | None:
    """Where the task's NOTIFY_SOCKET lives: ``run/{task}.notify`` in the project's state
    folder, or, when that path is too long for a Unix socket, a short name under
    TASKMUX_HOME (None if even that is too long)."""
    path = os.path.join(project.files.run_dir, f"{task.name}.notify")
    if len(path.encode()) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(f"{project.name}/{task.name}".encode()).hexdigest()[:16]
    path = os.path.join(project.s.paths.home, "run", f"{digest}.notify")
    if len(path.encode()) > MAX_SOCKET_PATH:
        return None
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return path


def runner_spec(project: Project, task: TaskRuntime) -> dict[str, Any]:
    """What the runner needs to watch the task's readiness (keys of its spec)."""
    cfg = task.config
    return {"notify_socket": socket_path(project, task), "ready": cfg.ready,
            "ready_log_line": cfg.ready_log_line, "watchdog_sec": cfg.watchdog_sec}


def info(task: TaskRuntime) -> dict[str, Any]:
    """What ``status`` and ``inspect`` show of it."""
    rep = task.reported if task.reported.get("run_id") == task.record.run_id and task.live \
        else {}
    return {"notify_status": rep.get("notify_status"), "ready_by": rep.get("ready_by"),
            "ready_source": task.config.ready_source,
            "watchdog_sec": task.config.watchdog_sec}
