"""Readiness: how soon a task is judged, end to end with a real daemon, and the pure parts."""

from __future__ import annotations

import os
import sys
import time

from taskmuxctl.commands.wait import judge
from taskmuxd.projects.probeactions import FAST_PROBE, next_probe_in
from taskmuxd.supervisor.verdict import FIRST_PROBE
from tests.helpers import run_json, wait_until
from tests.projects import task, write_project


def test_probes_are_fast_until_the_first_verdict_then_at_the_interval() -> None:
    assert next_probe_in(None, 60.0) == FAST_PROBE  # age unknown: as if old
    assert next_probe_in(None, 60.0, 0.0) == FIRST_PROBE  # right after the start: soon
    assert next_probe_in(None, 60.0, 1.0) == 0.25  # a quarter of the run's age
    assert next_probe_in(None, 60.0, 30.0) == FAST_PROBE  # never slower than that
    assert next_probe_in(None, 0.2) == 0.2  # nor slower than asked
    assert next_probe_in(None, 0.02, 0.0) == 0.02
    assert next_probe_in(True, 60.0) == 60.0
    assert next_probe_in(False, 60.0) == 60.0


def test_a_task_probed_only_through_its_port_is_healthy_soon(env: dict[str, str],
                                                             tmp_path: str) -> None:
    # health_interval is a minute: a verdict within seconds proves the fast first probes.
    proj = write_project(str(tmp_path / "p"), f"""
        name = "porty"
        [tasks.web]
        command = "sleep 0.3; exec {sys.executable} -m http.server $PORT --bind 127.0.0.1"
        port = "auto"
        health_interval = 60
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    t = wait_until(lambda: (t := task(env, proj, "web"))["healthy"] is not None and t, 10,
                   "a first verdict")
    assert t["healthy"] is True and t["health_method"] == "tcp"


def test_wait_exit_codes(env: dict[str, str], tmp_path: str) -> None:
    folder = str(tmp_path / "p")
    flag = os.path.join(folder, "up")
    proj = write_project(folder, f"""
        name = "waiter"
        [tasks.db]
        command = "sleep 1; touch {flag}; exec sleep 600"
        health_check = "test -f {flag}"
        health_interval = 60
        [tasks.migrate]
        command = "sleep 0.5"
        type = "oneshot"
        [tasks.broken]
        command = "exit 3"
        auto_start = false
        max_restarts = 0
        retry_after = 0
        [tasks.slow]
        command = "exec sleep 600"
        health_check = "false"
        health_grace = 600
        auto_start = false
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    began = time.monotonic()
    code, out = run_json(["wait", "--timeout", "20"], env, cwd=proj)
    assert code == 0, out
    assert out["tasks"] == ["db", "migrate"] and os.path.exists(flag)
    # Well under health_interval: the fast first probes judged db (a busy machine's margin).
    assert time.monotonic() - began < 30
    code, out = run_json(["wait", "migrate", "--for", "completed"], env, cwd=proj)
    assert code == 0, out
    # A task that cannot get there: non-zero at once, with the reason.
    run_json(["start", "broken"], env, cwd=proj)
    code, out = run_json(["wait", "broken", "--timeout", "20"], env, cwd=proj)
    assert code == 1 and out["kind"] == "task_failed" and "fatal" in out["error"], out
    # One that is not there yet when the time is up.
    run_json(["start", "slow"], env, cwd=proj)
    code, out = run_json(["wait", "slow", "--timeout", "0.5"], env, cwd=proj)
    assert code == 124 and out["kind"] == "wait_timeout" and "slow" in out["error"], out
    code, out = run_json(["wait", "slow", "--for", "running", "--timeout", "5"], env, cwd=proj)
    assert code == 0, out
    code, out = run_json(["wait", "nosuch"], env, cwd=proj)
    assert code == 1 and out["kind"] == "task_not_found"


def test_wait_judges_each_state() -> None:
    up = {"name": "a", "state": "running", "healthy": True}
    assert judge(up, "healthy")[0] is True and judge(up, "completed")[0] is None
    assert judge({**up, "healthy": None}, "healthy")[0] is None
    assert judge({**up, "healthy": None}, "running")[0] is True
    done = {"name": "m", "state": "exited", "completed": True, "last_exit": {"code": 0}}
    assert judge(done, "healthy")[0] is True and judge(done, "completed")[0] is True
    failed = {"name": "m", "state": "exited", "completed": False,
              "last_exit": {"code": 2, "signal": None}}
    assert judge(failed, "completed") == (
        False, "exited (exit 2) and its restart_policy does not restart it")
    assert judge({"name": "f", "state": "fatal"}, "running")[0] is False
    assert judge({"name": "s", "state": "stopped", "manually_stopped": True}, "running")[0] \
        is False
    assert judge({"name": "b", "state": "backoff", "waiting_for": ["db"]}, "healthy") == (
        None, "is backoff, waiting for db")
