"""Supervision end to end: crash handling, restarts by policy, health, events, live config."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.helpers import BIN, read, run_json, wait_until, write_config
from tests.projects import pid_alive, status, task, wait_state, write_project


def events(env: dict[str, str], cwd: str, *extra: str) -> list[dict[str, object]]:
    code, out = run_json(["events", *extra], env, cwd=cwd)
    assert code == 0, out
    return list(out["events"])


def names(evs: list[dict[str, object]]) -> list[object]:
    return [e["event"] for e in evs]


def test_a_crash_is_acted_on_at_once_by_the_runners_report(env: dict[str, str],
                                                            tmp_path: str, home: str) -> None:
    # The sweep runs once an hour here: a restart within the wait proves the runner's
    # report drove it.
    write_config(home, "health_check_interval = 3600\n")
    flag = os.path.join(str(tmp_path), "crashed-once")
    proj = write_project(str(tmp_path / "p"), f"""
        name = "crashy"
        [tasks.app]
        command = "if [ -f {flag} ]; then sleep 600; else touch {flag}; exit 3; fi"
    """)
    # The first run exits at once: `start` may see it running or already gone (then it
    # answers that the start failed); either way the restart is what is measured.
    run_json(["start"], env, cwd=proj)
    t = wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
                   and t["restarts"] == 1 and t, 10, "the restart")
    assert t["last_exit"]["code"] == 3
    evs = events(env, proj, "--task", "app")
    assert names(evs)[:1] == ["task_exited"] or "task_exited" in names(evs)
    exited = next(e for e in evs if e["event"] == "task_exited")
    assert exited["details"] == {"exit_code": 3, "signal": None}
    restart = next(e for e in evs if e["event"] == "auto_restart")
    assert restart["details"]["reason"] == "crashed" and restart["details"]["attempt"] == 1


def test_max_restarts_leaves_the_task_down_plainly(env: dict[str, str], tmp_path: str) -> None:
    # The backoff between restarts and their count are the machine's, on a fake clock
    # (tests/test_supervisor_machine.py); here, what fatal looks like with a real daemon.
    proj = write_project(str(tmp_path / "p"), """
        name = "doomed"
        [tasks.app]
        command = "exit 1"
        max_restarts = 0
    """)
    run_json(["start"], env, cwd=proj)
    t = wait_state(env, proj, "app", "fatal", 30)
    assert t["restarts"] == 0
    assert "max_restarts_reached" in names(events(env, proj))
    text = subprocess.run([f"{BIN}/taskmux", "status"], env=env, cwd=proj, text=True,
                          capture_output=True).stdout
    assert "fatal" in text and "exit 1" in text
    assert "next try in" in text  # retry_after (300 s by default): not given up silently
    # Until the user starts it again.
    assert task(env, proj, "app")["state"] == "fatal"
    code, out = run_json(["start", "app"], env, cwd=proj)
    # `exit 1` may be gone before start answers: then the results come with the error.
    results = out["results"] if code == 0 else out["data"]["results"]
    assert results[0]["task"] == "app"


def test_failing_health_restarts_the_task(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "sick"
        [tasks.app]
        command = "sleep 600"
        health_check = "test -f healthy-flag"
        health_interval = 0.2
        health_retries = 2
        health_grace = 0
        restart_backoff = 1.0
    """)
    run_json(["start"], env, cwd=proj)
    first = task(env, proj, "app")["pid"]
    wait_until(lambda: task(env, proj, "app")["restarts"] >= 1, 20, "a health restart")
    evs = events(env, proj, "--task", "app")
    failed = [e for e in evs if e["event"] == "health_check_failed"]
    assert [e["details"]["attempt"] for e in failed[:2]] == [1, 2]
    assert any(e["event"] == "auto_restart" and e["details"]["reason"] == "unhealthy"
               for e in evs)
    assert not pid_alive(first)
    code, out = run_json(["health", "-v"], env, cwd=proj)
    assert code == 0 and out["total_count"] == 1
    row = out["tasks"][0]
    assert row["method"] == "command" and "exited 1" in (row["last_failure"] or "")


