"""A restart decided in advance (``rungrant``, ``restartgrant``): a zero-wait crash is
answered by the runner on the daemon's grant, with one report, a new pid and the restart
counted; a stop takes the grant back; the restart limit and the backoff after the first
restart give no grant; ``kill -9`` of the daemon or of the runner around a granted restart
leaves the task running exactly once and nothing orphaned. Real tmux, real daemon; the claim
itself on files alone."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import Any

import pytest

from taskmuxd import proctree, rungrant, runrelaunch
from taskmuxd.projects import delayedgrant, restartgrant
from tests.helpers import call, pid_gone, read, read_reply, run_json, wait_until
from tests.projects import task, write_project

CRASH_ONCE = ('echo "$PPID ${{TASKMUX_RUN##*:}} $$" >> {runs}; if [ -f {flag} ]; then exec '
              'sleep 600; fi; touch {flag}; {wait}exit 3')


def _runs(path: str) -> list[tuple[int, int, int]]:
    """(runner pid, run id, task pid) per start of the task, as it wrote them."""
    try:
        return [(int(a), int(b), int(c))
                for a, b, c in (line.split() for line in read(path).splitlines())]
    except FileNotFoundError:
        return []


def _project(tmp_path: str, name: str, settings: str, command: str | None = None,
             wait: str = "") -> tuple[str, str, str]:
    runs, flag = os.path.join(tmp_path, "runs"), os.path.join(tmp_path, "flag")
    command = command or CRASH_ONCE.format(runs=runs, flag=flag, wait=wait)
    proj = write_project(os.path.join(tmp_path, "p"), f"""
        name = "{name}"
        [tasks.app]
        command = '{command}'
        {settings}
    """)
    return proj, runs, flag


def _events(home: str, project: str) -> list[dict[str, Any]]:
    out = []
    for line in read(os.path.join(home, "events.jsonl")).splitlines():
        ev = json.loads(line)
        if ev.get("project") == project and ev.get("task") == "app":
            out.append(ev)
    return out


def _project_events(home: str, project: str) -> list[dict[str, Any]]:
    return [ev for line in read(os.path.join(home, "events.jsonl")).splitlines()
            if (ev := json.loads(line)).get("project") == project]


def _record(home: str, project: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(read(os.path.join(home, "projects", project, "run",
                                                        "app.json")))
    return data


def _done(runner: int, home: str, project: str) -> bool:
    """The runner has ended, or waits warm with nothing of the task left under it (a stopped
    task's idle runner): either way it can start nothing more without the daemon's order."""
    return pid_gone(runner) or (not proctree.descendants(runner)
                                and _record(home, project)["status"] == "exited")


def _marked(home: str, project: str) -> list[int]:
    """The live processes carrying any run's marker of the task, its runner aside (started
    by tmux with its first run's marker)."""
    rec = _record(home, project)
    prefix = rec["marker"].rsplit(":", 1)[0] + ":"
    return [p.pid for p in proctree.find_marked(prefix) if p.pid != rec["runner_pid"]]


def test_a_granted_restart_is_one_report_a_new_pid_and_counted(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    proj, runs, _ = _project(str(tmp_path), "granted", "restart_delay = 0")
    run_json(["start"], env, cwd=proj)
    # Reported running once recorded, before the new run's shell has written its line.
    t = wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
                   and t["restarts"] == 1 and len(_runs(runs)) == 2 and t, 20, "the restart")
    (runner1, run1, pid1), (runner2, run2, pid2) = _runs(runs)
    assert runner1 == runner2 and run2 == run1 + 1 and pid2 != pid1
    assert t["pid"] == pid2
    rec = _record(home, "granted")
    # Run 2's record says it began on the grant, and how run 1 ended: the one report.
    assert rec["run_id"] == run2 and rec["after_run"] == run1 and rec["after_code"] == 3
    assert rec["status"] == "running" and rec["relaunch"] is None
    kinds = [e["event"] for e in _events(home, "granted")]
    at = kinds.index("task_exited")
    assert kinds[at:at + 3] == ["task_exited", "auto_restart", "task_started"], kinds
    restart = [e for e in _events(home, "granted") if e["event"] == "auto_restart"]
    assert restart[0]["details"]["delay"] == 0 and restart[0]["details"]["attempt"] == 1
    # After the first restart of a streak the backoff applies: no grant for run 3.
    assert not os.path.exists(os.path.join(home, "projects", "granted", "run", "app.grant"))


def test_a_stop_takes_the_grant_back(env: dict[str, str], tmp_path: str, home: str) -> None:
    # A task that exits 1 on SIGINT: without the grant taken back, its runner would have
    # started it again when the stop ended it.
    runs = os.path.join(str(tmp_path), "runs")
    # The trap first: once the line is written, a SIGINT makes it exit 1.
    command = f'trap "exit 1" INT; echo "$PPID ${{TASKMUX_RUN##*:}} $$" >> {runs}; ' \
              'while :; do sleep 0.1; done'
    proj, _, _ = _project(str(tmp_path), "revoked", 'restart_policy = "always"\n'
                          "restart_delay = 0", command=command)
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: task(env, proj, "app")["state"] == "running"
               and len(_runs(runs)) == 1, 20, "the start, its line written")
    grant = os.path.join(home, "projects", "revoked", "run", "app.grant")
    assert os.path.exists(grant)
    ((runner, _run, _pid),) = _runs(runs)
    run_json(["stop"], env, cwd=proj)
    assert task(env, proj, "app")["state"] == "stopped"
    wait_until(lambda: _done(runner, home, "revoked"), 20, "the runner to finish or idle")
    assert len(_runs(runs)) == 1 and not os.path.exists(grant)
    assert _marked(home, "revoked") == []


