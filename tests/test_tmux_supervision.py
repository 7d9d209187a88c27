"""What tmux reports on the daemon's control connection, as supervision: a task's window or
pane closed from outside is noticed from tmux's notification and handled by the task's restart
policy, and a tmux server killed under the daemon brings the project back. The daemon's
safety-net sweep is set an hour apart, so nothing here can be the sweep's doing."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import DaemonProcess, pid_gone, run_json, wait_until, write_config
from tests.projects import status, task, tmux, wait_state, windows, write_project

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")

PROJECT = """
    name = "watched"
    [tasks.web]
    command = "sleep 600"
    restart_policy = "always"
    restart_delay = 0
    [tasks.quiet]
    command = "sleep 600"
    restart_policy = "no"
"""


@pytest.fixture
def slow_sweep(home: str, start_daemon: Callable[..., DaemonProcess]) -> DaemonProcess:
    write_config(home, "health_check_interval = 3600\n")
    return start_daemon()


def events(home: str, kind: str) -> list[dict[str, Any]]:
    path = os.path.join(home, "events.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        found = [json.loads(line) for line in fh if line.strip()]
    return [e for e in found if e["event"] == kind]


def window_of(socket: str, session: str, name: str) -> tuple[str, str]:
    out = tmux(socket, "list-windows", "-t", f"={session}", "-F",
               "#{@taskmux_task} #{window_id} #{pane_id}")
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            return parts[1], parts[2]
    raise AssertionError(f"no window for {name}: {out!r}")


@pytest.mark.parametrize("how", ["kill-window", "kill-pane"])
def test_a_window_closed_from_outside_is_handled_by_policy(
        slow_sweep: DaemonProcess, env: dict[str, str], home: str, tmux_socket: str,
        tmp_path: str, how: str) -> None:
    proj = write_project(str(tmp_path / "p"), PROJECT)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    web, quiet = task(env, proj, "web"), task(env, proj, "quiet")
    wid, pane = window_of(tmux_socket, "watched", "web")
    qwid, _ = window_of(tmux_socket, "watched", "quiet")
    tmux(tmux_socket, how, "-t", wid if how == "kill-window" else pane)
    # The notification, typed and mapped: an event naming the window...
    closed = wait_until(lambda: [e for e in events(home, "window_closed")
                                 if e["task"] == "web"], 20, "window_closed")
    assert closed[0]["details"]["window"] == wid
    # ...and the policy's answer: "always" runs it again, in a new window.
    wait_until(lambda: (t := task(env, proj, "web"))["state"] == "running"
               and t["pid"] != web["pid"], 20, "web to run again")
    assert sorted(windows(tmux_socket, "watched")) == ["quiet", "web"]
    assert window_of(tmux_socket, "watched", "web")[0] != wid
    # The other task was not touched.
    assert task(env, proj, "quiet")["pid"] == quiet["pid"]
    assert window_of(tmux_socket, "watched", "quiet")[0] == qwid
    assert not [e for e in events(home, "window_closed") if e["task"] == "quiet"]


def test_a_window_closed_under_a_task_with_no_restart_leaves_it_stopped(
        slow_sweep: DaemonProcess, env: dict[str, str], home: str, tmux_socket: str,
        tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), PROJECT)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    wid, _ = window_of(tmux_socket, "watched", "quiet")
    tmux(tmux_socket, "kill-window", "-t", wid)
    wait_until(lambda: [e for e in events(home, "window_closed") if e["task"] == "quiet"], 20,
               "window_closed")
    wait_state(env, proj, "quiet", "exited")
    assert windows(tmux_socket, "watched") == ["web"]  # not relaunched


def test_a_runner_killed_without_a_word_is_noticed_and_replaced(
        slow_sweep: DaemonProcess, env: dict[str, str], home: str, tmux_socket: str,
        tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), PROJECT)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    web = task(env, proj, "web")
    runner = int(tmux(tmux_socket, "display-message", "-p", "-t",
                      window_of(tmux_socket, "watched", "web")[1], "#{pane_pid}"))
    os.kill(runner, signal.SIGKILL)  # it cannot report; its pane is dead
    wait_until(lambda: [e for e in events(home, "runner_lost") if e["task"] == "web"], 20,
               "runner_lost")
    again = wait_until(lambda: (t := task(env, proj, "web"))["state"] == "running"
                       and t["pid"] != web["pid"] and t, 20, "web to run again")
    assert again["pid"] is not None
    # The run the runner left behind was ended before the new one: one sleep per task.
    # (pid_gone: orphaned by the killed runner, it may stay a zombie nobody reaps.)
    wait_until(lambda: pid_gone(web["pid"]), 20, "the old task to be ended")


def test_the_tmux_server_killed_by_pid_brings_the_project_back(
        slow_sweep: DaemonProcess, env: dict[str, str], home: str, tmux_socket: str,
        tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), PROJECT)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    old = {t["name"]: t["pid"] for t in status(env, proj)["tasks"]}
    server = int(tmux(tmux_socket, "display-message", "-p", "#{pid}"))
    os.kill(server, signal.SIGTERM)
    wait_until(lambda: events(home, "project_restored"), 30, "project_restored")
    wait_until(lambda: all((t := task(env, proj, n))["state"] == "running"
                           and t["pid"] != old[n] for n in old), 30, "the project back")
    assert sorted(windows(tmux_socket, "watched")) == ["quiet", "web"]
    # "quiet" (no restart policy) came back only by the restore; "web" may have been restarted
    # by its own policy ("always", no delay) before the restore looked.
    assert "quiet" in events(home, "project_restored")[0]["details"]["tasks"]
