"""A restart that waits a backoff, granted to the runner waiting in the pane (``rungrant``).

When run N's exit comes and the machine schedules the restart S seconds later (BACKOFF), and
the task is one a grant may restart (``restartgrant.grantable``: a restart policy, no
dependency, no ``before_start`` or ``after_start`` hook), while its runner waits in the pane
for an order (``runrelaunch``), the daemon writes the grant of run N+1 (``always``: the exit is
known and restarts) and orders the runner to hold S seconds with it (``hold``). The runner
waits in place, then claims the grant and starts run N+1 at once: one report, which the
machine takes as the restart it scheduled (``restartgrant.take``).

The daemon never launches beside it. At its timer it waits a moment for the report
(``GRACE``), then the machine's Launch revokes first (``resolve``): the unlink succeeds (the
runner did not claim: the launch goes the usual way, its order meeting the runner still
waiting) or finds the grant gone (claimed: the report is waited for, ``CLAIM_WAIT``; a runner
that died after claiming is read from its record, and whatever it may have started is ended
before the launch). A stop or kill out of backoff revokes it too (``after_event``); a grant
claimed just before is a run the stop ends (``restartgrant.take``). A daemon killed during
the wait: its successor revokes an unclaimed grant, or adopts the run from the runner's
record (``adopt``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import TYPE_CHECKING

from taskmuxd import proctree, rungrant, runrelaunch
from taskmuxd.policy import TaskState
from taskmuxd.projects import ownership, restartgrant, taskstart
from taskmuxd.projects import state as st
from taskmuxd.supervisor import messages as m

if TYPE_CHECKING:
    from taskmuxd.projects.projectview import ProjectView
    from taskmuxd.projects.task import TaskRuntime

log = logging.getLogger("taskmuxd.project")

GRACE = 0.5  # seconds past the restart's time for the runner's report, before revoking
LAG_LIMIT = 0.25  # seconds of an exit report's way to the daemon the wait may count back
CLAIM_WAIT = 2.0  # seconds for the report of a runner found to have claimed its grant


def hold(project: ProjectView, task: TaskRuntime, decided: float | None = None) -> None:
    """After each event: a task now in backoff, whose runner waits in the pane, gets its
    restart granted with the wait (once per scheduled restart). ``decided``: the moment
    (``time.monotonic``) the machine scheduled the restart, when it did in this event."""
    path, at = task.waiting_runner, task.record.policy.restart_at
    if path is None or task.state != TaskState.BACKOFF or at is None \
            or task.runner_held_for == at or task.delayed_grant is not None:
        return
    left = at - time.monotonic()
    if left <= 0 or left + runrelaunch.WAIT_SECONDS > runrelaunch.HOLD_LIMIT:
        return
    text = restartgrant.offer_delayed(project, task)
    if text is None:
        return
    task.runner_held_for = at  # ``taskstart.release_waiting`` sends no hold of its own
    task.delayed_grant = task.record.run_id + 1
    project.services.spawn(_grant(project, task, path, text, at,
                                  at - lag(task.record.exited_wall, decided)),
                           f"delayed grant {project.name}/{task.name}")


def lag(exited: float | None, decided: float | None) -> float:
    """The seconds from the run's exit, as its runner recorded it (``exited``, wall clock),
    to the machine's decision (``decided``, monotonic): the way of its report to the daemon,
    which the wait need not add to itself (at most ``LAG_LIMIT``; 0 when unknown). The
    decision is put on the wall clock by reading that first: an error makes the lag shorter,
    never the wait."""
    if exited is None or decided is None:
        return 0.0
    return min(max(time.time() - (time.monotonic() - decided) - exited, 0.0), LAG_LIMIT)


async def _grant(project: ProjectView, task: TaskRuntime, path: str, text: str,
                 at: float, until: float) -> None:
    """Write the grant, then order the hold: until ``until`` (monotonic: run N's exit + the
    wait), no later than the restart's time ``at``."""
    granted = task.delayed_grant
    try:
        await st.write_file(restartgrant.path(project, task), text)
    except OSError as exc:  # a full disk: no grant; the runner holds for the usual order
        log.warning("%s/%s: cannot grant the restart ahead (%s); it comes by order",
                    project.name, task.name, exc)
        if task.delayed_grant == granted:
            task.delayed_grant = None
            if task.state == TaskState.BACKOFF:  # held past the restart, for its order
                await taskstart._order(path, {"hold": max(at - time.monotonic(), 0.0)
                                              + runrelaunch.WAIT_SECONDS})
        return
    if task.delayed_grant != granted or task.state != TaskState.BACKOFF:
        await _revoke(project, task)  # something else happened meanwhile: never mind
        return
    # The runner claims at ``until``: on its clock (the same), else counted from the order.
    told = await taskstart._order(path, {"hold": max(until - time.monotonic(), 0.0),
                                         "until": until, "grant": True})
    # No runner took it: take it back.
    if told is False and task.delayed_grant == granted and await _revoke(project, task):
        task.delayed_grant = None


