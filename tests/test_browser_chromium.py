"""A real headless Chromium through the proxy: after `taskmux ca install` on a fresh home it
loads a task's page with no certificate error, over HTTP/2.

``ca install`` as root would change the machine's own trust store, so as root the whole
scenario runs as a throwaway user (whose fresh home has no NSS database yet); as anyone else
it runs as that user with a temporary HOME. Skips with the reason where Chromium is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import PYTHON, REPO, call, pid_gone, read, wait_until
from tests.users import throwaway_user
from tests.web import backend

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-features=Translate"]
CONFIG = ('proxy_https_port = 0\nproxy_http_redirect_port = 0\nhost_resolver = "noop"\n'
          "dns_server_port = 0\n")


class Person:
    """Whoever runs the scenario: a home, a state directory, and how to run as them."""

    def __init__(self, home: str, uid: int, gid: int, python: str, env: dict[str, str]) -> None:
        self.home, self.uid, self.gid = home, uid, gid
        self.state = os.path.join(home, ".taskmux")
        self.python = python
        self.env = {**env, "HOME": home, "TASKMUX_HOME": self.state}

    def run(self, argv: list[str], timeout: float = 60,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        extra: dict[str, Any] = {}
        if self.uid != os.getuid():
            extra = {"user": self.uid, "group": self.gid, "extra_groups": []}
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                              env={**self.env, **(env or {})}, cwd=self.home, **extra)

    def taskmux(self, *args: str) -> dict[str, Any]:
        proc = self.run([self.python, "-m", "taskmuxctl", "--json", *args])
        assert proc.stdout, proc.stderr
        out: dict[str, Any] = json.loads(proc.stdout)
        return out


@pytest.fixture
def person() -> Iterator[Person]:
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    if shutil.which("certutil") is None:
        pytest.skip("certutil (libnss3-tools) is not installed")
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TASKMUX_", "NOTIFY_SOCKET", "WATCHDOG_", "TMUX", "SUDO_"))}
    base["TASKMUX_TEST_HOOKS"] = "1"
    if os.geteuid() == 0:
        from tests.test_privileges import user_python_env

        python, env = user_python_env()
        with throwaway_user() as user:
            yield _prepared(Person(user.pw_dir, user.pw_uid, user.pw_gid, python,
                                   {**base, **env, "USER": user.pw_name}))
        return
    home = tempfile.mkdtemp(prefix="tmx-home-", dir="/tmp")
    base["PYTHONPATH"] = REPO
    try:
        yield _prepared(Person(home, os.getuid(), os.getgid(), PYTHON, base))
    finally:
        _stop_daemon(os.path.join(home, ".taskmux"))
        shutil.rmtree(home, ignore_errors=True)


def _prepared(person: Person) -> Person:
    # Made by the person, so that it is theirs; then filled in.
    proc = person.run(["sh", "-c", f"mkdir -m 700 -p {person.state} && "
                      f"touch {person.state}/config.toml"], timeout=10)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(person.state, "config.toml"), "w") as fh:
        fh.write(CONFIG)
    return person


def _stop_daemon(state: str) -> None:
    try:
        pid = int(read(os.path.join(state, "daemon.pid")))
        os.kill(pid, 15)
    except (OSError, ValueError):
        return
    wait_until(lambda: pid_gone(pid), what="the daemon to stop")


def chromium_protocol(person: Person, url: str, extra: list[str] | None = None) -> str:
    """What the page at ``url`` said about its protocol in headless Chromium ('' when the
    page did not load, e.g. a certificate error)."""
    profile = os.path.join(person.home, f"chromium-{len(os.listdir(person.home))}")
    # Chromium's own temporary folder (its singleton socket's) goes in the profile, which
    # goes with the person, rather than one more org.chromium.Chromium.* left in /tmp.
    tmp = os.path.join(profile, "tmp")
    os.makedirs(tmp)
    if person.uid != os.getuid():
        os.chown(profile, person.uid, person.gid)
        os.chown(tmp, person.uid, person.gid)
    proc = person.run(["chromium", *CHROMIUM_FLAGS, *(extra or []),
                       f"--user-data-dir={profile}", "--dump-dom", url], timeout=90,
                      env={"TMPDIR": tmp})
    marker = "PROTOCOL:"
    if marker not in proc.stdout:
        return ""
    return proc.stdout.split(marker, 1)[1].split("<", 1)[0].strip()


@pytest.mark.slow
def test_chromium_trusts_the_proxy_after_ca_install_and_speaks_h2(person: Person) -> None:
    try:
        # The CA and a daemon, as the person (``ca path`` starts the daemon).
        assert person.taskmux("ca", "path")["path"]
        sock = os.path.join(person.state, "ctl.sock")
        port = call(sock, "daemon.status")["proxy"]["https_port"]
        assert port and port != 443
        with backend("web") as web:
            call(sock, "routes.set", {"project": "shop", "backends": [
                {"task": "web", "host": "web", "port": web.port, "state": "running",
                 "ready": True}]})
            url = f"https://web.shop.localhost:{port}/proto"
            # Before: Chromium refuses the certificate (nothing trusts the CA yet).
            assert not os.path.exists(os.path.join(person.home, ".pki", "nssdb"))
            assert chromium_protocol(person, url) == ""
            out = person.taskmux("ca", "install")
            nss = [a for a in out["actions"] if "NSS database" in a["target"]]
            assert any(a["detail"].startswith("created") for a in nss), out
            assert all(a["done"] for a in nss), out
            assert chromium_protocol(person, url) == "h2"
        doctor = {c["name"]: c for c in person.taskmux("doctor")["checks"]}
        assert doctor["browsers"]["status"] == "ok", doctor["browsers"]
        assert ".pki/nssdb" in doctor["browsers"]["summary"]
    finally:
        _stop_daemon(person.state)


WS_PAGE = (b"<!doctype html><html><body><script>"
           b"const ws = new WebSocket('wss://' + location.host + '/ws');"
           b"ws.onopen = () => ws.send('ping');"
           b"ws.onmessage = (e) => { ws.send('got ' + e.data); };"
           b"</script><img src='/wait'></body></html>")


@pytest.mark.slow
def test_chromium_websocket_through_the_proxy(person: Person) -> None:
    """A page's WebSocket works in Chromium through the proxy: the task echoes, the page
    sends back what it got (an image the page waits for holds its load event until then).
    The task also tells which way the upgrade came (over HTTP/2 the proxy's request has
    lower-case names, Chromium's own HTTP/1.1 one does not)."""
    import threading

    from websockets.datastructures import Headers
    from websockets.http11 import Request, Response
    from websockets.sync.server import ServerConnection, serve

    heard: list[str] = []
    done = threading.Event()

    def page(conn: ServerConnection, request: Request) -> Response | None:
        if request.path == "/ws":
            return None
        if request.path == "/wait":
            done.wait(20)
            return Response(204, "No Content", Headers([("Content-Length", "0")]), b"")
        return Response(200, "OK", Headers([("Content-Type", "text/html"),
                                            ("Content-Length", str(len(WS_PAGE)))]), WS_PAGE)

    def echo(ws: ServerConnection) -> None:
        assert ws.request is not None
        names = [name for name, _ in ws.request.headers.raw_items()]
        way = "h2" if "host" in names else "http/1.1"
        try:
            for message in ws:
                heard.append(str(message))
                if str(message).startswith("got "):
                    done.set()
                else:
                    ws.send(f"{message}:{way}")
        except Exception:
            pass  # Chromium leaves without a close frame

    try:
        assert person.taskmux("ca", "path")["path"]
        sock = os.path.join(person.state, "ctl.sock")
        port = call(sock, "daemon.status")["proxy"]["https_port"]
        assert person.taskmux("ca", "install")["actions"]
        with serve(echo, "127.0.0.1", 0, process_request=page) as server:
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            try:
                call(sock, "routes.set", {"project": "chat", "backends": [
                    {"task": "web", "host": "web", "state": "running", "ready": True,
                     "port": server.socket.getsockname()[1]}]})
                chromium_protocol(person, f"https://web.chat.localhost:{port}/")
            finally:
                done.set()
                server.shutdown()
                thread.join(5)
        assert heard[:1] == ["ping"] and heard[1:2] in (["got ping:h2"], ["got ping:http/1.1"])
        print(f"Chromium's WebSocket went over {heard[1].split(':')[1]}")
    finally:
        _stop_daemon(person.state)
