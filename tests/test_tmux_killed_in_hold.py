"""Chaos: the tmux server killed (``kill -9`` of its pid: this test's private server) while a
crashed task's runner holds in its pane for a restart granted with its wait (a delayed
grant, ``rungrant``/``delayedgrant``), with the daemon up, or killed first and started again
after; while a task is ``fatal``; and during a ``stop`` whose runner stays warm, and while it
waits warm.

What must hold: the daemon hears it at once (its control connection ends), an event says
what happened (``project_restored``: the tasks started, and those left to their restart),
and no task is lost or doubled. A crashed task keeps its restart, its count and its wait
(the restore after tmux went away brings back what tmux took down, not what was already
waiting for its restart), then runs exactly once, in a new pane; every runner and task pid
recorded is then that one copy or gone; nothing of the grant is left, and the daemon logged
no traceback. Real tmux, real daemon; a test waits the restart's few seconds at most once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from typing import Any

from taskmuxd import proctree
from tests.helpers import DaemonProcess, call, pid_gone, read, read_reply, run_json, wait_until
from tests.projects import task, write_project

DELAY = 4  # restart_delay: long enough to act inside the hold, even on 2 busy cores

# Each start appends its runner's pid, its run id, its own pid and the time; the first run
# crashes (exit 3), the later ones stay up (``exec``: the shell's pid is the task's).
COMMAND = ('echo "$PPID ${{TASKMUX_RUN##*:}} $$ $(date +%s.%N)" >> {runs}; if [ -f {flag} ]; '
           'then exec sleep 600; fi; touch {flag}; exit 3')


def _runs(path: str) -> list[tuple[int, int, int, float]]:
    """(runner pid, run id, task pid, time) per start of the task, as it wrote them: only
    whole lines (``>>`` creates the file before ``echo`` writes)."""
    try:
        text = read(path)
    except FileNotFoundError:
        return []
    return [(int(a), int(b), int(c), float(t)) for a, b, c, t in
            (line.split() for line in text.splitlines(keepends=True) if line.endswith("\n"))]


def _project(tmp_path: str, name: str, settings: str, command: str | None = None
             ) -> tuple[str, str]:
    runs, flag = os.path.join(tmp_path, "runs"), os.path.join(tmp_path, "flag")
    proj = write_project(os.path.join(tmp_path, "p"), f"""
        name = "{name}"
        [tasks.app]
        command = '{command or COMMAND.format(runs=runs, flag=flag)}'
        {settings}
    """)
    return proj, runs


def _events(home: str, project: str) -> list[dict[str, Any]]:
    return [ev for line in read(os.path.join(home, "events.jsonl")).splitlines()
            if (ev := json.loads(line)).get("project") == project]


def _app(home: str, project: str) -> dict[str, Any]:
    """The task's status, over the control socket (cheaper than a CLI start per look)."""
    tasks = call(os.path.join(home, "ctl.sock"), "project.status", {"project": project})["tasks"]
    found: dict[str, Any] = next(t for t in tasks if t["name"] == "app")
    return found


def _run_dir(home: str, project: str) -> str:
    return os.path.join(home, "projects", project, "run")


def _holding(home: str, project: str, runner: Callable[[], int | None]) -> bool:
    """The task waits its restart (``backoff``), its grant written, and its runner holds with
    it: the next run made ready (its write-ahead record staged beside, ``app.json.PID.tmp``)."""
    pid = runner()
    return pid is not None and _app(home, project)["state"] == "backoff" \
        and os.path.exists(os.path.join(_run_dir(home, project), "app.grant")) \
        and os.path.exists(os.path.join(_run_dir(home, project), f"app.json.{pid}.tmp"))


def _first_runner(runs: str) -> int | None:
    got = _runs(runs)
    return got[0][0] if got else None


def _tmux_server(tmux_socket: str) -> int:
    return int(subprocess.run(["tmux", "-L", tmux_socket, "display-message", "-p", "#{pid}"],
                              capture_output=True, text=True, check=True).stdout)


def _kill_tmux(tmux_socket: str) -> int:
    """``kill -9`` of this test's private tmux server, by its pid; the pid."""
    server = _tmux_server(tmux_socket)
    os.kill(server, signal.SIGKILL)
    wait_until(lambda: pid_gone(server), 10, "the tmux server to die")
    return server


