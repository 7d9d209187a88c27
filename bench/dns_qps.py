"""DNS queries per second answered by taskmux's DNS server (UDP, 127.0.0.1).

Run by hand: `.venv/bin/python bench/dns_qps.py`. Target: at least 10,000 queries per second.

Client processes keep a window of queries in flight on their own UDP sockets. Two loads:
`repeat` (a browser's pattern: the same few names again and again; answers come from the
server's reply cache) and `unique` (every query a name never asked before: each one goes
through dnslib's codec). The figure is a floor: the clients share the machine's cores with the
server.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BENCH_CONFIG, private_daemon
from bench.proxy_throughput import rpc


def query(qid: int, name: str, qtype: int = 1) -> bytes:
    header = struct.pack(">HHHHHH", qid & 0xFFFF, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return header + labels + struct.pack(">HH", qtype, 1)


def client(port: int, mode: str, seconds: float, window: int, seed: int,
           start_at: float, out: mp.Queue[tuple[int, int]]) -> None:
    count = 256
    names = [f"t{seed}x{i}.p{i % 97}.localhost" for i in range(count)]
    queries = [query(i, n, 1 if i % 2 else 28) for i, n in enumerate(names)]
    unique = mode == "unique"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(1.0)
    while time.time() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    sent = answered = 0
    inflight = 0
    i = 0
    while time.time() < end:
        while inflight < window:
            sock.send(query(i, f"u{seed}x{i}.p{i % 97}.localhost", 1 if i % 2 else 28)
                      if unique else queries[i % count])
            i += 1
            sent += 1
            inflight += 1
        try:
            sock.recv(512)
        except TimeoutError:
            inflight = 0  # lost ones: start the window again
            continue
        answered += 1
        inflight -= 1
    out.put((sent, answered))


def run(port: int, mode: str, clients: int, seconds: float, window: int) -> float:
    queue: mp.Queue[tuple[int, int]] = mp.Queue()
    start_at = time.time() + 0.5
    procs = [mp.Process(target=client, args=(port, mode, seconds, window, n, start_at, queue))
             for n in range(clients)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    return sum(answered for _, answered in results) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    config = BENCH_CONFIG.replace('host_resolver = "noop"', 'host_resolver = "dns_server"')
    with private_daemon(config=config) as (home, _env):
        sock = os.path.join(home, "ctl.sock")
        while True:
            try:
                port = rpc(sock, "daemon.status")["dns"]["port"]
                break
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        print(f"{args.clients} clients x {args.window} queries in flight, {args.seconds:g}s each")
        for mode in ("repeat", "unique"):
            qps = run(port, mode, args.clients, args.seconds, args.window)
            print(f"  {mode:<7} {qps:>10,.0f} queries/s answered")


if __name__ == "__main__":
    main()
