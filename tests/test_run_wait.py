"""``start --wait`` and ``taskmux run``, end to end: exit codes (success, a task's own code
passed on, failure, timeout, Ctrl-C) and that `run` stops only what it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from tests.helpers import BIN, run_cli, run_json, wait_until
from tests.projects import task, write_project
from tests.test_task_readiness import events


def test_start_wait_blocks_until_ready_and_a_migration_gates_the_api(
        env: dict[str, str], home: str, tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "startwait"
        [tasks.migrate]
        command = "sleep 0.5; echo migrated"
        type = "oneshot"
        [tasks.api]
        command = "echo booting; sleep 0.5; echo 'api ready'; exec sleep 600"
        ready_log_line = "api ready"
        depends_on = ["migrate"]
        [tasks.broken]
        command = "sleep 0.2; exit 3"
        type = "oneshot"
        auto_start = false
        max_restarts = 0
        retry_after = 0
        [tasks.slow]
        command = "exec sleep 600"
        ready_log_line = "never printed"
        auto_start = false
    """)
    code, out = run_json(["start", "--wait", "--timeout", "30"], env, cwd=proj)
    assert code == 0, out
    assert sorted(out["ready"]) == ["api", "migrate"], out
    api = task(env, proj, "api")
    assert api["healthy"] is True and task(env, proj, "migrate")["completed"] is True
    # The one-shot completed before the api was started (no `sleep infinity` needed).
    assert events(home, "task_completed", "migrate")[0]["seq"] < \
        events(home, "task_started", "api")[0]["seq"]
    code, out = run_json(["start", "broken", "--wait", "--timeout", "30"], env, cwd=proj)
    assert code == 1 and "broken" in out["error"], out
    code, out = run_json(["start", "slow", "--wait", "--timeout", "0.5"], env, cwd=proj)
    assert code == 124 and out["kind"] == "wait_timeout" and "slow" in out["error"], out


RUN_PROJECT = """
    name = "runs"
    [tasks.db]
    command = "echo db up; exec sleep 600"
    ready_log_line = "db up"
    [tasks.suite]
    command = "echo testing against the db; exit 7"
    type = "oneshot"
    depends_on = ["db"]
    auto_start = false
    [tasks.ok]
    command = "sleep 0.3; echo all passed"
    type = "oneshot"
    depends_on = ["db"]
    auto_start = false
    [tasks.hang]
    command = "echo hanging; exec sleep 600"
    type = "oneshot"
    depends_on = ["db"]
    auto_start = false
    [tasks.other]
    command = "exec sleep 600"
    auto_start = false
"""


def test_run_exits_with_the_tasks_code_prints_its_log_and_stops_only_what_it_started(
        env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), RUN_PROJECT)
    assert run_json(["start", "other"], env, cwd=proj)[0] == 0
    other_pid = task(env, proj, "other")["pid"]
    proc = run_cli(["run", "suite"], env, cwd=proj)
    assert proc.returncode == 7, (proc.stdout, proc.stderr)
    assert "testing against the db" in proc.stdout and "exited with code 7" in proc.stdout
    assert task(env, proj, "db")["state"] == "stopped"
    assert task(env, proj, "other")["pid"] == other_pid  # not its to stop
    code, out = run_json(["run", "ok"], env, cwd=proj)
    assert code == 0 and out["exit_code"] == 0 and out["stopped"] == ["db"], out
    assert any("all passed" in line for line in out["lines"]), out
    # What was running before stays running.
    assert run_json(["start", "db"], env, cwd=proj)[0] == 0
    db_pid = task(env, proj, "db")["pid"]
    code, out = run_json(["run", "ok"], env, cwd=proj)
    assert code == 0 and out["stopped"] == [], out
    assert task(env, proj, "db")["pid"] == db_pid
    code, out = run_json(["run", "db"], env, cwd=proj)
    assert code == 1 and "already running" in out["error"], out


def test_run_timeout_and_ctrl_c_stop_what_it_started(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), RUN_PROJECT)
    code, out = run_json(["run", "hang", "--timeout", "1"], env, cwd=proj)
    assert code == 124 and out["stopped"] == ["db", "hang"], out
    assert task(env, proj, "hang")["state"] == "stopped"
    child = subprocess.Popen([os.path.join(BIN, "taskmuxctl"), "--json", "run", "hang"],
                             env=env, cwd=proj, stdout=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: task(env, proj, "hang")["state"] == "running", 20, "hang to run")
        child.send_signal(signal.SIGINT)
        stdout, _ = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, stdout
    out = json.loads(stdout)
    assert out["interrupted"] is True and out["stopped"] == ["db", "hang"], out
    assert task(env, proj, "hang")["state"] == "stopped"
    assert task(env, proj, "db")["state"] == "stopped"


def test_run_judges_the_end_of_a_run_and_its_exit_code() -> None:
    from taskmuxctl.commands.run import closure, exit_code_of, finished

    tasks = {"suite": {"depends_on": ["api"]}, "api": {"depends_on": ["db", "migrate"]},
             "db": {}, "migrate": {"depends_on": ["db"]}, "web": {"depends_on": ["api"]}}
    assert closure(tasks, "suite") == {"suite", "api", "db", "migrate"}
    assert closure(tasks, "db") == {"db"}
    old = {"state": "exited", "last_exit": {"code": 0, "signal": None, "at": 99.0}}
    assert not finished(old, 100.0)  # an exit from before this command began
    assert not finished({"state": "running", "last_exit": None}, 100.0)
    restarted = {"state": "running", "last_exit": {"code": 3, "signal": None, "at": 101.0}}
    assert finished(restarted, 100.0) and exit_code_of(restarted) == 3
    assert exit_code_of({"last_exit": {"code": None, "signal": 9}}) == 137
    assert exit_code_of({"last_exit": None}) == 1