async def _revoke(project: ProjectView, task: TaskRuntime) -> bool:
    path = restartgrant.path(project, task)
    try:
        return await asyncio.to_thread(rungrant.revoke, path)
    except OSError as exc:
        log.error("%s/%s: cannot revoke a restart grant: %s", project.name, task.name, exc)
        return False


def after_event(project: ProjectView, task: TaskRuntime) -> None:
    """After each event: a task out of backoff other than by its restart (a stop, a kill)
    takes its delayed grant back; one claimed already is a run the stop ends."""
    if task.delayed_grant is None or task.state in (TaskState.BACKOFF, TaskState.STARTING):
        return
    task.delayed_grant = None
    project.services.spawn(_revoke(project, task), f"revoke {project.name}/{task.name}")


async def withdraw(project: ProjectView, tasks: list[TaskRuntime]) -> None:
    """Tasks changed in or removed from the configuration: their delayed grants (of the old
    command) are taken back; one claimed already is a run not wanted (``restartgrant``)."""
    out = [t for t in tasks if t.delayed_grant is not None]
    for task in out:
        task.delayed_grant = None
    await asyncio.gather(*(_revoke(project, t) for t in out))


def defer(project: ProjectView, task: TaskRuntime) -> bool:
    """The restart's timer: with a delayed grant out, the runner's report is given ``GRACE``
    to come (it claims once the same time is over); then the machine's Launch revokes first.
    Whether the timer was taken over."""
    if task.delayed_grant is None or task.state != TaskState.BACKOFF:
        return False
    project.services.spawn(_deferred(project, task), f"restart {project.name}/{task.name}")
    return True


async def _deferred(project: ProjectView, task: TaskRuntime) -> None:
    granted = task.delayed_grant
    await project.changed.wait_for(lambda: task.delayed_grant != granted
                                   or task.state != TaskState.BACKOFF, GRACE)
    if task.state == TaskState.BACKOFF and task.timer is None:
        project.handle(m.TimerFired(task.name))


def launching(project: ProjectView, task: TaskRuntime) -> bool:
    """The machine's Launch while a delayed grant is out: revoke first (``resolve``), and
    launch only if it was not claimed. Whether the launch was taken over."""
    if task.delayed_grant is None:
        return False
    project.services.spawn(resolve(project, task, task.delayed_grant),
                           f"launch {project.name}/{task.name}")
    return True


async def resolve(project: ProjectView, task: TaskRuntime, granted: int) -> None:
    rec = task.record
    if not await _revoke(project, task):  # claimed: the runner's report is on its way
        await project.changed.wait_for(lambda: task.delayed_grant != granted, CLAIM_WAIT)
        if task.delayed_grant != granted:
            return  # reported (``restartgrant.take``), or something else took over
        runner = st.read_runner_record(project.files, task.name)
        if runner is not None and runner.run_id == granted and runner.status == "running" \
                and ownership.runner_record_alive(runner) \
                and restartgrant.take(project, task, runner):
            return  # its report was lost: its record says the same
        log.warning("%s/%s: no report of the run granted with a delay; ending what it may "
                    "have started, then launching", project.name, task.name)
        rid = rec.runner_id()
        if rid is not None and proctree.is_alive(rid):
            with contextlib.suppress(OSError):
                os.kill(rid.pid, signal.SIGKILL)
        if runner is not None and runner.run_id > rec.run_id:
            rec.run_id = runner.run_id  # the next launch is a later run than the runner's
        rec.clean = False  # the launch ends whatever of the task remains, first
        task.waiting_runner = None
    if task.delayed_grant != granted:
        return
    task.delayed_grant = None
    if task.state != TaskState.STARTING:
        project.handle(m.LaunchSettled(task.name))
        return
    run_id, clean = taskstart.begin(project, task)
    await taskstart.launch(project, task, run_id, clean)


async def adopt(project: ProjectView, task: TaskRuntime) -> None:
    """A new daemon finds the task in backoff: a grant still there is revoked (its runner
    cannot claim it any more); one claimed is the run the runner's record names, taken as
    the restart once the machine has its timer, or, its runner gone, ended at the launch."""
    if task.state != TaskState.BACKOFF or await _revoke(project, task):
        return
    rec = task.record
    runner = st.read_runner_record(project.files, task.name)
    if runner is None:
        return
    alive = ownership.runner_record_alive(runner)
    if runner.run_id == rec.run_id + 1 and runner.after_run == rec.run_id:
        if alive:  # claimed: its report (again, to this daemon) takes it
            task.delayed_grant = runner.run_id
            if runner.status == "running":
                project.services.spawn(_take_later(project, task, runner.run_id),
                                       f"adopt {project.name}/{task.name}")
        else:
            rec.run_id, rec.clean = runner.run_id, False
    elif runner.run_id == rec.run_id and alive:
        task.delayed_grant = rec.run_id + 1  # a claim may be on its way: the timer resolves


async def _take_later(project: ProjectView, task: TaskRuntime, run_id: int) -> None:
    """Once the adoption told the machine of the task (its timer set): take the granted
    run its runner's record names."""
    await asyncio.sleep(0)
    runner = st.read_runner_record(project.files, task.name)
    if task.delayed_grant == run_id and runner is not None and runner.run_id == run_id:
        restartgrant.take(project, task, runner)