def test_the_restart_limit_gives_no_grant(env: dict[str, str], tmp_path: str,
                                          home: str) -> None:
    runs = os.path.join(str(tmp_path), "runs")
    command = f'echo "$PPID ${{TASKMUX_RUN##*:}} $$" >> {runs}; exit 3'
    proj, _, _ = _project(str(tmp_path), "limited", "restart_delay = 0\nmax_restarts = 1\n"
                          "retry_after = 0", command=command)
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: task(env, proj, "app")["state"] == "fatal", 20, "the limit")
    got = _runs(runs)
    assert len(got) == 2 and got[0][0] == got[1][0]  # the one restart, granted, in place
    assert not os.path.exists(os.path.join(home, "projects", "limited", "run", "app.grant"))


def test_a_daemon_frozen_then_killed_around_a_granted_restart(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # The daemon is frozen when the task exits: the runner restarts it on its grant all the
    # same (its report waits in the socket); the daemon is killed. Its successor adopts run
    # 2 with run 1's exit counted: the task runs exactly once, nothing else of it lives.
    go = os.path.join(str(tmp_path), "go")
    proj, runs, _ = _project(str(tmp_path), "frozen", "restart_delay = 0",
                             wait=f"while [ ! -f {go} ]; do sleep 0.05; done; ")
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: task(env, proj, "app")["state"] == "running", 20, "the start")
    pid = call(os.path.join(home, "ctl.sock"), "daemon.status")["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        with open(go, "w"):
            pass
        wait_until(lambda: len(_runs(runs)) == 2 and _record(home, "frozen")["status"]
                   == "running", 20, "the granted run, while the daemon is frozen")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: pid_gone(pid), 10, "the daemon to die")
    (_r1, _run1, _p1), (_r2, _run2, pid2) = _runs(runs)
    t = wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
                   and t["pid"] == pid2 and t, 30, "the granted run adopted")
    assert t["restarts"] == 1
    assert len(_runs(runs)) == 2, "the task ran more than once after the adoption"
    assert sorted(_marked(home, "frozen")) == [pid2]