def test_health_command_and_status_show_the_failure(env: dict[str, str],
                                                    tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "reporting"
        [tasks.good]
        command = "sleep 600"
        health_check = "true"
        health_interval = 0.2
        [tasks.bad]
        command = "sleep 600"
        health_check = "echo database down; exit 1"
        health_interval = 0.2
        health_retries = 1
        health_grace = 0
        restart_policy = "no"
    """)
    run_json(["start", "good"], env, cwd=proj)
    run_json(["start", "bad"], env, cwd=proj)
    wait_until(lambda: task(env, proj, "bad")["healthy"] is False
               and task(env, proj, "good")["healthy"] is True, 10, "both to be judged")
    _code, out = run_json(["health"], env, cwd=proj)
    assert (out["healthy_count"], out["total_count"]) == (1, 2)
    text = subprocess.run([f"{BIN}/taskmux", "status"], env=env, cwd=proj, text=True,
                          capture_output=True).stdout
    assert "unhealthy" in text and "database down" in text
    verbose = subprocess.run([f"{BIN}/taskmux", "health", "-v"], env=env, cwd=proj, text=True,
                             capture_output=True).stdout
    assert "command" in verbose and "database down" in verbose
    # A stopped task is not judged: no stale "healthy" once its process is gone.
    assert run_json(["stop", "good"], env, cwd=proj)[0] == 0
    assert task(env, proj, "good")["healthy"] is None
    assert run_json(["health"], env, cwd=proj)[1]["healthy_count"] == 0


def test_hanging_probe_does_not_delay_other_tasks(env: dict[str, str], tmp_path: str) -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    try:
        proj = write_project(str(tmp_path / "p"), f"""
            name = "hangs"
            [tasks.stuck]
            command = "sleep 600"
            health_url = "http://127.0.0.1:{port}/"
            health_timeout = 30
            health_interval = 0.2
            restart_policy = "no"
            [tasks.quick]
            command = "sleep 600"
            health_check = "true"
            health_interval = 0.2
        """)
        run_json(["start", "stuck"], env, cwd=proj)
        run_json(["start", "quick"], env, cwd=proj)
        wait_until(lambda: task(env, proj, "quick")["healthy"] is True, 10, "quick to be healthy")
        assert task(env, proj, "stuck")["healthy"] is None  # its probe is still waiting
    finally:
        silent.close()


def test_manual_stop_beats_always(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "always"
        [tasks.app]
        command = "sleep 600"
        restart_policy = "always"
    """)
    run_json(["start"], env, cwd=proj)
    run_json(["stop", "app"], env, cwd=proj)
    assert task(env, proj, "app")["state"] == "stopped"
    evs = names(events(env, proj, "--task", "app"))
    assert "auto_restart" not in evs and "task_stopped" in evs


def test_events_are_filtered(env: dict[str, str], tmp_path: str) -> None:
    a = write_project(str(tmp_path / "a"), """
        name = "ev-a"
        [tasks.one]
        command = "sleep 600"
        [tasks.two]
        command = "sleep 600"
    """)
    b = write_project(str(tmp_path / "b"), """
        name = "ev-b"
        [tasks.three]
        command = "sleep 600"
    """)
    run_json(["start"], env, cwd=a)
    run_json(["start"], env, cwd=b)
    mine = events(env, a)
    assert {e["project"] for e in mine} == {"ev-a"}
    assert {"session_started", "task_started"} <= set(names(mine))
    only = events(env, a, "--task", "two")
    assert only and {e["task"] for e in only} == {"two"}
    both = events(env, a, "--all-projects")
    assert {"ev-a", "ev-b"} <= {e["project"] for e in both}
    assert len(events(env, a, "-n", "2")) == 2
    assert events(env, a, "--since", "1h") == mine
    assert events(env, a, "--since", "2099-01-01T00:00") == []
    code, out = run_json(["events", "--since", "yesterday-ish"], env, cwd=a)
    assert code == 2 or (code == 1 and "30s, 5m" in out["error"])
    for e in mine:
        assert e["time"].endswith("Z") and "T" in e["time"]


