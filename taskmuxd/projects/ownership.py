"""Which processes belong to a task, how the daemon hears at once that a runner died, and how
it ends what a dead runner left behind.

Every run of a task carries a marker, ``TASKMUX_RUN={home}:{project}:{task}:{run_id}``, in the
environment of its runner (tmux ``-e``) and of every process the task starts (the runner puts
it there). ``home`` is a short digest of the state directory, so two daemons on one machine
(two users, or the tests' many homes) never take each other's processes for their own. A
process is provably a task's when it carries that marker and its identity (pid, start time,
boot id) still matches at the moment it is signalled.

The daemon watches each runner through a pidfd (Linux; a kqueue EVFILT_PROC filter on macOS):
the descriptor becomes readable the moment the runner ends, so an exit nobody reported is
handled at once, not at the next sweep. The sweep remains the net where neither exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import select
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from taskmuxd import proctree
from taskmuxd.proctree import ProcId

if TYPE_CHECKING:
    from taskmuxd.runrecord import RunRecord

log = logging.getLogger("taskmuxd.ownership")

SNAPSHOT_TTL = 0.5  # seconds a process-tree snapshot serves status calls


@functools.lru_cache(maxsize=16)
def home_id(home: str) -> str:
    """The state directory's id in markers (once per daemon: ``realpath`` is a system call
    per component, and every launch asks)."""
    return hashlib.sha256(os.path.realpath(home).encode()).hexdigest()[:12]


def task_prefix(home: str, project: str, task: str) -> str:
    """The marker prefix shared by every run of one task (ends with a colon)."""
    return f"{home_id(home)}:{project}:{task}:"


def run_marker(home: str, project: str, task: str, run_id: int) -> str:
    return f"{task_prefix(home, project, task)}{run_id}"


def marked_tree(prefix: str, exact: bool = False,
                skip: Collection[ProcId] = ()) -> list[ProcId]:
    """The processes carrying ``prefix`` (but ``skip``) and their descendants: a marked
    process's descendants are the task's too, even those that overwrote their environment
    (PostgreSQL's workers write their process title over it). Blocking: one look at /proc."""
    found = [p for p in proctree.find_marked(prefix, exact=exact) if p not in skip]
    seen = {p.pid for p in found}
    for parent in list(found):
        for child in proctree.descendants(parent.pid):
            if child.pid not in seen:
                seen.add(child.pid)
                found.append(child)
    return found


async def clear_leftovers(prefix: str, grace: float, exact: bool = False,
                          members: Callable[[], list[int]] | None = None) -> int:
    """End every process still carrying ``prefix`` (a task's runs, or one run when ``exact``),
    and every member of the task's cgroup (``members``; membership of a delegated group is
    proof too), with the stop ladder, off the event loop. Returns how many were found."""

    def current() -> list[ProcId]:
        found = marked_tree(prefix, exact=exact)
        seen = {p.pid for p in found}
        if members is not None:
            for pid in members():
                pid_id = proctree.procid(pid)
                if pid not in seen and pid_id is not None and pid != os.getpid():
                    seen.add(pid)
                    found.append(pid_id)
        return found

    def work() -> int:
        found = current()
        if found:
            proctree.stop_ladder(current, grace)
        return len(found)

    return await asyncio.to_thread(work)


async def marked_alive(marker: str) -> bool:
    """Whether any process of this exact run is alive (its runner included)."""
    return bool(await asyncio.to_thread(proctree.find_marked, marker, None, True))


def runner_record_alive(runner: RunRecord) -> bool:
    """Whether the runner that wrote ``runner`` (its record) still runs: by identity when the
    record has one (pid, start time, boot), else by pid (records of older runners)."""
    from taskmuxctl.core.daemonctl import alive
    from taskmuxd.projects.state import ident

    pid = runner.runner_pid
    rid = ident(pid, runner.runner_start, runner.boot_id)
    if rid is not None:
        return proctree.is_alive(rid)
    main = runner.pid
    return pid is not None and alive(pid) and main is not None and alive(main)


_snap: tuple[float, proctree.Snapshot] | None = None


def snapshot() -> proctree.Snapshot:
    """A process-tree snapshot no older than ``SNAPSHOT_TTL``: one /proc pass serves every
    task of a status call, and status calls in a burst."""
    global _snap
    now = time.monotonic()
    if _snap is None or now - _snap[0] > SNAPSHOT_TTL:
        _snap = (now, proctree.Snapshot())
    return _snap[1]


def _exit_watch(pid: int) -> tuple[int, Callable[[], None]]:
    """A descriptor that becomes readable when ``pid`` ends, and how to close it: a pidfd on
    Linux; on macOS and the BSDs a kqueue holding an EVFILT_PROC/NOTE_EXIT filter (this path
    does not run on the Linux machines the tests run on)."""
    if hasattr(os, "pidfd_open"):
        fd = os.pidfd_open(pid)
        return fd, lambda: os.close(fd)
    sel: Any = select  # the kqueue names exist only on macOS and the BSDs
    kq = sel.kqueue()
    try:
        kq.control([sel.kevent(pid, sel.KQ_FILTER_PROC, sel.KQ_EV_ADD | sel.KQ_EV_ONESHOT,
                               sel.KQ_NOTE_EXIT)], 0, 0)
    except OSError:
        kq.close()
        raise
    return int(kq.fileno()), kq.close


class RunnerWatch:
    """Calls back once when a watched runner ends, through a pidfd (or kqueue) on the loop."""

    def __init__(self) -> None:
        self._fds: dict[str, tuple[int, Callable[[], None]]] = {}

    @staticmethod
    def available() -> bool:
        return hasattr(os, "pidfd_open") or hasattr(select, "kqueue")

    def watch(self, key: str, pid: int, still: Callable[[], bool],
              on_gone: Callable[[], None]) -> bool:
        """Watch the runner ``pid`` (``still()`` says whether it is still the recorded one);
        ``on_gone`` runs on the loop when it ends (at once if it is gone already). False when
        no watch can be had: the sweep must catch it."""
        self.unwatch(key)
        if not self.available():
            return False
        loop = asyncio.get_running_loop()
        try:
            fd, close = _exit_watch(pid)
        except ProcessLookupError:
            loop.call_soon(on_gone)
            return True
        except OSError as exc:
            log.debug("no exit watch for runner %s: %s", pid, exc)
            return False
        # The pid could have been reused between the record and the watch: the identity
        # checked after opening is the one the descriptor refers to.
        if not still():
            close()
            loop.call_soon(on_gone)
            return True
        entry = (fd, close)
        self._fds[key] = entry

        def fired() -> None:
            if self._fds.get(key) is entry:
                self.unwatch(key)
                on_gone()

        loop.add_reader(fd, fired)
        return True

    def unwatch(self, key: str) -> None:
        entry = self._fds.pop(key, None)
        if entry is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(entry[0])
            with contextlib.suppress(OSError):
                entry[1]()

    def close(self) -> None:
        for key in list(self._fds):
            self.unwatch(key)
