"""The proxy under attack, through a real daemon: request smuggling, oversized and malformed
heads, a Host of another project than the TLS server name, stalled handshakes and
connection floods. Each time the owner's control socket must keep answering and the backend
must see only what it should."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import statistics
import subprocess
import time
from typing import Any

import pytest

from taskmuxd import fdlimit
from tests.helpers import (
    DaemonProcess,
    ProxyHarness,
    call,
    route,
    wait_until,
    write_config,
)
from tests.test_peer_uid import other_user_python
from tests.users import throwaway_user
from tests.web import backend, ca_context, get


def exchange(port: int, name: str, data: bytes, ctx: ssl.SSLContext,
             address: str = "127.0.0.1", timeout: float = 10.0) -> tuple[bytes, bool]:
    """Send ``data`` over TLS (server name ``name``) and read until the proxy closes:
    (everything read, whether the proxy closed the connection within ``timeout``)."""
    raw = socket.create_connection((address, port), timeout=timeout)
    with ctx.wrap_socket(raw, server_hostname=name) as conn:
        conn.sendall(data)
        out = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                return out, False
            except (ConnectionResetError, ssl.SSLError) as exc:
                raise AssertionError(f"reset instead of an answer after {out[:80]!r}") from exc
            if not chunk:
                return out, True
            out += chunk


SECOND = b"GET /admin/smuggled HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n"


def smuggling(host: str, kind: str) -> bytes:
    second = SECOND.replace(b"{host}", host.encode())
    n = str(len(second)).encode()
    first = {
        "bare LF": b"X-A: a\nContent-Length: 0\r\nContent-Length: " + n,
        "bare CR": b"X-A: a\rContent-Length: 0\r\nContent-Length: " + n,
        "NUL": b"X-A: a\x00\r\nContent-Length: " + n,
        "CL.CL": b"Content-Length: 0\r\nContent-Length: " + n,
        "CL.TE": b"Content-Length: " + n + b"\r\nTransfer-Encoding: chunked",
        "obs-fold": b"X-A: a\r\n Content-Length: 0\r\nContent-Length: " + n,
        "space before colon": b"Content-Length : 0\r\nContent-Length: " + n,
    }[kind]
    return b"POST /first HTTP/1.1\r\nHost: " + host.encode() + b"\r\n" + first + \
        b"\r\n\r\n" + second


@pytest.mark.parametrize("kind", ["bare LF", "bare CR", "NUL", "CL.CL", "CL.TE", "obs-fold",
                                  "space before colon"])
def test_a_smuggled_request_never_reaches_the_backend(proxy: ProxyHarness, tls: ssl.SSLContext,
                                                      kind: str) -> None:
    project = "smug" + str(abs(hash(kind)) % 10000)
    host = f"web.{project}.localhost"
    with backend("web") as web:
        proxy.set_routes(project, route("web", "web", web.port))
        answer, closed = exchange(proxy.https_port, host, smuggling(host, kind), tls)
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"Connection: close" in answer
        assert closed, "the proxy kept the connection open"
        assert web.seen == []
        # The next, honest request goes through (proving the backend was reachable).
        status, _, _ = get(host, proxy.https_port, tls, "/after")
        assert status == 200
        assert web.seen == [("GET", "/after", ["127.0.0.1"])]


def test_an_oversized_head_gets_431_not_a_reset(proxy: ProxyHarness,
                                                tls: ssl.SSLContext) -> None:
    host = "web.big.localhost"
    with backend("web") as web:
        proxy.set_routes("big", route("web", "web", web.port))
        for end in (b"", b"\r\n\r\n"):  # the head still coming, or complete but too large
            head = (b"GET / HTTP/1.1\r\nHost: " + host.encode() + b"\r\nX-Big: "
                    + b"a" * 90_000 + end)
            answer, closed = exchange(proxy.https_port, host, head, tls)
            assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
            assert closed
        assert web.seen == []


def test_a_head_with_bare_line_feeds_is_refused_at_once(proxy: ProxyHarness,
                                                        tls: ssl.SSLContext) -> None:
    """A client that ends lines with LF alone never sends CRLF CRLF: it gets its 400 at once,
    not after the idle timeout."""
    host = "web.lf.localhost"
    with backend("web") as web:
        proxy.set_routes("lf", route("web", "web", web.port))
        started = time.monotonic()
        answer, closed = exchange(proxy.https_port, host,
                                  b"GET / HTTP/1.1\nHost: " + host.encode() + b"\n\n", tls,
                                  timeout=5)
        assert answer.startswith(b"HTTP/1.1 400 ") and closed
        assert time.monotonic() - started < 5
        assert web.seen == []


def test_the_host_of_another_project_than_the_server_name_gets_421(
        proxy: ProxyHarness, tls: ssl.SSLContext) -> None:
    with backend("one") as one, backend("two") as two:
        proxy.set_routes("sni1", route("web", "web", one.port))
        proxy.set_routes("sni2", route("web", "web", two.port))
        request = b"GET /x HTTP/1.1\r\nHost: web.sni2.localhost\r\n\r\n"
        answer, closed = exchange(proxy.https_port, "web.sni1.localhost", request, tls)
        assert answer.startswith(b"HTTP/1.1 421 "), answer[:200]
        assert closed
        assert one.seen == [] and two.seen == []
        # Another name of the same project is fine on the same connection.
        request = b"GET /y HTTP/1.1\r\nHost: web.sni1.localhost:443\r\nConnection: close\r\n\r\n"
        answer, _ = exchange(proxy.https_port, "web.sni1.localhost", request, tls)
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert [path for _, path, _ in one.seen] == ["/y"]


# -- floods -----------------------------------------------------------------------------------

def client_hello(name: str) -> bytes:
    """The first flight of a real TLS client for ``name``."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ping_ms(daemon: DaemonProcess, n: int = 20) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        call(daemon.socket, "daemon.ping", timeout=5)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def limits(proxy: ProxyHarness) -> dict[str, Any]:
    result: dict[str, Any] = proxy.status("proxy")["limits"]
    return result


