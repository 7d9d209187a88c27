"""What a task's process tree costs now: CPU time, memory (RSS, PSS) and listening ports.

Blocking reads of ``/proc`` (and of a delegated cgroup's ``cpu.stat``); the sampler
(``taskmuxd.sampler``) calls them from a worker thread, never from the event loop.

* One pass over ``/proc/*/stat`` (:func:`scan`) gives, per process, its parent, start time,
  CPU ticks (user + system) and resident pages; a task's tree is found in it from its runner
  (the runner itself not counted) or, with a delegated cgroup, from the group's members.
* PSS (``/proc/PID/smaps_rollup``) makes the kernel walk every mapping: :func:`pss` is called
  less often than the rest.
* Ports: :func:`listening_inodes` reads ``/proc/net/tcp`` and ``tcp6`` (sockets in LISTEN),
  :func:`socket_inodes` a process's descriptors; both bounded.
* macOS has no ``/proc``: :func:`parse_ps` reads ``ps -axo pid=,ppid=,time=,rss=`` output
  into the same table (the seam ``scan_ps`` runs ``ps``), without PSS or ports.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from taskmuxd import proctree

STAT_LIMIT = 1024  # bytes of /proc/PID/stat read
ROLLUP_LIMIT = 4096
NET_LIMIT = 4 * 1024 * 1024  # bytes of /proc/net/tcp{,6} read at most
MAX_FDS = 4096  # descriptors of one process looked at for sockets
MAX_PROCS = 256  # processes of one task looked at for sockets
LISTEN = "0A"
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
try:
    TICKS = os.sysconf("SC_CLK_TCK")
except (ValueError, OSError, AttributeError):  # pragma: no cover - every POSIX has it
    TICKS = 100


@dataclass(frozen=True, slots=True)
class Proc:
    """One process in a scan: parent, start ticks, CPU ticks used (user + system), RSS."""

    ppid: int
    start: int
    cpu_ticks: int
    rss: int  # bytes


Table = dict[int, Proc]


def parse_stat(data: bytes) -> Proc | None:
    """A :class:`Proc` from the text of ``/proc/PID/stat``; None for a zombie or garbage."""
    _head, sep, tail = data.rpartition(b")")  # comm may hold spaces and parentheses
    fields = tail.split()
    if not sep or len(fields) < 22 or fields[0] in (b"Z", b"X"):
        return None
    try:
        return Proc(int(fields[1]), int(fields[19]), int(fields[11]) + int(fields[12]),
                    int(fields[21]) * PAGE)
    except ValueError:
        return None


def _stat_of(pid: int) -> Proc | None:
    """``/proc/PID/stat`` in one read (the kernel hands the whole line at once)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, STAT_LIMIT)
    except OSError:
        return None
    finally:
        os.close(fd)
    return parse_stat(data) if data else None


def scan() -> Table:
    """Every live process of the machine, from one pass over ``/proc``."""
    return scan_pids(proctree._pids())


def scan_pids(pids: Iterable[int]) -> Table:
    """Only these processes (those gone left out): the cheap look between full scans."""
    table: Table = {}
    for pid in pids:
        proc = _stat_of(pid)
        if proc is not None:
            table[pid] = proc
    return table


def parse_ps(text: str) -> Table:
    """The table from ``ps -axo pid=,ppid=,time=,rss=`` (macOS): ``time`` is CPU time as
    ``[[dd-]hh:]mm:ss[.cc]``, ``rss`` KiB. Start times are unknown there (0)."""
    table: Table = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        try:
            pid, ppid, rss = int(parts[0]), int(parts[1]), int(parts[3]) * 1024
            seconds = _cpu_time(parts[2])
        except ValueError:
            continue
        table[pid] = Proc(ppid, 0, round(seconds * TICKS), rss)
    return table


def _cpu_time(text: str) -> float:
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return days * 86400 + seconds


def scan_ps(timeout: float = 5.0) -> Table:
    """The seam for systems without ``/proc``: one ``ps`` run (empty when it fails)."""
    try:
        out = subprocess.run(["ps", "-axo", "pid=,ppid=,time=,rss="], capture_output=True,
                             text=True, timeout=timeout, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_ps(out)


def children_of(table: Table) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    return children


def tree(root: int, children: dict[int, list[int]], include_root: bool) -> list[int]:
    """``root`` (when asked) and every descendant of it."""
    out = [root] if include_root else []
    todo = list(children.get(root, ()))
    seen = set(out)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def parse_rollup(data: bytes) -> int | None:
    """PSS in bytes from ``/proc/PID/smaps_rollup``; None when the line is not there."""
    for line in data.splitlines():
        if line.startswith(b"Pss:"):
            try:
                return int(line.split()[1]) * 1024
            except (IndexError, ValueError):
                return None
    return None


def pss(pid: int) -> int | None:
    """The proportional set size of ``pid`` (gone, denied, or an old kernel: None)."""
    data = proctree._read(f"/proc/{pid}/smaps_rollup", ROLLUP_LIMIT)
    return parse_rollup(data) if data else None


def parse_net(text: str) -> dict[int, int]:
    """Listening socket inode -> port, from the text of ``/proc/net/tcp`` or ``tcp6``."""
    out: dict[int, int] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        try:
            port = int(fields[1].rpartition(":")[2], 16)
            inode = int(fields[9])
        except ValueError:
            continue
        if inode:
            out[inode] = port
    return out


def listening_inodes() -> dict[int, int]:
    """Every TCP socket in LISTEN in this network namespace: inode -> port."""
    out: dict[int, int] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        data = proctree._read(name, NET_LIMIT)
        if data:
            out.update(parse_net(data.decode("ascii", "replace")))
    return out


def socket_inodes(pid: int, limit: int = MAX_FDS) -> set[int]:
    """Socket inodes among the first ``limit`` descriptors of ``pid`` (empty: gone, denied)."""
    folder = f"/proc/{pid}/fd"
    found: set[int] = set()
    try:
        names = os.listdir(folder)
    except OSError:
        return found
    for name in names[:limit]:
        try:
            target = os.readlink(f"{folder}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            try:
                found.add(int(target[8:-1]))
            except ValueError:
                continue
    return found


def cgroup_cpu_usec(path: str) -> int | None:
    """``usage_usec`` of a cgroup v2 group's ``cpu.stat`` (None: unreadable)."""
    data = proctree._read(os.path.join(path, "cpu.stat"))
    if not data:
        return None
    for line in data.splitlines():
        key, _, value = line.partition(b" ")
        if key == b"usage_usec":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def cgroup_members(path: str, limit: int = 65536) -> list[int]:
    data = proctree._read(os.path.join(path, "cgroup.procs"), limit)
    if not data:
        return []
    try:
        return [int(x) for x in data.split()]
    except ValueError:
        return []
