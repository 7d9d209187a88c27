"""One task of a supervised project at run time: its policy state, its process, its health."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from taskmuxctl.core.projectconfig import TaskConfig
from taskmuxctl.core.rpctypes import LastExit, ReadinessInfo, TaskInfo
from taskmuxd.healthprobes import ProbeResult
from taskmuxd.policy import TaskState
from taskmuxd.proctree import Snapshot
from taskmuxd.projects import ownership
from taskmuxd.projects.state import TaskRecord
from taskmuxd.runrecord import RunRecord


@dataclass
class Health:
    ok: bool | None = None  # None: not judged yet
    failures: int = 0  # consecutive failed probes (outside the grace period)
    last: ProbeResult | None = None
    last_at: float | None = None  # wall clock
    last_failure: ProbeResult | None = None

    def unjudge(self) -> None:
        """A new run, or none: no verdict yet (the last failure stays, for diagnosis)."""
        self.ok = None
        self.failures = 0


class TaskRuntime:
    def __init__(self, name: str, config: TaskConfig, record: TaskRecord) -> None:
        self.name = name
        self.config = config
        self.record = record
        self.health = Health()
        self.timer: asyncio.TimerHandle | None = None
        self.health_task: asyncio.Task[None] | None = None  # a probe in flight
        self.probe_timer: asyncio.TimerHandle | None = None  # the next probe
        self.exit_waiters: list[asyncio.Future[None]] = []
        self.last_launch_error: str | None = None
        self.last_launch_code: int | None = None
        # What the runner saw of the task's own readiness (see ``readiness``), per run.
        self.reported: dict[str, Any] = {}
        # The socket of the last run's runner while it offers a relaunch in place (see
        # ``launching``); None otherwise.
        self.waiting_runner: str | None = None
        self.runner_held_for: float | None = None  # the restart it was asked to hold for
        # While its runner waits warm (``warmrunner``): when the daemon forgets it, and when
        # the wait began (monotonic; a lowered setting counts from there).
        self.warm_until: float | None = None
        self.warm_since: float | None = None
        self.exit_by_stop = False  # the last exit reported was a stop's
        # The last exit reported was the task's own (its first process ended by itself), not
        # the pane's going or an end nobody recorded: a restart it waits for is its policy's,
        # which a restore after tmux went away leaves to come at its time.
        self.exit_own = False
        # A run started on a restart granted ahead (``restartgrant``), reported, until the
        # machine's Launch takes it.
        self.granted_run: RunRecord | None = None
        # The run granted with a delay (``delayedgrant``) while the grant may be out.
        self.delayed_grant: int | None = None

    @property
    def state(self) -> TaskState:
        return self.record.policy.state

    @property
    def live(self) -> bool:
        return self.state in (TaskState.STARTING, TaskState.RUNNING, TaskState.STOPPING)

    @property
    def completed(self) -> bool:
        """A one-shot whose last run ended with one of its success codes."""
        pol = self.record.policy
        return (self.config.oneshot and self.state == TaskState.EXITED
                and pol.last_exit_signal is None
                and (pol.last_exit_code or 0) in self.config.success_exit_codes)

    @property
    def ready(self) -> bool:
        """What a dependent waits for: running, and healthy when it has health checks."""
        if self.state != TaskState.RUNNING:
            return False
        return bool(self.health.ok) if self.config.has_health_check else True

    def wait_exit(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not self.live:
            fut.set_result(None)
        else:
            self.exit_waiters.append(fut)
        return fut

    def wake_exit_waiters(self) -> None:
        for fut in self.exit_waiters:
            if not fut.done():
                fut.set_result(None)
        self.exit_waiters.clear()

    def processes(self, snap: Snapshot) -> tuple[int | None, int]:
        """The task's main program (not a ``sh -c`` that only wraps it) and how many processes
        its tree holds now (the runner not counted; descendants it adopted are)."""
        rec = self.record
        if not self.live or rec.pid is None:
            return None, 0
        main, _ = snap.tree(rec.pid)
        if rec.runner_pid is not None and snap.alive(rec.runner_pid):
            count = snap.tree(rec.runner_pid)[1] - 1
        else:
            count = snap.tree(rec.pid)[1]
        return main, count

    def readiness_info(self) -> ReadinessInfo:
        """What ``status`` and ``inspect`` show of the task's own readiness (``readiness``
        keeps what the runner reported in ``reported``): the current run's only."""
        rep = self.reported if self.reported.get("run_id") == self.record.run_id and self.live \
            else {}
        return {"notify_status": rep.get("notify_status"), "ready_by": rep.get("ready_by"),
                "ready_source": self.config.ready_source,
                "watchdog_sec": self.config.watchdog_sec}

    def info(self, url: str | None, snap: Snapshot | None = None) -> TaskInfo:
        """What ``status`` shows of the task (the one place that builds it): for a task
        not supervised yet, make it with a fresh ``TaskRecord`` (``idle_info``)."""
        rec, pol = self.record, self.record.policy
        running = self.state == TaskState.RUNNING
        main_pid, procs = self.processes(snap or ownership.snapshot()) if self.live \
            else (None, 0)
        last_exit: LastExit | None = None
        if pol.last_exit_code is not None or pol.last_exit_signal is not None:
            last_exit = {"code": pol.last_exit_code, "signal": pol.last_exit_signal,
                         "at": rec.exited_wall}
        h = self.health
        return {
            "name": self.name,
            "state": self.state.value,
            "pid": rec.pid if self.live else None,
            "pgid": rec.pgid if self.live else None,
            "main_pid": main_pid,
            "processes": procs,
            "port": rec.port,
            "host": self.config.host,
            "url": url,
            "restarts": pol.restarts,
            "restart_attempt": pol.attempt,
            "last_exit": last_exit,
            "started_at": rec.started_wall if running else None,
            "uptime": round(time.time() - rec.started_wall, 3)
            if running and rec.started_wall else None,
            "next_restart_in": round(max(pol.restart_at - time.monotonic(), 0.0), 3)
            if self.state in (TaskState.BACKOFF, TaskState.FATAL) and pol.restart_at else None,
            "warm_runner_for": round(max(self.warm_until - time.monotonic(), 0.0), 3)
            if self.warm_until is not None else None,
            "healthy": h.ok,
            "health_method": h.last.method if h.last else None,
            "last_health_failure": h.last_failure.detail if h.last_failure else None,
            "manually_stopped": pol.manual_stop,
            "auto_start": self.config.auto_start,
            "depends_on": list(self.config.depends_on),
            "command": self.config.command,
            "window": rec.window_id,
            "restart_policy": self.config.restart_policy,
            "type": self.config.type,
            "completed": self.completed,
            **self.readiness_info(),
        }


def idle_info(name: str, config: TaskConfig, url: str | None) -> TaskInfo:
    """``status`` of a task whose project is not supervised yet: stopped, nothing known but
    its configuration; the same keys as a supervised task's."""
    return TaskRuntime(name, config, TaskRecord()).info(url)
