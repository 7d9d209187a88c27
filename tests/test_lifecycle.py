"""Running a project's tasks in a real tmux server under a real daemon."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess

from tests.helpers import call, read, run_cli, run_json, wait_until, write_config
from tests.projects import pid_alive, status, task, tmux, windows, write_project


def test_dependency_order_with_gating(env: dict[str, str], tmp_path: str) -> None:
    marker = os.path.join(str(tmp_path), "db.ready")
    # db is made ready only once its own runner and solo's have recorded their starts (a
    # fixed sleep could end first on a busy machine); were solo held back for the chain, it
    # would never be, and the check on solo's start below fails after 30 s. (The last 0.05 s:
    # a file's mtime is read from a clock that may lag a tick behind time.time().)
    run = os.path.join(env["TASKMUX_HOME"], "projects", "gated", "run")
    gate = (f"i=0; until [ $(grep -ls '\"status\":\"running\"' {run}/solo.json "
            f"{run}/db.json | wc -l) -eq 2 ] || [ $i -ge 600 ]; "
            "do sleep 0.05; i=$((i+1)); done; sleep 0.05")
    proj = write_project(str(tmp_path / "p"), f"""
        name = "gated"
        [tasks.db]
        command = '''{gate}; touch {marker}; sleep 600'''
        health_check = "test -f {marker}"
        health_interval = 0.2
        [tasks.api]
        command = "sleep 600"
        depends_on = ["db"]
        [tasks.web]
        command = "sleep 600"
        depends_on = ["api"]
        [tasks.solo]
        command = "sleep 600"
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    assert {r["task"]: r["action"] for r in out["results"]} == {
        "db": "started", "api": "started", "web": "started", "solo": "started"}
    home = env["TASKMUX_HOME"]

    def started(name: str) -> float:
        with open(os.path.join(home, "projects", "gated", "run", f"{name}.json")) as fh:
            return float(json.load(fh)["started_at"])

    ready_at = os.stat(marker).st_mtime
    assert started("db") < ready_at <= started("api") <= started("web")
    # The independent task did not wait for the chain.
    assert started("solo") < ready_at


