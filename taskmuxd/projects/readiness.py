"""Readiness a task reports itself, fed to supervision as probe results.

Two sources, both observed by the task's runner and kept in its record (so a daemon that
restarts, or was down at the moment, still knows): a line of output matching
``ready_log_line``, and ``READY=1`` on the task's ``NOTIFY_SOCKET`` (``ready = "notify"``).
Until one arrives the task is running but not healthy, so dependents wait; it has
``startup_timeout`` seconds from its start (0: no limit), after which the verdict is a failed
probe and the task is unhealthy (restarted per its policy).

Liveness from the task itself: with ``watchdog_sec``, a runner that saw no ``WATCHDOG=1`` for
that long records a miss, which arrives here as a failed probe (unhealthy at once). The last
``STATUS=`` text is shown by ``status`` and ``inspect``.

Such a task is judged on its own word (the supervisor's HealthSpec kind ``"self"``: nothing
is polled, one failed verdict is enough), so ``health_url`` and ``health_check`` are refused
alongside these keys. The verdicts enter the supervisor as ``ProbeResult`` events, the way a
probe's do (``settle`` runs after every event the project handles, so the order in which a
launch, an adoption and a runner's report arrive does not matter); nothing here changes a
task's state otherwise.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import TYPE_CHECKING, Any

from taskmuxctl.core.paths import MAX_SOCKET_PATH
from taskmuxd.healthprobes import ProbeResult, ResultMethod
from taskmuxd.notifyproto import clean_status
from taskmuxd.policy import TaskState
from taskmuxd.supervisor import messages as m

if TYPE_CHECKING:
    from taskmuxctl.core.projectconfig import TaskConfig
    from taskmuxd.projects.projectview import ProjectView
    from taskmuxd.projects.task import TaskRuntime
    from taskmuxd.runrecord import RunRecord

FIELDS = ("ready_at", "ready_by", "ready_detail", "notify_status", "watchdog_missed_at",
          "watchdog_reason")
MAX_TEXT = 300  # characters kept of any text a runner reports


def self_judged(cfg: TaskConfig) -> bool:
    """Whether the task's health is its own word (HealthSpec kind "self"): nothing polled."""
    return bool(cfg.ready_source or cfg.watchdog_sec)


def take(task: TaskRuntime, record: RunRecord, live: bool) -> None:
    """The readiness facts of a runner's record: its report as it happened (``live``), or
    the record read when a run is adopted. Fed to the machine by ``settle``."""
    run_id = record.run_id
    if run_id != task.record.run_id:
        return
    if task.reported.get("run_id") != run_id:
        _cancel_timer(task)
        task.reported = {"run_id": run_id}
    for key in FIELDS:
        value = getattr(record, key)
        if isinstance(value, str):
            value = clean_status(value[:MAX_TEXT]) if key == "notify_status" else value[:MAX_TEXT]
        elif value is not None and not isinstance(value, int | float):
            continue
        if value is not None:
            task.reported[key] = value
    if live:
        task.reported["heard"] = True  # as it happened (not from an adopted run's record)


def settle(project: ProjectView, task: TaskRuntime) -> None:
    """Feed what the runner reported to the supervisor, as probe results, whenever the
    machine judges the current run: ready (once per run), a watchdog miss (once per run),
    running for a task with only a watchdog; and keep the startup_timeout armed meanwhile."""
    cfg = task.config
    if not self_judged(cfg):
        return
    view = project.machine.tasks.get(task.name)
    if view is None or task.state != TaskState.RUNNING:
        _cancel_timer(task)
        return
    run_id = task.record.run_id
    if task.reported.get("run_id") != run_id:
        _cancel_timer(task)
        task.reported = {"run_id": run_id}
    rep = task.reported
    if rep.get("watchdog_missed_at") is not None and not rep.get("fed_missed"):
        rep["fed_missed"] = True
        _feed(project, task, False, "watchdog",
              str(rep.get("watchdog_reason") or "the watchdog was not fed"))
        return
    if not cfg.ready_source:
        if view.health.ok is None:  # a watchdog alone: running is ready, the pings keep it
            _feed(project, task, True, "process", f"process {task.record.pid} runs")
        return
    source = cfg.ready_source
    if rep.get("ready_at") is not None:
        if view.health.ok is None or not rep.get("fed_ready"):
            _cancel_timer(task)
            rep["fed_ready"] = True
            detail = str(rep.get("ready_detail") or "ready")
            if rep.get("heard") and not rep.get("announced"):
                rep["announced"] = True  # an adopted run was announced by the last daemon
                project.services.events.emit("task_ready", project.name, task.name, by=source,
                                             detail=detail)
            _feed(project, task, True, source, detail)
        return
    limit = cfg.startup_timeout
    if view.health.ok is None and limit > 0 and rep.get("timer") is None:
        started = task.record.started_wall or time.time()
        delay = max(started + limit - time.time(), 0.0)
        rep["timer"] = asyncio.get_running_loop().call_later(
            delay, _startup_expired, project, task, run_id)


def _startup_expired(project: ProjectView, task: TaskRuntime, run_id: int) -> None:
    rep = task.reported
    rep.pop("timer", None)
    if task.record.run_id != run_id or task.state != TaskState.RUNNING \
            or rep.get("ready_at") is not None:
        return
    source = task.config.ready_source or "log"
    what = "no line matched ready_log_line" if source == "log" else "no READY=1 came"
    _feed(project, task, False, source, f"not ready within startup_timeout "
          f"({task.config.startup_timeout:g}s): {what}")


def _cancel_timer(task: TaskRuntime) -> None:
    timer = task.reported.pop("timer", None)
    if isinstance(timer, asyncio.TimerHandle):
        timer.cancel()


def _feed(project: ProjectView, task: TaskRuntime, ok: bool, method: ResultMethod,
          detail: str) -> None:
    """One verdict, the way a probe's enters: the task's Health for status, then the
    machine (HealthSpec kind "self", one failure is enough: the task said so itself)."""
    result = ProbeResult(ok, method, detail)
    h = task.health
    h.last, h.last_at = result, time.time()
    if not ok:
        h.last_failure = result
    project.handle(m.ProbeResult(task.name, ok, detail, method))


def socket_path(project: ProjectView, task: TaskRuntime) -> str | None:
    """Where the task's NOTIFY_SOCKET lives: ``run/{task}.notify`` in the project's state
    folder, or, when that path is too long for a Unix socket, a short name under
    TASKMUX_HOME (None if even that is too long)."""
    path = os.path.join(project.files.run_dir, f"{task.name}.notify")
    if len(path.encode()) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(f"{project.name}/{task.name}".encode()).hexdigest()[:16]
    path = os.path.join(project.services.paths.home, "run", f"{digest}.notify")
    if len(path.encode()) > MAX_SOCKET_PATH:
        return None
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return path


def runner_spec(project: ProjectView, task: TaskRuntime) -> dict[str, Any]:
    """What the runner needs to watch the task's readiness (keys of its spec)."""
    cfg = task.config
    return {"notify_socket": socket_path(project, task), "ready": cfg.ready,
            "ready_log_line": cfg.ready_log_line, "watchdog_sec": cfg.watchdog_sec}