def test_the_runner_killed_right_after_a_granted_restart(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # kill -9 of the runner once run 2 runs: its task is orphaned; the daemon ends it before
    # it starts the task again, so exactly one copy lives afterwards.
    proj, runs, _ = _project(str(tmp_path), "orphan", "restart_delay = 0\n"
                             "stop_grace_period = 1")
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: len(_runs(runs)) == 2 and _record(home, "orphan")["status"]
               == "running", 20, "the granted run")
    (_r1, _run1, _p1), (runner, _run2, pid2) = _runs(runs)
    os.kill(runner, signal.SIGKILL)
    wait_until(lambda: len(_runs(runs)) == 3, 30, "the task started again")
    wait_until(lambda: pid_gone(pid2), 20, "the orphan of run 2 ended")
    t = wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running" and t, 20,
                   "running again")
    assert _runs(runs)[-1][2] == t["pid"]
    wait_until(lambda: _marked(home, "orphan") == [t["pid"]], 10, "one copy")


def test_a_grant_is_claimed_once_for_the_next_run_and_revoked_for_good(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "t.grant")

    def put(run: int, always: bool = False) -> None:
        with open(path, "w") as fh:
            fh.write(rungrant.text(run, f"m:{run}", always, [0]))

    put(2)
    assert rungrant.claim(path, 2, 0, None) is None  # a success: on-failure does not restart
    assert not os.path.exists(path)  # claimed all the same: gone
    put(2)
    assert rungrant.claim(path, 3, 1, None) is None  # another run's grant
    put(2)
    assert rungrant.claim(path, 2, None, 9) == "m:2"  # a signal is a failure
    assert rungrant.claim(path, 2, None, 9) is None  # once
    put(2, always=True)
    assert rungrant.claim(path, 2, 0, None) == "m:2"
    put(2)
    assert rungrant.revoke(path) is True
    assert rungrant.claim(path, 2, 1, None) is None
    assert rungrant.revoke(path) is False  # nothing left to take back
    with open(path, "wb") as fh:
        fh.write(b"{" * (rungrant.LIMIT + 10))
    assert rungrant.claim(path, 2, 1, None) is None  # hostile: bounded, refused


def test_a_grant_read_during_a_hold_is_not_claimed(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "t.grant")
    assert rungrant.peek(path, 2) is None  # none
    with open(path, "w") as fh:
        fh.write(rungrant.text(2, "m:2", True, []))
    assert rungrant.peek(path, 3) is None  # another run's
    assert rungrant.peek(path, 2) == "m:2" and os.path.exists(path)  # read, still there
    assert rungrant.revoke(path) is True  # so the daemon can still take it back
    with open(path, "wb") as fh:
        fh.write(b"[" * (rungrant.LIMIT + 10))
    assert rungrant.peek(path, 2) is None  # hostile: bounded, refused


def test_a_hold_ends_when_the_daemon_meant_on_the_same_clock_else_counted_here() -> None:
    now = 1000.0
    assert runrelaunch.hold_until({"finish": True}, now) is None  # no hold
    assert runrelaunch.hold_until({"hold": 2.0}, now) == 1002.0
    # The daemon's moment, its order 10 ms on the way: the 10 ms are not added.
    assert runrelaunch.hold_until({"hold": 2.0, "until": 1001.99, "grant": True}, now) \
        == 1001.99
    # Another clock (a time namespace): counted from the order's coming.
    for until in (5.0, 1002.5, 1001.0, True, "1001.99"):
        assert runrelaunch.hold_until({"hold": 2.0, "until": until}, now) == 1002.0, until
    assert runrelaunch.hold_until({"hold": 1e9, "until": 1e9}, now) \
        == now + runrelaunch.HOLD_LIMIT  # bounded


class _Clock:
    def __init__(self, wall: float, mono: float) -> None:
        self.wall, self.mono = wall, mono

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono


def test_the_wait_of_a_delayed_grant_counts_from_the_exit_the_runner_recorded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The machine decided at monotonic 500.0; it is now 500.004 (wall 10_000.004); the run
    # exited, its runner recorded, at wall 9_999.990: its report took 10 ms to be decided.
    monkeypatch.setattr(delayedgrant, "time", _Clock(10_000.004, 500.004))
    assert delayedgrant.lag(9_999.990, 500.0) == pytest.approx(0.010)
    assert delayedgrant.lag(None, 500.0) == 0.0 and delayedgrant.lag(9_999.99, None) == 0.0
    assert delayedgrant.lag(9_000.0, 500.0) == delayedgrant.LAG_LIMIT  # bounded
    assert delayedgrant.lag(10_000.5, 500.0) == 0.0  # a wall clock that stepped back
    assert delayedgrant.LAG_LIMIT < restartgrant.LAG_LIMIT  # a claim that early is taken


def test_a_stop_that_meets_a_claimed_grant_ends_the_granted_run(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # The stop is asked while the daemon is frozen; the task then exits and its runner,
    # whose grant the frozen daemon could not take back, starts run 2 on it. Once the
    # daemon runs again, whichever it hears first, the stop ends with nothing running.
    go = os.path.join(str(tmp_path), "go")
    proj, runs, _ = _project(str(tmp_path), "race", "restart_delay = 0\n"
                             "stop_grace_period = 2",
                             wait=f"while [ ! -f {go} ]; do sleep 0.05; done; ")
    sock = os.path.join(home, "ctl.sock")
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: task(env, proj, "app")["state"] == "running", 20, "the start")
    pid = call(sock, "daemon.status")["pid"]
    os.kill(pid, signal.SIGSTOP)
    request = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        request.connect(sock)
        request.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "project.stop",
                                    "params": {"project": "race", "tasks": ["app"]}})
                        .encode() + b"\n")
        with open(go, "w"):
            pass
        wait_until(lambda: len(_runs(runs)) == 2 and _record(home, "race")["status"]
                   == "running", 20, "the granted run, while the daemon is frozen")
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        reply = read_reply(request)
    finally:
        request.close()
    assert "error" not in reply, reply
    (runner, _run1, _p1), (_r2, _run2, pid2) = _runs(runs)
    wait_until(lambda: task(env, proj, "app")["state"] == "stopped", 20, "stopped")
    wait_until(lambda: pid_gone(pid2) and _done(runner, home, "race"), 20,
               "the granted run ended")
    assert len(_runs(runs)) == 2 and _marked(home, "race") == []
    kinds = [e["event"] for e in _events(home, "race")]
    assert kinds[-1] == "task_stopped", kinds


# -- a restart that waits a backoff, granted with its wait (``delayedgrant``) -----------------

STAMPED = ('echo "$PPID ${{TASKMUX_RUN##*:}} $$ $(date +%s.%N)" >> {runs}; if [ -f {flag} ]; '
           'then exec sleep 600; fi; touch {flag}; {wait}exit 3')


def _stamps(path: str) -> list[float]:
    try:
        return [float(line.split()[3]) for line in read(path).splitlines()]
    except FileNotFoundError:
        return []


def _delayed(tmp_path: str, name: str, delay: float, settings: str = "",
             wait: str = "") -> tuple[str, str, str]:
    runs, flag = os.path.join(tmp_path, "runs"), os.path.join(tmp_path, "flag")
    command = STAMPED.format(runs=runs, flag=flag, wait=wait)
    return _project(tmp_path, name, f"restart_delay = {delay}\n{settings}", command=command)


def _runs4(path: str) -> list[tuple[int, int, int]]:
    try:
        return [(int(a), int(b), int(c))
                for a, b, c, _t in (line.split() for line in read(path).splitlines())]
    except FileNotFoundError:
        return []


def _grant_path(home: str, project: str) -> str:
    return os.path.join(home, "projects", project, "run", "app.grant")