def test_dependency_that_never_gets_healthy_fails_clearly(env: dict[str, str],
                                                          tmp_path: str, home: str) -> None:
    # The deadline's arithmetic is the machine's (tests/test_supervisor_machine.py, fake clock).
    write_config(home, "dependency_timeout = 0.5\n")
    proj = write_project(str(tmp_path / "p"), """
        name = "never"
        [tasks.db]
        command = "sleep 600"
        health_check = "false"
        health_interval = 0.2
        health_grace = 0
        restart_policy = "no"
        [tasks.api]
        command = "sleep 600"
        depends_on = ["db"]
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 1
    assert out["code"] == 202  # dependency_timeout
    assert "db" in out["error"] and "api" in out["error"]
    assert task(env, proj, "api")["state"] == "stopped"


def test_stop_escalates_to_sigkill(env: dict[str, str], tmp_path: str,
                                   tmux_socket: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "stubborn"
        [tasks.mule]
        command = "trap '' INT TERM; echo ignoring; while :; do sleep 0.05 || :; done"
        stop_grace_period = 0.3
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    pid = task(env, proj, "mule")["pid"]
    # Its trap is set once it has said so (a stop before that would end it by SIGINT).
    wait_until(lambda: "ignoring" in tmux(tmux_socket, "capture-pane", "-p", "-t",
                                          "=stubborn:mule"), what="the trap to be set")
    code, out = run_json(["stop", "mule"], env, cwd=proj)
    assert code == 0 and out["action"] == "stopped"
    t = task(env, proj, "mule")
    assert t["state"] == "stopped" and t["manually_stopped"] is True
    assert t["last_exit"]["signal"] == 9
    assert not pid_alive(pid)
    # The window stays, showing the last output.
    assert windows(tmux_socket, "stubborn") == ["mule"]
    assert "ignoring" in tmux(tmux_socket, "capture-pane", "-p", "-S", "-", "-t",
                              "=stubborn:mule")


def test_log_has_timestamped_plain_lines_and_rotates(env: dict[str, str], tmp_path: str,
                                                     home: str) -> None:
    proj = write_project(str(tmp_path / "p"), r"""
        name = "logs"
        [tasks.colours]
        command = '''i=0; while [ $i -lt 400 ]; do
          printf '\033[1;31mred\033[0m line %03d \033[4munder\033[0m\n' $i; i=$((i+1))
        done; sleep 600'''
        log_max_size = "4KB"
        log_max_files = 2
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    log = os.path.join(home, "projects", "logs", "logs", "colours.log")
    wait_until(lambda: "line 399" in read(log), what="the last line in the log")
    files = sorted(glob.glob(log + "*"))
    assert files == [log, log + ".1", log + ".2"], files  # rotated, two kept
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ")
    lines = [line for f in files for line in read(f).splitlines()]
    assert all(stamp.match(line) for line in lines)
    assert not any("\x1b" in line for line in lines)
    assert any(line.endswith("red line 399 under") for line in lines)
    assert all(os.path.getsize(f) <= 4096 for f in files)


def test_typed_input_reaches_the_command(env: dict[str, str], tmp_path: str,
                                         tmux_socket: str) -> None:
    out_file = os.path.join(str(tmp_path), "got.txt")
    proj = write_project(str(tmp_path / "p"), f"""
        name = "typing"
        [tasks.asker]
        command = "printf 'name? '; read line; echo \\"got:$line\\" > {out_file}; sleep 600"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    wait_until(lambda: "name?" in tmux(tmux_socket, "capture-pane", "-p", "-t", "=typing:asker"))
    tmux(tmux_socket, "send-keys", "-t", "=typing:asker", "hello world", "Enter")
    wait_until(lambda: os.path.exists(out_file) and read(out_file) == "got:hello world\n",
               what="the typed line")


def test_daemon_kill_9_then_readoption_keeps_pids(env: dict[str, str], tmp_path: str,
                                                  home: str, tmux_socket: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "adopt"
        [tasks.a]
        command = "sleep 600"
        [tasks.b]
        command = "sleep 600"
        [tasks.c]
        command = "sleep 600"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    before = {t["name"]: t["pid"] for t in status(env, proj)["tasks"]}
    daemon_pid = call(os.path.join(home, "ctl.sock"), "daemon.status")["pid"]
    os.kill(daemon_pid, 9)
    wait_until(lambda: not pid_alive(daemon_pid), what="the daemon to die")
    after = status(env, proj)  # starts a new daemon
    assert call(os.path.join(home, "ctl.sock"), "daemon.status")["pid"] != daemon_pid
    assert {t["name"]: t["pid"] for t in after["tasks"]} == before
    assert all(t["state"] == "running" and t["restarts"] == 0 for t in after["tasks"])
    assert sorted(windows(tmux_socket, "adopt")) == ["a", "b", "c"]
    # No duplicates: each task's process group still holds exactly one command.
    ps = subprocess.run(["ps", "-eo", "pgid=,args="], capture_output=True, text=True).stdout
    groups = [int(line.split(None, 1)[0]) for line in ps.splitlines()
              if line.split(None, 1)[1:] == ["sleep 600"]]
    for pgid in before.values():
        assert groups.count(pgid) == 1




def test_manual_stop_is_remembered(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "manual2"
        [tasks.keep]
        command = "sleep 600"
        [tasks.held]
        command = "sleep 600"
        restart_policy = "always"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    assert run_json(["stop", "held"], env, cwd=proj)[0] == 0
    assert run_json(["daemon", "restart"], env)[0] == 0

    held = task(env, proj, "held")
    assert held["state"] == "stopped" and held["manually_stopped"] is True
    assert task(env, proj, "keep")["state"] == "running"
    code, out = run_json(["start", "held"], env, cwd=proj)
    assert (code, out["action"]) == (0, "started")
    assert task(env, proj, "held")["manually_stopped"] is False


def test_tmux_kill_server_brings_the_project_back(env: dict[str, str], tmp_path: str,
                                                  tmux_socket: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "phoenix"
        [tasks.web]
        command = "sleep 600"
        restart_policy = "no"
        [tasks.worker]
        command = "sleep 600"
        [tasks.manual]
        command = "sleep 600"
        auto_start = false
        [tasks.paused]
        command = "sleep 600"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    assert run_json(["stop", "paused"], env, cwd=proj)[0] == 0
    old = {t["name"]: t["pid"] for t in status(env, proj)["tasks"]}
    tmux(tmux_socket, "kill-server")
    wait_until(lambda: status(env, proj)["running"] and all(
        task(env, proj, n)["state"] == "running" and task(env, proj, n)["pid"] != old[n]
        for n in ("web", "worker")), 30, "the project to come back")
    assert task(env, proj, "manual")["state"] == "stopped"
    assert task(env, proj, "paused")["state"] == "stopped"
    assert sorted(windows(tmux_socket, "phoenix")) == ["web", "worker"]


def test_start_twice_is_a_no_op(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "twice"
        [tasks.one]
        command = "sleep 600"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    pid = task(env, proj, "one")["pid"]
    code, out = run_json(["start", "one"], env, cwd=proj)
    assert (code, out["task"], out["action"]) == (0, "one", "already_running")
    assert task(env, proj, "one")["pid"] == pid


def test_kill_destroys_the_window(env: dict[str, str], tmp_path: str, tmux_socket: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "killer"
        [tasks.a]
        command = "sleep 600"
        [tasks.b]
        command = "sleep 600"
        restart_policy = "always"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    pid = task(env, proj, "b")["pid"]
    code, out = run_json(["kill", "b"], env, cwd=proj)
    assert (code, out["action"]) == (0, "killed")
    assert not pid_alive(pid)
    assert windows(tmux_socket, "killer") == ["a"]
    b = task(env, proj, "b")
    assert b["state"] == "stopped" and b["manually_stopped"]


def test_restart_gives_a_new_process(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "again"
        [tasks.a]
        command = "sleep 600"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    pid = task(env, proj, "a")["pid"]
    code, out = run_json(["restart", "a"], env, cwd=proj)
    assert (code, out["action"]) == (0, "restarted")
    assert out["results"][0]["pid"] != pid and not pid_alive(pid)


def test_status_text_and_aliases(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "shown"
        [tasks.api]
        command = "sleep 600"
        host = "api"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    for word in ("status", "list", "ls"):
        proc = run_cli([word], env, cwd=proj)
        assert proc.returncode == 0
        assert "api" in proc.stdout and "running" in proc.stdout
        assert "https://api.shown.localhost" in proc.stdout
    code, out = run_json(["inspect", "api"], env, cwd=proj)
    assert code == 0 and out["task"]["config"]["host"] == "api"
    assert out["task"]["port"] and out["task"]["log"].endswith("api.log")
    code, out = run_json(["status", "-p", "shown"], env, cwd="/")
    assert code == 0 and out["project"] == "shown"