def test_stalled_handshakes_cost_nothing_and_end_at_the_deadline(
        home: str, env: dict[str, str]) -> None:
    write_config(home, "proxy_max_connections = 400\nproxy_max_connections_per_client = 200\n"
                 "proxy_handshake_timeout = 3.0\n")
    daemon = DaemonProcess(home, env).wait_ready()
    socks: list[socket.socket] = []
    try:
        proxy = ProxyHarness(daemon)
        port = proxy.https_port
        with backend("web") as web:
            proxy.set_routes("stall", route("web", "web", web.port))
            hello = client_hello("web.stall.localhost")
            for _ in range(250):  # 50 more than one address may hold
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                with contextlib.suppress(OSError):  # (a refused one may be closed already)
                    sock.sendall(hello[:len(hello) // 2])  # half a ClientHello, then nothing
                sock.setblocking(False)
                socks.append(sock)
            # (the refusals are counted as the daemon works through the backlog: awaited too)
            wait_until(lambda: limits(proxy)["open"] == 200 and limits(proxy)["refused"] >= 50,
                       what="200 stalled handshakes, the other 50 refused")
            # 200 clients stalled mid-hello: the daemon sleeps (it polled 200 times a second
            # per connection before) and its owner's ping stays fast.
            before = cpu_seconds(daemon.pid)
            time.sleep(1.0)
            assert cpu_seconds(daemon.pid) - before < 0.15
            assert ping_ms(daemon) < 500  # not held up behind them (a loose bound: 4 workers)
            # The deadline ends every stalled handshake and gives the places back.
            wait_until(lambda: all(closed_by_peer(s) for s in socks), timeout=15,
                       what="stalled handshakes closed by the proxy")
            wait_until(lambda: limits(proxy)["open"] == 0, what="places given back")
    finally:
        for sock in socks:
            sock.close()
        daemon.stop()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_a_connection_flood_leaves_descriptors_for_the_control_socket(
        home: str, env: dict[str, str]) -> None:
    """Started with 128 descriptors (hard limit 512), the daemon raises itself to 512 and
    holds no more proxy connections than fit with the reserve free: 400 connections from
    another user's client cannot stop `taskmux status` answering."""
    daemon = DaemonProcess(home, env, nofile=(128, 512)).wait_ready()
    socks: list[socket.socket] = []
    try:
        with open(f"/proc/{daemon.pid}/limits") as fh:
            line = next(x for x in fh if x.startswith("Max open files"))
        assert line.split()[3:5] == ["512", "512"], line
        proxy = ProxyHarness(daemon)
        cap, _ = fdlimit.shares(512)
        assert limits(proxy)["max"] == cap < 512 - fdlimit.RESERVED // 2
        port = proxy.https_port
        for _ in range(400):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setblocking(False)
            socks.append(sock)
        wait_until(lambda: limits(proxy)["open"] == cap, what=f"{cap} connections held")
        wait_until(lambda: limits(proxy)["refused"] >= 400 - cap, what="the rest refused")
        assert open_fds(daemon.pid) < 512 - 100
        assert ping_ms(daemon) < 50
        assert call(daemon.socket, "daemon.status")["proxy"]["connections"] == 0
    finally:
        for sock in socks:
            sock.close()
        daemon.stop()


def test_one_empty_line_between_requests_is_ignored(proxy: ProxyHarness,
                                                    tls: ssl.SSLContext) -> None:
    """RFC 9112 2.2: some clients send CRLF after a body; the next request still counts."""
    host = "web.crlf.localhost"
    with backend("web") as web:
        proxy.set_routes("crlf", route("web", "web", web.port))
        first = (b"POST /a HTTP/1.1\r\nHost: " + host.encode() + b"\r\nContent-Length: 2\r\n"
                 b"\r\nok\r\n")
        second = b"GET /b HTTP/1.1\r\nHost: " + host.encode() + b"\r\nConnection: close\r\n\r\n"
        answer, closed = exchange(proxy.https_port, host, first + second, tls)
        assert answer.count(b"HTTP/1.1 200 ") == 2 and closed
        assert [path for _, path, _ in web.seen] == ["/a", "/b"]


def test_the_plain_http_port_answers_431_too(start_daemon: Any, home: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        redirect_port = s.getsockname()[1]
    write_config(home, f"proxy_http_redirect_port = {redirect_port}\n")
    start_daemon()
    with socket.create_connection(("127.0.0.1", redirect_port), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: web.shop.localhost\r\nX-Big: " + b"a" * 90_000)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:100]
    with socket.create_connection(("127.0.0.1", redirect_port), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.1\r\nHost: web.shop.localhost\r\nX: a\x00\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 400 ")


FLOODER = r"""
import socket, sys
port, n, first = int(sys.argv[1]), int(sys.argv[2]), bytes.fromhex(sys.argv[3])
held = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(first)
    except OSError:
        pass
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


def test_another_users_flood_leaves_the_owner_its_own_share(home: str,
                                                             env: dict[str, str]) -> None:
    """Every local client comes from 127.0.0.1, so the per-client cap counts local users by
    uid: another user's 300 stalled connections use up that user's share only."""
    python = other_user_python()
    write_config(home, "proxy_max_connections = 400\nproxy_max_connections_per_client = 100\n")
    daemon = DaemonProcess(home, env).wait_ready()
    try:
        proxy = ProxyHarness(daemon)
        port = proxy.https_port
        with backend("web") as web, throwaway_user() as user:
            proxy.set_routes("share", route("web", "web", web.port))
            hello = client_hello("web.share.localhost")
            flood = subprocess.Popen(
                [python, "-I", "-c", FLOODER, str(port), "300", hello[:40].hex()],
                user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd="/",
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            try:
                assert flood.stdout is not None and flood.stdout.readline() == "ready\n"
                wait_until(lambda: limits(proxy)["open"] == 100
                           and limits(proxy)["refused"] >= 200,
                           what="the user's 100, the other 200 refused")
                # The owner, from the same address, is served.
                status, _, _ = get("web.share.localhost", port, ca_context(proxy.ca_path),
                                   "/owner")
                assert status == 200 and [p for _, p, _ in web.seen] == ["/owner"]
                assert ping_ms(daemon) < 500  # not held up behind them (a loose bound: 4 workers)
            finally:
                assert flood.stdin is not None and flood.stdout is not None
                flood.stdin.close()
                flood.wait(10)
                flood.stdout.close()
    finally:
        daemon.stop()
