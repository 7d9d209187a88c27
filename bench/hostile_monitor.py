"""Watches a daemon while bench/hostile.py attacks it, from a process of its own so that the
attack's own work never delays the measurement.

Run as `python hostile_monitor.py SOCKET PID INTERVAL`: until its stdin closes (or MAX_SECONDS
pass) it times the owner's `daemon.ping` on a new connection each time, as `taskmux status`
does, and samples the daemon's VmRSS and open descriptors; then it prints one JSON line:
{"pings": [[t, seconds, ok], ...], "rss": [[t, kB, fds], ...]} with t on CLOCK_MONOTONIC.
Standard library only.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import time

PING = b'{"jsonrpc":"2.0","method":"daemon.ping","id":1}\n'
PING_TIMEOUT = 2.0
MAX_SECONDS = 900.0


def ping(path: str) -> tuple[float, bool]:
    start = time.monotonic()
    ok = False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(PING_TIMEOUT)
            s.connect(path)
            s.sendall(PING)
            buf = b""
            while not buf.endswith(b"\n") and time.monotonic() - start < PING_TIMEOUT:
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
            ok = b'"pong":true' in buf
    except OSError:
        pass
    return time.monotonic() - start, ok


def memory_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def main() -> None:
    path, pid, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    pings: list[tuple[float, float, bool]] = []
    rss: list[tuple[float, int, int]] = []
    end = time.monotonic() + MAX_SECONDS
    while time.monotonic() < end:
        ready, _, _ = select.select([sys.stdin], [], [], interval)
        if ready and not sys.stdin.readline():
            break
        now = time.monotonic()
        rss.append((now, memory_kb(pid), open_fds(pid)))
        took, ok = ping(path)
        pings.append((now, took, ok))
    print(json.dumps({"pings": pings, "rss": rss}), flush=True)


if __name__ == "__main__":
    main()
