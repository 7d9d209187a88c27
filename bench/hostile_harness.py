"""The harness bench/hostile.py attacks with: a fresh daemon per attack (temporary
TASKMUX_HOME with the tests' safe settings, its own tmux socket, a chosen soft RLIMIT_NOFILE),
a monitor process timing the owner's ping and sampling the daemon's memory, and the row of
figures each attack reports."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.common import PYTHON, kill_tmux
from tests.helpers import call, daemon_env, kill_task_leftovers, write_config

HERE = os.path.dirname(os.path.abspath(__file__))
PING_TARGET_MS = 5.0
PROJECT = "hostile"  # the smuggling attack's project, and the name in half-sent hellos
HOST = f"web.{PROJECT}.localhost"


@dataclass
class Sizes:
    rpc_messages: int = 10_000
    notifications: int = 80_000
    integers: int = 1_500_000
    connections: int = 1_000
    hold: float = 5.0  # seconds the connections are held open (the ping window)
    rpc_wait: float = 20.0  # bound on the answer to any one message
    slow_wait: float = 3.0  # bound on daemon.ping with a bad delay (it must answer at once)
    batch_wait: float = 150.0  # bound on the answer to one batch
    stop_grace: float = 8.0  # SIGTERM to exit, before the bench kills the daemon

    @classmethod
    def quick(cls) -> Sizes:
        return cls(rpc_messages=600, notifications=8_000, integers=100_000, connections=100,
                   hold=1.5, rpc_wait=8.0, slow_wait=2.0, batch_wait=30.0, stop_grace=4.0)


@dataclass
class Row:
    """One attack's figures, for its block and the summary table."""

    attack: str
    alive: bool = False
    wellformed: str = "-"
    rss_mb: tuple[float, float, float] = (0.0, 0.0, 0.0)  # before, peak, final
    ping: tuple[float, float, int, int] = (0.0, 0.0, 0, 0)  # median ms, p95 ms, failed, n
    figure: str = ""
    target: str = ""
    met: bool = False
    notes: list[str] = field(default_factory=list)


# -- the daemon -------------------------------------------------------------------------------

@dataclass
class Daemon:
    home: str
    socket: str
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    tmux: str
    stopped: str = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = call(self.socket, "daemon.status", timeout=5.0)
        return result

    def ports(self, timeout: float = 20.0) -> dict[str, int]:
        """The proxy's HTTPS port and the DNS server's port, once both are bound."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            ports = {"proxy": status["proxy"].get("https_port"),
                     "dns": status["dns"].get("port")}
            if all(ports.values()):
                return {k: int(v) for k, v in ports.items()}
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon's proxy or DNS server is not serving: {ports}"
                                   f" (proxy: {status['proxy']}, dns: {status['dns']})")
            time.sleep(0.1)

    def alive(self) -> bool:
        if self.proc.poll() is not None:
            return False
        try:
            return bool(call(self.socket, "daemon.ping", timeout=3.0))
        except (OSError, RuntimeError):
            return False

    def log_tail(self, lines: int = 5) -> str:
        try:
            with open(os.path.join(self.home, "bench-daemon.log"), errors="replace") as fh:
                return "".join(fh.readlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def soft_nofile(limit: int) -> Iterator[None]:
    """Lower this process's soft RLIMIT_NOFILE for a moment, for a child to inherit."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, old[1]), old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