def _marked(home: str, project: str) -> set[int]:
    """Every live process carrying any run's marker of the task, runners included (a runner
    carries the marker of the run it started with)."""
    prefix = json.loads(read(os.path.join(_run_dir(home, project), "app.json")))["marker"]
    return {p.pid for p in proctree.find_marked(prefix.rsplit(":", 1)[0] + ":")}


def _back_once(home: str, project: str, runs: str) -> dict[str, Any]:
    """The task runs again, on its restart, exactly once: its status names the second run's
    pid, which with its runner is all that lives of the task; the first run and runner are
    gone."""
    t = wait_until(lambda: (t := _app(home, project))["state"] == "running"
                   and len(_runs(runs)) == 2 and t["pid"] == _runs(runs)[1][2] and t, 30,
                   "the restart")
    (runner1, run1, pid1, _at1), (runner2, run2, pid2, _at2) = _runs(runs)
    assert runner2 != runner1 and run2 > run1  # a new pane, a new run
    assert pid_gone(runner1) and pid_gone(pid1)
    wait_until(lambda: _marked(home, project) == {runner2, pid2}, 10, "one copy")
    assert not pid_gone(runner2) and not pid_gone(pid2)
    # Counted as the crash's restart, the first of its streak: no fresh start, no burst.
    assert (t["restarts"], t["restart_attempt"]) == (1, 1), t
    return t


def _after_the_wait(home: str, project: str, runs: str) -> None:
    """Run 2 began no earlier than the wait after run 1's exit, and its start is the one
    restart the crash announced."""
    evs = [e for e in _events(home, project) if e["task"] == "app"]
    kinds = [e["event"] for e in evs]
    assert kinds.count("task_started") == 2 and kinds.count("auto_restart") == 1, kinds
    restart = next(e for e in evs if e["event"] == "auto_restart")
    assert restart["details"]["attempt"] == 1 and restart["details"]["delay"] >= DELAY
    started = [e for e in evs if e["event"] == "task_started"][1]["details"]
    assert (started["attempt"], started["restarts"]) == (1, 1), started
    exited = [e for e in evs if e["event"] == "task_exited"]
    assert len(exited) == 1 and exited[0]["details"]["exit_code"] == 3
    last_exit = _app(home, project)["last_exit"]
    assert _runs(runs)[1][3] - last_exit["at"] >= DELAY, (last_exit, _runs(runs))


def _nothing_left_behind(home: str, project: str) -> None:
    """No grant, claimed grant or staged record of the hold is left behind, and the daemon
    logged no traceback and no error on the way."""
    left = [f for f in os.listdir(_run_dir(home, project))
            if f == "app.grant" or f.startswith(("app.grant.", "app.json."))]
    assert left == [], left
    for name in ("daemon.log", "test-daemon.stderr"):  # started by the CLI, or by the test
        path = os.path.join(home, name)
        text = read(path) if os.path.exists(path) else ""
        assert "Traceback" not in text and " ERROR " not in text, text


def _restored_event(home: str, project: str) -> dict[str, Any]:
    evs = wait_until(lambda: [e for e in _events(home, project)
                              if e["event"] == "project_restored"], 20, "project_restored")
    assert len(evs) == 1, evs
    details: dict[str, Any] = evs[0]["details"]
    return details


def test_tmux_killed_during_the_hold_of_a_delayed_grant(
        env: dict[str, str], tmp_path: str, home: str, tmux_socket: str) -> None:
    # Beside it, a task that runs: tmux's going takes it down, so the restore starts it
    # again at once, as a start, as before (with no restart policy, only the restore can).
    proj, runs = _project(str(tmp_path), "tmuxhold", f"restart_delay = {DELAY}\n"
                          '[tasks.web]\ncommand = "sleep 600"\nrestart_policy = "no"')
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: _holding(home, "tmuxhold", lambda: _first_runner(runs)), 20,
               "the runner holding with its grant")
    ((runner1, _run1, pid1, _at1),) = _runs(runs)
    web = task(env, proj, "web")
    assert web["state"] == "running"
    server = _kill_tmux(tmux_socket)
    # Heard at once from the control connection (a sweep comes only every 30 s): the project
    # is restored, web started now; app waits for its restart, still down.
    details = _restored_event(home, "tmuxhold")
    assert details == {"tasks": ["web"], "waiting": ["app"]}, details
    web2 = wait_until(lambda: (t := task(env, proj, "web"))["state"] == "running"
                      and t["pid"] != web["pid"] and t, 20, "web back")
    assert web2["restarts"] == 0 and pid_gone(web["pid"])
    wait_until(lambda: pid_gone(runner1), 10, "the holding runner to end with its pane")
    t = _back_once(home, "tmuxhold", runs)
    _after_the_wait(home, "tmuxhold", runs)
    evs = _events(home, "tmuxhold")
    restored = next(e["id"] for e in evs if e["event"] == "project_restored")
    assert restored < [e["id"] for e in evs if e["event"] == "task_started"
                       and e["task"] == "app"][1]
    assert _tmux_server(tmux_socket) != server  # a new server, made by the restart's launch
    assert pid_gone(pid1) and t["pid"] == _runs(runs)[1][2]
    _nothing_left_behind(home, "tmuxhold")


