"""Hostile input against a real daemon: what issue 12 found, repeated, with figures.

Run by hand (as root, so that the connection floods come from another uid):
`.venv/bin/python bench/hostile.py [--quick] [--only rpc,batches,conns,smuggle]`.

Each attack gets a fresh daemon of its own (a temporary TASKMUX_HOME with the tests' safe
settings, its own tmux socket, the proxy and the DNS server on free loopback ports, a soft
RLIMIT_NOFILE of 1,024 as a service manager gives by default) and a monitor process that,
throughout, times the owner's `daemon.ping` on a new connection (what `taskmux status` does)
and samples the daemon's VmRSS and open descriptors. The attacks:

- rpc: 10,000 malformed control-socket messages of every shape (bench/hostile_rpc.py), half
  on a connection each, half pipelined on four connections; every reply must be strict JSON
  and a JSON-RPC 2.0 response, and every message must get the reply the spec asks for.
- batches: 80,000 notifications in one batch; a batch of 1.5 million integers.
- conns: 1,000 idle TCP connections and 1,000 half-sent TLS ClientHellos to the proxy, and
  1,000 idle TCP connections to the DNS server, each from a throwaway user's process.
- smuggle: the request-smuggling corpus (bench/hostile_http.py) through the proxy to a task
  that records every request it receives (bench/hostile_backend.py).

Targets: the daemon stays up; every reply is well-formed; an over-large batch gets one error
and memory returns to its baseline; the owner's ping stays under 5 ms at the median while
1,000 hostile connections are open; no smuggled request reaches a task, and the proxy answers
each ambiguous request with 400 (431 for an oversized head, 421 for a misdirected one).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import resource
import select
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import hostile_http, hostile_rpc
from bench.common import PYTHON, kill_tmux
from tests.helpers import call, daemon_env, kill_task_leftovers, write_config

HERE = os.path.dirname(os.path.abspath(__file__))
PING_TARGET_MS = 5.0
PARSE_CAP = 32 * 1024 * 1024  # replies larger than this are measured, not parsed
ATTACKS = ("rpc", "batches", "conns", "smuggle")
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


# -- (a) malformed RPC messages ---------------------------------------------------------------

async def exchange(path: str, data: bytes, timeout: float, keep: int = PARSE_CAP
                   ) -> tuple[bytes, bool, int, float]:
    """Send ``data`` on a new connection, close our side, read until the daemon closes.
    Returns (what came back, up to ``keep`` bytes; timed out; total bytes; seconds)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), timeout)
    except (OSError, TimeoutError):
        return b"", True, 0, loop.time() - start
    try:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), max(0.01, deadline - loop.time()))
        writer.write_eof()
    except (OSError, TimeoutError):
        pass  # the daemon closed early (a message over the cap): read what it said
    buf = bytearray()
    total = 0
    timed_out = False
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            timed_out = True
            break
        try:
            chunk = await asyncio.wait_for(reader.read(1 << 20), remaining)
        except TimeoutError:
            timed_out = True
            break
        except OSError:
            break
        if not chunk:
            break
        total += len(chunk)
        if len(buf) < keep:
            buf += chunk[:keep - len(buf)]
    writer.close()
    return bytes(buf), timed_out, total, loop.time() - start


def blocking_exchange(path: str, data: bytes, timeout: float) -> tuple[bytes, bool]:
    """``exchange`` on a plain socket, for messages the daemon stops reading halfway (over
    the size cap): a failed send must not throw away the reply already received, as an
    asyncio transport does when a write fails."""
    buf = b""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError:
            return b"", True
        with contextlib.suppress(OSError):
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                chunk = s.recv(1 << 20)
            except TimeoutError:
                return buf, True
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
        else:
            return buf, True
    return buf, False


def split_lines(data: bytes) -> list[bytes]:
    return [line for line in data.split(b"\n") if line.strip()]


def line_problem(line: bytes) -> str | None:
    """A reply judged on its own (pipelined: we cannot tell which message it answers)."""
    try:
        obj = hostile_rpc.strict_json(line)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not strict JSON ({str(exc)[:50]})"
    members = obj if isinstance(obj, list) and obj else [obj]
    for member in members:
        problem = hostile_rpc.response_problem(member)
        if problem:
            return problem
    return None


