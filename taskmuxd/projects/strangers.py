"""The look for a stopped run's strangers, done once per batch by the daemon rather than by
every runner.

A run's processes are its runner's descendants (the runner is their subreaper), the members
of its cgroup, and the processes elsewhere that carry its marker: "strangers", started
outside the tree on the task's behalf. Only a look at every process's environment finds the
last kind. When a run ends because the daemon stops it, the daemon says so first (the run's
line in the project's list of runs it ends, ``run/ending.runs``: ``taskmuxd.runending``; one
file written for all the runs signalled in a turn of the loop, in place before the first
signal): the runner then ends its own tree
with the task's ladder as always and leaves the strangers to the daemon (``unscanned`` in its
exit record); it still waits for the daemon's word after its report, so that the daemon
hears of its end from the report, not from its death (a record to read). The daemon looks
once for the
strangers of every run so ended in one turn of the loop (a stop of a hundred tasks: one pass
over ``/proc`` instead of a hundred), ends what it finds with the task's ladder, and only then
records the run as clean; a stop answers once that look is done.

Until then the task's record says the run may have left processes (``clean`` False), so a
launch that comes first (a restart) ends the task's leftovers itself before starting, as
after any run not known to be clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from taskmuxd import proctree, runending
from taskmuxd.projects import ownership
from taskmuxd.projects import state as st

if TYPE_CHECKING:
    from taskmuxd.projects.projectview import ProjectView
    from taskmuxd.projects.task import TaskRuntime

log = logging.getLogger("taskmuxd.project")

LOOK_DELAY = 0.2  # seconds a look waits for more runs to gather, unless a stop waits on it
STOP_LOOK_DELAY = 2.0  # the same while a stop runs (its end starts the look at once)
_stops: dict[str, int] = {}  # project → stops running (``stopping``)
_pending: dict[str, dict[str, int]] = {}  # project → task → run whose strangers to look for
_timers: dict[str, asyncio.TimerHandle] = {}  # project → its look's start, when delayed
_running: dict[str, asyncio.Task[None]] = {}  # project → its look in flight
_ending: dict[str, dict[str, int]] = {}  # project → task → the run the daemon is ending


def token(project: ProjectView) -> str:
    """The project's list of the runs the daemon ends (``runending``), named in each spec."""
    return os.path.join(project.files.run_dir, runending.NAME)


def announce(project: ProjectView, tasks: Iterable[TaskRuntime]) -> asyncio.Future[None]:
    """Say to the runners of ``tasks`` that the daemon ends their current runs: their lines
    added to the project's list, written (whole, off the loop, not fsynced: it matters only
    while the runs' processes live) with the lines of the runs still being ended. The future
    says when the list is in place; a list that cannot be written is logged, and the runners
    then look for their strangers themselves, as before."""
    runs = _ending.setdefault(project.name, {})
    for task in tasks:
        runs[task.name] = task.record.run_id
    for name, run in list(runs.items()):  # the runs heard ended (or replaced) drop out
        now = project.tasks.get(name)
        if now is None or now.record.run_id != run or not now.live:
            del runs[name]
    if not runs:
        del _ending[project.name]
    placed = st.write_file(token(project), runending.text(runs))
    placed.add_done_callback(functools.partial(_announced, project.name))
    return placed


def _announced(name: str, fut: asyncio.Future[None]) -> None:
    exc = None if fut.cancelled() else fut.exception()
    if exc is not None:
        log.warning("%s: cannot write the list of runs it ends: %s", name, exc)


def note(project: ProjectView, task: TaskRuntime, run_id: int) -> None:
    """The runner of ``run_id`` left its strangers to the daemon: look for them with the
    others that come meanwhile, when a stop waits for it (``settled``), else shortly (and
    while a stop runs, only if it is still running a while later: one look for the whole
    stop rather than one for the runs that ended first and another for the rest)."""
    task.record.clean = False
    batch = _pending.setdefault(project.name, {})
    if not batch:
        delay = STOP_LOOK_DELAY if _stops.get(project.name) else LOOK_DELAY
        _timers[project.name] = asyncio.get_running_loop().call_later(delay, _start, project)
    batch[task.name] = run_id


