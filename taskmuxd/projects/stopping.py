"""Carrying out the supervisor's signals: one rung of a stop, a kill, an exit nobody reported.

The ladder itself (SIGINT, then SIGTERM after ``stop_grace_period``, then SIGKILL, then the
exit recorded though no report came) is timed by the machine (``taskmuxd.supervisor``); each
``Signal`` action lands here. A group is signalled only while its leader is provably the
task's process; when the runner is gone too, the daemon ends the run's marked processes itself
and records the exit. A kill is SIGKILL and the window closed at once.

The rungs asked for in one turn of the event loop (a stop of a hundred tasks) go together:
their records are written ahead as one file, the batch waits once for it to be in place, and
then every group is signalled in one go, with no tmux command and one log line per signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from taskmuxd import proctree
from taskmuxd.projects import ownership, restartgrant, strangers
from taskmuxd.projects import state as st
from taskmuxd.projects.projectview import Rung
from taskmuxd.runrecord import RunRecord

if TYPE_CHECKING:
    from taskmuxd.projects.projectview import ProjectView
    from taskmuxd.projects.task import TaskRuntime
    from taskmuxd.tmux import Tmux

log = logging.getLogger("taskmuxd.project")
_ending: set[tuple[str, str, int]] = set()  # runs whose leftovers are being ended


def signal_group(task: TaskRuntime, sig: int) -> bool:
    """Signal the task's process group, but only while the group's leader is provably the
    task's first process (a group id cannot be reused while its leader lives). False when it
    is gone: what is left of the tree is the runner's to end (it is the tree's subreaper)."""
    pgid = group_ours(task)
    if pgid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)
    return True


def group_ours(task: TaskRuntime) -> int | None:
    """The task's process group id while its leader is provably the task's first process."""
    rec = task.record
    tid = rec.task_id()
    if rec.pgid is None or tid is None or not proctree.is_alive(tid):
        return None
    return rec.pgid


def runner_alive(task: TaskRuntime) -> bool:
    rid = task.record.runner_id()
    return rid is not None and proctree.is_alive(rid)


def send(project: ProjectView, task: TaskRuntime, sig: int, kill: bool = False) -> None:
    """One rung, once the record of the stop is in place: signal the group; when group and
    runner are both gone, end what the run left (off the loop) and record its exit. ``kill``
    closes the window too. Rungs asked for in the same turn of the loop go as one batch."""
    if not project.rungs:
        asyncio.get_running_loop().call_soon(_flush, project)
    project.rungs.append(Rung(task, sig, kill, task.record.run_id))
    project.write_ahead(task)


def _flush(project: ProjectView) -> None:
    batch, project.rungs = project.rungs, []
    if batch:
        project.services.spawn(_send_batch(project, batch),
                        f"signal {project.name} ({len(batch)} tasks)")


async def written_ahead(project: ProjectView, tasks: Iterable[TaskRuntime]) -> None:
    """The records of what was asked (a stop, a kill, a restart: ``cause``, ``manual_stop``)
    in place before any signal: a daemon killed after the task's exit finds the exit was asked
    for, rather than taking it for a crash or a loss. State writes are off the loop
    (``statewriter``): the records of every task signalled in this turn are handed over as
    one file (``state.save_ahead``), and the batch waits once, for that file to be renamed
    into place. Its fsync follows in the background: as for a launch's record
    (``statewriter`` says why), it matters only if the machine loses power, which ends the
    tasks too."""
    project.flush()
    waits = {id(f): f for f in (project.ahead_placed(t.name) for t in tasks) if f is not None}
    try:
        await asyncio.gather(*waits.values())
    except OSError as exc:  # a full disk: the stop goes on all the same
        log.error("cannot record the stop of tasks of %s: %s", project.name, exc)


async def _send_batch(project: ProjectView, batch: list[Rung]) -> None:
    # No run ended by a signal of ours restarts on a grant (``restartgrant``), and its runner
    # leaves the look for strangers to the daemon (``strangers``).
    announced = strangers.announce(project, (r.task for r in batch))
    await asyncio.gather(written_ahead(project, (r.task for r in batch)),
                         restartgrant.revoke(project, (r.task for r in batch)),
                         _listed(project, announced))
    # Every group is proven the task's first, then all are signalled in one tight pass: the
    # first tasks to end wake their runners, which would otherwise share the processors
    # with the rest of the checks and hold back the last signals.
    groups: list[tuple[int, int, str]] = []
    for r in batch:
        task = r.task
        if r.kill:
            project.services.spawn(_kill(project, task, r.run_id),
                                   f"kill {project.name}/{task.name}")
            continue
        if not task.live or task.record.run_id != r.run_id:
            continue
        pgid = group_ours(task)
        if pgid is not None:
            groups.append((pgid, r.sig, task.name))
        elif not runner_alive(task) and (project.name, task.name, r.run_id) not in _ending:
            project.services.spawn(_orphaned(project, task, r.run_id),
                            f"orphans {project.name}/{task.name}")
    sent: dict[int, list[str]] = {}
    for pgid, sig, name in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        sent.setdefault(sig, []).append(name)
    for sig, names in sent.items():
        log.info("%s: sent %s to the process group of %s", project.name,
                 signal.Signals(sig).name, ", ".join(names))


async def _listed(project: ProjectView, announced: asyncio.Future[None]) -> None:
    """The list of runs ended in place (``strangers.announce``): a list that could not be
    written holds up no signal (the runners then look for their strangers themselves)."""
    with contextlib.suppress(OSError):
        await announced


async def _orphaned(project: ProjectView, task: TaskRuntime, run_id: int) -> None:
    key = (project.name, task.name, run_id)
    _ending.add(key)
    try:
        await end_orphans(project, task, run_id)
    finally:
        _ending.discard(key)
    exit_unreported(project, task, run_id, signal.SIGKILL)


async def end_orphans(project: ProjectView, task: TaskRuntime, run_id: int) -> None:
    """The runner is gone: end whatever still carries this run's marker, ourselves."""
    marker = ownership.run_marker(project.services.paths.home, project.name, task.name, run_id)
    found = await ownership.clear_leftovers(
        marker, task.config.stop_grace_period, exact=True,
        members=lambda: project.services.groups.members(project.name, task.name))
    if found:
        project.services.events.emit("leftovers_stopped", project.name, task.name, processes=found)
    if task.record.run_id == run_id:
        task.record.clean = True


