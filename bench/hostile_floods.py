"""Attack (c) of bench/hostile.py: connection floods of the proxy and the DNS server from a
throwaway user's processes (bench/hostile_holder.py), while the owner pings the daemon."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import select
import shutil
import ssl
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

from bench.common import PYTHON
from bench.hostile_harness import (
    HERE,
    HOST,
    PING_TARGET_MS,
    Row,
    Sizes,
    bench_daemon,
    finish,
    memory,
    monitored,
    nofile_limit,
    print_common,
)


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
    who = (f"uid {user[0]} ({user[2]})" if user else
           f"this uid ({os.getuid()}), as no throwaway user could be made"
           + ("" if os.geteuid() == 0 else " (not root)"))
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
    if not count:
        row.notes.append("no hostile connection opened: this row measured nothing")
    # Refusing or closing hostile connections is fine (caps, deadlines); the owner's ping is
    # what must hold.
    row.met = (row.alive and count > 0 and row.ping[0] < PING_TARGET_MS
               and row.ping[2] == 0)
    print_common(row, daemon)
    return row