def test_invalid_edit_keeps_the_old_config_running(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "live"
        [tasks.web]
        command = "sleep 600"
        [tasks.api]
        command = "sleep 601"
    """)
    run_json(["start"], env, cwd=proj)
    before = {t["name"]: t["pid"] for t in status(env, proj)["tasks"]}
    path = os.path.join(proj, "taskmux.toml")
    with open(path, "a") as fh:
        fh.write("[tasks.broken]\nrestart_policy = 7\n")
    wait_until(lambda: "config_invalid" in names(events(env, proj)), 10, "config_invalid")
    out = status(env, proj)
    assert out["state"] == "error" and "broken" in out["config_error"]
    assert {t["name"]: t["pid"] for t in out["tasks"]} == before
    text = subprocess.run([f"{BIN}/taskmux", "status"], env=env, cwd=proj, text=True,
                          capture_output=True).stdout
    assert "!" in text and "restart_policy" in text


def test_an_edit_restarts_only_the_task_it_touches(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "diff"
        [tasks.web]
        command = "sleep 600"
        [tasks.api]
        command = "sleep 601"
        [tasks.old]
        command = "sleep 602"
    """)
    run_json(["start"], env, cwd=proj)
    before = {t["name"]: t["pid"] for t in status(env, proj)["tasks"]}
    path = os.path.join(proj, "taskmux.toml")
    tmp = path + ".swp"
    with open(tmp, "w") as fh:  # saved the way editors do: a new file renamed over the old
        fh.write('name = "diff"\n[tasks.web]\ncommand = "sleep 600"\n'
                 '[tasks.api]\ncommand = "sleep 603"\n[tasks.new]\ncommand = "sleep 604"\n')
    os.replace(tmp, path)
    wait_until(lambda: "config_reloaded" in names(events(env, proj)), 10, "the reload")
    reload_event = [e for e in events(env, proj) if e["event"] == "config_reloaded"][-1]
    assert reload_event["details"] == {"added": ["new"], "removed": ["old"],
                                       "changed": ["api"]}

    def applied() -> dict[str, dict[str, object]] | None:  # the new task and api's new run up
        tasks = {t["name"]: t for t in status(env, proj)["tasks"]}
        done = all(n in tasks and tasks[n]["state"] == "running" for n in ("new", "api")) \
            and tasks["api"]["pid"] != before["api"] and "old" not in tasks
        return tasks if done else None

    after = wait_until(applied, 10, "the edit applied")
    assert after["web"]["pid"] == before["web"]
    assert after["api"]["pid"] != before["api"] and after["api"]["state"] == "running"
    assert after["new"]["state"] == "running"
    assert "old" not in after and not pid_alive(before["old"])