@contextlib.contextmanager
def bench_daemon(nofile: int, stop_grace: float) -> Iterator[Daemon]:
    home = tempfile.mkdtemp(prefix="tmxh-", dir="/tmp")
    tmux = f"tmxh-{uuid.uuid4().hex[:10]}"
    # The tests' safe settings (no 443/80/5454, no /etc/hosts) plus taskmux's DNS server on a
    # free port, and a short grace at shutdown for calls the attack left in flight.
    write_config(home, 'host_resolver = "dns_server"\nshutdown_timeout = 2\n')
    env = daemon_env(home)
    env["TASKMUX_TMUX_SOCKET"] = tmux
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    with open(os.path.join(home, "bench-daemon.log"), "wb") as log, soft_nofile(nofile):
        proc = subprocess.Popen([PYTHON, "-m", "taskmuxd", "run"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    daemon = Daemon(home, os.path.join(home, "ctl.sock"), proc, env, tmux)
    try:
        deadline = time.monotonic() + 30
        while not daemon.alive():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the daemon did not start:\n{daemon.log_tail(20)}")
            time.sleep(0.05)
        yield daemon
    finally:
        daemon.stopped = stop_daemon(proc, stop_grace)
        kill_tmux(tmux)
        kill_task_leftovers(home)
        shutil.rmtree(home, ignore_errors=True)


def stop_daemon(proc: subprocess.Popen[bytes], grace: float) -> str:
    if proc.poll() is not None:
        return f"had already exited (status {proc.returncode})"
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
        return "stopped on SIGTERM"
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the daemon and its helpers
        proc.wait(10)
        return f"did not stop within {grace:g}s of SIGTERM; killed"


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in kB."""
    out = {"VmRSS": 0, "VmHWM": 0}
    with contextlib.suppress(OSError, ValueError), \
            open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key = line.split(":", 1)[0]
            if key in out:
                out[key] = int(line.split()[1])
    return out


def nofile_limit(pid: int) -> str:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/limits", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Max open files"):
                return line.split()[3]
    return "?"


# -- the monitor ------------------------------------------------------------------------------

class Monitor:
    """bench/hostile_monitor.py in a process of its own, from start to ``stop``."""

    def __init__(self, daemon: Daemon, interval: float = 0.02) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, os.path.join(HERE, "hostile_monitor.py"), daemon.socket, str(daemon.pid),
             str(interval)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pings: list[tuple[float, float, bool]] = []
        self.rss: list[tuple[float, int, int]] = []
        self.stopped = False

    def stop(self) -> None:
        """End the sampling and collect what was measured (once)."""
        if self.stopped:
            return
        self.stopped = True
        try:
            out, _ = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # our own child, by pid
            out, _ = self.proc.communicate()
        with contextlib.suppress(ValueError):
            data = json.loads(out)
            self.pings = [(t, took, ok) for t, took, ok in data["pings"]]
            self.rss = [(t, kb, fds) for t, kb, fds in data["rss"]]

    def ping_stats(self, start: float, end: float) -> tuple[float, float, int, int]:
        """Median and p95 in ms of the pings sent in [start, end]; failed pings count at
        their full time (the timeout)."""
        window = [(took, ok) for t, took, ok in self.pings if start <= t <= end]
        if not window:
            return (float("nan"), float("nan"), 0, 0)
        times = sorted(took * 1000 for took, _ in window)
        p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
        return (statistics.median(times), p95, sum(1 for _, ok in window if not ok), len(times))

    def peak(self, start: float, end: float) -> tuple[int, int]:
        """Highest VmRSS (kB) and descriptor count sampled in [start, end]."""
        window = [(kb, fds) for t, kb, fds in self.rss if start <= t <= end]
        return (max((kb for kb, _ in window), default=0),
                max((fds for _, fds in window), default=0))


@contextlib.contextmanager
def monitored(daemon: Daemon) -> Iterator[Monitor]:
    mon = Monitor(daemon)
    try:
        yield mon
    finally:
        mon.stop()


def finish(row: Row, daemon: Daemon, mon: Monitor, before_kb: int, start: float,
           end: float, settle: float = 1.0) -> None:
    """Fill in the figures every attack reports: alive, RSS, the owner's ping."""
    mon.stop()
    row.ping = mon.ping_stats(start, end)
    time.sleep(settle)  # let memory settle before the final reading
    row.alive = daemon.alive()
    mem = memory(daemon.pid)
    peak_kb = max(mem["VmHWM"], mon.peak(start, end)[0])
    row.rss_mb = (before_kb / 1024, peak_kb / 1024, mem["VmRSS"] / 1024)
    if not row.alive:
        row.notes.append("the daemon is down or not answering; its log ends:\n"
                         + daemon.log_tail())


def print_common(row: Row, daemon: Daemon) -> None:
    before, peak, final = row.rss_mb
    med, p95, failed, count = row.ping
    print(f"  daemon alive afterwards: {'yes' if row.alive else 'NO'}; "
          f"RSS before {before:.0f} MB, peak {peak:.0f} MB, final {final:.0f} MB")
    print(f"  owner's ping during the attack: median {med:.2f} ms, p95 {p95:.2f} ms "
          f"({count} pings, {failed} failed or over 2 s)")
    print(f"  daemon {daemon.stopped}")
    for note in row.notes:
        print(f"  note: {note}")