def _backoff_with_grant(env: dict[str, str], proj: str, home: str, name: str) -> None:
    """Await the wait of the backoff, its grant written. Looked at over the control socket:
    the state lasts only the backoff, which a look through the CLI (a Python start per look)
    can miss on a busy machine."""
    sock = os.path.join(home, "ctl.sock")

    def waiting() -> bool:
        tasks = call(sock, "project.status", {"project": name})["tasks"]
        return next(t for t in tasks if t["name"] == "app")["state"] == "backoff" \
            and os.path.exists(_grant_path(home, name))

    wait_until(waiting, 20, "the crash, the grant written")


def test_a_delayed_grant_waits_the_backoff_then_restarts_in_place(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    proj, runs, _ = _delayed(str(tmp_path), "delayed", 1.5)
    run_json(["start"], env, cwd=proj)
    # Reported running once recorded, before the new run's shell has written its line.
    t = wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
                   and t["restarts"] == 1 and len(_runs4(runs)) == 2 and t, 20, "the restart")
    (runner1, run1, pid1), (runner2, run2, pid2) = _runs4(runs)
    assert runner1 == runner2 and run2 == run1 + 1 and pid2 != pid1  # in place, a new pid
    assert t["pid"] == pid2
    rec = _record(home, "delayed")
    # Run 2 began on the grant, its record saying how run 1 ended: the one report.
    assert rec["run_id"] == run2 and rec["after_run"] == run1 and rec["after_code"] == 3
    assert rec["status"] == "running" and rec["relaunch"] is None
    # The wait is honoured: run 2 began no earlier than the backoff after run 1's exit.
    assert _stamps(runs)[1] - rec["after_at"] >= 1.5
    evs = _events(home, "delayed")
    kinds = [e["event"] for e in evs]
    at = kinds.index("task_exited")
    assert kinds[at:at + 3] == ["task_exited", "auto_restart", "task_started"], kinds
    restart = next(e for e in evs if e["event"] == "auto_restart")
    assert restart["details"]["delay"] >= 1.5 and restart["details"]["attempt"] == 1
    assert kinds.count("task_started") == 2
    assert not os.path.exists(_grant_path(home, "delayed"))
    assert sorted(_marked(home, "delayed")) == [pid2]