@pytest.mark.parametrize("frozen", [False, True], ids=["live", "frozen-before-its-stream"])
def test_start_monitor_streams_events(env: dict[str, str], tmp_path: str, frozen: bool) -> None:
    """``start -m`` prints the start, then the crash and the restart that follow. Frozen: the
    monitor is stopped right after printing the start's result, before it may have opened its
    event stream, while the task crashes and is restarted; once it runs on it still shows both
    events (where its stream begins is read before the result is printed)."""
    from taskmuxctl.core.paths import Paths

    proj = write_project(str(tmp_path / "p"), """
        name = "monitor"
        [tasks.app]
        command = "sleep 600"
    """)
    proc = subprocess.Popen([f"{BIN}/taskmux", "start", "-m"], env=env, cwd=proj,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "app: started" in proc.stdout.readline()
        if frozen:
            proc.send_signal(signal.SIGSTOP)
        pid = task(env, proj, "app")["pid"]
        os.kill(pid, signal.SIGKILL)
        if frozen:
            events = Paths(env["TASKMUX_HOME"]).events
            wait_until(lambda: os.path.exists(events) and "auto_restart" in read(events), 30,
                       "the restart in the event history")
            proc.send_signal(signal.SIGCONT)
        seen: list[str] = []
        while not any("auto_restart" in line for line in seen):
            seen.append(proc.stdout.readline())
        assert any("task_exited" in line and "signal=9" in line for line in seen)
    finally:
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0


def test_logs_interleave_across_rotation_and_work_without_the_daemon(
        env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "inter"
        [tasks.a]
        command = "for i in $(seq 1 60); do echo a-$i; sleep 0.01; done; sleep 600"
        log_max_size = "1KB"
        log_max_files = 5
        [tasks.b]
        command = "for i in $(seq 1 60); do echo b-$i; sleep 0.01; done; sleep 600"
        log_max_size = "1KB"
        log_max_files = 5
    """)
    run_json(["start"], env, cwd=proj)
    home = env["TASKMUX_HOME"]
    wait_until(lambda: "a-60" in read(os.path.join(home, "projects/inter/logs/a.log"))
               and "b-60" in read(os.path.join(home, "projects/inter/logs/b.log")), 15)
    assert os.path.exists(os.path.join(home, "projects/inter/logs/a.log.1"))
    run_json(["daemon", "stop"], env)
    code, out = run_json(["logs", "-n", "1000"], env, cwd=proj)
    assert code == 0
    lines = [x for x in out["lines"] if "[taskmux]" not in x]
    stamps = [x.split(" | ", 1)[1].split(" ", 1)[0] for x in lines]
    assert stamps == sorted(stamps)
    for who in ("a", "b"):
        got = [x.rsplit(" ", 1)[1] for x in lines if x.startswith(f"{who} | ")]
        assert got == [f"{who}-{i}" for i in range(1, 61)]
    code, out = run_json(["logs", "a", "-g", "a-3[0-2]$", "-C", "1"], env, cwd=proj)
    assert [x.rsplit(" ", 1)[1] for x in out["lines"]] == [f"a-{i}" for i in range(29, 34)]
    assert out["task"] == "a"
    code, out = run_json(["logs", "b", "-n", "3"], env, cwd=proj)
    assert [x.rsplit(" ", 1)[1] for x in out["lines"]][-1] == "b-60"
    code, out = run_json(["logs", "--since", "2099-01-01"], env, cwd=proj)
    assert out["lines"] == []


def test_logs_follow_through_rotation(env: dict[str, str], tmp_path: str) -> None:
    gate = os.path.join(str(tmp_path), "go")
    proj = write_project(str(tmp_path / "p"), f"""
        name = "follow"
        [tasks.w]
        command = '''while [ ! -f {gate} ]; do echo tick; sleep 0.05; done
          for i in $(seq 1 80); do echo line-$i; done; sleep 600'''
        log_max_size = "1KB"
        log_max_files = 10
    """)
    run_json(["start"], env, cwd=proj)
    proc = subprocess.Popen([f"{BIN}/taskmux", "logs", "w", "-f", "-n", "0"], env=env, cwd=proj,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        while "tick" not in proc.stdout.readline():  # the follower is following
            pass
        open(gate, "w").close()
        got: list[str] = []
        while len(got) < 80:
            line = proc.stdout.readline()
            if "line-" in line:
                got.append(line.rsplit(" ", 1)[1].strip())
        assert got == [f"line-{i}" for i in range(1, 81)]
        assert os.path.exists(os.path.join(env["TASKMUX_HOME"], "projects/follow/logs/w.log.2"))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_logs_clean(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "cleanme"
        [tasks.w]
        command = "echo hello; sleep 600"
    """)
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: any("hello" in x for x in run_json(["logs", "w"], env, cwd=proj)[1]
                           ["lines"]), 10)
    code, out = run_json(["logs-clean", "w"], env, cwd=proj)
    assert code == 0 and out["files"]
    assert run_json(["logs", "w"], env, cwd=proj)[1]["lines"] == []
