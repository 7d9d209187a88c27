"""Which processes are a task's, proven so that a reused pid is never mistaken for one.

A process is named by a :class:`ProcId`: its pid, its start time in clock ticks since boot
(field 22 of ``/proc/PID/stat``) and the boot id. A pid can be reused; the three together
cannot. Every process a task starts carries ``TASKMUX_RUN=<marker>`` in its environment
(``{home_id}:{project}:{task}:{run_id}``), so the task's processes are found again even after
they left its process group, its session, or lost their parent. A marker is only as durable as
the environment block it lives in: programs that write their process title over it
(PostgreSQL's background processes, nginx, redis) show none afterwards; those are found as
descendants (:func:`descendants`) of the runner, their subreaper, or of the task's first
process.

Linux reads ``/proc``. Elsewhere (no ``/proc``) nothing can be proven: the look-ups return
``None`` or empty results, :func:`is_alive` is False and therefore nothing is ever signalled;
:data:`AVAILABLE` says which case holds.

Standard library only and cheap to import: the runner (one per task) imports it, so it avoids
``typing``, ``signal`` (``enum``) and ``collections`` at run time.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C half: no enum import
import posix as os  # not os: the runner imports this (see runpath)
import time

from taskmuxd import pidwindow, runpath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import NamedTuple

    class ProcId(NamedTuple):
        """A process beyond pid reuse: pid, start time (clock ticks since boot), boot id."""

        pid: int
        start: int
        boot: str
else:
    class ProcId(tuple):
        """A process beyond pid reuse: pid, start time (clock ticks since boot), boot id.

        A named tuple (built by hand: ``collections`` costs the runner memory)."""

        __slots__ = ()
        _fields = ("pid", "start", "boot")

        def __new__(cls, pid, start, boot):
            return tuple.__new__(cls, (pid, start, boot))

        pid = property(lambda self: self[0])
        start = property(lambda self: self[1])
        boot = property(lambda self: self[2])

        def __repr__(self):
            return f"ProcId(pid={self[0]!r}, start={self[1]!r}, boot={self[2]!r})"

        @classmethod
        def _make(cls, iterable):
            return cls(*iterable)

        def _asdict(self):
            return dict(zip(self._fields, self, strict=True))

        def _replace(self, **changes):
            return ProcId(*(changes.pop(f, v) for f, v in zip(self._fields, self, strict=True)))

MARKER_VAR = "TASKMUX_RUN"
AVAILABLE = runpath.exists("/proc/self/stat")
ENVIRON_LIMIT = 256 * 1024  # bytes of /proc/PID/environ read at most
CHILDREN_LIMIT = 1024 * 1024  # bytes of one /proc/PID/task/TID/children read at most
TREE_LIMIT = 65536  # processes a walk of a tree collects at most
READ_CHUNK = 16384
SHELLS = frozenset(("sh", "dash", "bash", "zsh", "fish", "ash", "ksh", "mksh"))
POLL = 0.02  # seconds between checks while waiting for processes to end
KILL_WAIT = 5.0  # seconds allowed after SIGKILL
LADDER = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGKILL)
PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>
PR_SET_TIMERSLACK = 29

_boot_id: str | None = None


def _read(path: str, limit: int = 4096) -> bytes | None:
    """Up to ``limit`` bytes of a /proc file; None when it cannot be read (gone, denied).
    Read in pieces of at most ``READ_CHUNK``: a large first request costs an allocation of
    its whole size even for the few kilobytes an environment usually holds."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit:
            chunk = os.read(fd, min(limit - size, READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _stat(pid: int) -> tuple[str, int, int, str] | None:
    """(state, ppid, start ticks, comm) of ``pid`` from /proc/PID/stat, or None."""
    data = _read(f"/proc/{pid}/stat")
    if not data:
        return None
    head, sep, tail = data.rpartition(b")")  # comm may hold spaces and parentheses
    fields = tail.split()
    if not sep or len(fields) < 20:
        return None
    comm = head.partition(b"(")[2].decode("utf-8", "replace")
    return fields[0].decode("ascii", "replace"), int(fields[1]), int(fields[19]), comm


def boot_id() -> str:
    """This boot's id (``/proc/sys/kernel/random/boot_id``), cached; "" where unavailable."""
    global _boot_id
    if _boot_id is None:
        data = _read("/proc/sys/kernel/random/boot_id")
        _boot_id = data.decode("ascii", "replace").strip() if data else ""
    return _boot_id


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None when it does not exist (or no
    /proc)."""
    st = _stat(pid) if pid > 0 else None
    return st[2] if st else None


def procid(pid: int) -> ProcId | None:
    """The identity of the process now holding ``pid`` (a zombie included: :func:`is_alive`
    tells those apart); None when there is none or it cannot be proven (no /proc)."""
    start = start_ticks(pid)
    boot = boot_id()
    if start is None or not boot:
        return None
    return ProcId(pid, start, boot)


def is_alive(pid_id: ProcId) -> bool:
    """Whether the very process ``pid_id`` names still runs: same pid, same start ticks, same
    boot, and not a zombie. Always False where identity cannot be proven (no /proc)."""
    if pid_id.pid <= 0 or not pid_id.boot or pid_id.boot != boot_id():
        return False
    st = _stat(pid_id.pid)
    return st is not None and st[2] == pid_id.start and st[0] not in ("Z", "X")


def marker_of(pid: int) -> str | None:
    """The value of ``TASKMUX_RUN`` in the environment ``pid`` started with (its first
    ``ENVIRON_LIMIT`` bytes), or None: unset, unreadable, or no /proc."""
    data = _read(f"/proc/{pid}/environ", ENVIRON_LIMIT)
    if not data:
        return None
    key = b"\0" + MARKER_VAR.encode() + b"="
    data = b"\0" + data
    at = data.find(key)  # the first one, as getenv() would see it
    if at < 0:
        return None
    at += len(key)
    end = data.find(b"\0", at)
    return data[at:end if end >= 0 else len(data)].decode("utf-8", "replace")


def _pids() -> list[int]:
    try:
        return [int(name) for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return []


def find_marked(prefix: str, uid: int | None = None, exact: bool = False,
                since: pidwindow.Mark | None = None) -> list[ProcId]:
    """Every live (not zombie) process of ``uid`` (default: ours) whose ``TASKMUX_RUN`` starts
    with ``prefix`` (``exact``: equals it). ``"home:proj:task:"`` finds every run of a task;
    one run is ``find_marked("home:proj:task:7", exact=True)`` (a bare prefix would also
    match run 70). The calling process is skipped, and so are processes whose environment
    cannot be read. Reads each process's environment (the kernel refuses those of other
    users unless we may trace them; the owner is checked on a match): about ten
    microseconds of CPU per process on the machine. Empty where there is no /proc.
    ``since`` (a ``pidwindow.mark``): only processes created after it are looked at, where
    that can be proven (else all)."""
    if uid is None:
        uid = os.getuid()
    me = os.getpid()
    found: list[ProcId] = []
    boot = boot_id()
    win = pidwindow.window(since)
    for pid in _pids():
        if pid == me or (win is not None and not pidwindow.inside(pid, win)):
            continue
        value = marker_of(pid)
        if value is None or (value != prefix if exact else not value.startswith(prefix)):
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        st = _stat(pid)
        if st is not None and st[0] not in ("Z", "X") and boot:
            found.append(ProcId(pid, st[2], boot))
    return found


_children_files: bool | None = None


def _has_children_files() -> bool:
    """Whether this kernel lists children in /proc/PID/task/TID/children
    (``CONFIG_PROC_CHILDREN``, on in the usual distribution kernels); checked once."""
    global _children_files
    if _children_files is None:
        me = os.getpid()
        _children_files = runpath.exists(f"/proc/{me}/task/{me}/children")
    return _children_files


def _children_of(pid: int) -> list[int]:
    """The children of every thread of ``pid`` (a thread's file lists what that thread
    forked); empty when ``pid`` is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    out: list[int] = []
    for tid in tids:
        data = _read(f"/proc/{pid}/task/{tid}/children", CHILDREN_LIMIT)
        if data:
            out.extend(int(x) for x in data.split() if x.isdigit())
    return out


def tree(root: int) -> list[ProcId] | None:
    """Every live descendant of ``root`` (not ``root`` itself), found by walking down the
    children files from ``root``: the cost grows with the tree, not with the number of
    processes on the machine. None where that cannot be done (no /proc, no children files):
    :func:`descendants` then scans every process.

    A child is taken only when its parent, read from its own stat, is the process whose
    file named it, and a parent's children count only when the parent is still the process
    it was when it was taken (its start ticks): a pid that ends and is reused meanwhile is
    never taken for the tree's. A process forked during the walk may be missed; callers that
    must see everything walk again (the stop ladder does, at each step). A zombie counts as
    gone (its children were already handed on). At most ``TREE_LIMIT`` processes."""
    boot = boot_id()
    if not boot or not _has_children_files():
        return None
    found: list[ProcId] = []
    seen = {root}
    todo: list[tuple[int, int | None]] = [(root, None)]  # (pid, its start ticks)
    while todo and len(found) < TREE_LIMIT:
        parent, started = todo.pop()
        kids = _children_of(parent)
        if not kids:
            continue
        if started is not None and start_ticks(parent) != started:
            continue  # it ended (and its pid may name another process now)
        for kid in kids:
            if kid in seen:
                continue
            seen.add(kid)
            st = _stat(kid)
            if st is None or st[1] != parent or st[0] in ("Z", "X"):
                continue
            found.append(ProcId(kid, st[2], boot))
            todo.append((kid, st[2]))
    return found


def _table() -> dict[int, tuple[str, int, int, str]]:
    """One scan of /proc: pid -> (state, ppid, start ticks, comm)."""
    table = {}
    for pid in _pids():
        st = _stat(pid)
        if st is not None:
            table[pid] = st
    return table


def _live_children(table: dict[int, tuple[str, int, int, str]]) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, (state, ppid, _start, _comm) in table.items():
        if state not in ("Z", "X"):
            children.setdefault(ppid, []).append(pid)
    return children


def _below(root: int, children: dict[int, list[int]]) -> list[int]:
    out: list[int] = []
    todo = list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def descendants(pid: int) -> list[ProcId]:
    """Every live descendant of ``pid`` (not ``pid`` itself), from one scan of /proc. Empty
    where there is no /proc."""
    boot = boot_id()
    if not boot:
        return []
    table = _table()
    return [ProcId(p, table[p][2], boot) for p in _below(pid, _live_children(table))]


def is_descendant(pid: int, ancestor: int, max_depth: int = 256) -> bool:
    """Whether ``pid`` is a descendant of ``ancestor`` (not ``ancestor`` itself), by its chain
    of parents; at most ``max_depth`` steps. A zombie still names its parent (and its pid
    cannot be reused until reaped), so it counts; a process already gone does not. False
    where there is no /proc."""
    seen = 0
    while pid > 1 and seen < max_depth:
        st = _stat(pid)
        if st is None:
            return False
        pid = st[1]
        if pid == ancestor:
            return True
        seen += 1
    return False


def tree_stats(root_pid: int) -> tuple[int, int]:
    """(main pid, number of live processes) of the tree of ``root_pid`` and its descendants.

    The main pid is the program rather than the shell that wraps it: from the root, while the
    process is a shell (``sh -c …``) with exactly one live child, go down to that child.
    ``(root_pid, 0)`` when the root is gone or a zombie, or where there is no /proc.
    Processes that left the tree by re-parenting are not counted: the runner's tree
    (``tree_stats(runner_pid)`` less one) holds those too."""
    table = _table()
    root = table.get(root_pid)
    if root is None or root[0] in ("Z", "X"):
        return root_pid, 0
    children = _live_children(table)
    main = root_pid
    while table[main][3] in SHELLS and len(children.get(main, ())) == 1:
        main = children[main][0]
    return main, 1 + len(_below(root_pid, children))


class Snapshot:
    """One scan of /proc that answers ``tree_stats`` for many roots (a status call asks it
    for every task); empty where there is no /proc."""

    def __init__(self) -> None:
        self.table = _table()
        self.children = _live_children(self.table)

    def alive(self, pid: int) -> bool:
        st = self.table.get(pid)
        return st is not None and st[0] not in ("Z", "X")

    def tree(self, root_pid: int) -> tuple[int | None, int]:
        """As ``tree_stats``, but ``(None, 0)`` for a root that is gone."""
        if not self.alive(root_pid):
            return None, 0
        main = root_pid
        while self.table[main][3] in SHELLS and len(self.children.get(main, ())) == 1:
            main = self.children[main][0]
        return main, 1 + len(_below(root_pid, self.children))


def _send(pid_id: ProcId, sig: int) -> bool:
    """Signal one process if it is provably still ``pid_id``. With a pidfd (Linux 5.3+) the
    identity is checked after the pidfd is open, so the signal reaches exactly the process
    checked even if it ends and its pid is reused in between."""
    if pid_id.pid <= 0:  # 0 and -1 would mean a process group or every process
        return False
    pidfd = -1
    opener = getattr(os, "pidfd_open", None)
    if opener is not None:
        try:
            pidfd = opener(pid_id.pid)
        except ProcessLookupError:
            return False
        except OSError:  # no pidfd support here: fall back to a checked kill
            pidfd = -1
    try:
        if not is_alive(pid_id):
            return False
        if pidfd >= 0:
            _signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(pid_id.pid, sig)
        return True
    except OSError:  # ended meanwhile, or not ours to signal
        return False
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def signal_ids(ids: Iterable[ProcId], sig: int) -> int:
    """Send ``sig`` to each process of ``ids`` whose identity still matches; how many got
    it. A process whose identity does not match (ended, pid reused) is never signalled."""
    return sum(1 for pid_id in ids if _send(pid_id, sig))


def stop_ladder(ids_fn: Callable[[], list[ProcId]], grace: float,
                on_step: Callable[[int, int], None] | None = None,
                wait: Callable[[float], None] | None = None) -> bool:
    """Stop a set of processes: SIGINT, up to ``grace`` seconds, SIGTERM, up to ``grace``
    seconds, SIGKILL, up to ``KILL_WAIT`` seconds; True when none remain.

    ``ids_fn()`` collects the set afresh at each step, so processes started meanwhile get the
    next signal; identities in it that no longer match a live process count as gone. A step
    ends early once everything it signalled is gone and nothing new appeared.
    ``on_step(sig, count)`` is told each signal sent and to how many processes. Waiting checks
    every ``POLL`` seconds through ``wait(seconds)`` (default ``time.sleep``): the runner
    passes its own so that it keeps relaying output and reaping children meanwhile.
    Blocking: call it from a thread in asyncio code."""
    pause = wait if wait is not None else time.sleep

    def remaining() -> list[ProcId]:
        return [pid_id for pid_id in ids_fn() if is_alive(pid_id)]

    for sig in LADDER:
        ids = remaining()
        if not ids:
            return True
        sent = signal_ids(ids, sig)
        if on_step is not None:
            on_step(sig, sent)
        deadline = time.monotonic() + (KILL_WAIT if sig == _signal.SIGKILL else grace)
        while True:
            ids = [pid_id for pid_id in ids if is_alive(pid_id)]
            if not ids:  # those signalled are gone: anything new since?
                ids = remaining()
                if not ids:
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                break
            pause(min(POLL, left))
    return not remaining()


def set_child_subreaper() -> bool:
    """Make this process the child subreaper of its descendants (Linux ``prctl``): orphans
    among them are re-parented to it rather than to init. Whether that worked; False on other
    platforms."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def timer_slack(ns: int) -> bool:
    """Set how late this process's timers may fire (Linux ``PR_SET_TIMERSLACK``, in ns; 0:
    back to the slack it inherited, 50 us by default, which its children inherit in turn).
    Whether that worked."""
    return _prctl(PR_SET_TIMERSLACK, ns)


_prctl_address: int | None = None


def _prctl(option: int, arg: int) -> bool:
    """``prctl(option, arg, 0, 0, 0) == 0``, through ``_ctypes``, ctypes' C half, which costs
    the runner a fifth of what ``import ctypes`` does; ``ctypes`` only where that half lacks
    the call. False where there is no ``prctl``."""
    global _prctl_address
    if not AVAILABLE:
        return False
    try:
        import _ctypes

        if _prctl_address is None:
            program = _ctypes.dlopen(None)  # type: ignore[arg-type]  # NULL: this program
            _prctl_address = _ctypes.dlsym(program, "prctl")
        return bool(_ctypes.call_function(_prctl_address, (option, arg, 0, 0, 0)) == 0)
    except (ImportError, AttributeError, OSError):
        pass
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, arg, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
