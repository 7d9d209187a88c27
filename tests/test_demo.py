"""The README's first command, end to end: on a copy of the repository, `sh examples/demo.sh`
installs taskmux into a new virtual environment, starts the daemon and the example project,
and every example task runs, with the web page answering through the proxy."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from tests.helpers import REPO, call, read, wait_until
from tests.web import ca_context, get

SKIP = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.pyc", ".mypy_cache",
                              ".ruff_cache", ".pytest_cache", "*.egg-info", "dist", "build")


@pytest.fixture
def clone() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="tmxdemo-")
    dest = os.path.join(folder, "taskmux")
    shutil.copytree(REPO, dest, ignore=SKIP)
    try:
        yield dest
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_demo_command_runs_every_example_task(clone: str, env: dict[str, str],
                                                  home: str) -> None:
    demo_env = {k: v for k, v in env.items() if k != "VIRTUAL_ENV"}
    proc = subprocess.run(["sh", "examples/demo.sh"], cwd=clone, env=demo_env, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for word in ("api", "web", "worker", "flaky", "taskmux logs -f", "taskmux attach"):
        assert word in out, out
    sock = os.path.join(home, "ctl.sock")
    proxy_port = call(sock, "daemon.status")["proxy"]["https_port"]
    taskmux = os.path.join(clone, ".venv", "bin", "taskmux")
    assert f"https://web.demo.localhost:{proxy_port}/" in out

    def states() -> dict[str, str]:
        res = subprocess.run([taskmux, "--json", "status"], cwd=os.path.join(clone, "examples",
                             "demo"), env=demo_env, text=True, capture_output=True, timeout=60)
        import json

        return {t["name"]: t["state"] for t in json.loads(res.stdout)["tasks"]}

    wait_until(lambda: states() == {"api": "running", "web": "running", "worker": "running",
                                    "flaky": "running"}, 30, "every example task to run")
    tls = ca_context(call(sock, "ca.info")["cert"])

    def page() -> bytes:
        status, _resp, body = get("web.demo.localhost", proxy_port, tls)
        return body if status == 200 else b""

    body = wait_until(page, 30, "the web page through the proxy")
    assert b"taskmux demo" in body and b"api.demo.localhost" in body
    status, resp, api = get("api.demo.localhost", proxy_port, tls, "/hello")
    assert status == 200 and b"hello from the taskmux demo API" in api
    assert resp.getheader("Access-Control-Allow-Origin") == "*"
    log = os.path.join(home, "projects", "demo", "logs", "worker.log")
    wait_until(lambda: "finished job" in read(log), 20, "the worker to work")
    subprocess.run([taskmux, "stop"], cwd=os.path.join(clone, "examples", "demo"),
                   env=demo_env, capture_output=True, timeout=120)
