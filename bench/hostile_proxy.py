"""The proxy's and the DNS server's attacks of issue 12, repeated against a private daemon.

Run by hand: `.venv/bin/python bench/hostile_proxy.py`. It prints, for each attack, whether
the daemon is alive, the owner's ping latency while the attack holds (median and 95th
percentile; target: a median under 5 ms with 1,000 hostile connections open), the daemon's
CPU use while it holds, and its RSS. The attacks:

- 1,000 connections each stalled half-way through its ClientHello (the per-client cap raised
  to 1,024 for the run, so that all of them are held: the worst case for the daemon);
- 1,000 idle TCP connections to the DNS server (capped; the rest are closed at once);
- the malformed-request corpus of tests/test_http1_differential.py over TLS (answers counted:
  refused with a 4xx/5xx, reset, or reaching the backend);
- 1,000 distinct 60 KB DNS queries (RSS before and after).

Connections come from this user; another local user's would cost the daemon the same.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BENCH_CONFIG, private_daemon
from bench.proxy_throughput import rpc


def ping_ms(sock: str, n: int = 200) -> tuple[float, float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        rpc(sock, "daemon.ping")
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95)]


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(x for x in fh if x.startswith("VmRSS:")).split()[1]) / 1024


def report(name: str, sock: str, pid: int, extra: str = "") -> None:
    """The daemon's CPU over a quiet second (the attack alone), then 200 pings."""
    before = cpu_seconds(pid)
    time.sleep(1.0)
    cpu = (cpu_seconds(pid) - before) * 100
    median, p95 = ping_ms(sock)
    alive = bool(rpc(sock, "daemon.ping"))
    print(f"{name:34s} alive={alive} ping median {median:.2f} ms, p95 {p95:.2f} ms; "
          f"idle CPU {cpu:.0f}%; RSS {rss_mib(pid):.1f} MiB {extra}")


def client_hello(name: str) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def open_many(address: str, port: int, n: int, first: bytes = b"") -> list[socket.socket]:
    out = []
    for _ in range(n):
        s = socket.create_connection((address, port), timeout=5)
        if first:
            with contextlib.suppress(OSError):
                s.sendall(first)
        out.append(s)
    return out


def corpus(port: int, ca: str, host: str) -> tuple[int, int, int]:
    """(refused with an error status, reset, other answers) for the malformed corpus."""
    from tests.test_http1_differential import MALFORMED

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    refused = resets = other = 0
    for case in MALFORMED.values():
        data = case.replace(b"web.shop.localhost", host.encode())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname=host) as conn:
                conn.sendall(data)
                answer = b""
                while chunk := conn.recv(65536):
                    answer += chunk
        except (ConnectionResetError, ssl.SSLError):
            resets += 1
            continue
        if answer[9:10] in (b"4", b"5"):
            refused += 1
        else:
            other += 1
    return refused, resets, other


def main() -> None:
    from tests.web import backend

    config = BENCH_CONFIG.replace('host_resolver = "noop"', 'host_resolver = "dns_server"') \
        + "proxy_max_connections_per_client = 1024\n"
    with private_daemon({"TASKMUX_TEST_HOOKS": "1"}, config) as (home, _), \
            backend("web") as web:
        sock = os.path.join(home, "ctl.sock")
        status = rpc(sock, "daemon.status")
        pid = status["pid"]
        port, dns_port = status["proxy"]["https_port"], status["dns"]["port"]
        rpc(sock, "routes.set", {"project": "bench", "backends": [
            {"task": "web", "host": "web", "port": web.port, "state": "running",
             "ready": True}]})
        with open(f"/proc/{pid}/limits") as fh:
            print(next(x for x in fh if x.startswith("Max open files")).strip())
        print("proxy limits:", rpc(sock, "daemon.status")["proxy"]["limits"])
        report("baseline", sock, pid)

        hello = client_hello("web.bench.localhost")
        half = hello[:len(hello) // 2]
        held = open_many("127.0.0.1", port, 500, half) + open_many("::1", port, 500, half)
        time.sleep(0.5)
        report("1,000 half-handshakes", sock, pid,
               f"(proxy {rpc(sock, 'daemon.status')['proxy']['limits']})")
        for s in held:
            s.close()

        held = open_many("127.0.0.1", dns_port, 1000)
        time.sleep(0.5)
        report("1,000 idle DNS TCP connections", sock, pid,
               f"(dns {rpc(sock, 'daemon.status')['dns']['tcp_limits']})")
        for s in held:
            s.close()

        ca = rpc(sock, "ca.info")["cert"]
        refused, resets, other = corpus(port, ca, "web.bench.localhost")
        report("smuggling/malformed corpus", sock, pid,
               f"(refused {refused}, resets {resets}, other {other}; "
               f"backend saw {len(web.seen)} requests: {sorted({p for _, p, _ in web.seen})}; "
               "heads it may see are well-formed ones whose chunked body then broke)")

        import dns.edns
        import dns.message
        import dns.query

        before = rss_mib(pid)
        with socket.create_connection(("127.0.0.1", dns_port), timeout=10) as conn:
            for i in range(1000):
                q = dns.message.make_query(f"q{i}.bench.localhost", "A", use_edns=0, options=[
                    dns.edns.GenericOption(65001, b"x" * 60_000)]).to_wire(max_size=65535)
                conn.sendall(len(q).to_bytes(2, "big") + q)
                dns.query.receive_tcp(conn, expiration=None)
        report("1,000 distinct 60 KB DNS queries", sock, pid,
               f"(RSS {before:.1f} -> {rss_mib(pid):.1f} MiB)")


if __name__ == "__main__":
    main()