@dataclass
class RpcTally:
    sent: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    example: dict[str, str] = field(default_factory=dict)
    expected_replies: int = 0
    good_replies: int = 0
    messages_ok: int = 0
    messages: int = 0


async def rpc_flood(path: str, sizes: Sizes) -> RpcTally:
    tally = RpcTally()
    plan = list(hostile_rpc.messages(sizes.rpc_messages))
    solo = [(i, s) for i, s in plan
            if s.solo or s.slow or s.expect == "maybe" or i % 2 == 0]
    piped = [(i, s) for i, s in plan if (i, s) not in solo]
    slots = asyncio.Semaphore(48)

    async def one(i: int, shape: hostile_rpc.Shape) -> None:
        data = shape.make(i) + (b"\n" if shape.newline else b"")
        wait = sizes.slow_wait if shape.slow else sizes.rpc_wait
        if shape.solo:
            got, timed_out = await asyncio.to_thread(blocking_exchange, path, data, wait)
        elif shape.slow:  # held calls must not hold the slots of the others
            got, timed_out, _, _ = await exchange(path, data, wait)
        else:
            async with slots:
                got, timed_out, _, _ = await exchange(path, data, wait)
        lines = split_lines(got)
        problem = hostile_rpc.outcome_problem(lines, shape, i)
        if problem == "no reply" and timed_out:
            problem = f"no reply within {wait:g}s"
        tally.sent[shape.name] += 1
        tally.messages += 1
        if shape.expect == "one":
            tally.expected_replies += 1
            if problem is None:
                tally.good_replies += 1
        if problem is None:
            tally.messages_ok += 1
        else:
            tally.failed[shape.name] += 1
            tally.example.setdefault(shape.name, problem)

    async def pipeline(batch: list[tuple[int, hostile_rpc.Shape]]) -> None:
        data = b"".join(s.make(i) + b"\n" for i, s in batch)
        expected = sum(1 for _, s in batch if s.expect == "one")
        got, timed_out, _, _ = await exchange(path, data, sizes.rpc_wait * 2)
        lines = split_lines(got)
        bad = [p for p in map(line_problem, lines) if p]
        good = len(lines) - len(bad)
        tally.messages += len(batch)
        tally.expected_replies += expected
        tally.good_replies += min(good, expected)
        tally.messages_ok += len(batch) - max(0, expected - good) - max(0, good - expected)
        name = "(pipelined)"
        tally.sent[name] += len(batch)
        if bad or good != expected:
            tally.failed[name] += max(len(bad), abs(expected - good))
            tally.example.setdefault(name, (
                f"{len(lines)} lines for {expected} expected replies, {len(bad)} malformed"
                + (f" (first: {bad[0]})" if bad else "")
                + (f"; no end within {sizes.rpc_wait * 2:g}s" if timed_out else "")))

    lanes = [piped[k::4] for k in range(4)]
    await asyncio.gather(*(one(i, s) for i, s in solo),
                         *(pipeline(lane) for lane in lanes if lane))
    return tally


def attack_rpc(sizes: Sizes, nofile: int) -> Row:
    row = Row(f"rpc: {sizes.rpc_messages:,} malformed messages",
              target="every reply well-formed; ping median < 5 ms")
    print(f"\n== (a) {sizes.rpc_messages:,} malformed control-socket messages ==")
    with bench_daemon(nofile, sizes.stop_grace) as daemon, monitored(daemon) as mon:
        before = memory(daemon.pid)["VmRSS"]
        start = time.monotonic()
        tally = asyncio.run(rpc_flood(daemon.socket, sizes))
        end = time.monotonic()
        finish(row, daemon, mon, before, start, end)
    print(f"  {tally.messages:,} messages ({len(tally.sent) - 1} shapes) in {end - start:.1f}s")
    print(f"  replies well-formed: {tally.good_replies:,} of {tally.expected_replies:,} "
          f"expected; messages answered as the spec says: {tally.messages_ok:,} of "
          f"{tally.messages:,}")
    if tally.failed:
        print(f"  shapes with problems ({len(tally.failed)}):")
        for name, count in tally.failed.most_common():
            print(f"    {name:<42} {count:>5} of {tally.sent[name]:>5}: {tally.example[name]}")
    row.wellformed = f"{tally.good_replies:,}/{tally.expected_replies:,}"
    row.figure = f"{tally.messages_ok:,}/{tally.messages:,} answered per spec"
    row.met = (row.alive and tally.good_replies == tally.expected_replies
               and tally.messages_ok == tally.messages and row.ping[0] < PING_TARGET_MS)
    print_common(row, daemon)
    return row


