"""The look for a stopped run's strangers, done once per stop by the daemon
(``projects.strangers``): a process outside the task's tree that carries its run's marker is
ended before the stop answers, and every tree of a stop of many tasks is gone by then. Real
tmux, real daemon."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from taskmuxd import proctree
from tests.helpers import read, run_json, wait_until
from tests.projects import status, task, write_project

pytestmark = pytest.mark.skipif(not proctree.AVAILABLE, reason="needs /proc")


def _record(home: str, project: str, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(read(os.path.join(home, "projects", project, "run",
                                                        f"{name}.json")))
    return data


def test_a_stop_ends_a_stranger_of_the_run_before_it_answers(
        env: dict[str, str], tmp_path: str, home: str,
        spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    proj = write_project(os.path.join(str(tmp_path), "p"), """
        name = "strange"
        [tasks.app]
        command = "sleep 600"
        stop_grace_period = 1
    """)
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: task(env, proj, "app")["state"] == "running", 20, "the start")
    marker = _record(home, "strange", "app")["marker"]
    # Started outside the task's tree on its behalf: only its marker says whose it is.
    stranger = spawn(["sleep", "300"], env={**os.environ, proctree.MARKER_VAR: marker})
    wait_until(lambda: stranger.pid in {p.pid for p in proctree.find_marked(marker,
                                                                           exact=True)})
    ident = proctree.procid(stranger.pid)
    assert ident is not None
    code, out = run_json(["stop"], env, cwd=proj)
    assert code == 0, out
    assert not proctree.is_alive(ident), "the stop answered while the run's stranger ran"
    rec = _record(home, "strange", "app")
    assert rec["unscanned"] is True and rec["tree_clean"] is True
    with open(os.path.join(home, "events.jsonl")) as fh:
        kinds = [json.loads(line)["event"] for line in fh]
    assert "leftovers_stopped" in kinds


def test_a_stop_of_many_tasks_ends_every_tree(env: dict[str, str], tmp_path: str,
                                              home: str) -> None:
    count = 12
    body = "".join(f'[tasks.t{i:02d}]\ncommand = "sleep 300 & sleep 300 & wait"\n'
                   for i in range(count))
    proj = write_project(os.path.join(str(tmp_path), "p"), f'name = "many"\n{body}')
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: all(t["state"] == "running" for t in status(env, proj)["tasks"]), 30,
               "every task running")
    prefix = _record(home, "many", "t00")["marker"].split(":", 1)[0] + ":many:"
    runners = {_record(home, "many", f"t{i:02d}")["runner_pid"] for i in range(count)}

    def task_processes() -> list[int]:
        return [p.pid for p in proctree.find_marked(prefix) if p.pid not in runners]

    # Running is reported once each shell is started, before it has forked its two sleeps.
    wait_until(lambda: len(task_processes()) == 3 * count, 30, "each shell and its two sleeps")
    code, out = run_json(["stop"], env, cwd=proj)
    assert code == 0, out
    assert task_processes() == [], "processes of stopped tasks remain after the stop"
    assert all(t["state"] == "stopped" for t in status(env, proj)["tasks"])
    assert all(_record(home, "many", f"t{i:02d}")["tree_clean"] for i in range(count))
    # The stop told every runner in one list, written before its signals: each left its
    # strangers to the daemon's one look (``unscanned``), and no file per task was made.
    records = [_record(home, "many", f"t{i:02d}") for i in range(count)]
    assert all(r["unscanned"] is True for r in records)
    run_dir = os.path.join(home, "projects", "many", "run")
    listed = read(os.path.join(run_dir, "ending.runs")).splitlines()
    assert sorted(listed) == sorted(f"{r['task']} {r['run_id']}" for r in records)
    assert not [n for n in os.listdir(run_dir) if n.endswith(".ending")]


def test_a_run_not_ended_by_the_daemon_looks_for_its_strangers_itself(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    """The list still names the run a stop ended; the next run of the task, ending by itself,
    is not in it: its runner looks for its strangers itself (``unscanned`` false)."""
    flag = os.path.join(str(tmp_path), "done")
    proj = write_project(os.path.join(str(tmp_path), "p"), f"""
        name = "self"
        [tasks.app]
        command = "while [ ! -e {flag} ]; do sleep 0.05; done"
        restart_policy = "no"
    """)
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: task(env, proj, "app")["state"] == "running", 20, "the start")
    first = _record(home, "self", "app")["run_id"]
    code, out = run_json(["stop"], env, cwd=proj)
    assert code == 0, out
    run_dir = os.path.join(home, "projects", "self", "run")
    assert read(os.path.join(run_dir, "ending.runs")) == f"app {first}\n"
    assert _record(home, "self", "app")["unscanned"] is True
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: task(env, proj, "app")["state"] == "running", 20, "the second start")
    second = _record(home, "self", "app")["run_id"]
    assert second > first
    with open(flag, "w"):
        pass
    wait_until(lambda: _record(home, "self", "app").get("status") == "exited"
               and _record(home, "self", "app")["run_id"] == second, 20, "the task's own exit")
    rec = _record(home, "self", "app")
    assert rec["unscanned"] is False and rec["ended_by"] == "exit"
