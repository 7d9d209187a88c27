"""Which pids can belong to processes created since a given moment: a cheap filter for
marker look-ups (``proctree.find_marked``).

Linux hands out pids in a cycle: each new process or thread takes the next free pid after the
last one given (``/proc/sys/kernel/ns_last_pid``), wrapping at ``pid_max`` back to the bottom.
So every process created after a :func:`mark` holds a pid in the cyclic interval from the
mark's last pid (exclusive) to the last pid now (inclusive), **provided** the cycle did not
come round past the mark in between. That is proven from the kernel's count of every fork
since boot (``processes`` in ``/proc/stat``, threads included, counted in every pid
namespace, so never fewer than the pids handed out in ours): while fewer forks than
``pid_max - RESERVED`` happened, no pid was handed out twice and the interval is exact.

A runner looks for processes outside its tree that carry its run's marker: those can only
have been created after its run began. Reading every process's environment costs about ten
microseconds each; a hundred runners ending at once on a machine of a few hundred processes
paid a few hundred milliseconds of CPU. Within the window only the processes created since
the run began are read; a run that outlived a whole cycle of pids (or any reading that fails)
gets the full scan, as before.

Not covered (as nothing else of taskmux covers them): a privileged process that rewinds
``ns_last_pid`` or picks its pids (``clone3`` with ``set_tid``: checkpoint/restore tools).

Standard library only and cheap to import (the runner imports it).
"""

from __future__ import annotations

RESERVED = 300  # the kernel's RESERVED_PIDS: after a wrap, pids start again above this
MARGIN = 1024  # forks counted between our two readings are not atomic with them: spare some

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import NamedTuple

    class Mark(NamedTuple):
        last_pid: int
        forks: int
else:
    def Mark(last_pid, forks):  # a plain tuple at run time (no typing import)
        return (last_pid, forks)


def _read_int(path: str) -> int | None:
    try:
        with open(path, "rb") as fh:
            return int(fh.read(64).strip())
    except (OSError, ValueError):
        return None


def _forks() -> int | None:
    """Every fork since boot (``processes`` in /proc/stat)."""
    try:
        with open("/proc/stat", "rb") as fh:
            data = fh.read(1 << 20)
    except OSError:
        return None
    at = data.find(b"\nprocesses ")
    if at < 0:
        return None
    end = data.find(b"\n", at + 1)
    try:
        return int(data[at + 11:end if end > 0 else len(data)])
    except ValueError:
        return None


def mark() -> Mark | None:
    """The moment now, for a later :func:`window`; None where it cannot be read."""
    forks = _forks()  # before the last pid: a fork in between is counted, never missed
    last = _read_int("/proc/sys/kernel/ns_last_pid")
    if forks is None or last is None:
        return None
    return Mark(last, forks)


def window(since: Mark | None) -> tuple[int, int, int] | None:
    """(first, last, pid_max) of the pids created since ``since`` (cyclic: ``first > last``
    means the interval wraps), or None when it cannot be proven (then look at every pid)."""
    if since is None:
        return None
    last = _read_int("/proc/sys/kernel/ns_last_pid")  # before the forks: see ``mark``
    forks = _forks()
    pid_max = _read_int("/proc/sys/kernel/pid_max")
    if last is None or forks is None or pid_max is None:
        return None
    if forks - since[1] + MARGIN >= pid_max - RESERVED:
        return None  # the cycle may have come round: any pid may be new
    return since[0] + 1, last, pid_max


def inside(pid: int, win: tuple[int, int, int]) -> bool:
    """Whether ``pid`` may have been handed out within the window ``win``."""
    first, last, _ = win
    if first <= last + 1:  # no wrap (``first == last + 1``: nothing new)
        return first <= pid <= last
    return pid >= first or pid <= last
