"""The daemon's side of a restart decided in advance (``taskmuxd.rungrant``).

At the launch of run N the daemon grants run N+1 when its policy would certainly restart the
task with no wait on the next exit: ``restart_policy`` restarts, ``restart_delay = 0``, this
run is the first of its streak (``attempt`` 0, or ``restart_backoff`` 0: later restarts back
off as usual, so a crash loop is never run at full speed by grants), within
``max_restarts``, not stopped by the user, with no dependency to wait for and no
``before_start`` or ``after_start`` hook to run. The granted run is run N's spec with the
next run id and marker: the same command, environment and port. The grant is
revoked (the file unlinked) before any signal of a stop, kill or restart, so a run ended by
the daemon never restarts on its own.

When the runner reports a granted run (``after_run`` in its record), the exit of run N goes
through the machine as any exit does (the restart is counted, its events written); the
machine's Launch that follows takes the run already there instead of starting one. If the
machine decides otherwise (a stop that came after the runner claimed the grant: the unlink
found the file gone), run N+1 is still taken as the task's run, so that it is owned, and
ended: the stop's ladder goes on with it, or its runner is told to finish.

A restart that waits a backoff is granted at the exit instead (``delayedgrant``, on the same
``grantable`` conditions): its report comes once the wait is over, run N's exit already
heard, and is taken as the machine's scheduled restart (``_delayed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import time
from typing import TYPE_CHECKING

from taskmuxd import proctree, rungrant
from taskmuxd.policy import Cause, TaskState
from taskmuxd.projects import ownership
from taskmuxd.runrecord import RunRecord
from taskmuxd.supervisor import messages as m
from taskmuxd.supervisor.machine import LADDER

if TYPE_CHECKING:
    from collections.abc import Iterable

    from taskmuxd.projects.projectview import ProjectView
    from taskmuxd.projects.task import TaskRuntime

log = logging.getLogger("taskmuxd.project")

LIST_FROM = 4  # revoking more grants than this at once: list the folder first
LAG_LIMIT = 0.3  # seconds a delayed grant's wait may count back (``delayedgrant``), + margin


def path(project: ProjectView, task: TaskRuntime) -> str:
    return os.path.join(project.files.run_dir, task.name + rungrant.SUFFIX)


def grantable(task: TaskRuntime) -> bool:
    """Whether a restart of the task may be granted to its runner at all: a restart policy,
    and no dependency to wait for or hook to run (the daemon's launch does those)."""
    cfg = task.config
    return cfg.restart_policy in ("always", "on-failure") and not task.record.policy.manual_stop \
        and not (cfg.depends_on or cfg.hooks.before_start or cfg.hooks.after_start)


def offer(project: ProjectView, task: TaskRuntime, run_id: int) -> str | None:
    """The grant of run ``run_id + 1`` to write with run ``run_id``'s spec, or None."""
    cfg, pol = task.config, task.record.policy
    if cfg.restart_delay != 0 or not grantable(task) or pol.attempt >= cfg.max_restarts:
        return None
    if pol.attempt and cfg.restart_backoff != 0:
        return None
    marker = ownership.run_marker(project.services.paths.home, project.name, task.name,
                                  run_id + 1)
    always = cfg.restart_policy == "always" and not cfg.oneshot
    return rungrant.text(run_id + 1, marker, always, list(cfg.success_exit_codes))


def offer_delayed(project: ProjectView, task: TaskRuntime) -> str | None:
    """In backoff, the restart scheduled: the grant of the next run to write now
    (``delayedgrant``), for any status (the exit is known, and restarts), or None."""
    if task.state != TaskState.BACKOFF or not grantable(task):
        return None
    run_id = task.record.run_id + 1
    marker = ownership.run_marker(project.services.paths.home, project.name, task.name, run_id)
    return rungrant.text(run_id, marker, True, [])


async def revoke(project: ProjectView, tasks: Iterable[TaskRuntime]) -> None:
    """Take back any grant of ``tasks`` (off the loop, one thread hop for them all), before
    they are signalled: every one is looked at, since a grant outlives the daemon that wrote
    it. A grant found gone may have been claimed: its run is then on its way, and ``take``
    hands it to the stop."""
    paths = [path(project, t) for t in tasks]
    folder = project.files.run_dir

    def work() -> None:
        # Many at once (a stop): one listing, and an unlink only of the grants in it (a
        # thread's every system call waits for the loop's lock again). A grant missing from
        # the listing was claimed, or never written, as an unlink that finds none says.
        there: set[str] | None = None
        if len(paths) > LIST_FROM:
            with contextlib.suppress(FileNotFoundError):
                there = set(os.listdir(folder))
            there = there if there is not None else set()
        for p in paths:
            if there is None or os.path.basename(p) in there:
                rungrant.revoke(p)

    try:
        await asyncio.to_thread(work)
    except OSError as exc:
        log.error("cannot revoke restart grants of %s: %s", project.name, exc)


def take(project: ProjectView, task: TaskRuntime, record: RunRecord) -> bool:
    """A runner reports run N+1 started on its grant: run N's exit goes through the machine,
    whose Launch takes this run. Whether ``record`` was such a report."""
    rec = task.record
    if record.after_run is None or record.after_run != rec.run_id \
            or record.run_id != rec.run_id + 1:
        return False
    if task.delayed_grant == record.run_id:  # granted with the wait: the exit was heard
        _delayed(project, task, record)
        return True
    if not task.live:  # nothing of the task is wanted now
        _unwanted(project, task, record)
        return True
    if task.state == TaskState.STOPPING and task.record.policy.cause != Cause.USER_RESTART:
        _stopping(project, task, record)  # stopped after the runner claimed the grant
        return True
    ended = RunRecord(project=record.project, task=record.task, run_id=rec.run_id,
                      status="exited", exit_code=record.after_code,
                      exit_signal=record.after_signal, exited_at=record.after_at or time.time(),
                      tree_clean=True, ended_by="exit")
    task.granted_run = record
    project.runner_exited(task.name, ended)
    if _waiting(task) and task.state == TaskState.BACKOFF \
            and (task.record.policy.restart_at or 0.0) <= time.monotonic():
        if task.timer is not None:  # due now: no need to wait for the loop's timer
            task.timer.cancel()
            task.timer = None
        project.handle(m.TimerFired(task.name))
    if not _waiting(task):  # taken by the machine's Launch (``launched``)
        project.runner_started(task.name, record)
        project.handle(m.LaunchSettled(task.name))
        return True
    task.granted_run = None
    _unwanted(project, task, record)
    return True


def _delayed(project: ProjectView, task: TaskRuntime, record: RunRecord) -> None:
    """Run N+1 started on a delayed grant (``delayedgrant``): run N's exit went through the
    machine already; in backoff, the timer is due (the runner waited it out), and the
    machine's Launch takes the run; in the launch that revoked too late, it is that launch's
    run; otherwise it is not wanted."""
    task.delayed_grant = None
    task.waiting_runner = None  # it waits no more: it runs run N+1
    if task.state == TaskState.BACKOFF:
        task.granted_run = record
        view, at = project.machine.tasks.get(task.name), task.record.policy.restart_at
        now = time.monotonic()
        if view is not None and at is not None and now < at <= now + LAG_LIMIT:
            # The runner counted the wait from the run's exit, the machine from the report
            # (``delayedgrant``): the restart is due.
            view.state = dataclasses.replace(view.state, restart_at=now)
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        project.handle(m.TimerFired(task.name))
        if _waiting(task):
            task.granted_run = None
            _unwanted(project, task, record)
            return
    elif task.state == TaskState.STARTING:
        task.granted_run = record
        launched(task)
    else:
        _unwanted(project, task, record)
        return
    project.runner_started(task.name, record)
    project.handle(m.LaunchSettled(task.name))


def _waiting(task: TaskRuntime) -> bool:
    return task.granted_run is not None


def launched(task: TaskRuntime) -> bool:
    """The machine asks for a launch: when a granted run waits, it is that run (True)."""
    got = task.granted_run
    if got is None or got.run_id != task.record.run_id + 1:
        return False
    task.granted_run = None
    rec = task.record
    rec.run_id = got.run_id
    rec.pid = rec.pgid = rec.pid_start = rec.runner_pid = rec.runner_start = None
    rec.clean = False
    return True


def _stopping(project: ProjectView, task: TaskRuntime, record: RunRecord) -> None:
    """Run N+1 came while run N was being stopped: it is the run the stop ends now (the
    ladder's rung taken so far is sent to it too)."""
    rec = task.record
    rec.run_id = record.run_id
    project.take_runner(task, record)
    rec.clean = False
    project.save_task(task)
    rung = project.machine.tasks[task.name].rung
    tid = rec.task_id()  # the group, only while its leader is provably the new run's
    if rung is not None and rung >= 0 and tid is not None \
            and rec.pgid is not None and proctree.is_alive(tid):
        with contextlib.suppress(ProcessLookupError):  # past the ladder (a kill): SIGKILL
            os.killpg(rec.pgid, getattr(signal, LADDER[min(rung, len(LADDER) - 1)]))


def _unwanted(project: ProjectView, task: TaskRuntime, record: RunRecord) -> None:
    """The machine does not want the granted run: own it, then end it (its runner stops the
    whole tree with the task's ladder and records the exit)."""
    rec = task.record
    rec.run_id = record.run_id
    project.take_runner(task, record)
    rec.clean = False  # the next launch ends whatever of it may remain, first
    log.info("%s/%s: run %d was started on a grant taken back: ending it", project.name,
             task.name, record.run_id)
    rid = rec.runner_id()
    if rid is not None and proctree.is_alive(rid):
        with contextlib.suppress(OSError):
            os.kill(rid.pid, signal.SIGTERM)
    project.save_task(task)
