"""Relaunch in place: a crash answered at once runs again in the same pane, by the same runner
(a new run id, write-ahead), with both runs' output in one log; a runner no relaunch is
coming for ends at once; a daemon killed between the exit report and the relaunch is adopted
and the task runs exactly once. Real tmux, real daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

from tests.helpers import (
    PYTHON,
    REPO,
    call,
    listening_socket,
    pid_gone,
    read,
    run_json,
    wait_until,
)
from tests.projects import task, write_project

RUNNER_MAIN = os.path.join(REPO, "taskmuxd", "runner_main.py")
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
    log_path = os.path.join(home, "projects", "inplace", "logs", "app.log")

    def both_logged() -> bool:  # run 2's output reaches the log after it is reported running
        log = read(log_path)
        return all(f"output of run {run}" in log for _runner, run in _runs(runs))

    wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
               and t["restarts"] == 1 and len(_runs(runs)) == 2 and both_logged(), 20,
               "the restart, both runs' lines written and logged")
    (runner1, run1), (runner2, run2) = _runs(runs)
    assert runner1 == runner2, "the replacement ran in a new runner, not in place"
    assert run2 > run1
    record = os.path.join(home, "projects", "inplace", "run", "app.json")
    assert json.loads(read(record))["run_id"] == run2
    log = read(log_path)
    assert f"output of run {run1}" in log and f"output of run {run2}" in log
    assert "exited with code 3" in log


def test_a_restart_after_a_backoff_runs_in_place_too(env: dict[str, str], tmp_path: str,
                                                     home: str) -> None:
    # The second restart in a row waits restart_backoff (2 s, twice what a runner waits on
    # its own): the daemon asks the runner to hold on until then.
    runs = os.path.join(str(tmp_path), "runs")
    command = (f'echo "$PPID ${{TASKMUX_RUN##*:}}" >> {runs}; '
               f'if [ $(wc -l < {runs}) -ge 3 ]; then exec sleep 600; fi; exit 3')
    proj = write_project(os.path.join(str(tmp_path), "p"), f"""
        name = "held"
        [tasks.app]
        command = '{command}'
        restart_delay = 0
        restart_backoff = 2.0
    """)
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
               and t["restarts"] == 2 and len(_runs(runs)) == 3, 30,
               "two restarts, the third run's line written")
    got = _runs(runs)
    assert len(got) == 3 and [run for _pid, run in got] == sorted({r for _p, r in got})
    assert len({pid for pid, _run in got}) == 1, f"not all in one runner: {got}"


def test_a_task_stopped_while_its_runner_holds_for_a_restart(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # The restart waits 30 s: the runner holds on for it; a stop in the meantime ends the
    # runner at once and starts nothing.
    proj, runs, _ = _project(str(tmp_path), "later", "restart_delay = 30")
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: task(env, proj, "app")["state"] == "backoff", 20, "the crash")
    ((runner, _run),) = _runs(runs)
    assert not pid_gone(runner), "the runner did not hold on for the restart"
    run_json(["stop"], env, cwd=proj)
    assert task(env, proj, "app")["state"] == "stopped"
    wait_until(lambda: pid_gone(runner), 20, "the runner to finish")
    assert len(_runs(runs)) == 1


def test_a_daemon_killed_between_the_exit_report_and_the_relaunch(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # The daemon is frozen when the task exits: the runner's report is delivered (the socket
    # accepts it) but nobody answers; the daemon is then killed. Its successor adopts the
    # exit and the task runs again exactly once. (The restart granted ahead, which would
    # not wait for the daemon, is taken back first: ``test_restartgrant`` covers it.)
    flag2 = os.path.join(str(tmp_path), "go")
    proj, runs, _ = _project(str(tmp_path), "killed", "restart_delay = 0",
                             wait=f"while [ ! -f {flag2} ]; do sleep 0.05; done; ")
    sock = os.path.join(home, "ctl.sock")
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: task(env, proj, "app")["state"] == "running", 20, "the start")
    os.unlink(os.path.join(home, "projects", "killed", "run", "app.grant"))
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


def _order(path: str, order: dict[str, object]) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(json.dumps(order).encode() + b"\n")
        return s.recv(16)


def test_a_waiting_runner_refuses_an_order_for_a_stale_run_and_obeys_a_later_one(
        tmp_path: str) -> None:
    # The runner alone (a plain socket stands in for the daemon, which only has to accept
    # the exit report): an order whose spec is not a later run of this task is refused; an
    # order for run 2 is obeyed in the same process; a SIGTERM while it waits ends it.
    d = str(tmp_path)
    relaunch = os.path.join(d, "t.relaunch")
    out = os.path.join(d, "out")

    def spec(run_id: int, path: str) -> None:
        with open(path, "w") as fh:
            json.dump({"format": 1, "project": "rt", "task": "t", "run_id": run_id,
                       "command": f'echo "$PPID {run_id}" >> {out}', "shell": "/bin/sh",
                       "cwd": d, "env": {"PATH": os.environ["PATH"]},
                       "log": os.path.join(d, "t.log"), "log_max_size": 100000,
                       "log_max_files": 1, "record": os.path.join(d, "t.json"),
                       "socket": os.path.join(d, "ctl.sock"), "marker": f"x:rt:t:{run_id}",
                       "stop_grace_period": 1.0, "relaunch_socket": relaunch}, fh)

    spec(1, os.path.join(d, "s1.json"))
    spec(1, os.path.join(d, "stale.json"))
    spec(2, os.path.join(d, "s2.json"))
    with listening_socket(os.path.join(d, "ctl.sock")):
        proc = subprocess.Popen([PYTHON, "-I", "-S", RUNNER_MAIN, os.path.join(d, "s1.json")],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            def record() -> dict[str, object]:
                try:
                    data: dict[str, object] = json.loads(read(os.path.join(d, "t.json")))
                except (OSError, ValueError):
                    return {}
                return data

            wait_until(lambda: record().get("status") == "exited" and record().get("relaunch"),
                       10, "the first run's exit record, offering a relaunch")
            assert _order(relaunch, {"run": 1, "spec": os.path.join(d, "stale.json")}) \
                == b"no\n"
            assert proc.wait(30) == 0  # refused: it ended as a runner always did
            assert not os.path.exists(relaunch)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        proc = subprocess.Popen([PYTHON, "-I", "-S", RUNNER_MAIN, os.path.join(d, "s1.json")],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            wait_until(lambda: len(read(out).splitlines()) == 2 and record().get("relaunch"),
                       10, "the second first run")
            assert _order(relaunch, {"run": 2, "spec": os.path.join(d, "s2.json")}) == b"ok\n"
            wait_until(lambda: record().get("run_id") == 2 and record().get("status")
                       == "exited", 10, "run 2 in the same runner")
            pids = [line.split()[0] for line in read(out).splitlines()]
            assert pids[1] == pids[2] == str(proc.pid)
            proc.send_signal(signal.SIGTERM)  # the daemon's "finish"
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
