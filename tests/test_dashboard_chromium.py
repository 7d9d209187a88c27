"""The web dashboard in a real headless Chromium, driven over the DevTools protocol: the page
opened with `taskmux dashboard`'s link lists the demo's tasks, a click on restart restarts
the task, and a page on another origin that posts to the dashboard with the browser's
cookies changes nothing. Skips where Chromium is missing.

Chromium runs as the daemon's user (the dashboard serves no one else) with
``--ignore-certificate-errors``: trust in the local CA is test_browser_chromium.py's subject.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import call, run_json, wait_until
from tests.projects import task, write_project

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--ignore-certificate-errors", "--remote-debugging-port=0"]


class Browser:
    """One headless Chromium and one page, spoken to over the DevTools WebSocket."""

    def __init__(self) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="tmx-chromium-")
        self.proc = subprocess.Popen(["chromium", *FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True,
                                     # its temporary folder in the profile, removed with it
                                     env={**os.environ, "TMPDIR": self.profile})
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        port = None
        while port is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                raise AssertionError("chromium exited before DevTools listened")
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
            if found:
                port = int(found.group(1))
        assert port is not None, "no DevTools port"
        threading.Thread(target=self._drain, daemon=True).start()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(pages[0]["webSocketDebuggerUrl"],
                                                    max_size=None))
        self.next_id = 0

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for _ in self.proc.stderr:
            pass

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        rid = self.next_id
        self.ws.send(json.dumps({"id": rid, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == rid:
                assert "error" not in msg, msg
                return dict(msg["result"])

    def eval(self, expression: str) -> Any:
        out = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                        awaitPromise=True)
        return out["result"].get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture
def browser() -> Iterator[Browser]:
    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    pytest.importorskip("websockets", reason="the DevTools client needs websockets")
    b = Browser()
    try:
        yield b
    finally:
        b.close()


EVIL = """<!doctype html><html><body><script>
fetch("%s/api/action", {method: "POST", mode: "no-cors", credentials: "include",
  headers: {"content-type": "text/plain"},
  body: JSON.stringify({action: "restart", project: "chromedemo", task: "web"})})
  .then(() => { document.title = "sent"; }, () => { document.title = "blocked"; });
</script></body></html>"""


def test_dashboard_in_chromium_lists_restarts_and_refuses_a_foreign_page(
        browser: Browser, env: dict[str, str], tmp_path: Any) -> None:
    proj = write_project(str(tmp_path / "demo"), """
        name = "chromedemo"
        [tasks.web]
        command = "sleep 600"
        [tasks.worker]
        command = "sleep 600"
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    sock = os.path.join(env["TASKMUX_HOME"], "ctl.sock")
    link = call(sock, "dashboard.session")["url"]
    origin = link.split("/session", 1)[0]
    started = time.monotonic()
    browser.goto(link)
    listed = wait_until(lambda: browser.eval(
        "[...document.querySelectorAll('tr.task')].map(r => r.dataset.task)"),
        timeout=30, what="the page to list the tasks")
    first_load = time.monotonic() - started
    assert {"chromedemo/web", "chromedemo/worker"} <= set(listed), listed
    assert browser.eval("document.getElementById('mode').textContent") == "session"
    wait_until(lambda: browser.eval("document.getElementById('live').textContent") == "live",
               timeout=30, what="the live stream")
    # a page on another origin posts with the browser's cookies: refused, nothing restarts
    before = task(env, proj, "web")["pid"]
    page = (EVIL % origin).encode()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        refused_before = call(sock, "daemon.status")["dashboard"]["refused"]
        browser.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        wait_until(lambda: browser.eval("document.title") in ("sent", "blocked"), timeout=30,
                   what="the foreign page's request")
        wait_until(lambda: call(sock, "daemon.status")["dashboard"]["refused"]
                   > refused_before, timeout=10, what="the dashboard refusing it")
    finally:
        server.shutdown()
        server.server_close()
    assert task(env, proj, "web")["pid"] == before
    # back on the dashboard, a click on restart restarts
    browser.goto(origin + "/")
    wait_until(lambda: browser.eval(
        "document.querySelector('button[data-action=restart][data-task=\"chromedemo/web\"]')"
        " !== null && !document.querySelector('button[data-action=restart]').disabled"),
        timeout=30, what="the restart button")
    browser.eval("document.querySelector('button[data-action=restart]"
                 "[data-task=\"chromedemo/web\"]').click(); true")
    after = wait_until(lambda: (t := task(env, proj, "web"))["state"] == "running"
                       and t["pid"] != before and t["pid"], timeout=30, what="web restarted")
    assert after != before
    print(f"dashboard first load (link to tasks listed): {first_load * 1000:.0f} ms")
