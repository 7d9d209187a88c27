"""Hooks run in order and a failing before_* aborts; the event log under pressure;
task names complete in the shell."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess

import pytest

from taskmuxctl.core import eventlog as events_mod
from taskmuxctl.core.eventlog import EventLog
from taskmuxctl.core.protocol import Code
from tests.helpers import BIN, read, run_json
from tests.projects import task, write_project


def test_hooks_run_in_order(env: dict[str, str], tmp_path: str) -> None:
    trail = os.path.join(str(tmp_path), "trail")
    # after_start runs once the task is launched, not once its shell has written: it awaits
    # the task's line (up to 60 s) rather than guessing how long that takes.
    action = (f"i=0; until grep -qx action {trail} || [ $i -ge 1200 ]; "
              "do sleep 0.05; i=$((i+1)); done")
    proj = write_project(str(tmp_path / "p"), f"""
        name = "hooked"
        [hooks]
        before_start = "echo global-before-start >> {trail}"
        after_start = "echo global-after-start >> {trail}"
        before_stop = "echo global-before-stop >> {trail}"
        after_stop = "echo global-after-stop >> {trail}"
        [tasks.app]
        command = "echo action >> {trail}; sleep 600"
        [tasks.app.hooks]
        before_start = "echo task-before-start >> {trail}"
        after_start = "{action}; echo task-after-start >> {trail}"
        before_stop = "echo task-before-stop >> {trail}"
        after_stop = "echo task-after-stop $TASKMUX_TASK >> {trail}"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    assert run_json(["stop"], env, cwd=proj)[0] == 0
    assert read(trail).split("\n") == [
        "global-before-start", "task-before-start", "action", "task-after-start",
        "global-after-start", "global-before-stop", "task-before-stop",
        "task-after-stop app", "global-after-stop", ""]


def test_a_failing_before_start_aborts_with_its_output(env: dict[str, str],
                                                       tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "vetoed"
        [tasks.app]
        command = "sleep 600"
        [tasks.app.hooks]
        before_start = "echo migrations are pending >&2; exit 4"
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 1 and out["code"] == Code.HOOK_FAILED
    assert "migrations are pending" in out["error"] and "exit 4" in out["error"]
    t = task(env, proj, "app")
    assert t["state"] == "exited" and t["restarts"] == 0 and t["pid"] is None


def test_a_failing_global_hook_aborts_everything(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "vetoed2"
        [hooks]
        before_start = "echo no database; false"
        [tasks.app]
        command = "sleep 600"
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 1 and out["code"] == Code.HOOK_FAILED and "no database" in out["error"]
    assert task(env, proj, "app")["state"] == "stopped"


def _writer(path: str, n: int, tag: str) -> None:
    log = EventLog(path)
    for i in range(n):
        log.emit("task_started", tag, f"t{i}", filler="x" * 200)


def test_several_writers_never_tear_lines(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "events.jsonl")
    procs = [multiprocessing.Process(target=_writer, args=(path, 400, f"p{i}"))
             for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = read(path).splitlines()
    assert len(lines) == 1600
    assert all(json.loads(line)["event"] == "task_started" for line in lines)


def test_the_log_is_trimmed_to_the_newest(tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(events_mod, "TRIM_AT", 150)
    monkeypatch.setattr(events_mod, "KEEP", 100)
    path = os.path.join(str(tmp_path), "events.jsonl")
    log = EventLog(path)
    for i in range(151):
        log.emit("task_started", "p", f"t{i}")
    kept = [json.loads(line)["task"] for line in read(path).splitlines()]
    assert kept == [f"t{i}" for i in range(51, 151)]
    log.emit("task_started", "p", "after")
    assert read(path).splitlines()[-1].find('"after"') > 0


def test_task_and_project_names_complete(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "complete"
        [tasks.api]
        command = "sleep 600"
        [tasks.app]
        command = "sleep 600"
        [tasks.web]
        command = "sleep 600"
    """)
    assert run_json(["start", "web"], env, cwd=proj)[0] == 0

    def complete(line: str) -> list[str]:
        out_file = os.path.join(str(tmp_path), "out")
        full = {**env, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_SHELL": "bash", "COMP_LINE": line,
                "COMP_POINT": str(len(line)), "_ARGCOMPLETE_IFS": "\n",
                "_ARGCOMPLETE_STDOUT_FILENAME": out_file}
        subprocess.run([f"{BIN}/taskmux"], env=full, cwd=proj, check=True, timeout=30)
        return sorted(read(out_file).split())

    assert complete("taskmux restart a") == ["api", "app"]
    assert complete("taskmux logs w") == ["web"]
    assert complete("taskmux status -p comp") == ["complete"]


def test_an_event_line_reads_plainly() -> None:
    from taskmuxctl.core.eventread import format_event

    line = format_event({"time": "2026-11-21T15:01:06.694Z", "project": "demo", "task": None,
                         "event": "session_started",
                         "details": {"tasks": ["api", "web"], "reason": None, "exit": 3,
                                     "removed": []}})
    assert line.split() == ["2026-11-21T15:01:06.694Z", "demo", "session_started",
                            "tasks=api,web", "exit=3"]
    line = format_event({"time": "t", "project": "demo", "event": "config_invalid",
                         "details": {"error": "demo.toml has 1 problem:\n  tasks.x: bad\n"}})
    assert line == ("t  demo                     config_invalid         "
                    "error=demo.toml has 1 problem: | tasks.x: bad")