# -- (b) the batches ------------------------------------------------------------------------

def attack_batch(kind: str, sizes: Sizes, nofile: int) -> Row:
    if kind == "notifications":
        count = sizes.notifications
        member = b'{"jsonrpc":"2.0","method":"daemon.ping"}'
        shape = hostile_rpc.Shape("notifications", lambda i: b"", expect="maybe")
        title = f"a batch of {count:,} notifications"
    else:
        count = sizes.integers
        member = b"0"
        shape = hostile_rpc.Shape("integers", lambda i: b"", batch=count)
        title = f"a batch of {count:,} integers"
    payload = b"[" + b",".join([member] * count) + b"]\n"
    row = Row(f"batch: {count:,} {kind}",
              target="one error (or none); RSS back to baseline; ping median < 5 ms")
    print(f"\n== (b) {title} ({len(payload) / 1e6:.1f} MB) ==")
    with bench_daemon(nofile, sizes.stop_grace) as daemon, monitored(daemon) as mon:
        time.sleep(0.3)
        before = memory(daemon.pid)["VmRSS"]
        start = time.monotonic()
        got, timed_out, total, took = asyncio.run(
            exchange(daemon.socket, payload, sizes.batch_wait))
        end = time.monotonic()
        finish(row, daemon, mon, before, start, end, settle=2.0)
    lines = split_lines(got)
    if timed_out:
        problem: str | None = (f"not finished within {sizes.batch_wait:g}s "
                               f"({total / 1e6:.1f} MB of reply so far)")
    elif total > PARSE_CAP:
        problem = f"a {total / 1e6:.0f} MB reply (not parsed); the target is one error"
    else:
        problem = hostile_rpc.outcome_problem(lines, shape, 0)
        if problem is None and lines and got.lstrip().startswith(b"["):
            problem = f"an array of {count:,} replies, not one error"
    ends = "no reply (the daemon closed the connection)" if not lines and not timed_out \
        else f"{len(lines)} reply line(s)"
    print(f"  answered in {took:.2f}s: {ends}, {total:,} bytes")
    print(f"  reply: {'well-formed (or none, as the spec allows)' if problem is None else problem}")
    well = problem is None or problem.startswith("an array")
    row.wellformed = ("1/1" if well and lines else "none (spec)" if well else "0/1")
    row.figure = f"{took:.2f}s, reply {total / 1e6:.2f} MB"
    before_mb, _peak, final_mb = row.rss_mb
    row.met = (row.alive and problem is None and final_mb <= before_mb + 10
               and row.ping[0] < PING_TARGET_MS)
    print_common(row, daemon)
    return row


# -- (c) connection floods from another uid ---------------------------------------------------

@contextlib.contextmanager
def other_user() -> Iterator[tuple[int, int, str] | None]:
    """A throwaway user, or None (the floods then come from this uid)."""
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("userdel"):
        yield None
        return
    name = "tmxh" + uuid.uuid4().hex[:8]
    made = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                           name], capture_output=True, text=True)
    if made.returncode != 0:
        print(f"  (cannot create a user: {made.stderr.strip()}; flooding from this uid)")
        yield None
        return
    try:
        entry = pwd.getpwnam(name)
        yield entry.pw_uid, entry.pw_gid, name
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def interpreter_for(user: tuple[int, int, str] | None) -> str:
    """A Python the throwaway user can run (this one may live under /root)."""
    if user is None:
        return PYTHON
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3",
                      os.path.realpath(PYTHON)):
        real = os.path.realpath(candidate)
        if os.path.exists(real) and world_executable(real):
            return candidate
    raise RuntimeError("no Python interpreter that another user may run was found")