async def _kill(project: ProjectView, task: TaskRuntime, run_id: int) -> None:
    rec = task.record
    await asyncio.gather(written_ahead(project, (task,)), restartgrant.revoke(project, (task,)))
    ours = False
    if rec.window_id:
        with contextlib.suppress(Exception):
            ours = await is_task_window(project.services.tmux, project.name, rec.window_id,
                                        task.name)
    if task.live and rec.run_id == run_id:
        signal_group(task, signal.SIGKILL)
    if ours and rec.window_id:  # right after the signal, before the runner's report lands
        with contextlib.suppress(Exception):
            await project.services.tmux.run(["kill-window", "-t", rec.window_id],
                                            allow_missing=True)
    rec.window_id = None
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


def exit_unreported(project: ProjectView, task: TaskRuntime, run_id: int, sig: int,
                    read: bool = True) -> None:
    """The process is gone (or beyond reach) and no runner said so: record it ourselves
    (from the runner's record when it wrote its exit there; ``read`` False: the caller
    read it already)."""
    if task.record.run_id != run_id or not task.live:
        return
    runner = st.read_runner_record(project.files, task.name) if read else None
    if runner and runner.run_id == run_id and runner.status in ("exited", "failed"):
        project.runner_exited(task.name, runner)
        return
    log.warning("%s/%s: no exit report from the runner; recording the exit", project.name,
                task.name)
    project.runner_exited(task.name, RunRecord(run_id=run_id, exit_signal=sig,
                                               exited_at=time.time()))
