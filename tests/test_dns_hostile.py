"""taskmux's DNS server under attack, through a real daemon on a free port: a flood of idle
TCP connections is capped (in total and per client) and cut at the idle timeout, and
distinct oversized queries cannot grow the reply cache."""

from __future__ import annotations

import socket
from typing import Any

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from taskmuxd.dns.answers import MAX_CACHED_BYTES, Answerer
from tests.helpers import DaemonProcess, ProxyHarness, call, wait_until, write_config


def start(home: str, env: dict[str, str], extra: str = "") -> DaemonProcess:
    write_config(home, 'host_resolver = "dns_server"\n' + extra)
    return DaemonProcess(home, env).wait_ready()


def dns_status(daemon: DaemonProcess) -> dict[str, Any]:
    result: dict[str, Any] = ProxyHarness(daemon).status("dns")
    return result


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_idle_tcp_connections_are_capped_and_cut(home: str, env: dict[str, str]) -> None:
    daemon = start(home, env, "dns_max_tcp_connections = 50\n"
                   "dns_max_tcp_connections_per_client = 30\ndns_tcp_idle_timeout = 1.5\n")
    socks: list[socket.socket] = []
    try:
        port = dns_status(daemon)["port"]
        assert port and port != 5454
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setblocking(False)
            socks.append(sock)
        limits = lambda: dns_status(daemon)["tcp_limits"]  # noqa: E731
        wait_until(lambda: limits()["open"] == 30, what="30 connections held (per client)")
        wait_until(lambda: limits()["refused"] >= 170, what="the rest closed at once")
        assert call(daemon.socket, "daemon.ping", timeout=2)
        # UDP still answers meanwhile.
        reply = dns.query.udp(dns.message.make_query("a.shop.localhost", "A"), "127.0.0.1",
                              port=port, timeout=5)
        assert reply.rcode() == dns.rcode.NOERROR and reply.answer
        # The idle timeout ends the ones held, and TCP answers again.
        wait_until(lambda: all(closed_by_peer(s) for s in socks), timeout=10,
                   what="idle connections closed")
        wait_until(lambda: limits()["open"] == 0, what="places given back")
        reply = dns.query.tcp(dns.message.make_query("a.shop.localhost", "AAAA"), "127.0.0.1",
                              port=port, timeout=5)
        assert [rr.address for rr in reply.answer[0]] == ["::1"]
    finally:
        for sock in socks:
            sock.close()
        daemon.stop()


def big_query(i: int) -> dns.message.Message:
    """A distinct query of about 60 KB (an EDNS option full of padding)."""
    return dns.message.make_query(f"q{i}.shop.localhost", "A", use_edns=0,
                                  options=[dns.edns.GenericOption(65001, b"x" * 60_000)])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("VmRSS:")).split()[1])


def test_distinct_large_queries_do_not_grow_the_cache(home: str, env: dict[str, str]) -> None:
    daemon = start(home, env)
    try:
        port = dns_status(daemon)["port"]
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            def ask(i: int) -> dns.message.Message:
                wire = big_query(i).to_wire(max_size=65535)
                sock.sendall(len(wire).to_bytes(2, "big") + wire)
                reply, _ = dns.query.receive_tcp(sock, expiration=None)
                return reply

            assert ask(0).answer  # warm up: the daemon's buffers exist before measuring
            before = rss_kib(daemon.pid)
            for i in range(1, 1001):  # 60 MB of distinct queries
                reply = ask(i)
            assert [rr.address for rr in reply.answer[0]] == ["127.0.0.1"]
        grown = rss_kib(daemon.pid) - before
        assert grown < 16 * 1024, f"the daemon grew by {grown} KiB"
        assert dns_status(daemon)["cache_bytes"] <= MAX_CACHED_BYTES
    finally:
        daemon.stop()


@pytest.mark.slow
def test_the_cache_stays_within_its_bytes_whatever_the_queries() -> None:
    answerer = Answerer("localhost")
    # Long names padded (EDNS) to near the largest cached query: about 700 bytes an entry,
    # so the byte cap, not the entry count, is what empties the cache (about every 3,000).
    padding = [dns.edns.GenericOption(dns.edns.OptionType.PADDING, b"\0" * 230)]
    peak, emptied = 0, 0
    for i in range(9_000):
        long_name = f"name-{i}.{'x' * 60}.{'y' * 60}.{'z' * 60}.shop.localhost"
        query = dns.message.make_query(long_name, "A", use_edns=0, options=padding)
        before = answerer.cached_bytes
        assert answerer.answer(query.to_wire()) is not None
        assert answerer.cached_bytes <= MAX_CACHED_BYTES
        peak = max(peak, answerer.cached_bytes)
        emptied += answerer.cached_bytes < before
    assert emptied >= 2 and peak > MAX_CACHED_BYTES - 4096  # filled to the cap, then emptied
    # Ordinary queries are still answered from the cache (same reply, new ID).
    query = dns.message.make_query("web.shop.localhost", "A")
    first = answerer.answer(query.to_wire())
    query.id ^= 0xFFFF
    second = answerer.answer(query.to_wire())
    assert first is not None and second is not None and first[2:] == second[2:]
