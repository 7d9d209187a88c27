"""Warm runners: a stopped task's runner stays in its window, idle, and the next start is an
order to it (same runner, new run id, new task process); it ends when its wait is over, when
its project is unregistered, when the task's config changes, and when an order cannot be
used; a daemon killed while it waits is succeeded by one that adopts it, and the task runs
exactly once. Real tmux, real daemon."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading

from taskmuxd import runrecord, runwarm
from taskmuxd.runrecord import RunSpec
from tests.helpers import call, pid_gone, read, run_json, wait_until, write_config
from tests.projects import task, tmux, wait_state, write_project

COMMAND = 'echo "$PPID ${{TASKMUX_RUN##*:}} $$" >> {runs}; exec sleep 600'


def _project(tmp_path: str, name: str) -> tuple[str, str]:
    runs = os.path.join(tmp_path, "runs")
    proj = write_project(os.path.join(tmp_path, "p"), f"""
        name = "{name}"
        [tasks.app]
        command = '{COMMAND.format(runs=runs)}'
        stop_grace_period = 2
    """)
    return proj, runs


def _runs(path: str) -> list[tuple[int, int, int]]:
    """(runner pid, run id, task pid) per start of the task, as it wrote them."""
    try:
        text = read(path)
    except FileNotFoundError:
        return []
    return [(int(a), int(b), int(c)) for a, b, c in (x.split() for x in text.splitlines())]


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                kids += [int(x) for x in fh.read().split()]
    except OSError:
        pass
    return kids


def _runners_of(home: str, project: str) -> list[int]:
    """Live runners with a spec of ``project`` (the tmux server's command line names one too)."""
    needle = os.path.join(home, "projects", project, "run").encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or pid_gone(int(entry)):
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read()
        except OSError:
            continue
        args = cmd.split(b"\0")
        if b"tmux" not in args[0] and b"runner_main.py" in cmd and needle in cmd:
            found.append(int(entry))
    return found


def _pane(tmux_socket: str, window: str) -> str:
    return tmux(tmux_socket, "capture-pane", "-p", "-t", window)


def _stopped_warm(env: dict[str, str], proj: str, tmux_socket: str) -> dict[str, object]:
    """Stop the task; return its status once its runner says in the pane that it waits."""
    window = task(env, proj, "app")["window"]
    code, out = run_json(["stop"], env, cwd=proj)
    assert code == 0, out
    wait_until(lambda: "idle runner" in _pane(tmux_socket, window), 15, "the warm notice")
    return task(env, proj, "app")


def test_stop_then_start_reuses_the_runner(env: dict[str, str], tmp_path: str,
                                           tmux_socket: str) -> None:
    proj, runs = _project(str(tmp_path), "warm")
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    ((runner, run1, pid1),) = wait_until(lambda: _runs(runs), 10, "the first run")
    stopped = _stopped_warm(env, proj, tmux_socket)
    assert stopped["state"] == "stopped" and stopped["pid"] is None
    # Stopped means stopped: the task's process is gone, the runner has no child.
    wait_until(lambda: pid_gone(pid1), 10, "the task's process to end")
    assert not pid_gone(runner), "the runner did not stay warm"
    assert _children(runner) == []
    pane = _pane(tmux_socket, str(stopped["window"]))
    assert "no task process runs" in pane and "taskmux start app" in pane
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    wait_state(env, proj, "app", "running")
    (_, (runner2, run2, pid2)) = wait_until(lambda: len(_runs(runs)) == 2 and _runs(runs), 10,
                                            "the second run")
    assert runner2 == runner, "the start did not go to the warm runner"
    assert run2 > run1 and pid2 != pid1
    assert task(env, proj, "app")["pid"] == pid2
    assert _children(runner) == [pid2]
    # The order carried the new run's spec: no spec file was written for it.
    spec = os.path.join(env["TASKMUX_HOME"], "projects", "warm", "run", "app.spec.json")
    assert runrecord.read_spec(spec).run_id == run1


def test_a_warm_runner_ends_when_its_wait_is_over(env: dict[str, str], home: str,
                                                  tmp_path: str, tmux_socket: str) -> None:
    write_config(home, "warm_runner_seconds = 1.5")
    proj, runs = _project(str(tmp_path), "expiry")
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    ((runner, _run, _pid),) = wait_until(lambda: _runs(runs), 10, "the first run")
    _stopped_warm(env, proj, tmux_socket)
    wait_until(lambda: pid_gone(runner), 15, "the warm runner to end by itself")
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    runners = [r for r, _run, _pid in wait_until(lambda: len(_runs(runs)) == 2 and _runs(runs),
                                                  10, "the second run")]
    assert runners[1] != runner  # a new runner, through tmux


def test_unregistering_the_project_ends_its_warm_runners(
        env: dict[str, str], home: str, tmp_path: str, tmux_socket: str) -> None:
    proj, runs = _project(str(tmp_path), "gone")
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    ((runner, _run, _pid),) = wait_until(lambda: _runs(runs), 10, "the first run")
    _stopped_warm(env, proj, tmux_socket)
    code, out = run_json(["daemon", "unregister", "gone"], env)
    assert code == 0, out
    wait_until(lambda: pid_gone(runner), 10, "the warm runner to end")
    assert _runners_of(home, "gone") == []


def test_kill_of_a_stopped_task_ends_its_warm_runner(env: dict[str, str], home: str,
                                                     tmp_path: str, tmux_socket: str) -> None:
    proj, runs = _project(str(tmp_path), "killed")
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    ((runner, _run, _pid),) = wait_until(lambda: _runs(runs), 10, "the first run")
    _stopped_warm(env, proj, tmux_socket)
    code, out = run_json(["kill", "app"], env, cwd=proj)
    assert code == 0, out
    wait_until(lambda: pid_gone(runner), 10, "the warm runner to end")
    assert _runners_of(home, "killed") == []


def test_a_config_change_ends_the_warm_runner(env: dict[str, str], tmp_path: str,
                                              tmux_socket: str) -> None:
    proj, runs = _project(str(tmp_path), "changed")
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    ((runner, _run, _pid),) = wait_until(lambda: _runs(runs), 10, "the first run")
    _stopped_warm(env, proj, tmux_socket)
    path = os.path.join(proj, "taskmux.toml")
    with open(path) as fh:
        text = fh.read()
    with open(path, "w") as fh:
        fh.write(text.replace("stop_grace_period = 2", "stop_grace_period = 3"))
    code, out = run_json(["start"], env, cwd=proj)  # the start reloads the changed file
    assert code == 0, out
    wait_state(env, proj, "app", "running")
    runners = [r for r, _run, _pid in wait_until(lambda: len(_runs(runs)) == 2 and _runs(runs),
                                                  10, "the second run")]
    assert runners[1] != runner
    wait_until(lambda: pid_gone(runner), 10, "the old warm runner to end")


def _warm_for(env: dict[str, str], proj: str) -> float | None:
    """The seconds the daemon says the task's idle runner still waits (None: none waits)."""
    got = task(env, proj, "app")["warm_runner_for"]
    assert got is None or isinstance(got, int | float)
    return got


def test_lowering_the_setting_to_0_ends_the_runners_already_warm(
        env: dict[str, str], home: str, tmp_path: str, tmux_socket: str) -> None:
    proj, runs = _project(str(tmp_path), "lowered")
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    ((runner, _run, _pid),) = wait_until(lambda: _runs(runs), 10, "the first run")
    _stopped_warm(env, proj, tmux_socket)
    left = _warm_for(env, proj)
    assert left is not None and 0 < left <= 600
    code, out = run_json(["config", "set", "warm_runner_seconds", "0"], env)
    assert code == 0 and out["daemon_reloaded"] is True, out
    wait_until(lambda: pid_gone(runner), 10, "the warm runner to end")
    assert _warm_for(env, proj) is None
    assert _runners_of(home, "lowered") == []
    assert task(env, proj, "app")["state"] == "stopped"


def test_a_lowered_setting_shortens_the_wait_of_a_warm_runner_and_ends_it_then(
        env: dict[str, str], home: str, tmp_path: str, tmux_socket: str) -> None:
    proj, runs = _project(str(tmp_path), "shortened")
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    ((runner, _run, _pid),) = wait_until(lambda: _runs(runs), 10, "the first run")
    _stopped_warm(env, proj, tmux_socket)
    before = _warm_for(env, proj)
    assert before is not None and before > 300
    code, out = run_json(["config", "set", "warm_runner_seconds", "300"], env)
    assert code == 0 and out["daemon_reloaded"] is True, out
    after = _warm_for(env, proj)
    assert after is not None and 0 < after <= 300 < before
    assert not pid_gone(runner), "a wait with time left was ended"
    # Raising the setting does not lengthen a wait already given.
    assert run_json(["config", "set", "warm_runner_seconds", "900"], env)[0] == 0
    again = _warm_for(env, proj)
    assert again is not None and again <= after
    # Lowered to 2 s: the daemon ends the runner at its new deadline (or at once, when 2 s
    # from its stop are already over); its own deadline, given with its order, was 600 s.
    assert run_json(["config", "set", "warm_runner_seconds", "2"], env)[0] == 0
    left = _warm_for(env, proj)
    assert left is None or left <= 2
    wait_until(lambda: pid_gone(runner), 15, "the warm runner to end by its new deadline")
    assert _warm_for(env, proj) is None
    assert _runners_of(home, "shortened") == []
    # The next start launches a fresh runner through tmux; the task runs once.
    assert run_json(["start"], env, cwd=proj)[0] == 0
    wait_state(env, proj, "app", "running")
    got = wait_until(lambda: len(_runs(runs)) == 2 and _runs(runs), 10, "the second run")
    assert got[1][0] != runner


def _kill_daemon(sock: str) -> None:
    """SIGKILL the daemon answering on ``sock`` and await its end (the next command starts
    a new one)."""
    daemon = call(sock, "daemon.status")["pid"]
    os.kill(daemon, signal.SIGKILL)
    wait_until(lambda: pid_gone(daemon), 10, "the daemon to die")


def test_a_daemon_killed_before_it_applied_a_lowered_setting_leaves_no_runner_waiting_longer(
        env: dict[str, str], home: str, tmp_path: str, tmux_socket: str) -> None:
    # The setting reaches config.toml but the daemon dies before it ends the runner (here: it
    # never reloads). The next daemon counts the wait from the run's exit with the setting it
    # reads, and ends the runner by that deadline instead of adopting it for a new wait.
    proj, runs = _project(str(tmp_path), "killedlow")
    sock = os.path.join(home, "ctl.sock")
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    ((runner, _run, _pid),) = wait_until(lambda: _runs(runs), 10, "the first run")
    _stopped_warm(env, proj, tmux_socket)
    write_config(home, "warm_runner_seconds = 1")
    _kill_daemon(sock)
    assert task(env, proj, "app")["state"] == "stopped"  # a new daemon
    wait_until(lambda: pid_gone(runner), 15, "the warm runner to end by its deadline")
    assert _warm_for(env, proj) is None
    assert _runners_of(home, "killedlow") == []


def test_a_daemon_killed_while_runners_wait_warm_is_succeeded_by_one_that_adopts_them(
        env: dict[str, str], home: str, tmp_path: str, tmux_socket: str) -> None:
    proj, runs = _project(str(tmp_path), "adopt")
    sock = os.path.join(home, "ctl.sock")
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    ((runner, _run, _pid),) = wait_until(lambda: _runs(runs), 10, "the first run")
    _stopped_warm(env, proj, tmux_socket)
    _kill_daemon(sock)
    assert task(env, proj, "app")["state"] == "stopped"  # a new daemon, the task still down
    assert not pid_gone(runner)
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    got = wait_until(lambda: len(_runs(runs)) == 2 and _runs(runs), 10, "the second run")
    assert got[1][0] == runner, "the new daemon did not adopt the warm runner"
    assert _runners_of(home, "adopt") == [runner], "two runners for one task"
    assert len(_runs(runs)) == 2, "the task started twice"
    assert _children(runner) == [got[1][2]]


def test_a_refused_order_falls_back_to_a_launch_through_tmux(
        env: dict[str, str], home: str, tmp_path: str, tmux_socket: str) -> None:
    # Something else answers at the runner's order socket and refuses: the daemon launches
    # through tmux, which ends the warm runner (respawn-pane -k); the task runs once.
    proj, runs = _project(str(tmp_path), "refused")
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    ((runner, _run, _pid),) = wait_until(lambda: _runs(runs), 10, "the first run")
    _stopped_warm(env, proj, tmux_socket)
    path = os.path.join(home, "projects", "refused", "run", "app.relaunch")
    os.unlink(path)
    orders: list[bytes] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(path)
        srv.listen(1)
        srv.settimeout(20)

        def refuse() -> None:
            conn, _ = srv.accept()
            with conn:
                orders.append(conn.recv(4096))
                conn.sendall(b"no\n")

        t = threading.Thread(target=refuse)
        t.start()
        code, out = run_json(["start"], env, cwd=proj)
        t.join(20)
    assert code == 0, out
    assert orders and json.loads(orders[0])["run"] == 2
    wait_state(env, proj, "app", "running")
    got = wait_until(lambda: len(_runs(runs)) == 2 and _runs(runs), 10, "the second run")
    assert got[1][0] != runner
    wait_until(lambda: pid_gone(runner), 10, "the refused runner's pane to be respawned")
    assert _runners_of(home, "refused") == [got[1][0]]


def _spec(**kw: object) -> RunSpec:
    base: dict[str, object] = dict(project="p", task="t", run_id=1, command="true",
                                   shell="/bin/sh", cwd="/", env={}, log="/l", log_max_size=1,
                                   log_max_files=1, record="/r", socket="/s",
                                   relaunch_socket="/o")
    base.update(kw)
    return RunSpec(**base)  # type: ignore[arg-type]


def test_warm_orders_are_bounded_and_a_fresh_runner_is_asked_for_when_needed() -> None:
    assert runwarm.warm_seconds({"warm": 10}) == 10.0
    assert runwarm.warm_seconds({"warm": 1e12}) == runwarm.WARM_LIMIT
    assert runwarm.warm_seconds({"warm": -5}) == 0.0
    assert runwarm.warm_seconds({"warm": True}) is None
    assert runwarm.warm_seconds({"run": 2}) is None
    assert runwarm.same_runner(_spec(), _spec(run_id=2, command="other", env={"A": "1"}))
    assert not runwarm.same_runner(_spec(), _spec(cgroup="/sys/fs/cgroup/x"))
    assert not runwarm.same_runner(_spec(), _spec(socket="/elsewhere"))
    assert not runwarm.same_runner(_spec(), _spec(relaunch_socket=None))


def test_a_lost_order_to_a_warm_runner_costs_time_never_a_second_copy(
        env: dict[str, str], home: str, tmp_path: str, tmux_socket: str) -> None:
    # The order is taken at the runner's socket but never answered (tmux continues a pane's
    # stopped process at once, so a frozen runner cannot stand in for this): the daemon ends
    # what the order may have started (the task's marked processes, the warm runner among
    # them) and launches through tmux; the task runs once, in one runner.
    proj, runs = _project(str(tmp_path), "lost")
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    ((runner, _run, _pid),) = wait_until(lambda: _runs(runs), 10, "the first run")
    _stopped_warm(env, proj, tmux_socket)
    path = os.path.join(home, "projects", "lost", "run", "app.relaunch")
    os.unlink(path)
    held = threading.Event()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(path)
        srv.listen(1)
        srv.settimeout(20)

        def hold() -> None:
            conn, _ = srv.accept()
            with conn:
                held.wait(20)  # never answers

        t = threading.Thread(target=hold)
        t.start()
        try:
            code, out = run_json(["start"], env, cwd=proj)
        finally:
            held.set()
            t.join(20)
    assert code == 0, out
    wait_state(env, proj, "app", "running")
    got = wait_until(lambda: len(_runs(runs)) == 2 and _runs(runs), 20, "the second run")
    assert got[1][0] != runner
    wait_until(lambda: pid_gone(runner), 20, "the warm runner to be ended")
    assert _runners_of(home, "lost") == [got[1][0]]
    assert len(_runs(runs)) == 2


def test_keys_typed_while_warm_are_not_the_next_runs_input(
        env: dict[str, str], tmp_path: str, tmux_socket: str) -> None:
    """A stopped task's pane takes keys while its runner waits warm; the next run reads only
    what is typed once it runs (a pane respawned by tmux would hold nothing either)."""
    got = os.path.join(str(tmp_path), "got")
    runs = os.path.join(str(tmp_path), "runs")
    reads = f'read line; echo "$line" > {got}.new; mv {got}.new {got}'
    command = COMMAND.format(runs=runs).replace("exec sleep 600", f"{reads}; exec sleep 600")
    proj = write_project(os.path.join(str(tmp_path), "p"), f"""
        name = "typed"
        [tasks.app]
        command = '{command}'
        stop_grace_period = 2
    """)
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    wait_until(lambda: _runs(runs), 10, "the first run")
    window = str(task(env, proj, "app")["window"])
    tmux(tmux_socket, "send-keys", "-t", window, "first", "Enter")
    wait_until(lambda: os.path.exists(got), 10, "the first run's line")
    assert read(got).strip() == "first"
    os.unlink(got)
    _stopped_warm(env, proj, tmux_socket)
    tmux(tmux_socket, "send-keys", "-t", window, "stale", "Enter")
    assert run_json(["start"], env, cwd=proj)[0] == 0
    (_, (runner2, _, _)) = wait_until(lambda: len(_runs(runs)) == 2 and _runs(runs), 10,
                                      "the second run")
    assert runner2 == _runs(runs)[0][0], "the start did not go to the warm runner"
    tmux(tmux_socket, "send-keys", "-t", window, "fresh", "Enter")
    wait_until(lambda: os.path.exists(got), 10, "the second run's line")
    assert read(got).strip() == "fresh"


# -- the orders to stay warm go once the stop has answered (``warmrunner.after_answer``) -------


def _deferral(monkeypatch: object, started_meanwhile: bool = False, limit: float | None = None
              ) -> list[tuple[str, str]]:
    import asyncio
    from types import SimpleNamespace

    import pytest

    from taskmuxd.projects import taskstart, warmrunner

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    steps: list[tuple[str, str]] = []

    async def order(path: str, what: object) -> bool:
        steps.append(("order", path))
        return True

    monkeypatch.setattr(taskstart, "_order", order)
    if limit is not None:
        monkeypatch.setattr(warmrunner, "DEFER_LIMIT", limit)

    async def main() -> None:
        project = SimpleNamespace(name="p")
        task = SimpleNamespace(warm_until=1e12, warm_since=1.0, waiting_runner="/r")
        with warmrunner.after_answer(project):  # type: ignore[arg-type]
            job = asyncio.ensure_future(warmrunner._warm(
                project, task, "/r", 600.0, 1.0))  # type: ignore[arg-type]
            if limit is not None:
                await asyncio.wait_for(asyncio.shield(job), 5)
            for _ in range(20):  # the stop goes on for a while
                await asyncio.sleep(0)
            if started_meanwhile:
                task.warm_until = None  # a start took the runner
            steps.append(("answered", ""))
        await asyncio.wait_for(job, 5)

    asyncio.run(main())
    return steps


def test_a_stop_sends_its_orders_to_stay_warm_once_it_has_answered(monkeypatch: object) -> None:
    assert _deferral(monkeypatch) == [("answered", ""), ("order", "/r")]


def test_no_order_to_stay_warm_goes_to_a_runner_a_start_took_meanwhile(
        monkeypatch: object) -> None:
    assert _deferral(monkeypatch, started_meanwhile=True) == [("answered", "")]


def test_an_order_to_stay_warm_waits_for_a_long_stop_only_so_long(monkeypatch: object) -> None:
    assert _deferral(monkeypatch, limit=0.01) == [("order", "/r"), ("answered", "")]


# -- a lowered setting and the waits already given (``warmrunner.setting_lowered``) -----------


def test_a_lowered_setting_cuts_each_wait_from_its_start_and_never_lengthens_one() -> None:
    import asyncio
    import time
    from types import SimpleNamespace

    from taskmuxd.projects import warmrunner

    def warm(since: float, until: float | None) -> SimpleNamespace:
        # No runner identity recorded: ``end_runner`` signals nothing.
        record = SimpleNamespace(runner_id=lambda: None)
        return SimpleNamespace(warm_since=since, warm_until=until, waiting_runner="/r",
                               record=record)

    async def main() -> None:
        now = time.monotonic()
        fresh = warm(now - 1, now + 599)  # 1 s into a 600 s wait
        old = warm(now - 500, now + 100)  # 500 s into it
        cold = warm(now - 1, None)  # no runner waits
        tasks = [fresh, old, cold]
        warmrunner.setting_lowered(tasks, 900)  # raised: nothing changes
        assert (fresh.warm_until, old.warm_until) == (now + 599, now + 100)
        warmrunner.setting_lowered(tasks, 300)
        assert fresh.warm_until == now - 1 + 300 and fresh.waiting_runner == "/r"
        assert old.warm_until is None and old.waiting_runner is None  # 500 s > 300 s: over
        assert cold.warm_until is None and cold.waiting_runner == "/r"
        warmrunner.setting_lowered(tasks, 350)  # between: the shorter deadline stays
        assert fresh.warm_until == now - 1 + 300
        warmrunner.setting_lowered(tasks, 0)
        assert fresh.warm_until is None and fresh.waiting_runner is None

    asyncio.run(main())