def test_tmux_killed_during_the_hold_while_the_daemon_is_down(
        env: dict[str, str], tmp_path: str, home: str, tmux_socket: str,
        start_daemon: Callable[..., DaemonProcess]) -> None:
    # kill -9 of the daemon during the hold, then of tmux (the runner's pane goes: it ends,
    # its grant unclaimed), then a new daemon: it takes the grant back, restores the project
    # and the task comes back on its restart, once. Beside it, a task that ran: its runner
    # recorded the pane's going as its end, so the new daemon's restore starts it now, as a
    # start, not after its own (long) restart delay.
    proj, runs = _project(str(tmp_path), "bothdown", f"restart_delay = {DELAY}\n"
                          '[tasks.web]\ncommand = "sleep 600"\nrestart_delay = 60')
    daemon = start_daemon()
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: _holding(home, "bothdown", lambda: _first_runner(runs)), 20,
               "the runner holding with its grant")
    ((runner1, _run1, _pid1, _at1),) = _runs(runs)
    web = task(env, proj, "web")
    assert web["state"] == "running"
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    _kill_tmux(tmux_socket)
    wait_until(lambda: pid_gone(runner1) and pid_gone(web["pid"]), 10,
               "the holding runner and web to end with their panes")
    assert len(_runs(runs)) == 1  # it claimed nothing: the pane was gone
    start_daemon()
    details = _restored_event(home, "bothdown")
    assert details == {"tasks": ["web"], "waiting": ["app"]}, details
    web2 = wait_until(lambda: (t := task(env, proj, "web"))["state"] == "running" and t, 20,
                      "web back")
    assert web2["restarts"] == 0 and web2["pid"] != web["pid"]
    _back_once(home, "bothdown", runs)
    _after_the_wait(home, "bothdown", runs)
    _nothing_left_behind(home, "bothdown")


def test_tmux_killed_during_a_stop_whose_runner_would_stay_warm(
        env: dict[str, str], tmp_path: str, home: str, tmux_socket: str) -> None:
    # The task ignores SIGINT (and forks nothing): the stop's ladder waits the grace period
    # before SIGTERM, and tmux is killed meanwhile. The stop ends with the task stopped and
    # nothing of it left (no warm runner in a pane that is gone); the restore leaves it
    # stopped; the next start launches through tmux, once.
    runs = os.path.join(str(tmp_path), "runs")
    command = (f'trap "" INT; echo "$PPID ${{TASKMUX_RUN##*:}} $$ $(date +%s.%N)" >> {runs}; '
               "exec sleep 600")
    proj, _ = _project(str(tmp_path), "warmstop", "stop_grace_period = 2", command=command)
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: _app(home, "warmstop")["state"] == "running" and len(_runs(runs)) == 1,
               20, "the start, its line written")
    ((runner1, _run1, pid1, _at1),) = _runs(runs)
    request = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        request.connect(os.path.join(home, "ctl.sock"))
        request.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "project.stop",
                                    "params": {"project": "warmstop", "tasks": ["app"]}})
                        .encode() + b"\n")
        wait_until(lambda: _app(home, "warmstop")["state"] == "stopping", 20, "the stop")
        _kill_tmux(tmux_socket)
        reply = read_reply(request)
    finally:
        request.close()
    assert "error" not in reply, reply
    t = _app(home, "warmstop")
    assert t["state"] == "stopped" and t["manually_stopped"] is True, t
    wait_until(lambda: pid_gone(runner1) and pid_gone(pid1), 20, "the runner and task gone")
    assert _marked(home, "warmstop") == set()
    kinds = [e["event"] for e in _events(home, "warmstop") if e["task"] == "app"]
    assert kinds.count("task_stopped") == 1 and kinds.count("task_started") == 1, kinds
    assert not any(e["event"] == "project_restored" for e in _events(home, "warmstop"))
    _nothing_left_behind(home, "warmstop")
    run_json(["start"], env, cwd=proj)
    t = wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
                   and len(_runs(runs)) == 2 and t["pid"] == _runs(runs)[1][2] and t, 20,
                   "the next start")
    runner2, _run2, pid2, _at2 = _runs(runs)[1]
    assert runner2 != runner1
    wait_until(lambda: _marked(home, "warmstop") == {runner2, pid2}, 10, "one copy")