def test_a_stop_during_the_wait_takes_the_delayed_grant_back(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    proj, runs, _ = _delayed(str(tmp_path), "stopwait", 5)
    run_json(["start"], env, cwd=proj)
    _backoff_with_grant(env, proj, home, "stopwait")
    ((runner, _run, _pid),) = _runs4(runs)
    run_json(["stop"], env, cwd=proj)
    assert task(env, proj, "app")["state"] == "stopped"
    wait_until(lambda: pid_gone(runner), 20, "the waiting runner to finish")
    wait_until(lambda: not os.path.exists(_grant_path(home, "stopwait")), 10, "the revoke")
    assert len(_runs4(runs)) == 1 and _marked(home, "stopwait") == []
    assert task(env, proj, "app")["state"] == "stopped"


def test_a_delayed_grant_that_cannot_be_written_is_not_given(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # The grant's path is taken by a folder: the daemon cannot write the grant, so none is
    # given; the runner is told to hold past the restart's time for its order instead, and
    # the restart comes by that order, in place, once.
    proj, runs, _ = _delayed(str(tmp_path), "nogrant", 1)
    os.makedirs(os.path.join(home, "projects", "nogrant", "run", "app.grant"))
    run_json(["start"], env, cwd=proj)
    t = wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
                   and t["restarts"] == 1 and len(_runs4(runs)) == 2 and t, 20, "the restart")
    (runner1, run1, _pid1), (runner2, run2, pid2) = _runs4(runs)
    assert runner2 == runner1 and run2 == run1 + 1 and t["pid"] == pid2  # by order, in place
    rec = _record(home, "nogrant")
    assert rec["run_id"] == run2 and rec.get("after_run") is None  # not on a grant
    assert os.listdir(_grant_path(home, "nogrant")) == []
    wait_until(lambda: _marked(home, "nogrant") == [pid2], 10, "one copy")


def test_a_config_change_during_the_wait_takes_the_delayed_grant_back(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # The runner holds with its grant, the next run of the old command made ready (its
    # write-ahead record staged); the task's command changes: the grant is taken back, what
    # was made ready is undone, and the restart, at its time, runs the new command, once.
    # The runner is frozen across the change, so that its hold cannot end before it.
    proj, runs, _ = _delayed(str(tmp_path), "cfgwait", 4)
    run_json(["start"], env, cwd=proj)
    _backoff_with_grant(env, proj, home, "cfgwait")
    ((runner, _run, _pid),) = _runs4(runs)
    staged = os.path.join(home, "projects", "cfgwait", "run", f"app.json.{runner}.tmp")
    wait_until(lambda: os.path.exists(staged), 10, "the next run made ready during the hold")
    runs2 = os.path.join(str(tmp_path), "runs2")
    path = os.path.join(proj, "taskmux.toml")
    text = read(path)
    old = text.split("command = ", 1)[1].split("\n", 1)[0]
    new = f"""'echo "$PPID ${{TASKMUX_RUN##*:}} $$" >> {runs2}; exec sleep 600'"""
    os.kill(runner, signal.SIGSTOP)
    try:
        assert os.path.exists(_grant_path(home, "cfgwait"))  # not claimed: still holding
        with open(path + ".swp", "w") as fh:  # saved as editors do: renamed over the old
            fh.write(text.replace(old, new))
        os.replace(path + ".swp", path)
        wait_until(lambda: any(e["event"] == "config_reloaded"
                               for e in _project_events(home, "cfgwait")), 10, "the reload")
        wait_until(lambda: not os.path.exists(_grant_path(home, "cfgwait")), 10, "the revoke")
    finally:
        os.kill(runner, signal.SIGCONT)
    wait_until(lambda: not os.path.exists(staged), 20, "what was made ready, undone")
    t = wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
                   and len(_runs(runs2)) == 1 and t["pid"] == _runs(runs2)[0][2] and t, 20,
                   "the restart, with the new command")
    assert len(_runs4(runs)) == 1  # the old command never ran again
    assert t["restarts"] == 1 and _record(home, "cfgwait")["run_id"] == _runs(runs2)[0][1]
    wait_until(lambda: _marked(home, "cfgwait") == [t["pid"]], 10, "one copy")
    assert not os.path.exists(_grant_path(home, "cfgwait"))


def test_the_daemon_killed_during_the_wait_of_a_delayed_grant(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # Whichever comes first, the runner's claim or the successor's revoke, the task runs
    # again exactly once and nothing else of it lives.
    proj, runs, _ = _delayed(str(tmp_path), "dkill", 3)
    run_json(["start"], env, cwd=proj)
    _backoff_with_grant(env, proj, home, "dkill")
    pid = call(os.path.join(home, "ctl.sock"), "daemon.status")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: pid_gone(pid), 10, "the daemon to die")
    t = wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
                   and len(_runs4(runs)) == 2 and t["pid"] == _runs4(runs)[-1][2] and t,
                   30, "the restart after the daemon's death")
    assert t["restarts"] == 1
    wait_until(lambda: _marked(home, "dkill") == [t["pid"]], 10, "one copy")
    assert len(_runs4(runs)) == 2 and not os.path.exists(_grant_path(home, "dkill"))


def test_the_runner_killed_during_the_wait_of_a_delayed_grant(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # Its grant is never claimed: the daemon revokes it at its timer and launches through
    # tmux; the task runs again exactly once.
    proj, runs, _ = _delayed(str(tmp_path), "rkill", 3)
    run_json(["start"], env, cwd=proj)
    _backoff_with_grant(env, proj, home, "rkill")
    ((runner, _run, pid1),) = _runs4(runs)
    os.kill(runner, signal.SIGKILL)
    t = wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
                   and t["restarts"] == 1 and len(_runs4(runs)) == 2 and t, 30,
                   "the restart through tmux")
    (runner2, _run2, pid2) = _runs4(runs)[1]
    assert runner2 != runner and pid2 != pid1 and t["pid"] == pid2
    wait_until(lambda: _marked(home, "rkill") == [pid2], 10, "one copy")
    assert not os.path.exists(_grant_path(home, "rkill"))


