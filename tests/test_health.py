"""Each probe kind passing and failing against real servers and processes."""

from __future__ import annotations

import asyncio
import http.server
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from taskmuxd.healthprobes import ProbeSpec, probe


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 500 if self.path == "/broken" else 200
        body = b"<div id=\"app\">ok</div>" if self.path != "/overlay" else b"Build error"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_port() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def spec(**kw: object) -> ProbeSpec:
    base: dict[str, object] = {"url": None, "expected_status": 200, "expected_body": None,
                               "command": None, "port": None, "pid": None, "timeout": 2.0,
                               "env": dict(os.environ), "cwd": "/"}
    base.update(kw)
    return ProbeSpec(**base)  # type: ignore[arg-type]


def run(s: ProbeSpec) -> tuple[bool, str, str]:
    r = asyncio.run(probe(s))
    return r.ok, r.method, r.detail


def test_http_probe(http_port: int) -> None:
    url = "http://127.0.0.1:$PORT/"
    assert run(spec(url=url, port=http_port))[:2] == (True, "http")
    ok, _, detail = run(spec(url=f"http://127.0.0.1:{http_port}/broken"))
    assert not ok and "answered 500, expected 200" in detail
    assert run(spec(url=f"http://127.0.0.1:{http_port}/broken", expected_status=500))[0]
    marker = 'id="app"'
    assert run(spec(url=f"http://localhost:{http_port}/", expected_body=marker))[0]
    ok, _, detail = run(spec(url=f"http://127.0.0.1:{http_port}/overlay", expected_body=marker))
    assert not ok and "does not match" in detail
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    ok, _, detail = run(spec(url=f"http://127.0.0.1:{free}/"))
    assert not ok and str(free) in detail


def test_command_probe(tmp_path: str) -> None:
    assert run(spec(command="true"))[:2] == (True, "command")
    ok, method, detail = run(spec(command="echo nope >&2; exit 3"))
    assert (ok, method) == (False, "command") and "exited 3" in detail and "nope" in detail
    flag = os.path.join(str(tmp_path), "flag")
    assert not run(spec(command=f"test -f {flag}", cwd=str(tmp_path)))[0]
    open(flag, "w").close()
    assert run(spec(command="test -f flag", cwd=str(tmp_path)))[0]
    assert run(spec(command='test "$X" = 1', env={**os.environ, "X": "1"}))[0]


def test_tcp_probe_tries_ipv6_loopback_too() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with socket.socket(socket.AF_INET6) as v6:
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            v6.bind(("::1", 0))
        except OSError:
            pytest.skip("::1 is not available")
        v6.listen()
        port = v6.getsockname()[1]
        ok, method, detail = run(spec(port=port))
        assert (ok, method) == (True, "tcp") and "::1" in detail
    ok, _, detail = run(spec(port=port))
    assert not ok and "refuses" in detail


def test_process_probe() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    try:
        assert run(spec(pid=proc.pid))[:2] == (True, "process")
    finally:
        proc.kill()
        proc.wait()
    assert not run(spec(pid=proc.pid))[0]


def test_a_hanging_probe_does_not_stall_another() -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # accepts (backlog) but never answers
    port = silent.getsockname()[1]

    async def both() -> tuple[float, float, bool]:
        t0 = time.monotonic()
        hang = asyncio.create_task(probe(spec(url=f"http://127.0.0.1:{port}/", timeout=0.5)))
        quick = await probe(spec(command="true"))
        quick_done = time.monotonic() - t0
        slow = await hang
        assert quick.ok
        return quick_done, time.monotonic() - t0, slow.ok

    try:
        quick_done, slow_done, slow_ok = asyncio.run(both())
    finally:
        silent.close()
    assert not slow_ok
    assert quick_done < slow_done
