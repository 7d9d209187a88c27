"""The web dashboard at https://taskmux.localhost: the security rules on a fake clock, then
httpx through the daemon's real proxy: the page, the overview, logs, the live stream, a
restart with a session, and requests that must change nothing (no session, a foreign
Origin, a foreign Host, a wrong CSRF token, a used link)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from taskmuxd.dashboard import security
from tests.helpers import call, run_json, wait_until
from tests.projects import task, write_project
from tests.web import ca_context

SYSTEM_PYTHON = "/usr/bin/python3"


def test_host_origin_and_cookie_rules() -> None:
    assert security.host_ok("taskmux.localhost", "localhost", 443)
    assert security.host_ok("TASKMUX.localhost:8443", "localhost", 8443)
    assert not security.host_ok("taskmux.localhost", "localhost", 8443)
    assert not security.host_ok("evil.example", "localhost", 443)
    assert not security.host_ok("web.taskmux.localhost", "localhost", 443)
    assert not security.host_ok(None, "localhost", 443)
    assert security.origin("localhost", 8443) == "https://taskmux.localhost:8443"
    assert security.cookie_value("a=1; taskmux_session=xyz; b=2") == "xyz"
    assert security.cookie_value("taskmux_sessionx=1") is None
    cookie = security.set_cookie("abc")
    for part in ("HttpOnly", "Secure", "SameSite=Strict", "Path=/"):
        assert part in cookie
    assert security.peer_ok("uid 1000", 1000) and not security.peer_ok("uid 0", 1000)
    assert not security.peer_ok("127.0.0.1", 1000)


def test_one_time_tokens_and_sessions_on_a_fake_clock() -> None:
    store = security.Sessions()
    token = store.issue(now=100.0)
    assert store.redeem("wrong", 1000, now=101.0) is None
    sid = store.redeem(token, 1000, now=101.0)
    assert sid is not None
    assert store.redeem(token, 1000, now=102.0) is None  # once only
    session = store.find(sid, 1000, now=200.0)
    assert session is not None
    assert store.find(sid, 1001, now=200.0) is None  # bound to its user
    late = store.issue(now=300.0)
    assert store.redeem(late, 1000, now=300.0 + security.TOKEN_TTL + 1) is None
    assert store.find(sid, 1000, now=101.0 + security.SESSION_TTL + 1) is None
    o = security.origin("localhost", 443)
    assert security.change_allowed(session, o, session.csrf, "localhost", 443) is None
    assert "session" in str(security.change_allowed(None, o, session.csrf, "localhost", 443))
    assert "Origin" in str(security.change_allowed(session, "https://evil.example",
                                                   session.csrf, "localhost", 443))
    assert "Origin" in str(security.change_allowed(session, None, session.csrf, "localhost",
                                                   443))
    assert "CSRF" in str(security.change_allowed(session, o, "nope", "localhost", 443))
    assert "CSRF" in str(security.change_allowed(session, o, None, "localhost", 443))


class Site:
    """httpx to the dashboard through the proxy on its free port (SNI taskmux.localhost)."""

    def __init__(self, sock: str) -> None:
        import httpcore
        import httpx

        status = call(sock, "daemon.status")["proxy"]
        self.port = int(status["https_port"])
        self.origin = f"https://taskmux.localhost:{self.port}"
        ca = call(sock, "ca.info")["cert"]

        class Loopback(httpcore.SyncBackend):
            def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                            local_address: str | None = None,
                            socket_options: Any = None) -> httpcore.NetworkStream:
                return super().connect_tcp("127.0.0.1", port, timeout, local_address,
                                           socket_options)

        transport = httpx.HTTPTransport()
        transport._pool = httpcore.ConnectionPool(ssl_context=ca_context(ca),
                                                  network_backend=Loopback())
        self.client = httpx.Client(transport=transport, base_url=self.origin, timeout=30)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def demo(env: dict[str, str], tmp_path: Any) -> Iterator[tuple[str, Site]]:
    proj = write_project(str(tmp_path / "demo"), """
        name = "dashdemo"
        [tasks.web]
        command = "echo web-says-hello; echo second line; sleep 600"
        [tasks.worker]
        command = "sleep 600"
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    site = Site(os.path.join(env["TASKMUX_HOME"], "ctl.sock"))
    try:
        yield proj, site
    finally:
        site.close()