def test_the_daemon_frozen_then_killed_after_a_delayed_grant_was_claimed(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # The runner claims its grant and starts run 2 while the daemon is frozen; the daemon is
    # killed. Its successor adopts run 2 from the runner's record as the restart: counted
    # once, the task running exactly once.
    proj, runs, _ = _delayed(str(tmp_path), "claimed", 1.5)
    run_json(["start"], env, cwd=proj)
    _backoff_with_grant(env, proj, home, "claimed")
    pid = call(os.path.join(home, "ctl.sock"), "daemon.status")["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: len(_runs4(runs)) == 2 and _record(home, "claimed")["status"]
                   == "running", 20, "the run granted with a delay, while the daemon is frozen")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: pid_gone(pid), 10, "the daemon to die")
    (runner1, _run1, _p1), (runner2, _run2, pid2) = _runs4(runs)
    assert runner1 == runner2
    seen: list[dict[str, Any]] = []

    def adopted() -> dict[str, Any] | None:
        t = task(env, proj, "app")
        seen.append(t)
        return t if t["state"] == "running" and t["pid"] == pid2 else None

    try:
        t = wait_until(adopted, 30, "the granted run adopted")
    except AssertionError as exc:  # (seen once in a loaded full run: say what was there)
        try:
            with open(os.path.join(home, "daemon.log"), errors="replace") as fh:
                log = fh.read()[-4000:]
        except OSError as err:
            log = f"(unreadable: {err})"
        last = {k: seen[-1].get(k) for k in ("state", "pid", "restarts", "last_exit")} \
            if seen else None
        raise AssertionError(f"{exc}; run 2's pid {pid2}; last seen {last}; starts "
                             f"{_runs4(runs)}; record {_record(home, 'claimed')}; "
                             f"daemon log:\n{log}") from None
    assert t["restarts"] == 1
    wait_until(lambda: _marked(home, "claimed") == [pid2], 10, "one copy")
    assert len(_runs4(runs)) == 2


def test_the_watchdog_of_a_run_made_ready_during_a_hold_counts_from_its_start() -> None:
    from taskmuxd.runready import RunReadiness
    from taskmuxd.runrecord import RunRecord, RunSpec

    def ready(**kw: object) -> RunReadiness:
        spec = RunSpec("p", "t", 2, "c", "/bin/sh", "/", {}, "/l", 1, 1, "/r", "/s",
                       **kw)  # type: ignore[arg-type]
        return RunReadiness(spec, RunRecord(), lambda _note: None)

    made = ready(watchdog_sec=5.0)  # made ready now; the hold lasts, then the run begins
    begun = time.monotonic() + 30.0
    made.begins(begun)
    assert made.state.deadline() == begun + 5.0
    waits = ready(watchdog_sec=5.0, ready="notify")  # counted from readiness, not the start
    waits.begins(begun)
    assert waits.state.deadline() is None


class _LateSelect:
    """select(2) on a fake clock, ending as late as Linux lets it: 0.5% of its timeout (a
    niced process's slack; 0.1% otherwise), with nothing ready."""

    def __init__(self) -> None:
        self.mono = 100.0
        self.calls = 0

    def monotonic(self) -> float:
        return self.mono

    def select(self, r: list[int], w: list[int], x: list[int],
               timeout: float) -> tuple[list[int], list[int], list[int]]:
        self.calls += 1
        self.mono += timeout * 1.005
        return [], [], []


class _Listener:
    def fileno(self) -> int:
        return 99


