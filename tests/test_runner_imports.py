"""The runner's start-up stays light: one runs per task, so whatever it imports before its
task starts is paid by every task of a cold start (a hundred tasks, a hundred interpreters).
What it imports is a fixed list here: growing it is a decision made in this file. It loads
its modules from cached bytecode (``-I`` ignores PYTHONDONTWRITEBYTECODE, so the first run
writes it), and ``runpath`` stands in for ``os.path`` exactly where the runner uses it."""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from taskmuxd import runpath
from tests.helpers import PYTHON, REPO, wait_until

# What ``import taskmuxd.runner`` adds to a bare ``python -I -S`` (which has loaded ``time``,
# ``_signal``, ``codecs`` and the ``encodings`` it needs already).
RUNNER_IMPORTS = {
    "__future__", "_json", "_socket", "errno", "select", "termios",
    "taskmuxctl", "taskmuxctl.core", "taskmuxctl.core.jsonio",
    "taskmuxd", "taskmuxd.notifyproto", "taskmuxd.notifysocket", "taskmuxd.pidwindow",
    "taskmuxd.proctree", "taskmuxd.reportwire", "taskmuxd.runending", "taskmuxd.runner",
    "taskmuxd.runpath", "taskmuxd.runready", "taskmuxd.runrecord", "taskmuxd.runrelaunch",
}
# Loaded by the runner's start itself (not its imports): prctl for the child subreaper.
START_CALLS = {"_ctypes"}
# Never before the task starts: each costs every runner CPU (``os`` about 1 ms; ``json``,
# ``re``, ``enum``, ``typing``, ``dataclasses`` more), or is loaded only once a run ends.
NEVER_AT_START = {"os", "posixpath", "_collections_abc", "json", "re", "enum", "typing",
                  "dataclasses", "ctypes", "fcntl", "pty", "signal", "socket", "selectors",
                  "subprocess", "threading", "logging", "asyncio", "inspect", "functools",
                  "taskmuxd.rungrant", "taskmuxd.runwarm", "taskmuxd.readyline"}


def added_by_import(root: str) -> set[str]:
    code = ("import sys; before = set(sys.modules); sys.path.insert(0, sys.argv[1]); "
            "import taskmuxd.runner; print(' '.join(sorted(set(sys.modules) - before)))")
    out = subprocess.run([PYTHON, "-I", "-S", "-c", code, root], capture_output=True,
                         text=True, check=True, timeout=30)
    return set(out.stdout.split())


def test_importing_the_runner_loads_exactly_its_list() -> None:
    got = added_by_import(REPO)
    assert not got & NEVER_AT_START, sorted(got & NEVER_AT_START)
    assert got == RUNNER_IMPORTS, (f"new: {sorted(got - RUNNER_IMPORTS)}, "
                                   f"gone: {sorted(RUNNER_IMPORTS - got)}")


def test_a_runner_starts_its_task_with_only_its_list(tmp_path: Path) -> None:
    """A real runner (through runner_main.py, as its pane runs it) up to its task running:
    what it imported until then, from ``-X importtime`` on its standard error."""
    run = tmp_path / "run"
    run.mkdir()
    record = run / "t.json"
    spec = {"project": "imp", "task": "t", "run_id": 1, "command": "sleep 60",
            "shell": "/bin/sh", "cwd": str(tmp_path),
            "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            "log": str(tmp_path / "logs" / "t.log"), "log_max_size": 100_000,
            "log_max_files": 2, "record": str(record), "socket": str(tmp_path / "ctl.sock"),
            "marker": "?imp:imp:t:1", "stop_grace_period": 2.0,
            "relaunch_socket": str(run / "t.relaunch"),
            "notify_socket": str(run / "t.notify")}
    (run / "t.spec.json").write_text(json.dumps(spec))
    err = tmp_path / "stderr"
    with open(err, "wb") as errfh:
        proc = subprocess.Popen(
            [PYTHON, "-I", "-S", "-X", "importtime",
             os.path.join(REPO, "taskmuxd", "runner_main.py"), str(run / "t.spec.json")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errfh,
            start_new_session=True)
    try:
        def running() -> bool:
            try:
                return json.loads(record.read_text()).get("status") == "running"
            except (OSError, ValueError):
                return False

        wait_until(running, 20, "the runner's record to say its task runs")
        # Every import the runner made before it wrote that record is on stderr already
        # (the import timer writes each line as the import ends, unbuffered).
        lines = err.read_text().splitlines()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    mods = {line.rsplit("|", 1)[1].strip() for line in lines
            if line.startswith("import time:") and "|" in line}
    bare = subprocess.run([PYTHON, "-I", "-S", "-X", "importtime", "-c", "pass"],
                          capture_output=True, text=True, check=True).stderr
    mods -= {line.rsplit("|", 1)[1].strip() for line in bare.splitlines() if "|" in line}
    assert "taskmuxd.runner" in mods, lines
    assert not mods & NEVER_AT_START, sorted(mods & NEVER_AT_START)
    assert mods <= RUNNER_IMPORTS | START_CALLS, sorted(mods - RUNNER_IMPORTS - START_CALLS)


def test_the_runner_loads_its_modules_from_cached_bytecode(tmp_path: Path) -> None:
    """A fresh copy (no __pycache__): the first runner writes the bytecode even with
    PYTHONDONTWRITEBYTECODE set (``-I`` ignores it), and the next loads every module from it.
    """
    for package in ("taskmuxd", "taskmuxctl"):
        shutil.copytree(os.path.join(REPO, package), tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    argv = [PYTHON, "-I", "-S", "-v", "-c",
            "import sys; sys.path.insert(0, sys.argv[1]); import taskmuxd.runner",
            str(tmp_path)]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    first = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    assert f"# created '{tmp_path}/taskmuxd/__pycache__/runner." in first.stderr
    second = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    loaded = [line for line in second.stderr.splitlines()
              if line.startswith("# code object from") and str(tmp_path) in line]
    ours = {f"{package}.{name}" for package, name in
            (m.split(".", 1) for m in RUNNER_IMPORTS if m.startswith("taskmux") and "." in m)}
    assert len(loaded) >= len(ours), second.stderr
    from_source = [line for line in loaded if not line.rstrip("'").endswith(".pyc")]
    assert not from_source, from_source
    assert "# created" not in second.stderr


@pytest.mark.parametrize("parts", [
    ("a",), ("a", "b"), ("/a", "b"), ("a/", "b"), ("a", "/b"), ("", "b"), ("a", ""),
    ("/", "x", "y/", "z"), ("a//", "b"),
])
def test_join_is_os_path_join(parts: tuple[str, ...]) -> None:
    assert runpath.join(*parts) == posixpath.join(*parts)


@pytest.mark.parametrize("path", ["", "a", "/", "/a", "/a/", "a/b", "/a/b/c", "//a", "a//b",
                                  "/a/b//", "///", "a/"])
def test_dirname_is_os_path_dirname(path: str) -> None:
    assert runpath.dirname(path) == posixpath.dirname(path)


def test_exists_and_makedirs(tmp_path: Path) -> None:
    deep = str(tmp_path / "x" / "y" / "z")
    assert not runpath.exists(deep)
    runpath.makedirs(deep, 0o700)
    assert os.path.isdir(deep) and runpath.exists(deep)
    runpath.makedirs(deep)  # there already: nothing to do
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError):  # a file in the way
        runpath.makedirs(str(tmp_path / "f" / "g"))
    with pytest.raises(FileExistsError):
        runpath.makedirs(str(tmp_path / "f"))
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    assert not runpath.exists(str(tmp_path / "dangling"))