def _session(site: Site, sock: str) -> str:
    link = call(sock, "dashboard.session")["url"]
    assert link.startswith(site.origin + "/session?token=")
    r = site.client.get(link.removeprefix(site.origin))
    assert r.status_code == 303, r.text
    cookie = r.headers["set-cookie"]
    for part in ("HttpOnly", "Secure", "SameSite=Strict"):
        assert part in cookie
    again = site.client.get(link.removeprefix(site.origin))
    assert again.status_code == 403  # the link works once
    csrf = site.client.get("/api/me").json()["csrf"]
    assert csrf
    return str(csrf)


def test_page_overview_and_logs(demo: tuple[str, Site], env: dict[str, str]) -> None:
    proj, site = demo
    page = site.client.get("/")
    assert page.status_code == 200 and "<title>taskmux</title>" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "access-control-allow-origin" not in page.headers
    assert site.client.get("/static/app.js").headers["content-type"].startswith(
        "text/javascript")
    overview = site.client.get("/api/overview").json()
    [mine] = [p for p in overview["projects"] if p["project"] == "dashdemo"]
    assert [t["name"] for t in mine["tasks"]] == ["web", "worker"]
    assert all(t["state"] == "running" for t in mine["tasks"])
    me = site.client.get("/api/me").json()
    assert me == {"session": False, "csrf": None, "origin": site.origin}
    # Both of the task's lines (the log grows line by line: the first alone is not enough).
    logs = wait_until(lambda: (r := site.client.get(
        "/api/logs", params={"project": "dashdemo", "task": "web"}).json())["lines"]
        and any(line.endswith("second line") for line in r["lines"]) and r,
        what="the web task's two lines in its log")
    assert any("web-says-hello" in line for line in logs["lines"])
    found = site.client.get("/api/logs", params={"project": "dashdemo", "task": "web",
                                                 "q": "SECOND"}).json()["lines"]
    assert found and all("second line" in line for line in found)
    assert found[-1].endswith("Z second line") and len(found) < len(logs["lines"])
    detail = site.client.get("/api/task", params={"project": "dashdemo", "task": "web"})
    assert detail.status_code == 200
    assert "history" in detail.json()["task"]["resources"]
    assert site.client.get("/api/logs", params={"project": "nope", "task": "web"}
                           ).status_code == 404
    del proj, env


def test_changes_need_session_origin_and_token(demo: tuple[str, Site],
                                               env: dict[str, str]) -> None:
    proj, site = demo
    sock = os.path.join(env["TASKMUX_HOME"], "ctl.sock")
    before = task(env, proj, "web")["pid"]
    body = json.dumps({"action": "restart", "project": "dashdemo", "task": "web"})
    json_type = {"content-type": "application/json"}
    # no session
    r = site.client.post("/api/action", content=body,
                         headers={**json_type, "origin": site.origin})
    assert r.status_code == 403 and "session" in r.json()["error"]
    csrf = _session(site, sock)
    good = {**json_type, "origin": site.origin, security.CSRF_HEADER: csrf}
    # a foreign Origin, no Origin, a wrong token: refused
    for headers in ({**good, "origin": "https://evil.example"},
                    {k: v for k, v in good.items() if k != "origin"},
                    {**good, security.CSRF_HEADER: "forged"}):
        r = site.client.post("/api/action", content=body, headers=headers)
        assert r.status_code == 403, r.text
    # a foreign Host on the dashboard's own TLS connection (DNS rebinding)
    r = site.client.post("/api/action", content=body, headers={**good, "host": "evil.example"})
    assert r.status_code == 421
    r = site.client.get("/api/overview", headers={"host": f"evil.example:{site.port}"})
    assert r.status_code == 421
    assert task(env, proj, "web")["pid"] == before  # nothing changed
    # with all of it, the restart happens
    r = site.client.post("/api/action", content=body, headers=good)
    assert r.status_code == 200, r.text
    after = wait_until(lambda: (t := task(env, proj, "web"))["state"] == "running"
                       and t["pid"] != before and t["pid"], what="web restarted")
    assert after != before


