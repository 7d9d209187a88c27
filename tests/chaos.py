"""The chaos harness: a real daemon supervising a lively project, ``kill -9``-ed at chosen
moments, and after each round a count of what went wrong.

One implementation, two users: ``tests/test_chaos.py`` runs a few rounds of each kind and
asserts zero faults; ``bench/chaos.py`` runs a hundred and prints the figures (and
``bench/ownership.py`` reuses the set-up for its timings).

What a round counts, and how, is ``tests/chaos_look.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests import scratch
from tests.chaos_look import (
    LIVE_STATES,
    Findings,
    TaskSpec,
    copies,
    corrupt_asides,
    judge,
    kill_marked,
    marked_processes,
    marker,
    unparsable,
)
from tests.helpers import (
    DaemonProcess,
    call,
    daemon_env,
    kill_processes_of_home,
    kill_task_leftovers,
    write_config,
)

TASK_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chaos_task.py")
KINDS = ("idle", "start", "restart", "stop", "crashloop")


def chaos_tasks() -> list[TaskSpec]:
    """Sixteen tasks: health checks by URL and by command, crash loops (one whose first
    restart in a row is granted ahead), a chatty logger, PostgreSQL-shaped forkers, tasks
    that are never restarted, and a dependency."""
    return [
        TaskSpec("web1", "http", health="url"),
        TaskSpec("web2", "http", health="url"),
        TaskSpec("web3", "http", policy="always", health="url"),
        TaskSpec("check1", "sleeper", health="command"),
        TaskSpec("check2", "forker", health="command"),
        TaskSpec("crash1", "crash", policy="always"),
        TaskSpec("crash2", "crash", policy="always"),
        TaskSpec("crash3", "crash", policy="always", restart_delay=0),  # granted restarts
        TaskSpec("chatty", "chatty"),
        TaskSpec("pg1", "forker"),
        TaskSpec("pg2", "forker", policy="always"),
        TaskSpec("once1", "sleeper", policy="no"),
        TaskSpec("once2", "forker", policy="no"),
        TaskSpec("plain1", "sleeper"),
        TaskSpec("plain2", "sleeper", policy="always"),
        TaskSpec("plain3", "sleeper", depends_on=("web1",)),
    ]


def plain_tasks(count: int, forkers: bool = True) -> list[TaskSpec]:
    """``count`` tasks that run until stopped; with ``forkers``, one in four is
    PostgreSQL-shaped."""
    return [TaskSpec(f"t{i:02d}", "forker" if forkers and i % 4 == 3 else "sleeper")
            for i in range(count)]


def project_toml(name: str, run: str, tasks: list[TaskSpec], alive_dir: str,
                 python: str = sys.executable) -> str:
    lines = [f'name = "{name}"', ""]
    for t in tasks:
        alive = os.path.join(alive_dir, t.name)
        lines += [f"[tasks.{t.name}]",
                  f'command = "{python} -S {TASK_SCRIPT} {marker(run, t.name)} {t.kind} '
                  f'{alive}"',
                  f'restart_policy = "{t.policy}"',
                  "restart_backoff = 1.0", "max_restarts = 100000", "stop_grace_period = 2.0"]
        if t.kind == "http":
            lines += ['port = "auto"', 'health_url = "http://127.0.0.1:$PORT/"']
        if t.health == "command":
            lines.append(f'health_check = "test -e {alive}"')
        if t.health:
            lines += ["health_interval = 1.0", "health_grace = 5.0", "health_timeout = 2.0"]
        if t.depends_on:
            lines.append(f"depends_on = {json.dumps(list(t.depends_on))}")
        if t.restart_delay is not None:
            lines.append(f"restart_delay = {t.restart_delay}")
        lines.append("")
    return "\n".join(lines)


# -- the harness ------------------------------------------------------------------------------

@dataclass
class Round:
    number: int
    kind: str
    kill_after: float  # seconds from the request (or the moment) to the kill
    ready: float  # kill → the new daemon answering
    settled: float | None  # kill → no task starting or stopping (None: not within the bound)
    findings: Findings
    note: str = ""

    def line(self) -> str:
        f = self.findings
        settled = f"{self.settled:5.2f}s" if self.settled is not None else "  n/a "
        return (f"round {self.number:3d} {self.kind:9s} kill@{self.kill_after * 1000:4.0f}ms "
                f"ready {self.ready:5.2f}s settled {settled}  dup {sum(f.duplicates.values())}"
                f"  lost {len(f.lost)}  dead {len(f.dead)}  corrupt {len(f.corrupt)}"
                + (f"  [{f.describe()}]" if f.total else "") + (f"  ({self.note})"
                                                               if self.note else ""))


class Chaos:
    """A project supervised by a real daemon on ``home`` and tmux socket ``tmux_socket``."""

    def __init__(self, home: str, tmux_socket: str, workdir: str,
                 tasks: list[TaskSpec] | None = None, project: str = "chaos",
                 settle_timeout: float = 30.0) -> None:
        self.home = home
        self.tmux_socket = tmux_socket
        self.run = uuid.uuid4().hex[:10]
        self.project = project
        self.tasks = tasks if tasks is not None else chaos_tasks()
        self.settle_timeout = settle_timeout
        self.env = {**daemon_env(home), "TASKMUX_TMUX_SOCKET": tmux_socket}
        self.folder = os.path.join(workdir, project)
        self.alive_dir = os.path.join(workdir, f"{project}-alive")
        os.makedirs(self.folder, exist_ok=True)
        os.makedirs(self.alive_dir, exist_ok=True)
        self.config = os.path.join(self.folder, "taskmux.toml")
        with open(self.config, "w", encoding="utf-8") as fh:
            fh.write(project_toml(project, self.run, self.tasks, self.alive_dir))
        self.daemons: list[DaemonProcess] = []
        self.asides: set[str] = set()

    # -- the daemon -------------------------------------------------------------------------

    @property
    def daemon(self) -> DaemonProcess:
        return self.daemons[-1]

    @property
    def sock(self) -> str:
        return os.path.join(self.home, "ctl.sock")

    def start_daemon(self) -> float:
        """A new daemon; seconds until it answers."""
        t0 = time.monotonic()
        self.daemons.append(DaemonProcess(self.home, self.env).wait_ready(60))
        return time.monotonic() - t0

    def kill_daemon(self) -> None:
        d = self.daemon
        with contextlib.suppress(ProcessLookupError):
            os.kill(d.pid, signal.SIGKILL)
        d.proc.wait(10)

    def call(self, method: str, params: dict[str, Any] | None = None,
             timeout: float = 60.0) -> Any:
        return call(self.sock, method, params, timeout)

    def send(self, method: str, params: dict[str, Any]) -> socket.socket:
        """Send a request and do not wait for its answer (the caller closes the socket)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.sock)
        msg = {"jsonrpc": "2.0", "method": method, "id": 1, "params": params}
        s.sendall(json.dumps(msg).encode() + b"\n")
        return s

    def shell_env(self) -> dict[str, str]:
        return {k: v for k, v in self.env.items() if k in ("PATH", "HOME", "LANG", "USER")}

    def start_project(self, tasks: list[str] | None = None) -> None:
        self.call("project.start", {"config": self.config, "cwd": self.folder,
                                    "tasks": tasks, "env": self.shell_env()}, timeout=120)

    def status(self, timeout: float = 10.0) -> dict[str, Any]:
        result: dict[str, Any] = self.call("project.status", {"project": self.project},
                                           timeout)
        return result

    # -- waiting and looking ----------------------------------------------------------------

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until status answers with no task starting or stopping (bounded)."""
        deadline = time.monotonic() + (timeout or self.settle_timeout)
        while time.monotonic() < deadline:
            try:
                st = self.status(timeout=max(deadline - time.monotonic(), 0.5))
                if not any(t["state"] in ("starting", "stopping") for t in st["tasks"]):
                    return True
            except (OSError, RuntimeError):
                pass
            time.sleep(0.05)
        return False

    def look(self) -> Findings:
        before = self.status()
        found = copies(marked_processes(self.run))
        after = self.status()
        out = judge(before, after, found, self.tasks)
        out.corrupt = unparsable(self.home)
        return out

    def check(self, looks: int = 3, gap: float = 0.4) -> Findings:
        """Faults that show in every one of ``looks`` looks, plus state files moved aside."""
        result = self.look()
        for _ in range(looks - 1):
            if not result.total:
                break
            time.sleep(gap)
            result = result.both(self.look())
        asides = corrupt_asides(self.home)
        result.corrupt |= asides - self.asides
        self.asides |= asides
        return result

    def wait_all_up(self, timeout: float = 60.0) -> bool:
        """Wait until every task the user wants up is judged fine (used before rounds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, RuntimeError):
                if not self.look().total:
                    return True
            time.sleep(0.2)
        return False

    # -- a round ----------------------------------------------------------------------------

    def _wait_crash_moment(self, rng: random.Random) -> None:
        """Return just after a crash-looping task exits (its exit shows in the event log) or
        is launched again (its runner rewrites its record), bounded."""
        crashers = {t.name for t in self.tasks if t.kind == "crash"}
        events = os.path.join(self.home, "events.jsonl")
        records = [os.path.join(self.home, "projects", self.project, "run", f"{n}.json")
                   for n in sorted(crashers)]

        def mtimes() -> list[int]:
            out = []
            for path in records:
                try:
                    out.append(os.stat(path).st_mtime_ns)
                except OSError:
                    out.append(0)
            return out

        try:
            offset = os.path.getsize(events)
        except OSError:
            offset = 0
        at_launch = rng.random() < 0.5
        first = mtimes()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if at_launch:
                if mtimes() != first:
                    return
            else:
                with contextlib.suppress(OSError), open(events, "rb") as fh:
                    fh.seek(offset)
                    for line in fh.read().splitlines():
                        with contextlib.suppress(ValueError):
                            ev = json.loads(line)
                            if ev.get("task") in crashers and ev.get("event") == "task_exited":
                                return
            time.sleep(0.005)

    def prepare(self) -> None:
        """Before a round: every task wanted up again (a stop round, or a fault, may have
        left some down)."""
        st = self.status()
        down = [t["name"] for t in st["tasks"]
                if t["manually_stopped"] or t["state"] in ("stopped", "exited", "fatal")]
        if down or not st["wanted_up"]:
            with contextlib.suppress(RuntimeError):
                self.start_project(down or None)
        self.wait_quiet()

    def wait_quiet(self, timeout: float = 15.0) -> bool:
        """Wait (bounded) until every task but the crash loops runs, so that the round's
        moment is the only thing happening (a relaunch from backoff after the last round's
        faults would be a moment of its own)."""
        steady = {t.name for t in self.tasks if t.kind != "crash"}

        def quiet() -> bool:
            st = self.status()
            return all(t["state"] == "running" for t in st["tasks"] if t["name"] in steady)

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, RuntimeError):
                if quiet():
                    return True
            time.sleep(0.05)
        return False

    def clear_faults(self) -> int:
        """After a round that found faults: end the copies the daemon does not track (by
        marker and pid: they are this run's own), so the next round counts only its own.
        The number of processes ended."""
        tracked = {t["name"]: t["pid"] for t in self.status()["tasks"]
                   if t["state"] in LIVE_STATES and t["pid"]}
        procs = marked_processes(self.run)
        doomed = {pid for task, pids in copies(procs).items() for pid in pids
                  if tracked.get(task) not in (pid, procs[pid][1])}

        def of_doomed(pid: int) -> bool:
            while pid in procs:
                if pid in doomed:
                    return True
                pid = procs[pid][1]
            return False

        ended = 0
        for pid in [p for p in procs if of_doomed(p)]:  # a forked child goes with its parent
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                ended += 1
        return ended

    def round(self, number: int, kind: str, rng: random.Random) -> Round:
        self.prepare()
        names = [t.name for t in self.tasks]
        pending: socket.socket | None = None
        note = ""
        if kind == "start":
            whole = rng.random() < 0.3
            chosen = None if whole else rng.sample(names, rng.randint(5, 10))
            with contextlib.suppress(RuntimeError):
                self.call("project.stop", {"project": self.project, "tasks": chosen},
                          timeout=60)
            note = "whole project" if whole else f"{len(chosen or [])} tasks"
            pending = self.send("project.start", {
                "config": self.config, "cwd": self.folder, "tasks": chosen,
                "env": self.shell_env()})
        elif kind in ("restart", "stop"):
            chosen = rng.sample(names, rng.randint(5, 10) if kind == "restart"
                                else rng.randint(3, 8))
            note = f"{len(chosen)} tasks"
            pending = self.send(f"project.{kind}", {"project": self.project, "tasks": chosen})
        elif kind == "crashloop":
            self._wait_crash_moment(rng)
        delay = rng.uniform(0.0, 0.3 if kind == "crashloop" else 0.5)
        time.sleep(delay)
        self.kill_daemon()
        killed = time.monotonic()
        if pending is not None:
            pending.close()
        self.start_daemon()
        ready = time.monotonic() - killed
        settled = time.monotonic() - killed if self.settle() else None
        try:
            findings = self.check()
        except (OSError, RuntimeError) as exc:
            findings = Findings(lost={"(project)": f"status did not answer: {exc}"})
        if findings.total:
            with contextlib.suppress(OSError, RuntimeError):
                if self.clear_faults():
                    note = f"{note}; untracked copies ended" if note else \
                        "untracked copies ended"
        return Round(number, kind, delay, ready, settled, findings, note)

    # -- tidying up -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every daemon, task process and the tmux server this harness started;
        never raises."""
        for d in self.daemons:
            with contextlib.suppress(Exception):
                d.stop()
        kill_marked(self.run)
        subprocess.run(["tmux", "-L", self.tmux_socket, "kill-server"], capture_output=True,
                       check=False)
        folder = os.path.join(os.environ.get("TMUX_TMPDIR", "/tmp"), f"tmux-{os.getuid()}")
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, self.tmux_socket))
        kill_task_leftovers(self.home)
        kill_processes_of_home(self.home)
        deadline = time.monotonic() + 5
        while marked_processes(self.run) and time.monotonic() < deadline:
            kill_marked(self.run)
            time.sleep(0.05)


@contextlib.contextmanager
def private_chaos(tasks: list[TaskSpec] | None = None, project: str = "chaos",
                  settle_timeout: float = 30.0) -> Iterator[Chaos]:
    """A harness on its own temporary TASKMUX_HOME and tmux socket, removed afterwards."""
    home = tempfile.mkdtemp(prefix="tmxc-", dir=scratch.base())
    work = tempfile.mkdtemp(prefix="tmxcw-", dir=scratch.base())
    write_config(home)
    chaos = Chaos(home, f"tmxchaos-{uuid.uuid4().hex[:8]}", work, tasks, project,
                  settle_timeout)
    try:
        yield chaos
    finally:
        chaos.close()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Totals:
    rounds: list[Round] = field(default_factory=list)

    def table(self) -> str:
        rows = [f"{'moment':10s} {'rounds':>6s} {'dup':>5s} {'lost':>5s} {'dead':>5s} "
                f"{'corrupt':>7s} {'bad rounds':>10s}"]
        for kind in (*KINDS, "total"):
            rs = [r for r in self.rounds if kind in ("total", r.kind)]
            if not rs:
                continue
            rows.append(
                f"{kind:10s} {len(rs):6d} "
                f"{sum(sum(r.findings.duplicates.values()) for r in rs):5d} "
                f"{sum(len(r.findings.lost) for r in rs):5d} "
                f"{sum(len(r.findings.dead) for r in rs):5d} "
                f"{sum(len(r.findings.corrupt) for r in rs):7d} "
                f"{sum(1 for r in rs if r.findings.total):10d}")
        ready = [r.ready for r in self.rounds]
        settled = [r.settled for r in self.rounds if r.settled is not None]
        if ready:
            rows.append(f"kill -> new daemon answering: median {statistics.median(ready):.2f} s,"
                        f" max {max(ready):.2f} s")
        if settled:
            rows.append(f"kill -> settled (nothing starting/stopping): median "
                        f"{statistics.median(settled):.2f} s, max {max(settled):.2f} s; "
                        f"not settled within the bound: {len(ready) - len(settled)}")
        return "\n".join(rows)
