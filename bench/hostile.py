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
- conns: 1,000 idle TCP connections to the proxy; 1,000 half-sent TLS ClientHellos; both at
  once (2,000); 1,000 idle TCP connections to the DNS server: each from a throwaway user's
  process (from this uid when not root, and the bench says so).
- smuggle: the request-smuggling corpus (bench/hostile_http.py) through the proxy to a task
  that records every request it receives (bench/hostile_backend.py).

bench/hostile_harness.py holds the daemon, the monitor (bench/hostile_monitor.py) and the
figures; bench/hostile_floods.py the floods, whose connections bench/hostile_holder.py holds.
Every wait is bounded (a message, a batch, a flood); the whole run takes a few minutes.

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
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import hostile_http, hostile_rpc
from bench.common import PYTHON
from bench.hostile_floods import FLOODS, attack_conns, other_user
from bench.hostile_harness import (
    HERE,
    HOST,
    PING_TARGET_MS,
    PROJECT,
    Daemon,
    Row,
    Sizes,
    bench_daemon,
    finish,
    memory,
    monitored,
    print_common,
)
from tests.helpers import call

PARSE_CAP = 32 * 1024 * 1024  # replies larger than this are measured, not parsed
ATTACKS = ("rpc", "batches", "conns", "smuggle")


# -- (a) malformed RPC messages ---------------------------------------------------------------

async def connect_unix(path: str, deadline: float) -> socket.socket:
    """Connect as a blocking client would, waiting while the daemon's accept queue is full.

    A non-blocking connect() on a Unix socket fails with EAGAIN then, and asyncio's own
    connect takes that for "in progress" and hands back a socket that is not connected."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    while True:
        try:
            sock.connect(path)
            return sock
        except BlockingIOError:
            if loop.time() > deadline:
                sock.close()
                raise TimeoutError("the daemon's accept queue stayed full") from None
            await asyncio.sleep(0.005)
        except OSError:
            sock.close()
            raise


async def exchange(path: str, data: bytes, timeout: float, keep: int = PARSE_CAP
                   ) -> tuple[bytes, bool, int, float]:
    """Send ``data`` on a new connection, close our side, read until the daemon closes.
    Returns (what came back, up to ``keep`` bytes; timed out; total bytes; seconds)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + timeout
    try:
        sock = await connect_unix(path, deadline)
        reader, writer = await asyncio.open_unix_connection(sock=sock)
    except (OSError, TimeoutError):
        return b"", True, 0, loop.time() - start
    async def send() -> None:  # while replies are read: pipelined calls answer as they go
        try:
            writer.write(data)
            await writer.drain()
            writer.write_eof()
        except OSError:
            pass  # the daemon closed early: read what it said

    sender = asyncio.create_task(send())
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
    sender.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sender
    writer.close()
    return bytes(buf), timed_out, total, loop.time() - start


def blocking_exchange(path: str, data: bytes, timeout: float) -> tuple[bytes, bool]:
    """``exchange`` on a plain socket, sending from a thread while this one reads.

    For messages the daemon stops reading halfway (over the size cap: a failed send must not
    throw away the reply already received, as an asyncio transport does when a write fails)
    and for the long pipelines."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError:
            return b"", True

        def send() -> None:
            with contextlib.suppress(OSError):
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        timed_out = True
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                chunk = s.recv(1 << 20)
            except TimeoutError:
                break
            except OSError:
                timed_out = False
                break
            if not chunk:
                timed_out = False
                break
            buf += chunk
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)  # ends a send still blocked
        sender.join(5)
    return bytes(buf), timed_out


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
        got, timed_out = await asyncio.to_thread(blocking_exchange, path, data,
                                                 sizes.rpc_wait * 2)
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