def test_tmux_killed_while_a_task_is_fatal_leaves_it_fatal(
        env: dict[str, str], tmp_path: str, home: str, tmux_socket: str) -> None:
    # Past max_restarts with retry_after = 0, a task stays down until someone starts it: the
    # restore after tmux went away is not someone.
    runs = os.path.join(str(tmp_path), "runs")
    command = f'echo "$PPID ${{TASKMUX_RUN##*:}} $$ $(date +%s.%N)" >> {runs}; exit 3'
    proj, _ = _project(str(tmp_path), "fatalkept", "restart_delay = 0\nmax_restarts = 0\n"
                       "retry_after = 0", command=command)
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: _app(home, "fatalkept")["state"] == "fatal", 20, "fatal")
    ((runner1, _run1, _pid1, _at1),) = _runs(runs)
    wait_until(lambda: pid_gone(runner1), 10, "its runner told to finish")
    _kill_tmux(tmux_socket)
    details = _restored_event(home, "fatalkept")
    assert details == {"tasks": [], "waiting": ["app"]}, details
    t = _app(home, "fatalkept")
    assert t["state"] == "fatal" and t["restarts"] == 0 and len(_runs(runs)) == 1, t
    _nothing_left_behind(home, "fatalkept")


def test_tmux_killed_while_a_stopped_tasks_runner_waits_warm(
        env: dict[str, str], tmp_path: str, home: str, tmux_socket: str) -> None:
    # The stop is over, its runner idles warm in the pane for the next start; tmux is killed:
    # the runner ends with its pane, the task stays stopped, and the next start, which would
    # have been an order to that runner, launches through tmux instead, once.
    runs = os.path.join(str(tmp_path), "runs")
    command = f'echo "$PPID ${{TASKMUX_RUN##*:}} $$ $(date +%s.%N)" >> {runs}; exec sleep 600'
    proj, _ = _project(str(tmp_path), "warmidle", "", command=command)
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: _app(home, "warmidle")["state"] == "running" and len(_runs(runs)) == 1,
               20, "the start, its line written")
    ((runner1, _run1, pid1, _at1),) = _runs(runs)
    assert run_json(["stop"], env, cwd=proj)[0] == 0
    wait_until(lambda: "This is its idle runner" in subprocess.run(
        ["tmux", "-L", tmux_socket, "capture-pane", "-p", "-J", "-t", "=warmidle:app"],
        capture_output=True, text=True).stdout, 10, "the runner waiting warm, as it says")
    assert pid_gone(pid1) and not pid_gone(runner1)
    _kill_tmux(tmux_socket)
    wait_until(lambda: pid_gone(runner1), 10, "the warm runner to end with its pane")
    t = _app(home, "warmidle")
    assert t["state"] == "stopped" and t["manually_stopped"] is True, t
    assert not any(e["event"] == "project_restored" for e in _events(home, "warmidle"))
    assert run_json(["start"], env, cwd=proj)[0] == 0
    t = wait_until(lambda: (t := _app(home, "warmidle"))["state"] == "running"
                   and len(_runs(runs)) == 2 and t["pid"] == _runs(runs)[1][2] and t, 20,
                   "the next start")
    runner2, _run2, pid2, _at2 = _runs(runs)[1]
    assert runner2 != runner1 and t["restarts"] == 0
    wait_until(lambda: _marked(home, "warmidle") == {runner2, pid2}, 10, "one copy")
    _nothing_left_behind(home, "warmidle")
