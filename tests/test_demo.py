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
from tests.update_fixtures import PIP_ENV, Builds
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


@pytest.mark.slow(25)
@pytest.mark.timeout(600)  # a fresh venv and pip install: minutes on busy cores
def test_the_demo_command_runs_every_example_task(clone: str, env: dict[str, str],
                                                  home: str, tmp_path: str,
                                                  builds: Builds) -> None:
    user_home = str(tmp_path / "home")  # never the real ~/.local/bin
    bindir = os.path.join(user_home, ".local", "bin")
    # As on a user's machine, Python writes bytecode when it first imports a module; pip
    # does not byte-compile every file it installs (PIP_COMPILE=0 is pip's --no-compile),
    # which cost more CPU than the rest of the install (textual, rich and pygments). pip
    # takes the dependencies and the build backend from the run's wheelhouse (as the update
    # tests do) rather than resolving them against an index: that halved the install's CPU.
    demo_env = {k: v for k, v in env.items()
                if k not in ("VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE", *PIP_ENV)}
    demo_env.update(builds.pip_env())
    demo_env.update(HOME=user_home, PATH=f"{bindir}:{env['PATH']}")
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
    # `taskmux` is a command afterwards: linked into ~/.local/bin, which is on PATH.
    assert os.readlink(os.path.join(bindir, "taskmux")) == taskmux
    assert f"taskmux is on your PATH: {bindir}/taskmux -> {taskmux}" in out
    if os.geteuid() == 0:  # the demo started the daemon as root: said once, on the terminal
        assert proc.stderr.count("running as root") == 1, proc.stderr

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
    # The api is a task of its own: running is not yet listening (a 502 until it is).
    status, resp, api = wait_until(lambda: (r := get("api.demo.localhost", proxy_port, tls,
                                                     "/hello"))[0] == 200 and r, 30,
                                   "the api through the proxy")
    assert status == 200 and b"hello from the taskmux demo API" in api
    assert resp.getheader("Access-Control-Allow-Origin") == "*"
    log = os.path.join(home, "projects", "demo", "logs", "worker.log")
    wait_until(lambda: "finished job" in read(log), 20, "the worker to work")
    subprocess.run([taskmux, "stop"], cwd=os.path.join(clone, "examples", "demo"),
                   env=demo_env, capture_output=True, timeout=120)


def put_on_path(tmp_path: str, path_has_bindir: bool) -> tuple[str, str, dict[str, str]]:
    home = os.path.join(tmp_path, "home")
    bindir = os.path.join(home, ".local", "bin")
    target = os.path.join(tmp_path, "clone", ".venv", "bin", "taskmux")
    os.makedirs(os.path.dirname(target))
    with open(target, "w") as fh:
        fh.write("#!/bin/sh\n")
    os.chmod(target, 0o755)
    path = f"{bindir}:/usr/bin:/bin" if path_has_bindir else "/usr/bin:/bin"
    return bindir, target, {"HOME": home, "PATH": path}


def run_put_on_path(target: str, env: dict[str, str]) -> str:
    proc = subprocess.run(["sh", os.path.join(REPO, "examples", "put-on-path.sh"), target],
                          env=env, text=True, capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_demo_links_taskmux_when_local_bin_is_on_path(tmp_path: str) -> None:
    bindir, target, env = put_on_path(str(tmp_path), True)
    out = run_put_on_path(target, env)
    link = os.path.join(bindir, "taskmux")
    assert os.readlink(link) == target
    assert out == f"taskmux is on your PATH: {link} -> {target}\n"
    assert run_put_on_path(target, env) == out  # re-running changes nothing
    # A link an earlier clone's demo made is ours to move.
    os.unlink(link)
    os.symlink("/elsewhere/.venv/bin/taskmux", link)
    run_put_on_path(target, env)
    assert os.readlink(link) == target


@pytest.mark.parametrize("kind", ["file", "foreign link"])
def test_the_demo_never_replaces_what_is_not_its_link(tmp_path: str, kind: str) -> None:
    bindir, target, env = put_on_path(str(tmp_path), True)
    os.makedirs(bindir)
    link = os.path.join(bindir, "taskmux")
    if kind == "file":
        with open(link, "w") as fh:
            fh.write("mine\n")
    else:
        os.symlink("/opt/other/taskmux", link)
    out = run_put_on_path(target, env)
    assert "left alone" in out
    assert out.splitlines()[-1] == (f"To type taskmux by name in this shell: export "
                                    f"PATH=\"{os.path.dirname(target)}:$PATH\"")
    if kind == "file":
        assert read(link) == "mine\n"
    else:
        assert os.readlink(link) == "/opt/other/taskmux"


def test_without_local_bin_on_path_the_demo_prints_one_line(tmp_path: str) -> None:
    bindir, target, env = put_on_path(str(tmp_path), False)
    out = run_put_on_path(target, env)
    assert out == (f"To type taskmux by name in this shell: export "
                   f"PATH=\"{os.path.dirname(target)}:$PATH\"\n")
    assert not os.path.exists(bindir)
