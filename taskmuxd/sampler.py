"""Resource figures of every live task, sampled on an interval off the event loop.

Every ``INTERVAL`` seconds the loop lists the live tasks (:class:`Target`), a worker thread
reads ``/proc`` once for all of them (``taskmuxd.resources``), and the loop files the
figures: CPU as a percentage of one core over the last interval, RSS summed over the tree,
and every ``SLOW_EVERY`` samples PSS (``smaps_rollup`` is costly) and listening ports. Each
task keeps ``HISTORY`` samples (five minutes) in a ring for ``inspect`` and the dashboards.

CPU comes from the task's cgroup (``cpu.stat``: exact, processes that ended included) where
a subtree was delegated, else from the ticks of the processes in the tree now (a process
that ended during the interval loses its last part). Trees are found by a scan of every
process every ``FULL_EVERY`` samples (and whenever the set of runs changed); in between only
the processes already known are read again, so the cost follows the tasks' processes, not the
machine's. A process started in between is counted from the next full scan, its CPU time
since its start included. :class:`Meter` holds that state and
does the arithmetic; it takes the time and the process table as arguments, so tests drive
it with a fake clock and a made-up table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskmuxd import proctree, resources

if TYPE_CHECKING:
    from taskmuxd.projects.manager import Projects

log = logging.getLogger("taskmuxd.sampler")

INTERVAL = 1.0  # seconds between samples (the setting resource_sample_interval)
SLOW_EVERY = 10  # PSS and ports every this many samples
FULL_EVERY = 5  # a scan of every process every this many samples (new processes found)
HISTORY = 300  # samples kept per task (five minutes at INTERVAL)
MAX_PORTS = 64  # ports reported per task


@dataclass(frozen=True, slots=True)
class Target:
    """A live task to sample: its key, the runner (whose descendants are the task), the first
    process (used when the runner is unknown) and its cgroup folder, if any."""

    key: tuple[str, str]
    run_id: int
    runner_pid: int | None
    pid: int | None
    cgroup: str | None = None


@dataclass(slots=True)
class Figures:
    """The latest figures of one task, and its history."""

    run_id: int
    at: float = 0.0  # wall clock of the last sample
    cpu: float | None = None  # percent of one core
    rss: int = 0
    pss: int | None = None
    processes: int = 0
    ports: list[int] = field(default_factory=list)
    history: deque[tuple[float, float | None, int, int | None]] = field(
        default_factory=lambda: deque(maxlen=HISTORY))
    # CPU state: cgroup usage (usec) or per-process ticks, and when they were read
    cg_usec: int | None = None
    ticks: dict[tuple[int, int], int] = field(default_factory=dict)
    mono: float | None = None
    port_key: tuple[frozenset[int], int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"cpu": None if self.cpu is None else round(self.cpu, 1), "rss": self.rss,
                "pss": self.pss, "processes": self.processes, "ports": list(self.ports),
                "sampled_at": self.at}

    def history_dict(self) -> dict[str, Any]:
        rows = list(self.history)
        return {"interval": INTERVAL, "time": [round(r[0], 3) for r in rows],
                "cpu": [None if r[1] is None else round(r[1], 1) for r in rows],
                "rss": [r[2] for r in rows], "pss": [r[3] for r in rows]}


@dataclass(frozen=True, slots=True)
class Reading:
    """What one pass read for one task (computed in the worker thread)."""

    key: tuple[str, str]
    pids: tuple[tuple[int, int], ...]  # (pid, start ticks)
    ticks: dict[tuple[int, int], int]
    cg_usec: int | None
    rss: int
    pss: int | None
    ports: list[int] | None  # None: not read this time (use the last)
    port_key: tuple[frozenset[int], int] | None


def read_all(targets: Iterable[Target], table: resources.Table, slow: bool,
             previous: dict[tuple[str, str], tuple[frozenset[int], int] | None],
             listen: Callable[[], dict[int, int]] = resources.listening_inodes,
             pss: Callable[[int], int | None] = resources.pss,
             sockets: Callable[[int], set[int]] = resources.socket_inodes,
             members: Callable[[str], list[int]] = resources.cgroup_members,
             cg_cpu: Callable[[str], int | None] = resources.cgroup_cpu_usec,
             ) -> list[Reading]:
    """One reading per target, from ``table``; blocking (run it in a thread). ``slow``: read
    PSS and ports too (ports only for a task whose processes or the machine's listening
    sockets changed since ``previous``)."""
    children = resources.children_of(table)
    listening = listen() if slow else {}
    listen_sig = hash(frozenset(listening.items())) if slow else 0
    out = []
    for t in targets:
        cg_usec = None
        inside = members(t.cgroup) if t.cgroup is not None else []
        if t.cgroup is not None and inside:
            missing = [p for p in inside if p not in table]
            if missing and proctree.AVAILABLE:  # born since the last full scan
                table.update(resources.scan_pids(missing))
            pids = [p for p in inside if p != t.runner_pid and p in table]
            cg_usec = cg_cpu(t.cgroup)
        elif t.runner_pid is not None and t.runner_pid in table:
            pids = resources.tree(t.runner_pid, children, include_root=False)
        elif t.pid is not None and t.pid in table:
            pids = resources.tree(t.pid, children, include_root=True)
        else:
            pids = []
        ids = tuple((p, table[p].start) for p in pids)
        ticks = {i: table[i[0]].cpu_ticks for i in ids}
        rss = sum(table[p].rss for p in pids)
        total_pss: int | None = None
        ports: list[int] | None = None
        port_key = None
        if slow:
            values = [v for v in (pss(p) for p in pids) if v is not None]
            total_pss = sum(values) if values else None
            port_key = (frozenset(pids), listen_sig)
            if port_key != previous.get(t.key):
                found: set[int] = set()
                for p in pids[:resources.MAX_PROCS]:
                    found.update(listening[i] for i in sockets(p) if i in listening)
                ports = sorted(found)[:MAX_PORTS]
        out.append(Reading(t.key, ids, ticks, cg_usec, rss, total_pss, ports, port_key))
    return out


class Meter:
    """Figures per task, updated from readings; pure (time comes in as arguments)."""

    def __init__(self) -> None:
        self.figures: dict[tuple[str, str], Figures] = {}

    def apply(self, targets: Iterable[Target], readings: Iterable[Reading], mono: float,
              wall: float, slow: bool) -> None:
        runs = {t.key: t.run_id for t in targets}
        for key in [k for k in self.figures if k not in runs]:  # no longer live
            gone = self.figures[key]
            gone.cpu, gone.rss, gone.pss, gone.processes, gone.ports = None, 0, None, 0, []
            gone.ticks, gone.cg_usec, gone.mono, gone.port_key = {}, None, None, None
        for r in readings:
            fig = self.figures.get(r.key) or Figures(runs[r.key])
            self.figures[r.key] = fig
            if fig.run_id != runs[r.key]:  # a new run: no CPU baseline yet
                fig.run_id, fig.ticks, fig.cg_usec, fig.mono = runs[r.key], {}, None, None
                fig.port_key = None
            fig.cpu = self._cpu(fig, r, mono)
            fig.rss, fig.processes, fig.at = r.rss, len(r.pids), wall
            if slow:
                fig.pss = r.pss
                fig.port_key = r.port_key
                if r.ports is not None:
                    fig.ports = r.ports
            fig.ticks, fig.cg_usec, fig.mono = r.ticks, r.cg_usec, mono
            fig.history.append((wall, fig.cpu, fig.rss, fig.pss))

    @staticmethod
    def _cpu(fig: Figures, r: Reading, mono: float) -> float | None:
        if fig.mono is None or mono <= fig.mono:
            return None
        elapsed = mono - fig.mono
        if r.cg_usec is not None and fig.cg_usec is not None:
            return max(r.cg_usec - fig.cg_usec, 0) / 1e6 / elapsed * 100
        used = 0
        for ident, ticks in r.ticks.items():
            used += max(ticks - fig.ticks.get(ident, 0), 0)
        return used / resources.TICKS / elapsed * 100

    def get(self, project: str, task: str) -> Figures | None:
        return self.figures.get((project, task))

    def forget(self, keep: Callable[[tuple[str, str]], bool]) -> None:
        for key in [k for k in self.figures if not keep(k)]:
            del self.figures[key]


class Sampler:
    """The daemon subsystem: the loop that samples, the figures it keeps, and its own cost."""

    name = "resources"

    def __init__(self, targets: Callable[[], list[Target]],
                 known: Callable[[tuple[str, str]], bool],
                 interval: float = INTERVAL) -> None:
        self._targets = targets
        self._known = known
        self.interval = interval
        self.meter = Meter()
        self._task: asyncio.Task[None] | None = None
        self.samples = 0
        self.cpu_seconds = 0.0  # thread CPU time spent reading
        self.last_cost = 0.0
        self.wake = asyncio.Event()
        self._runs: frozenset[tuple[tuple[str, str], int]] = frozenset()
        self._since_full = 0
        self._known_pids: set[int] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="resource-sampler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def status(self) -> dict[str, Any]:
        return {"interval": self.interval, "samples": self.samples,
                "cpu_seconds": round(self.cpu_seconds, 4),
                "last_cost_ms": round(self.last_cost * 1000, 3),
                "source": "proc" if proctree.AVAILABLE else "ps"}

    def settings_changed(self, old: Any, new: Any) -> None:
        del old
        self.interval = float(new.resource_sample_interval)
        self.wake.set()

    def figures(self, project: str, task: str) -> dict[str, Any]:
        fig = self.meter.get(project, task)
        if fig is None or not fig.at:
            return {"cpu": None, "rss": None, "pss": None, "ports": [], "sampled_at": None}
        return fig.as_dict()

    def history(self, project: str, task: str) -> dict[str, Any]:
        fig = self.meter.get(project, task)
        if fig is None:
            return {"interval": self.interval, "time": [], "cpu": [], "rss": [], "pss": []}
        return {**fig.history_dict(), "interval": self.interval}

    async def sample_once(self, slow: bool) -> None:
        targets = self._targets()
        self.meter.forget(self._known)
        if not targets:
            return
        previous = {k: f.port_key for k, f in self.meter.figures.items()}
        runs = frozenset((t.key, t.run_id) for t in targets)
        known: set[int] | None = None
        if runs == self._runs and self._since_full < FULL_EVERY - 1 and not slow:
            known = set(self._known_pids)
            known.update(p for t in targets for p in (t.runner_pid, t.pid) if p is not None)
        readings, cost = await asyncio.to_thread(_read, targets, slow, previous, known)
        self._runs = runs
        self._since_full = 0 if known is None else self._since_full + 1
        self._known_pids = {pid for r in readings for pid, _start in r.pids}
        self.samples += 1
        self.cpu_seconds += cost
        self.last_cost = cost
        self.meter.apply(targets, readings, time.monotonic(), time.time(), slow)

    async def _run(self) -> None:
        count = 0
        while True:
            if self.interval > 0:
                try:
                    await self.sample_once(count % SLOW_EVERY == 0)
                except Exception:  # a bug must not end sampling for good
                    log.exception("sampling resources failed")
                count += 1
            with contextlib.suppress(TimeoutError):  # interval 0: off until settings change
                await asyncio.wait_for(self.wake.wait(), self.interval or None)
            self.wake.clear()


def targets_of(projects: Projects) -> list[Target]:
    """The live tasks of every supervised project, as sampling targets."""
    groups = projects.services.groups
    out = []
    for p in projects.projects.values():
        for t in p.tasks.values():
            rec = t.record
            if t.live and (rec.pid is not None or rec.runner_pid is not None):
                out.append(Target((p.name, t.name), rec.run_id, rec.runner_pid, rec.pid,
                                  groups.path(p.name, t.name)))
    return out


def known_in(projects: Projects) -> Callable[[tuple[str, str]], bool]:
    def known(key: tuple[str, str]) -> bool:
        p = projects.projects.get(key[0])
        return p is not None and key[1] in p.tasks
    return known


def _read(targets: list[Target], slow: bool,
          previous: dict[tuple[str, str], tuple[frozenset[int], int] | None],
          known: set[int] | None) -> tuple[list[Reading], float]:
    started = time.thread_time()
    if not proctree.AVAILABLE:
        table = resources.scan_ps()
    elif known is not None:
        table = resources.scan_pids(known)
    else:
        table = resources.scan()
    readings = read_all(targets, table, slow and proctree.AVAILABLE, previous)
    return readings, time.thread_time() - started
