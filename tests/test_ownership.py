"""The daemon owns a task's processes by identity: a reused pid is never signalled, a launch
is on disk before tmux is asked, and a run's marker finds every process it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time

import pytest

from tests.helpers import call, pid_gone, run_json, wait_until
from tests.projects import pid_alive, status, task, write_project


def _state_path(home: str, project: str, name: str) -> str:
    return os.path.join(home, "projects", project, "tasks", f"{name}.json")


def _read(path: str) -> dict[str, object]:
    with open(path) as fh:
        data = json.load(fh)
    assert isinstance(data, dict)
    return data


def _kill_daemon(home: str) -> None:
    pid = call(os.path.join(home, "ctl.sock"), "daemon.status")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), what="the daemon to die")


def _environ(pid: int) -> bytes:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        return fh.read()


def test_a_process_that_reuses_a_recorded_pid_is_never_signalled(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "reuse"
        [tasks.a]
        command = "sleep 600"
        restart_policy = "always"
        restart_backoff = 1.0
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    first = task(env, proj, "a")
    _kill_daemon(home)
    # The task and its runner die while no daemon watches; a stranger then holds "its" pids:
    # the recorded pid, process group and runner pid all name this unrelated process.
    runner = int(_read(os.path.join(home, "projects", "reuse", "run", "a.json"))["runner_pid"])
    os.kill(runner, signal.SIGKILL)
    os.killpg(first["pgid"], signal.SIGKILL)
    wait_until(lambda: not pid_alive(first["pid"]), what="the task to die")
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        path = _state_path(home, "reuse", "a")
        rec = _read(path)
        rec.update(pid=stranger.pid, pgid=stranger.pid, runner_pid=stranger.pid)
        with open(path, "w") as fh:
            json.dump(rec, fh)
        # A new daemon: the run is gone, so the task is started again — and the stranger,
        # whose start time is not the recorded one, is left alone.
        second = wait_until(lambda: (t := task(env, proj, "a"))["state"] == "running"
                            and t["pid"] not in (first["pid"], stranger.pid) and t, 20,
                            "the relaunch")
        assert second["pid"] != stranger.pid
        assert stranger.poll() is None, "a process that merely reused a pid was signalled"
        assert run_json(["stop"], env, cwd=proj)[0] == 0
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_every_process_of_a_run_carries_its_marker(env: dict[str, str], tmp_path: str,
                                                    home: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "marks"
        [tasks.a]
        command = "sleep 600 & sleep 600; wait"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    a = task(env, proj, "a")
    record = _read(os.path.join(home, "projects", "marks", "run", "a.json"))
    runner = int(str(record["runner_pid"]))
    marker = [v for v in _environ(runner).split(b"\0") if v.startswith(b"TASKMUX_RUN=")]
    assert len(marker) == 1 and marker[0].endswith(b":marks:a:%d" % _read(
        _state_path(home, "marks", "a"))["run_id"])
    assert marker[0] in _environ(a["pid"]).split(b"\0")
    # The shell and both sleeps: status counts the whole tree, and names the shell as the
    # program (it runs two children, so it is more than a wrapper).
    wait_until(lambda: task(env, proj, "a")["processes"] == 3, what="three processes")
    assert task(env, proj, "a")["main_pid"] == a["pid"]


def test_main_pid_is_the_program_not_the_shell_that_wraps_it(
        env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "wrap"
        [tasks.a]
        command = "sleep 600; echo done"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0

    def program() -> int | None:
        t = task(env, proj, "a")
        main = t["main_pid"]
        if main is None or main == t["pid"]:
            return None
        with open(f"/proc/{main}/comm") as fh:
            return main if fh.read().strip() == "sleep" else None

    wait_until(program, what="the sleep to be named as the main program")
    assert task(env, proj, "a")["processes"] == 2
    code, out = run_json(["status"], env, cwd=proj)
    assert code == 0 and out["tasks"][0]["main_pid"] == program()


def _marked(home: str, project: str, name: str) -> list[int]:
    """Pids of live ``sleep 600`` processes carrying this task's run marker."""
    prefix = b"TASKMUX_RUN="
    tail = f":{project}:{name}:".encode()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            env = _environ(int(entry))
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        if cmd != b"sleep\0" + b"600\0" or pid_gone(int(entry)):
            continue
        if any(v.startswith(prefix) and tail in v for v in env.split(b"\0")) and \
                f"TASKMUX_HOME={home}".encode() in env.split(b"\0"):
            out.append(int(entry))
    return out


@pytest.mark.slow
def test_a_daemon_killed_right_after_a_restart_neither_loses_nor_doubles_the_task(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "ahead"
        [tasks.a]
        command = "sleep 600"
        restart_policy = "no"
        [tasks.b]
        command = "sleep 600"
        [tasks.c]
        command = "sleep 600"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    sock = os.path.join(home, "ctl.sock")
    for delay in (0.0, 0.02, 0.05, 0.1, 0.2):
        pid = call(sock, "daemon.status")["pid"]
        payload = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "project.restart",
                              "params": {"cwd": proj}}) + "\n"
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)
            s.sendall(payload.encode())
            time.sleep(delay)  # the moment of the kill is the variable under test
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda p=pid: not pid_alive(p), what="the daemon to die")
        # A new daemon (started by the status call) settles with one copy of each task,
        # none of them reported dead while it runs.
        wait_until(lambda: all(t["state"] == "running" for t in status(env, proj)["tasks"]),
                   20, "every task running again")
        for name in ("a", "b", "c"):
            wait_until(lambda n=name: len(_marked(home, "ahead", n)) == 1, 10,
                       f"exactly one {name}")
