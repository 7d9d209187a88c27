"""DEV PLACEHOLDER — replaced by the p11-runner branch's module at merge."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import NamedTuple

MARKER_VAR = "TASKMUX_RUN"
_boot: str | None = None


class ProcId(NamedTuple):
    pid: int
    start: int
    boot: str


def boot_id() -> str:
    global _boot
    if _boot is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as fh:
                _boot = fh.read().strip()
        except OSError:
            _boot = ""
    return _boot


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].decode().split()


def start_ticks(pid: int) -> int | None:
    f = _stat(pid)
    return int(f[19]) if f is not None else None


def procid(pid: int) -> ProcId | None:
    t = start_ticks(pid)
    return None if t is None else ProcId(pid, t, boot_id())


def is_alive(p: ProcId) -> bool:
    f = _stat(p.pid)
    return f is not None and f[0] != "Z" and int(f[19]) == p.start and p.boot == boot_id()


def find_marked(prefix: str, uid: int | None = None, exact: bool = False) -> list[ProcId]:
    want = f"{MARKER_VAR}={prefix}".encode()
    out = []
    me = os.getpid()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read(262144)
        except OSError:
            continue
        for item in env.split(b"\0"):
            if (item == want) if exact else item.startswith(want):
                p = procid(int(name))
                if p is not None and is_alive(p):
                    out.append(p)
                break
    return out


def signal_ids(ids: list[ProcId], sig: int) -> int:
    n = 0
    for p in ids:
        if is_alive(p):
            try:
                os.kill(p.pid, sig)
                n += 1
            except ProcessLookupError:
                pass
    return n


def stop_ladder(ids_fn: Callable[[], list[ProcId]], grace: float,
                on_step: Callable[[int, int], None] | None = None) -> bool:
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        ids = ids_fn()
        if not ids:
            return True
        n = signal_ids(ids, sig)
        if on_step:
            on_step(sig, n)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not any(is_alive(p) for p in ids):
                break
            time.sleep(0.02)
    return not ids_fn()


def tree_stats(root_pid: int) -> tuple[int, int]:
    return root_pid, 1


# -- one scan for many trees (status of every task) -----------------------------------------

SHELLS = frozenset({"sh", "dash", "bash", "zsh", "fish", "ash", "ksh", "mksh"})


class Snapshot:
    """One pass over /proc: each process's parent and name, to answer many tree questions."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}
        self.comm: dict[int, str] = {}
        self.children: dict[int, list[int]] = {}
        try:
            names = os.listdir("/proc")
        except OSError:
            names = []
        for name in names:
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            pid = int(name)
            close = data.rfind(b")")
            fields = data[close + 2:].split()
            if not fields or fields[0] == b"Z":
                continue
            ppid = int(fields[1])
            self.parent[pid] = ppid
            self.comm[pid] = data[data.find(b"(") + 1:close].decode("utf-8", "replace")
            self.children.setdefault(ppid, []).append(pid)

    def tree(self, root: int) -> tuple[int | None, int]:
        """(the main program, how many processes) of the tree under ``root`` (root included).
        The main program is ``root`` unless ``root`` is a shell that only wraps one child."""
        if root not in self.parent:
            return None, 0
        count, todo = 0, [root]
        while todo:
            pid = todo.pop()
            count += 1
            todo.extend(self.children.get(pid, ()))
        main = root
        while self.comm.get(main) in SHELLS and len(self.children.get(main, ())) == 1:
            main = self.children[main][0]
        return main, count