def test_live_stream_pushes_events(demo: tuple[str, Site], env: dict[str, str]) -> None:
    proj, site = demo
    sock = os.path.join(env["TASKMUX_HOME"], "ctl.sock")
    got: list[dict[str, Any]] = []
    with site.client.stream("GET", "/api/events") as r:
        assert r.headers["content-type"] == "text/event-stream"
        lines = r.iter_lines()
        assert next(lines).startswith("retry:")
        call(sock, "project.restart", {"project": "dashdemo", "tasks": ["worker"]})
        for line in lines:
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
                if any(e["event"] == "task_restarted" for e in got):
                    break
    assert any(e["event"] == "task_restarted" and e["task"] == "worker" for e in got)
    site.client.close()  # the browser goes away: the stream ends and gives its place back
    wait_until(lambda: call(sock, "daemon.status")["dashboard"]["streams"] == 0, timeout=40,
               what="the stream to be let go")
    del proj


def test_other_users_are_refused(demo: tuple[str, Site], env: dict[str, str]) -> None:
    """A connection from another local user gets 403, reads included."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a client as a throwaway user")
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip(f"{SYSTEM_PYTHON} (a Python the other user may run) is missing")
    from tests.users import throwaway_user

    _proj, site = demo
    ca = call(os.path.join(env["TASKMUX_HOME"], "ctl.sock"), "ca.info")["cert"]
    script = (
        "import socket, ssl, sys\n"
        f"ctx = ssl.create_default_context(cafile={ca!r})\n"
        f"s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {site.port})),"
        " server_hostname='taskmux.localhost')\n"
        f"s.sendall(b'GET /api/overview HTTP/1.1\\r\\nHost: taskmux.localhost:{site.port}"
        "\\r\\nConnection: close\\r\\n\\r\\n')\n"
        "data = b''\n"
        "while chunk := s.recv(65536): data += chunk\n"
        "sys.stdout.write(data.split(b'\\r\\n', 1)[0].decode())\n")
    import subprocess

    os.chmod(ca, 0o644)
    folder = os.path.dirname(ca)
    modes = []
    while folder not in ("/", ""):  # let the other user read the CA certificate
        modes.append((folder, os.stat(folder).st_mode & 0o7777))
        os.chmod(folder, modes[-1][1] | 0o005)
        folder = os.path.dirname(folder)
    try:
        with throwaway_user() as user:
            proc = subprocess.run([SYSTEM_PYTHON, "-c", script],
                                  user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                                  capture_output=True, text=True, timeout=30)
    finally:
        for path, mode in modes:
            os.chmod(path, mode)
    assert proc.stdout.startswith("HTTP/1.1 403"), proc.stderr



def test_malformed_and_oversized_requests_are_refused(demo: tuple[str, Site],
                                                      env: dict[str, str]) -> None:
    import socket
    import ssl

    _proj, site = demo
    ca = call(os.path.join(env["TASKMUX_HOME"], "ctl.sock"), "ca.info")["cert"]
    ctx = ssl.create_default_context(cafile=ca)

    def exchange(raw: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", site.port), timeout=20) as plain, \
                ctx.wrap_socket(plain, server_hostname="taskmux.localhost") as tls:
            assert tls.selected_alpn_protocol() in (None, "http/1.1")
            tls.sendall(raw)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        return data

    host = f"Host: taskmux.localhost:{site.port}\r\n".encode()
    assert exchange(b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400")
    big = b"x" * (32 * 1024)
    assert exchange(b"POST /api/action HTTP/1.1\r\n" + host
                    + f"Content-Length: {len(big)}\r\n\r\n".encode() + big
                    ).startswith(b"HTTP/1.1 413")
    huge_head = b"GET / HTTP/1.1\r\n" + host + b"X-Pad: " + b"y" * (20 * 1024) + b"\r\n\r\n"
    assert exchange(huge_head).startswith(b"HTTP/1.1 431")
    # and the dashboard still answers
    assert site.client.get("/api/me").status_code == 200
