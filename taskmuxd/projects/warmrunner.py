"""Warm runners: a stopped task's runner stays in its window, idle, so the next start is an order.

A runner's start-up (an interpreter, its imports, a tmux command to put it in the pane) is
most of what a start costs. When the user stops a task, its runner ends the task's whole tree
and records and reports the exit exactly as always, then waits for the daemon's word
(``taskmuxd.runrelaunch``). Instead of telling it to finish, the daemon tells it to stay warm
(``{"warm": S}``, S the ``warm_runner_seconds`` setting; ``taskmuxd.runwarm`` is the runner's
side): the task is ``stopped``, no process of it runs, the window shows its last output and a
line saying that its idle runner waits. The next ``start`` (or ``restart``) of the task is
then an order to that runner, the same order as a relaunch in place: run N written ahead
first, ``ok`` before anything starts, and any other outcome launched through tmux
(``respawn-pane -k`` ends the runner), so a lost order costs time, never a second copy.

A warm runner is ours by its recorded identity (pid, start time, boot id: the exited run's
runner in the task's record) and is signalled only while that identity holds. It ends:
by itself when its wait is over (the daemon forgets it a moment before); on SIGTERM from the
daemon when its project is unregistered or the task is removed from or changed in
``taskmux.toml``; when its window is closed (SIGHUP); and when a launch cannot use it. It
outlives a daemon that stops or is killed, as tasks do; the next daemon adopts it when its
record proves it (the task's last run, ended clean, waiting at the task's order socket, alive
by identity) and ends it otherwise.

A lowered ``warm_runner_seconds`` (a reload of the settings: ``setting_lowered``) applies to
the runners already waiting: each waits at most the new value from the start of its wait
(``task.warm_since``); the daemon ends one whose wait is then over at once, and any other at
its new deadline (SIGTERM by identity, as above: the runner's own deadline, given with its
order, is the old one). A raised value never lengthens a wait already given. A daemon that
adopts a warm runner counts its wait from its run's exit (the runner record's ``exited_at``)
with the setting it has, and ends it at that deadline, or at once when it is over: a daemon
killed after a lowered setting reached config.toml but before it ended a runner leaves
nothing waiting longer than the setting says.

The orders to stay warm that a stop brings go once it has answered (``after_answer``), at
most ``DEFER_LIMIT`` seconds after each runner's report (it waits ``WAIT_SECONDS`` for an
order): a hundred connections from the daemon, and a hundred runners each taking an order
and writing to its pane, are then no longer in the way of the exit reports the stop's answer
waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from taskmuxd import proctree, runrelaunch
from taskmuxd.policy import TaskState
from taskmuxd.projects import ownership, taskstart
from taskmuxd.projects import state as st

if TYPE_CHECKING:
    from taskmuxd.projects.projectview import ProjectView
    from taskmuxd.projects.task import TaskRuntime


DEFER_LIMIT = runrelaunch.WAIT_SECONDS / 2  # seconds an order waits for a stop's answer at most
_gates: dict[str, asyncio.Future[None]] = {}  # project → opened once its stop has answered


@contextlib.contextmanager
def after_answer(project: ProjectView) -> Iterator[None]:
    """Around a stop of tasks of ``project``: the orders to stay warm it brings wait until it
    has answered (the turn of the loop after its end, in which its answer is written)."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(project.name)
    if gate is not None:  # another stop holds them already: it opens the gate
        yield
        return
    gate = _gates[project.name] = loop.create_future()
    try:
        yield
    finally:
        if _gates.get(project.name) is gate:
            del _gates[project.name]
        loop.call_soon(_open, gate)


def _open(gate: asyncio.Future[None]) -> None:
    if not gate.done():
        gate.set_result(None)


def wanted(project: ProjectView, task: TaskRuntime) -> bool:
    """Whether the runner of a task that just ended stays warm: the user stopped it while it
    ran (a ``stop``; not an exit, a crash or a kill), and the setting allows it. The runner
    waits only when its own tree is gone (``taskstart.runner_waits``); the run's strangers,
    if any, are the daemon's to look for (``strangers``), and until that look has recorded
    the run clean a start does not use the warm runner but launches through tmux."""
    return (task.state == TaskState.STOPPED and task.record.policy.manual_stop
            and task.exit_by_stop and project.services.warm_runner_seconds() > 0)


def keep(project: ProjectView, task: TaskRuntime) -> bool:
    """After each event for a task whose runner waits for an order: whether it stays (warm),
    rather than being released as ``taskstart.release_waiting`` would."""
    if task.warm_until is not None:
        if task.state == TaskState.STOPPED:
            return True
        task.warm_until = task.warm_since = None  # a launch takes it (STARTING), or
        return False  # nothing will: release it
    if not wanted(project, task) or task.waiting_runner is None:
        return False
    seconds = project.services.warm_runner_seconds()
    since = task.warm_since = time.monotonic()
    task.warm_until = since + seconds
    project.services.spawn(_warm(project, task, task.waiting_runner, seconds, since),
                           f"warm runner {project.name}/{task.name}")
    return True


