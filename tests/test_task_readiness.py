"""Readiness from the task itself, end to end: ``ready_log_line`` and sd_notify (READY,
STATUS, WATCHDOG) through a real daemon, runner and tmux."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from tests.helpers import read, run_cli, run_json, wait_until
from tests.projects import task, write_project

NOTIFY_TASK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notify_task.py")


def events(home: str, kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The events of ``kind`` (for task ``name``) in the order written, each with its place
    in the whole log as ``seq``."""
    out = []
    with open(os.path.join(home, "events.jsonl"), encoding="utf-8") as fh:
        for seq, line in enumerate(fh):
            e = json.loads(line)
            if e.get("event") == kind and (name is None or e.get("task") == name):
                out.append({**e, "seq": seq})
    return out


def test_a_ready_log_line_gates_a_dependent_and_survives_a_daemon_restart(
        env: dict[str, str], home: str, tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "logready"
        [tasks.db]
        command = "echo booting; sleep 1; echo 'LOG:  database system is ready'; exec sleep 600"
        ready_log_line = "database system is (ready|up)"
        [tasks.api]
        command = "exec sleep 600"
        depends_on = ["db"]
    """)
    code, out = run_json(["check"], env, cwd=proj)
    assert out["ready"] == {"db": "a line of its output matching 'database system is "
                                  "(ready|up)'"}, out
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    db = task(env, proj, "db")
    assert db["healthy"] is True and db["health_method"] == "log", db
    assert db["ready_source"] == "log" and db["ready_by"] == "log"
    ready = events(home, "task_ready", "db")
    api_started = events(home, "task_started", "api")
    assert len(ready) == 1 and len(api_started) == 1
    assert ready[0]["seq"] < api_started[0]["seq"], (ready, api_started)
    assert "database system is ready" in ready[0]["details"]["detail"]
    # The daemon goes away and comes back: the runner kept the fact, no new line is needed.
    assert run_cli(["daemon", "stop"], env).returncode == 0
    t = wait_until(lambda: (t := task(env, proj, "db"))["healthy"] is True and t, 15,
                   "db healthy again after the daemon restart")
    assert t["pid"] == db["pid"] and t["health_method"] == "log"
    assert len(events(home, "task_ready", "db")) == 1  # announced once, not again on adoption


def test_an_sd_notify_task_says_ready_shows_its_status_and_a_starved_watchdog_restarts_it(
        env: dict[str, str], home: str, tmp_path: str) -> None:
    folder = str(tmp_path / "p")
    flag = os.path.join(folder, "starve")
    proj = write_project(folder, f"""
        name = "notifier"
        [tasks.svc]
        command = "exec {sys.executable} {NOTIFY_TASK} 0.5 {flag}"
        ready = "notify"
        watchdog_sec = 2
        [tasks.web]
        command = "exec sleep 600"
        depends_on = ["svc"]
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    svc = task(env, proj, "svc")
    assert svc["healthy"] is True and svc["health_method"] == "notify", svc
    assert svc["notify_status"] == "serving 3 clients" and svc["ready_by"] == "notify"
    assert events(home, "task_ready", "svc")[0]["seq"] < events(home, "task_started",
                                                                  "web")[0]["seq"]
    text = run_cli(["status"], env, cwd=proj).stdout
    assert "serving 3 clients" in text, text
    code, out = run_json(["inspect", "svc"], env, cwd=proj)
    assert code == 0 and out["task"]["notify_status"] == "serving 3 clients", out
    # Its pings keep it alive well past watchdog_sec (2 s: a ping every 0.5 s, so that a busy
    # machine's scheduling delays are no missed watchdog)...
    svc = wait_until(lambda: (t := task(env, proj, "svc"))["uptime"] >= 6 and t, 15,
                     "three watchdog periods")
    assert svc["restarts"] == 0 and svc["healthy"] is True, svc
    # ...and when they stop, the missed watchdog is a liveness failure: it is restarted.
    with open(flag, "w") as fh:
        fh.write(str(svc["main_pid"]))
    again = wait_until(lambda: (t := task(env, proj, "svc"))["restarts"] >= 1
                       and t["healthy"] is True and t, 20, "a restart after the missed ping")
    assert again["main_pid"] != svc["main_pid"]
    failed = events(home, "health_check_failed", "svc")
    assert failed and failed[0]["details"]["method"] == "watchdog", failed
    assert "watchdog_sec" in failed[0]["details"]["reason"]
    assert len(events(home, "task_ready", "svc")) == 2


def test_a_task_that_never_says_ready_fails_its_startup_timeout(
        env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "mute"
        [tasks.svc]
        command = "echo starting; exec sleep 600"
        ready_log_line = "^listening"
        startup_timeout = 1
        restart_policy = "no"
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    svc = wait_until(lambda: (t := task(env, proj, "svc"))["healthy"] is False and t, 15,
                     "the startup timeout")
    assert "startup_timeout" in svc["last_health_failure"], svc
    assert svc["health_method"] == "log" and svc["state"] == "running"
    code, out = run_json(["wait", "svc", "--timeout", "0.5"], env, cwd=proj)
    assert code == 124 and "not ready within startup_timeout" in out["error"], out


def test_the_notify_socket_hears_only_the_task(env: dict[str, str], home: str,
                                               tmp_path: str) -> None:
    """Datagrams from a process outside the task's tree, oversized or garbage ones change
    nothing; the log says they were refused."""
    proj = write_project(str(tmp_path / "p"), f"""
        name = "deaf"
        [tasks.svc]
        command = "exec {sys.executable} {NOTIFY_TASK} 600 /nonexistent"
        ready = "notify"
        startup_timeout = 0
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    path = os.path.join(home, "projects", "deaf", "run", "svc.notify")
    wait_until(lambda: os.path.exists(path), 10, "the notify socket")
    assert os.stat(path).st_mode & 0o777 == 0o600
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(b"READY=1\nSTATUS=forged", path)  # this test is no process of the task
        s.sendto(b"READY=1\nSTATUS=" + b"x" * 5000, path)
        s.sendto(b"\xff\x00\x01", path)
    log = os.path.join(home, "projects", "deaf", "logs", "svc.log")
    text = wait_until(lambda: "NOTIFY_SOCKET: refused" in (t := read(log)) and t, 10,
                      "the refusal note")
    assert "not one of the task's processes" in text or "over 4096 bytes" in text, text
    # The task's own STATUS (reported a moment later, after the forged datagrams were read)
    # stands, and nothing made it ready.
    svc = wait_until(lambda: (t := task(env, proj, "svc"))["notify_status"] and t, 10,
                     "the task's own status")
    assert svc["notify_status"] == "starting", svc
    assert svc["healthy"] is None and svc["ready_by"] is None and svc["state"] == "running"
