"""What `status` costs with 100 running tasks, now that it counts each task's processes:
the RPC (`project.status`), the whole client command, and the /proc scan alone, next to a
bare interpreter's start.

Run by hand: `.venv/bin/python bench/status_latency.py [--calls N] [--runs N]`. Targets (the
figures before process counting, issue 19's table): RPC for 100 tasks about 9 ms; the client
command within 2x a bare interpreter plus that RPC.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BIN, PYTHON, compile_bytecode, median_ms, time_command
from bench.tasks import Env, start_100
from taskmuxd.proctree import Snapshot


def rpc(sock: str, method: str, params: dict[str, object]) -> float:
    line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    t0 = time.perf_counter()
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock)
        s.sendall(line.encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    elapsed = time.perf_counter() - t0
    reply = json.loads(buf)
    assert "result" in reply and len(reply["result"]["tasks"]) == 100, str(reply)[:300]
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    compile_bytecode()
    e = Env()
    try:
        start_100(e)
        sock = os.path.join(e.home, "ctl.sock")
        params = {"project": "hundred"}
        rpc(sock, "project.status", params)  # warm
        rpc_ms = median_ms([rpc(sock, "project.status", params) for _ in range(args.calls)])
        scans = []
        for _ in range(args.calls):
            t0 = time.perf_counter()
            Snapshot()
            scans.append(time.perf_counter() - t0)
        cli_ms = median_ms(time_command([f"{BIN}/taskmux", "--json", "status", "-p", "hundred"],
                                        args.runs, e.env))
        bare_ms = median_ms(time_command([PYTHON, "-I", "-S", "-c", "pass"], args.runs))
        procs = len(os.listdir("/proc"))
        print(f"status of 100 running tasks ({procs} entries in /proc), medians:")
        print(f"  {'project.status RPC':<34}{rpc_ms:8.2f} ms   (before process counts: ~8.7)")
        print(f"  {'  of which the /proc scan':<34}{median_ms(scans):8.2f} ms   "
              "(once per call; cached 0.5 s)")
        print(f"  {'taskmux --json status':<34}{cli_ms:8.2f} ms")
        print(f"  {'bare python -I -S -c pass':<34}{bare_ms:8.2f} ms   "
              f"(client / bare: {cli_ms / bare_ms:.2f}x)")
    finally:
        e.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