def _same_wait(task: TaskRuntime, since: float) -> bool:
    """Whether the task's runner still waits warm the wait that began at ``since`` (not
    started, released or forgotten meanwhile; a shortened wait is still the same one)."""
    return task.warm_until is not None and task.warm_since == since


async def _warm(project: ProjectView, task: TaskRuntime, path: str, seconds: float,
                since: float) -> None:
    """Tell the runner to stay warm; forget it when it did not take that, and when its wait
    is over (a moment before its own deadline, which counts from the order's arrival)."""
    gate = _gates.get(project.name)
    if gate is not None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DEFER_LIMIT):
                await asyncio.shield(gate)
        if not _same_wait(task, since):
            return  # started or released meanwhile: no order to stay
    took = await taskstart._order(path, {"warm": seconds})
    if not _same_wait(task, since):
        return  # started or released meanwhile
    if not took:
        release(task)
        return
    until = since + seconds
    asyncio.get_running_loop().call_at(until, _expire, task, until, False)


def _expire(task: TaskRuntime, until: float, end: bool) -> None:
    """The daemon's deadline for a warm runner: forget it (it ends by itself now), or, when
    its own deadline may be later (a wait shortened by a lowered setting, or one a new daemon
    adopted), end it, by its recorded identity."""
    if task.warm_until != until:
        return  # started, released, or given another deadline meanwhile
    if end:
        release(task)
        return
    task.warm_until = task.warm_since = None
    task.waiting_runner = None  # it ends by itself now


def setting_lowered(tasks: list[TaskRuntime], seconds: float) -> None:
    """``warm_runner_seconds`` is now ``seconds`` (a reload of the settings): each warm runner
    waits at most that long from the start of its wait. One whose wait is then over (or when
    ``seconds`` is 0) is ended now; one with time left gets the earlier deadline, at which the
    daemon ends it (its own, given with the order, is later). A higher value changes nothing:
    a wait already given is never lengthened."""
    now = time.monotonic()
    for task in tasks:
        if task.warm_until is None or task.warm_since is None:
            continue
        until = task.warm_since + seconds
        if until >= task.warm_until:
            continue
        if seconds <= 0 or until <= now:
            release(task)
            continue
        task.warm_until = until
        asyncio.get_running_loop().call_at(until, _expire, task, until, True)


def release(task: TaskRuntime) -> None:
    """End a warm runner now (SIGTERM: "finish"), by its recorded identity only."""
    if task.warm_until is None:
        return
    task.warm_until = task.warm_since = None
    task.waiting_runner = None
    end_runner(task)


def release_all(tasks: list[TaskRuntime]) -> None:
    for task in tasks:
        release(task)


def end_runner(task: TaskRuntime) -> None:
    rid = task.record.runner_id()
    if rid is not None and proctree.is_alive(rid):
        with contextlib.suppress(OSError):
            os.kill(rid.pid, signal.SIGTERM)


def adopt(project: ProjectView, task: TaskRuntime) -> None:
    """A daemon starting: take over the warm runner of a stopped task when its records prove
    it is one and its wait (counted from its run's exit, with the setting now) is not over;
    else end it, if it still lives by its identity. The daemon ends it at that deadline: the
    runner's own may be later (a daemon killed before it applied a lowered setting)."""
    rec = task.record
    if task.state != TaskState.STOPPED or rec.runner_id() is None:
        return
    runner = st.read_runner_record(project.files, task.name)
    path = taskstart.relaunch_socket(project, task)
    seconds = project.services.warm_runner_seconds()
    proven = (runner is not None and task.record.policy.manual_stop and rec.clean
              and seconds > 0 and path is not None
              and runner.run_id == rec.run_id and runner.status == "exited"
              and runner.tree_clean is True and runner.relaunch == path
              and runner.runner_pid == rec.runner_pid
              and runner.runner_start == rec.runner_start
              and ownership.runner_record_alive(runner))
    now, wall = time.monotonic(), time.time()
    exited = runner.exited_at if runner is not None else None
    waited = wall - exited if isinstance(exited, int | float) and math.isfinite(exited) else 0.0
    waited = max(waited, 0.0)  # a clock set back: no time waited
    if not proven or waited >= seconds:
        end_runner(task)
        return
    task.waiting_runner = path
    task.warm_since = now - waited
    until = task.warm_until = task.warm_since + seconds
    asyncio.get_running_loop().call_at(until, _expire, task, until, True)
