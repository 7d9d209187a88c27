"""Ending a task's process: the signal ladder of a stop, a kill, and an exit nobody reported.

A stop sends SIGINT, then SIGTERM, each followed by ``stop_grace_period`` seconds of waiting
for the runner's exit report, then SIGKILL to the whole process group; the runner, the tree's
subreaper, ends whatever left the group. A kill is SIGKILL and the window closed at once. A
group is signalled only while its leader is provably the task's process; when the runner is
gone too, the daemon ends the run's marked processes itself. When no report comes, the exit
is recorded from the runner's file, or as a SIGKILL, so the state machine never waits forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import TYPE_CHECKING

from taskmuxd import proctree
from taskmuxd.projects import ownership
from taskmuxd.projects import state as st
from taskmuxd.projects.launching import LAUNCH_TIMEOUT

if TYPE_CHECKING:
    from taskmuxd.projects.project import Project
    from taskmuxd.projects.task import TaskRuntime
    from taskmuxd.tmux import Tmux

log = logging.getLogger("taskmuxd.project")

KILL_WAIT = 5.0  # seconds to wait for the exit report after SIGKILL


async def wait_run_exit(task: TaskRuntime, run_id: int, timeout: float) -> bool:
    """Whether run ``run_id`` of the task has ended, waiting up to ``timeout`` seconds."""
    if task.record.run_id != run_id or not task.live:
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task.wait_exit()), timeout)
    return task.record.run_id != run_id or not task.live


def signal_group(task: TaskRuntime, sig: int) -> bool:
    """Signal the task's process group, but only while the group's leader is provably the
    task's first process (a group id cannot be reused while its leader lives). False when it
    is gone: what is left of the tree is the runner's to end (it is the tree's subreaper)."""
    rec = task.record
    tid = rec.task_id()
    if rec.pgid is None or tid is None or not proctree.is_alive(tid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(rec.pgid, sig)
    return True


def runner_alive(task: TaskRuntime) -> bool:
    rid = task.record.runner_id()
    return rid is not None and proctree.is_alive(rid)


async def written_ahead(project: Project, task: TaskRuntime) -> None:
    """The record of what the user asked (a stop or a kill: ``manual_stop``) on disk before
    any signal: a daemon killed after the task's exit finds the exit was asked for, rather
    than taking it for a crash or a loss. State writes are off the loop (``statewriter``):
    hand over what is pending now and wait for it."""
    project.flush()
    try:
        await st.task_durable(project.files, task.name)
    except OSError as exc:  # a full disk: the stop goes on all the same
        log.error("cannot record the stop of %s/%s: %s", project.name, task.name, exc)


async def stop_process(project: Project, task: TaskRuntime, run_id: int) -> None:
    rec = task.record
    await written_ahead(project, task)
    if rec.pgid is None:  # still starting: let the runner report the process first
        await project.changed.wait_for(lambda: rec.pgid is not None or rec.run_id != run_id,
                                       LAUNCH_TIMEOUT)
    grace = task.config.stop_grace_period
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, grace),
                      (signal.SIGKILL, KILL_WAIT)):
        if rec.run_id != run_id or not task.live:
            return
        if signal_group(task, sig):
            log.info("%s/%s: sent %s to process group %s", project.name, task.name,
                     signal.Signals(sig).name, rec.pgid)
        elif not runner_alive(task):
            await end_orphans(project, task, run_id)
            break
        if await wait_run_exit(task, run_id, wait):
            return
    exit_unreported(project, task, run_id, signal.SIGKILL)


async def end_orphans(project: Project, task: TaskRuntime, run_id: int) -> None:
    """The runner is gone: end whatever still carries this run's marker, ourselves."""
    marker = ownership.run_marker(project.s.paths.home, project.name, task.name, run_id)
    found = await ownership.clear_leftovers(
        marker, task.config.stop_grace_period, exact=True,
        members=lambda: project.s.groups.members(project.name, task.name))
    if found:
        project.s.events.emit("leftovers_stopped", project.name, task.name, processes=found)
    if task.record.run_id == run_id:
        task.record.clean = True


async def kill(project: Project, task: TaskRuntime, run_id: int) -> None:
    rec = task.record
    await written_ahead(project, task)
    ours = False
    if rec.window_id:
        with contextlib.suppress(Exception):
            ours = await is_task_window(project.s.tmux, project.name, rec.window_id, task.name)
    if task.live:
        signal_group(task, signal.SIGKILL)
    if ours and rec.window_id:  # right after the signal, before the runner's report lands
        with contextlib.suppress(Exception):
            await project.s.tmux.run(["kill-window", "-t", rec.window_id], allow_missing=True)
    rec.window_id = None
    if task.live and not await wait_run_exit(task, run_id, KILL_WAIT):
        exit_unreported(project, task, run_id, signal.SIGKILL)
    project.save_task(task)
    project.touch()


async def is_task_window(tmux: Tmux, session: str, window_id: str, task: str) -> bool:
    """Whether ``window_id`` is still marked as ``task``'s: a new tmux server hands out the
    same window ids again, to other tasks' windows."""
    return any(w.window_id == window_id and w.task == task for w in await tmux.windows(session))


async def close_window(tmux: Tmux, session: str, window_id: str, task: str) -> None:
    """Close the task's window, only while it is still the task's."""
    if await is_task_window(tmux, session, window_id, task):
        await tmux.run(["kill-window", "-t", window_id], allow_missing=True)


def exit_unreported(project: Project, task: TaskRuntime, run_id: int, sig: int) -> None:
    """The process is gone (or beyond reach) and no runner said so: record it ourselves."""
    if task.record.run_id != run_id or not task.live:
        return
    runner = st.read_runner_record(project.files, task.name)
    if runner and runner.get("run_id") == run_id and runner.get("status") in (
            "exited", "failed"):
        project.runner_exited(task.name, runner)
        return
    log.warning("%s/%s: no exit report from the runner; recording the exit", project.name,
                task.name)
    project.runner_exited(task.name, {"run_id": run_id, "exit_code": None, "exit_signal": sig,
                                      "exited_at": time.time()})
