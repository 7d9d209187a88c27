"""How the chaos harness (``tests/chaos.py``) judges a round, from outside the daemon:
its status answers and /proc. Pure functions of what was seen, but for the scans.

- **duplicates**: copies beyond one of a task's process. Every task process carries
  ``--chaos-marker=RUN:TASK`` as one argument; a copy is a marked process whose parent is not
  a marked process of the same task (a forked child keeps its parent's command line, so a
  PostgreSQL-shaped task is one copy while its parent lives, and two once the child is
  orphaned).
- **lost**: a task the user wants up (the project is wanted up and the task was not stopped
  by hand; every task here either runs until stopped or is restarted ``always``) that is
  neither running with a live process nor in backoff (one whose process runs untracked is
  counted as dead while running instead).
- **dead while running**: status says stopped, exited, fatal or backoff while a marked
  process of the task runs.
- **corrupt**: a JSON file under ``TASKMUX_HOME/projects/*/`` that does not parse, and any
  ``*.corrupt-*`` file that appeared during the round.

A fault counts only when it shows in every one of a few looks a moment apart, each taken
between two status answers that agree on the task (so a crash loop caught mid-report is
never a false alarm; the faults this hunts for last).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
from dataclasses import dataclass, field
from typing import Any

DEAD_STATES = frozenset({"stopped", "exited", "fatal", "backoff"})
LIVE_STATES = frozenset({"running", "starting", "stopping"})


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # a chaos_task.py kind
    policy: str = "on-failure"
    health: str | None = None  # "url" | "command" | None
    depends_on: tuple[str, ...] = ()
    restart_delay: float | None = None  # 0: its first restart in a row is granted ahead


def marker(run: str, task: str) -> str:
    return f"--chaos-marker={run}:{task}"



def marked_processes(run: str) -> dict[int, tuple[str, int]]:
    """pid → (task, parent pid) of every live process carrying this run's marker."""
    prefix = f"--chaos-marker={run}:".encode()
    out: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
            task = next((a[len(prefix):].decode() for a in args if a.startswith(prefix)), None)
            if task is None:
                continue
            with open(f"/proc/{entry}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(") ", 1)[1].split()
        except (OSError, UnicodeDecodeError):
            continue
        if fields[0] in ("Z", "X"):
            continue
        out[int(entry)] = (task, int(fields[1]))
    return out


def copies(procs: dict[int, tuple[str, int]]) -> dict[str, list[int]]:
    """task → the pids of its copies (marked processes whose parent is not of the task)."""
    out: dict[str, list[int]] = {}
    for pid, (task, ppid) in procs.items():
        parent = procs.get(ppid)
        if parent is None or parent[0] != task:
            out.setdefault(task, []).append(pid)
    return out


def kill_marked(run: str) -> int:
    """SIGKILL every live process of this run (found by its marker); the count."""
    procs = marked_processes(run)
    for pid in procs:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return len(procs)


def state_files(home: str) -> list[str]:
    found = glob.glob(os.path.join(home, "projects", "*", "**", "*.json"), recursive=True)
    return sorted([*found, os.path.join(home, "registry.json")])


def unparsable(home: str) -> set[str]:
    bad = set()
    for path in state_files(home):
        try:
            with open(path, encoding="utf-8") as fh:
                json.load(fh)
        except FileNotFoundError:
            continue
        except (OSError, ValueError):
            bad.add(os.path.relpath(path, home))
    return bad


def corrupt_asides(home: str) -> set[str]:
    return {os.path.relpath(p, home)
            for p in glob.glob(os.path.join(home, "**", "*.corrupt-*"), recursive=True)}


@dataclass
class Findings:
    duplicates: dict[str, int] = field(default_factory=dict)  # task → extra copies
    lost: dict[str, str] = field(default_factory=dict)  # task → what status said
    dead: dict[str, str] = field(default_factory=dict)  # task → state, while pids ran
    corrupt: set[str] = field(default_factory=set)

    @property
    def total(self) -> int:
        return (sum(self.duplicates.values()) + len(self.lost) + len(self.dead)
                + len(self.corrupt))

    def both(self, other: Findings) -> Findings:
        """What shows in both looks."""
        return Findings(
            {t: min(n, other.duplicates[t]) for t, n in self.duplicates.items()
             if t in other.duplicates},
            {t: s for t, s in self.lost.items() if t in other.lost},
            {t: s for t, s in self.dead.items() if t in other.dead},
            self.corrupt & other.corrupt)

    def describe(self) -> str:
        parts = []
        if self.duplicates:
            parts.append("dup " + ",".join(f"{t}x{n + 1}" for t, n in
                                             sorted(self.duplicates.items())))
        if self.lost:
            parts.append("lost " + ",".join(f"{t}({s})" for t, s in sorted(self.lost.items())))
        if self.dead:
            parts.append("dead " + ",".join(f"{t}({s})" for t, s in sorted(self.dead.items())))
        if self.corrupt:
            parts.append("corrupt " + ",".join(sorted(self.corrupt)))
        return "; ".join(parts)


def _signature(info: dict[str, Any]) -> tuple[Any, ...]:
    return info["state"], info["pid"], info["restarts"], info["manually_stopped"]


def judge(status_before: dict[str, Any], status_after: dict[str, Any],
          found: dict[str, list[int]], tasks: list[TaskSpec]) -> Findings:
    """One look: the faults of every task on which both status answers agree."""
    before = {t["name"]: t for t in status_before["tasks"]}
    after = {t["name"]: t for t in status_after["tasks"]}
    wanted_up = bool(status_before["wanted_up"]) and bool(status_after["wanted_up"])
    out = Findings()
    for spec in tasks:
        info = after.get(spec.name)
        if info is None or before.get(spec.name) is None:
            out.lost[spec.name] = "missing from status"
            continue
        if _signature(before[spec.name]) != _signature(info):
            continue  # changing under our eyes: judged in another look
        pids = found.get(spec.name, [])
        state = str(info["state"])
        if len(pids) > 1:
            out.duplicates[spec.name] = len(pids) - 1
        if state in DEAD_STATES and pids:
            out.dead[spec.name] = state
        wanted = wanted_up and not info["manually_stopped"]
        up = (state in LIVE_STATES and bool(pids)) or state == "backoff"
        if wanted and not up and spec.name not in out.dead:  # a dead one is counted there
            out.lost[spec.name] = state if state not in LIVE_STATES else f"{state}, no process"
    return out