def world_executable(path: str) -> bool:
    """Whether any user may run ``path``: it and every folder above it are o+x."""
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def partial_client_hello(server_name: str) -> bytes:
    """The first half of a real TLS ClientHello naming ``server_name``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    return hello[:len(hello) // 2]


def _read_json_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any] | None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return None
    line = proc.stdout.readline()
    try:
        result: dict[str, Any] = json.loads(line)
        return result
    except ValueError:
        return None


FLOODS = {  # kind -> (label, groups of (target, what each connection sends))
    "idle": ("idle to proxy", [("proxy", "idle")]),
    "half": ("half-hello to proxy", [("proxy", "half")]),
    "both": ("idle + half-hello to proxy", [("proxy", "idle"), ("proxy", "half")]),
    "dns": ("idle to DNS/TCP", [("dns", "idle")]),
}


@contextlib.contextmanager
def holders(specs: list[dict[str, Any]], user: tuple[int, int, str] | None
            ) -> Iterator[list[subprocess.Popen[str]]]:
    """One bench/hostile_holder.py per spec, as ``user``; ended (by pid) on the way out."""
    opts: dict[str, Any] = {}
    if user:
        opts = {"user": user[0], "group": user[1], "extra_groups": []}
    # The holder's source goes on the command line, and a system interpreter runs it: the
    # throwaway user may not be able to read this checkout or its virtualenv.
    with open(os.path.join(HERE, "hostile_holder.py"), encoding="utf-8") as fh:
        source = fh.read()
    procs: list[subprocess.Popen[str]] = []
    try:
        for spec in specs:
            procs.append(subprocess.Popen(
                [interpreter_for(user), "-I", "-c", source, json.dumps(spec)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/",
                env={"PATH": "/usr/bin:/bin"}, **opts))
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()  # our own child, by pid
                    proc.wait()


def attack_conns(kind: str, sizes: Sizes, nofile: int, user: tuple[int, int, str] | None
                 ) -> Row:
    n = sizes.connections
    label, groups = FLOODS[kind]
    total = n * len(groups)
    row = Row(f"conns: {total:,} {label}", target="ping median < 5 ms while they are open")
    who = f"uid {user[0]} ({user[2]})" if user else f"this uid ({os.getuid()}): not root"
    what = " and ".join(f"{n:,} {'half-sent TLS ClientHellos' if send == 'half' else 'idle'}"
                        f" to the {'DNS server (TCP)' if target == 'dns' else 'proxy'}"
                        for target, send in groups)
    print(f"\n== (c) {what}, from {who} ==")
    with bench_daemon(nofile, sizes.stop_grace) as daemon, monitored(daemon) as mon:
        ports = daemon.ports()
        sends = {"idle": b"", "half": partial_client_hello(HOST)}
        specs = [{"host": "127.0.0.1", "port": ports[target], "count": n,
                  "send": sends[send].hex(), "connect_budget": 15.0,
                  "hold_max": sizes.hold + 60} for target, send in groups]
        time.sleep(0.5)
        calm = time.monotonic()
        before = memory(daemon.pid)["VmRSS"]
        time.sleep(0.5)  # pings before the flood, for comparison
        flood = time.monotonic()
        with holders(specs, user) as procs:
            opened = [_read_json_line(proc, 60) or {} for proc in procs]
            start = time.monotonic()
            time.sleep(sizes.hold)  # the window: connections open, the monitor pinging
            end = time.monotonic()
            for proc in procs:
                assert proc.stdin is not None
                with contextlib.suppress(OSError):
                    proc.stdin.write("\n")
                    proc.stdin.flush()
            held = [_read_json_line(proc, 30) or {} for proc in procs]
        finish(row, daemon, mon, before, start, end)
        fds_peak = mon.peak(start, end)[1]
        calm_ping = mon.ping_stats(calm, flood)
        limit = nofile_limit(daemon.pid)
    count = sum(o.get("opened", 0) for o in opened)
    errors: Counter[str] = Counter()
    for o in opened:
        errors.update(o.get("errors", {}))
    closed = sum(h.get("closed_by_server", 0) for h in held)
    uids = sorted({str(o.get("uid", "?")) for o in opened})
    print(f"  opened {count:,} of {total:,} in {max(o.get('seconds', 0) for o in opened):.1f}s"
          f" (uid {', '.join(uids)})"
          + (f"; failed: {', '.join(f'{k} {v}' for k, v in errors.items())}" if errors else ""))
    print(f"  daemon descriptors at the peak: {fds_peak:,} (soft limit {limit}); "
          f"closed by the daemon within {sizes.hold:g}s: {closed:,}")
    print(f"  owner's ping before the flood: median {calm_ping[0]:.2f} ms")
    row.wellformed = f"{row.ping[3] - row.ping[2]}/{row.ping[3]} pings"
    row.figure = f"fds {fds_peak}/{limit}; opened {count}"
    row.met = (row.alive and count == total and row.ping[0] < PING_TARGET_MS
               and row.ping[2] == 0)
    print_common(row, daemon)
    return row


# -- (d) request smuggling --------------------------------------------------------------------

def start_recorder(daemon: Daemon, folder: str) -> tuple[int, int, str]:
    """Run bench/hostile_backend.py as a real task; return (proxy port, task port, record)."""
    record = os.path.join(folder, "requests.jsonl")
    config = os.path.join(folder, "taskmux.toml")
    with open(config, "w") as fh:
        fh.write(f'name = "{PROJECT}"\n[tasks.web]\n'
                 f'command = "{PYTHON} {os.path.join(HERE, "hostile_backend.py")} {record}"\n'
                 'host = "web"\nhealth_url = "http://127.0.0.1:$PORT/health"\n')
    call(daemon.socket, "project.start", {"config": config}, timeout=30)
    proxy_port = daemon.ports()["proxy"]
    deadline = time.monotonic() + 30
    health = f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode()
    while hostile_http.exchange(proxy_port, HOST, health, quiet=1.0)[0] != [200]:
        if time.monotonic() > deadline:
            raise RuntimeError("the recording task did not come up behind the proxy")
        time.sleep(0.2)
    tasks = call(daemon.socket, "project.status", {"project": PROJECT})["tasks"]
    return proxy_port, int(tasks[0]["port"]), record


def attack_smuggle(sizes: Sizes, nofile: int) -> Row:
    cases = hostile_http.CASES
    row = Row(f"smuggle: {len(cases)} ambiguous requests",
              target="0 smuggled reach the task; 400/431/421 answers")
    print(f"\n== (d) the request-smuggling corpus through the proxy ({len(cases)} cases) ==")
    folder = tempfile.mkdtemp(prefix="tmxh-web-", dir="/tmp")
    reached: Counter[str] = Counter()
    answers: list[tuple[str, list[int], str, bool]] = []
    try:
        with bench_daemon(nofile, sizes.stop_grace) as daemon:
            port, task_port, record = start_recorder(daemon, folder)
            try:  # a second project on the same task, for the misdirected-request case
                call(daemon.socket, "routes.set", {"project": "decoy", "backends": [
                    {"task": "web", "host": "web", "port": task_port, "state": "running",
                     "ready": True}]})
            except RuntimeError as exc:
                row.notes.append(f"no decoy project ({exc}); the 421 case is not meaningful")
            with monitored(daemon) as mon:
                before = memory(daemon.pid)["VmRSS"]
                start = time.monotonic()
                for case in cases:
                    name = case.name.replace(" ", "-").replace(":", "").replace(",", "")
                    sni = HOST.replace(PROJECT, case.sni_project) if case.sni_project else HOST
                    statuses, ended = hostile_http.exchange(port, sni, case.build(HOST, name))
                    answers.append((case.name, statuses, ended,
                                    bool(statuses) and statuses[0] in case.expect))
                end = time.monotonic()
                finish(row, daemon, mon, before, start, end, settle=0.5)
            with open(record, encoding="utf-8") as fh:
                for line in fh:
                    path = json.loads(line)["path"]
                    if path.startswith(hostile_http.SMUGGLED_PATH):
                        reached[path.split("case=", 1)[-1]] += 1
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"  {'case':<45} {'expect':<8} {'answers':<12} {'reached':<8} end")
    for (name, statuses, ended, ok), case in zip(answers, cases, strict=True):
        key = name.replace(" ", "-").replace(":", "").replace(",", "")
        shown = ",".join(map(str, statuses)) or "none"
        expect = "/".join(map(str, sorted(case.expect)))
        mark = "ok " if ok and not reached[key] else "BAD"
        print(f"  {mark} {name:<41} {expect:<8} {shown:<12} {reached[key]:<8} {ended}")
    smuggled = sum(reached.values())
    as_expected = sum(1 for *_, ok in answers if ok)
    print(f"  smuggled requests that reached the task: {smuggled}; answers as expected: "
          f"{as_expected} of {len(cases)}")
    row.wellformed = f"{as_expected}/{len(cases)} answers"
    row.figure = f"{smuggled} smuggled reached the task"
    row.met = row.alive and smuggled == 0 and as_expected == len(cases)
    print_common(row, daemon)
    return row


# -- report -----------------------------------------------------------------------------------

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


def print_summary(rows: list[Row]) -> None:
    print("\n== summary (target: the daemon stays up, replies well-formed, owner's ping "
          f"median < {PING_TARGET_MS:g} ms) ==")
    head = (f"{'attack':<40} {'alive':<5} {'well-formed':<14} {'RSS MB b/peak/final':<20} "
            f"{'ping med/p95 ms':<16} {'figure':<34} {'meets':<5} target")
    print(head)
    print("-" * len(head))
    for r in rows:
        rss = "/".join(f"{v:.0f}" for v in r.rss_mb)
        ping = f"{r.ping[0]:.1f}/{r.ping[1]:.1f}"
        print(f"{r.attack:<40} {'yes' if r.alive else 'NO':<5} {r.wellformed:<14} {rss:<20} "
              f"{ping:<16} {r.figure:<34} {'yes' if r.met else 'NO':<5} {r.target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts, a sanity run")
    parser.add_argument("--only", default=",".join(ATTACKS),
                        help=f"comma-separated attacks to run, of {', '.join(ATTACKS)}")
    parser.add_argument("--rpc-messages", type=int, default=None, metavar="N",
                        help="how many malformed messages attack (a) sends (default 10,000; "
                             "600 with --quick)")
    parser.add_argument("--daemon-nofile", type=int, default=1024,
                        help="the daemon's soft RLIMIT_NOFILE at start (default 1024, what "
                             "systemd gives a service unless its unit says otherwise)")
    args = parser.parse_args()
    only = [a.strip() for a in args.only.split(",") if a.strip()]
    unknown = sorted(set(only) - set(ATTACKS))
    if unknown:
        parser.error(f"unknown attack(s) {', '.join(unknown)}: choose from "
                     f"{', '.join(ATTACKS)}")
    sizes = Sizes.quick() if args.quick else Sizes()
    if args.rpc_messages is not None:
        if args.rpc_messages < 1:
            parser.error("--rpc-messages must be at least 1")
        sizes.rpc_messages = args.rpc_messages
    print(f"taskmux hostile bench{' (--quick)' if args.quick else ''}: {', '.join(only)}; "
          f"daemon soft RLIMIT_NOFILE {args.daemon_nofile}")
    began = time.monotonic()
    rows: list[Row] = []
    if "rpc" in only:
        rows.append(attack_rpc(sizes, args.daemon_nofile))
    if "batches" in only:
        rows.append(attack_batch("notifications", sizes, args.daemon_nofile))
        rows.append(attack_batch("integers", sizes, args.daemon_nofile))
    if "conns" in only:
        with other_user() as user:
            for kind in FLOODS:
                rows.append(attack_conns(kind, sizes, args.daemon_nofile, user))
    if "smuggle" in only:
        rows.append(attack_smuggle(sizes, args.daemon_nofile))
    print_summary(rows)
    print(f"\n(all attacks in {time.monotonic() - began:.0f}s)")


if __name__ == "__main__":
    main()