def test_a_long_hold_ends_on_time_not_late_by_the_selects_slack(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # One select for the whole hold would end 5 ms late on a 1 s hold (the claim waits for
    # it); in slices, only the last, under SLICE_BELOW, may be late, by its own slack.
    fake = _LateSelect()
    monkeypatch.setattr(runrelaunch, "time", fake)
    monkeypatch.setattr(runrelaunch, "select", fake)
    for hold in (0.01, 1.0, 65.0):
        start, fake.calls = fake.mono, 0
        assert runrelaunch.wait_order(_Listener(), hold, 98,  # type: ignore[arg-type]
                                      lambda: False) is None
        late = fake.mono - (start + hold)
        assert 0 <= late <= runrelaunch.SLICE_BELOW * 0.005, (hold, late)
        assert fake.calls <= 4, (hold, fake.calls)  # a few slices, never a busy loop


@pytest.mark.skipif(not os.path.exists("/proc/self/timerslack_ns"),
                    reason="needs Linux's /proc/PID/timerslack_ns")
def test_the_timer_slack_is_set_then_given_back(tmp_path: str) -> None:
    import subprocess
    import sys

    # In a child process: the slack it inherited, the hold's, and the inherited one again.
    script = ("from taskmuxd import proctree\n"
              "def now():\n    return open('/proc/self/timerslack_ns').read().strip()\n"
              "a = now(); assert proctree.timer_slack(1); b = now()\n"
              "assert proctree.timer_slack(0); print(a, b, now())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, cwd=os.path.dirname(os.path.dirname(__file__))).stdout
    inherited, held, back = out.split()
    assert held == "1" and back == inherited != "1"


@pytest.mark.skipif(not os.path.exists("/proc/self/timerslack_ns"),
                    reason="needs Linux's /proc/PID/timerslack_ns")
def test_a_run_begun_after_a_hold_has_the_usual_timer_slack(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # The runner holds with a finer timer slack; the run it then forks inherits the usual.
    slacks, flag = os.path.join(str(tmp_path), "slacks"), os.path.join(str(tmp_path), "flag")
    proj, _, _ = _project(str(tmp_path), "slack", "restart_delay = 1",
                          command=f"cat /proc/self/timerslack_ns >> {slacks}; if [ -f {flag} ]"
                                  f"; then exec sleep 600; fi; touch {flag}; exit 3")
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
               and t["restarts"] == 1 and _record(home, "slack").get("after_run"), 20,
               "the restart on the delayed grant")
    lines = wait_until(lambda: len(got := read(slacks).split()) == 2 and got, 10,
                       "run 2's line")
    assert lines[1] == lines[0] != "1", lines


def test_a_runs_exit_is_when_its_first_process_ended_not_when_its_tree_was_stopped(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    # A leftover ignores SIGINT (and the hangup of its session): the stop of the tree takes
    # the grace period (2 s) to reach SIGTERM. The exit recorded (from which a hold's wait
    # counts) is the task's own.
    d = str(tmp_path)
    proj, _, _ = _project(d, "exitat", 'restart_policy = "no"\nstop_grace_period = 2',
                          command=f'(trap "" INT HUP; touch {d}/ready; exec sleep 300) & '
                                  f"while [ ! -f {d}/ready ]; do sleep 0.01; done; "
                                  f"date +%s.%N > {d}/exit; exit 4")
    run_json(["start"], env, cwd=proj)
    rec = wait_until(lambda: (r := _record(home, "exitat"))["status"] == "exited" and r, 30,
                     "the run's end")
    exited = float(read(os.path.join(d, "exit")))
    assert rec["exit_code"] == 4 and rec["tree_clean"] is True
    log = read(os.path.join(home, "projects", "exitat", "logs", "app.log"))
    assert "sent SIGTERM" in log, log  # the leftover outlasted the grace period
    assert exited <= rec["exited_at"] < exited + 1.0, (exited, rec["exited_at"])
