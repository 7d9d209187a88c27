"""Round trip of `daemon.ping` on a kept-open connection, and calls per second with 8 clients.

Run by hand: `.venv/bin/python bench/rpc_throughput.py`. Targets: median round trip under
0.5 ms; at least 5,000 calls per second with 8 concurrent clients.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import median_ms, private_daemon

PING = b'{"jsonrpc":"2.0","method":"daemon.ping","id":1}\n'


def roundtrips(sock_path: str, n: int) -> list[float]:
    out = []
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        for _ in range(n):
            start = time.perf_counter()
            s.sendall(PING)
            buf = b""
            while not buf.endswith(b"\n"):
                buf += s.recv(4096)
            out.append(time.perf_counter() - start)
    return out


def client(sock_path: str, seconds: float, start_at: float, queue: mp.Queue[int]) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        while time.time() < start_at:
            time.sleep(0.001)
        end = start_at + seconds
        count = 0
        while time.time() < end:
            s.sendall(PING)
            buf = b""
            while not buf.endswith(b"\n"):
                buf += s.recv(4096)
            count += 1
    queue.put(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with private_daemon() as (home, _env):
        sock = os.path.join(home, "ctl.sock")
        roundtrips(sock, 500)  # warm up
        rt = roundtrips(sock, 5000)
        print(f"daemon.ping round trip, kept-open connection: median {median_ms(rt):.3f} ms "
              f"(p99 {sorted(rt)[int(len(rt) * 0.99)] * 1000:.3f} ms, n={len(rt)})")
        queue: mp.Queue[int] = mp.Queue()
        start_at = time.time() + 0.5
        procs = [mp.Process(target=client, args=(sock, args.seconds, start_at, queue))
                 for _ in range(args.clients)]
        for p in procs:
            p.start()
        total = sum(queue.get() for _ in procs)
        for p in procs:
            p.join()
        print(f"{args.clients} concurrent clients for {args.seconds:.0f} s: "
              f"{total / args.seconds:,.0f} calls/s")


if __name__ == "__main__":
    main()