@contextlib.contextmanager
def stopping(project: ProjectView) -> Iterator[None]:
    """A stop of tasks of ``project`` runs (it calls ``settled`` before it answers)."""
    _stops[project.name] = _stops.get(project.name, 0) + 1
    try:
        yield
    finally:
        left = _stops.pop(project.name, 1) - 1
        if left > 0:
            _stops[project.name] = left


def _start(project: ProjectView) -> None:
    timer = _timers.pop(project.name, None)
    if timer is not None:
        timer.cancel()
    batch = _pending.pop(project.name, {})
    if not batch:
        return
    before = _running.get(project.name)
    _running[project.name] = project.services.spawn(_look(project, batch, before),
                                                    f"strangers of {project.name}")


async def _look(project: ProjectView, batch: dict[str, int],
                before: asyncio.Task[None] | None) -> None:
    if before is not None:  # one look at a time per project, in order
        await asyncio.wait([before])
    home = project.services.paths.home
    wanted = {ownership.run_marker(home, project.name, name, run): name
              for name, run in batch.items()}
    runners = set()
    for name in batch:
        task = project.tasks.get(name)
        rid = task.record.runner_id() if task is not None else None
        if rid is not None:
            runners.add(rid)
    prefix = f"{ownership.home_id(home)}:{project.name}:"

    def find() -> set[str]:
        return {m for m in _marked(prefix, runners) if m in wanted}

    try:
        found = await asyncio.to_thread(find)
        for marker in sorted(found):
            name = wanted[marker]
            task = project.tasks.get(name)
            grace = task.config.stop_grace_period if task is not None else 10.0
            count = await asyncio.to_thread(_end, marker, runners, grace)
            if count:
                project.services.events.emit("leftovers_stopped", project.name, name,
                                             processes=count)
    except OSError as exc:
        log.error("%s: cannot look for the processes stopped tasks left: %s", project.name,
                  exc)
        return
    finally:
        if _running.get(project.name) is asyncio.current_task():
            del _running[project.name]
    for name, run in batch.items():
        task = project.tasks.get(name)
        if task is not None and task.record.run_id == run and not task.live:
            task.record.clean = True
            project.save_task(task)


def _end(marker: str, runners: set[proctree.ProcId], grace: float) -> int:
    """End the processes of one run (its marker, and their descendants: a process that
    wrote over its environment is still its parent's), runners aside, with the task's
    ladder (blocking: from a thread). How many there were."""
    def current() -> list[proctree.ProcId]:
        return ownership.marked_tree(marker, exact=True, skip=runners)

    first = current()
    if first:
        proctree.stop_ladder(current, grace)
    return len(first)


def _marked(prefix: str, runners: set[proctree.ProcId]) -> set[str]:
    """The markers under ``prefix`` that live processes carry, runners aside (a runner keeps
    the marker of the run it was started for)."""
    out: set[str] = set()
    boot = proctree.boot_id()
    me = os.getpid()
    by_pid = {r.pid: r for r in runners}
    try:
        pids = [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return out
    for pid in pids:
        if pid == me:
            continue
        runner = by_pid.get(pid)  # a runner, known by its identity: its environment unread
        if runner is not None and proctree.ProcId(pid, proctree.start_ticks(pid) or -1,
                                                  boot) == runner:
            continue
        marker = proctree.marker_of(pid)
        if marker is not None and marker.startswith(prefix):
            out.add(marker)
    return out


async def settled(project: ProjectView) -> None:
    """Wait until every look asked for so far is done (a stop answers after it): one look
    for every run the stop ended, started now."""
    while True:
        if project.name in _pending:
            _start(project)
        running = _running.get(project.name)
        if running is None:
            return
        await asyncio.wait([running])
