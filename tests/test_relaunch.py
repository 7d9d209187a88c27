"""Relaunch in place: a crash answered at once runs again in the same pane, by the same runner
(a new run id, write-ahead), with both runs' output in one log; a runner no relaunch is
coming for ends at once; a daemon killed between the exit report and the relaunch is adopted
and the task runs exactly once. Real tmux, real daemon."""

from __future__ import annotations

import json
import os
import signal

from tests.helpers import call, pid_gone, read, run_json, wait_until
from tests.projects import task, write_project

FLAG_TASK = ('echo "$PPID ${{TASKMUX_RUN##*:}}" >> {runs}; echo "output of run '
             '${{TASKMUX_RUN##*:}}"; if [ -f {flag} ]; then exec sleep 600; fi; '
             'touch {flag}; {wait}exit 3')


def _runs(path: str) -> list[tuple[int, int]]:
    """(runner pid, run id) per start of the task, as it wrote them."""
    try:
        return [(int(a), int(b)) for a, b in (line.split() for line in read(path).splitlines())]
    except FileNotFoundError:
        return []


def _project(tmp_path: str, name: str, settings: str, wait: str = "") -> tuple[str, str, str]:
    runs, flag = os.path.join(tmp_path, "runs"), os.path.join(tmp_path, "flag")
    command = FLAG_TASK.format(runs=runs, flag=flag, wait=wait)
    proj = write_project(os.path.join(tmp_path, "p"), f"""
        name = "{name}"
        [tasks.app]
        command = '{command}'
        {settings}
    """)
    return proj, runs, flag


def test_a_zero_wait_crash_runs_again_in_the_same_pane(env: dict[str, str], tmp_path: str,
                                                       home: str) -> None:
    proj, runs, _ = _project(str(tmp_path), "inplace", "restart_delay = 0")
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
               and t["restarts"] == 1, 20, "the restart")
    (runner1, run1), (runner2, run2) = _runs(runs)
    assert runner1 == runner2, "the replacement ran in a new runner, not in place"
    assert run2 > run1
    record = os.path.join(home, "projects", "inplace", "run", "app.json")
    assert json.loads(read(record))["run_id"] == run2
    log = read(os.path.join(home, "projects", "inplace", "logs", "app.log"))
    assert f"output of run {run1}" in log and f"output of run {run2}" in log
    assert "exited with code 3" in log


def test_a_runner_that_no_relaunch_comes_for_ends_at_once(env: dict[str, str], tmp_path: str,
                                                          home: str) -> None:
    # The restart waits far longer than a runner would: the daemon tells it to finish, and
    # a stop in the meantime starts nothing.
    proj, runs, _ = _project(str(tmp_path), "later", "restart_delay = 30")
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: task(env, proj, "app")["state"] == "backoff", 20, "the crash")
    ((runner, _run),) = _runs(runs)
    wait_until(lambda: pid_gone(runner), 20, "the runner to finish")
    run_json(["stop"], env, cwd=proj)
    assert task(env, proj, "app")["state"] == "stopped"
    assert len(_runs(runs)) == 1


def test_a_daemon_killed_between_the_exit_report_and_the_relaunch(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # The daemon is frozen when the task exits: the runner's report is delivered (the socket
    # accepts it) but nobody answers; the daemon is then killed. Its successor adopts the
    # exit and the task runs again exactly once.
    flag2 = os.path.join(str(tmp_path), "go")
    proj, runs, _ = _project(str(tmp_path), "killed", "restart_delay = 0",
                             wait=f"while [ ! -f {flag2} ]; do sleep 0.05; done; ")
    sock = os.path.join(home, "ctl.sock")
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: task(env, proj, "app")["state"] == "running", 20, "the start")
    pid = call(sock, "daemon.status")["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        with open(flag2, "w"):
            pass
        ((runner, _run),) = wait_until(lambda: _runs(runs), 10, "the first run")
        wait_until(lambda: pid_gone(runner), 20, "the runner to give up waiting")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: pid_gone(pid), 10, "the daemon to die")
    second = wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
                        and len(_runs(runs)) == 2 and t, 30, "the adopted relaunch")
    again = task(env, proj, "app")
    assert again["pid"] == second["pid"] and again["state"] == "running"
    assert len(_runs(runs)) == 2, "the task ran more than once after the adoption"
