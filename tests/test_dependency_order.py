"""One dependency order for start, stop (backward) and restore, end to end with a real daemon."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from taskmuxctl.core.projectconfig import ConfigError, parse
from tests.helpers import read, run_cli, run_json, wait_until
from tests.projects import status, task, tmux, wait_state, write_project

# A task that notes when it is asked to stop and when it has finished stopping; ``linger``
# seconds between the two show whether the next level waited for it.
STOPPER = """
import signal, sys, time
name, out, linger = sys.argv[1], sys.argv[2], float(sys.argv[3])
def note(what):
    with open(out, "a") as fh:
        fh.write(f"{name}:{what}\\n")
def bye(*_):
    note("asked")
    time.sleep(linger)
    note("gone")
    sys.exit(0)
signal.signal(signal.SIGINT, bye)
signal.signal(signal.SIGTERM, bye)
open(f"{out}.{name}.armed", "w").close()  # its handlers are set: a stop now is noted
while True:
    time.sleep(1)
"""


def test_stop_goes_backward_through_the_dependency_levels(env: dict[str, str],
                                                           tmp_path: str) -> None:
    folder = str(tmp_path / "p")
    os.makedirs(folder)
    script = os.path.join(folder, "stopper.py")
    with open(script, "w") as fh:
        fh.write(STOPPER)
    out = os.path.join(folder, "order.txt")

    def cmd(name: str, linger: float) -> str:
        return f"exec {sys.executable} {script} {name} {out} {linger}"

    proj = write_project(folder, f"""
        name = "backward"
        [tasks.db]
        command = "{cmd('db', 0)}"
        [tasks.api]
        command = "{cmd('api', 0.4)}"
        depends_on = ["db"]
        [tasks.web]
        command = "{cmd('web', 0.4)}"
        depends_on = ["api"]
        [tasks.worker]
        command = "{cmd('worker', 0.4)}"
        depends_on = ["api"]
    """)
    started = run_json(["start"], env, cwd=proj)
    assert started[0] == 0, started
    # Running is reported before Python has set its handlers: await them.
    wait_until(lambda: all(os.path.exists(f"{out}.{n}.armed")
                           for n in ("db", "api", "web", "worker")), what="the handlers")
    code, res = run_json(["stop"], env, cwd=proj)
    assert code == 0, res
    assert {r["task"]: r["action"] for r in res["results"]} == {
        "api": "stopped", "db": "stopped", "web": "stopped", "worker": "stopped"}
    lines = read(out).split()
    # web and worker (one level) in either order, both gone before api is asked, api gone
    # before db is asked.
    assert sorted(lines[:4]) == ["web:asked", "web:gone", "worker:asked", "worker:gone"]
    assert lines[4:] == ["api:asked", "api:gone", "db:asked", "db:gone"]


def test_restore_after_kill_server_waits_for_dependencies(env: dict[str, str], tmp_path: str,
                                                         tmux_socket: str) -> None:
    folder = str(tmp_path / "p")
    ready = os.path.join(folder, "db.ready")
    seen = os.path.join(folder, "api.saw")
    look = f"if [ -f {ready} ]; then echo ready >> {seen}; else echo early >> {seen}; fi"
    proj = write_project(folder, f"""
        name = "reborn"
        [tasks.db]
        command = "rm -f {ready}; sleep 0.5; touch {ready}; exec sleep 600"
        health_check = "test -f {ready}"
        health_interval = 0.2
        [tasks.api]
        command = "sleep 0.3; {look}; exec sleep 600"
        depends_on = ["db"]
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    # ">>" creates the file before echo writes to it: await the whole line.
    wait_until(lambda: os.path.exists(seen) and read(seen).endswith("\n"), 10, "api to look")
    assert read(seen).split() == ["ready"]
    old = {t["name"]: t["pid"] for t in status(env, proj)["tasks"]}
    os.unlink(ready)  # only db's next run makes it again (a first probe cannot see a stale one)
    tmux(tmux_socket, "kill-server")
    wait_until(lambda: all(
        task(env, proj, n)["state"] == "running" and task(env, proj, n)["pid"] != old[n]
        for n in ("db", "api")), 30, "the project to come back")
    wait_until(lambda: len(read(seen).split()) == 2, 10, "api to look again")
    assert read(seen).split() == ["ready", "ready"]  # it came back after db was healthy


def test_every_start_is_an_event_with_pid_and_attempt(env: dict[str, str],
                                                      tmp_path: str) -> None:
    flag = os.path.join(str(tmp_path), "crashed-once")
    proj = write_project(str(tmp_path / "p"), f"""
        name = "comeback"
        [tasks.app]
        command = "if [ -f {flag} ]; then exec sleep 600; else touch {flag}; exit 3; fi"
        restart_backoff = 1.0
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    t = wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
                   and t["restarts"] == 1 and t, 15, "the automatic restart")

    def starts() -> list[dict[str, object]]:
        code, out = run_json(["events", "--task", "app"], env, cwd=proj)
        assert code == 0, out
        return [e for e in out["events"] if e["event"] == "task_started"]

    evs = wait_until(lambda: len(s := starts()) == 2 and s, 10, "two task_started events")
    details = [e["details"] for e in evs]
    assert [d["attempt"] for d in details] == [0, 1]
    assert details[1]["pid"] == t["pid"] and details[0]["pid"] != t["pid"]
    wait_state(env, proj, "app", "running")


def events_of(env: dict[str, str], cwd: str, name: str) -> list[str]:
    code, out = run_json(["events", "--task", name], env, cwd=cwd)
    assert code == 0, out
    return [str(e["event"]) for e in out["events"]]


def test_a_fatal_task_is_tried_again_after_retry_after(env: dict[str, str],
                                                       tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "stubborn"
        [tasks.app]
        command = "exit 1"
        max_restarts = 0
        retry_after = 0.3
    """)
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: events_of(env, proj, "app").count("fatal_retry") >= 2, 15,
               "two slow retries")
    t = task(env, proj, "app")
    assert t["restarts"] >= 2
    assert run_json(["stop", "app"], env, cwd=proj)[0] == 0
    t = task(env, proj, "app")
    assert t["state"] == "stopped" and t["next_restart_in"] is None


def test_a_dependency_blip_ends_with_its_dependents_back(env: dict[str, str],
                                                         tmp_path: str) -> None:
    folder = str(tmp_path / "p")
    down = os.path.join(folder, "db.down")
    proj = write_project(folder, f"""
        name = "blip"
        [tasks.db]
        command = "exec sleep 600"
        restart_policy = "no"
        health_check = "test ! -f {down}"
        health_interval = 0.2
        health_retries = 1
        [tasks.api]
        command = "exec sleep 600"
        depends_on = ["db"]
        health_check = "test ! -f {down}"
        health_interval = 0.2
        health_retries = 1
        health_grace = 0
        max_restarts = 0
        retry_after = 0
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    first = task(env, proj, "api")["pid"]
    with open(down, "w"):
        pass
    wait_state(env, proj, "api", "fatal", 30)  # max_restarts 0, retry_after 0: given up
    # The blip is seen on db too (else nothing says api failed for db's sake).
    wait_until(lambda: task(env, proj, "db")["healthy"] is False, 30, "db judged unhealthy")
    os.unlink(down)
    t = wait_until(lambda: (t := task(env, proj, "api"))["state"] == "running"
                   and t["healthy"] and t, 30, "api back once db is healthy")
    assert t["pid"] != first
    assert "dependency_recovered" in events_of(env, proj, "api")


def test_depends_on_table_form_and_its_checks() -> None:
    base = """
        [tasks.migrate]
        command = "true"
        type = "oneshot"
        success_exit_codes = [0, 2]
        [tasks.db]
        command = "sleep 600"
    """
    cfg = parse(textwrap.dedent(base + """
        [tasks.api]
        command = "sleep 600"
        depends_on = { migrate = "completed_successfully", db = "started" }
        [tasks.web]
        command = "sleep 600"
        depends_on = ["migrate", "db"]
    """), "/nowhere/taskmux.toml")
    tasks = cfg.project.tasks
    assert tasks["migrate"].oneshot and tasks["migrate"].success_exit_codes == [0, 2]
    assert [tasks["api"].condition_on(d, tasks[d]) for d in ("migrate", "db")] == [
        "completed_successfully", "started"]
    # The list form: a one-shot must complete, anything else be healthy.
    assert [tasks["web"].condition_on(d, tasks[d]) for d in ("migrate", "db")] == [
        "completed_successfully", "healthy"]
    with pytest.raises(ConfigError) as bad:
        parse(textwrap.dedent(base + """
            [tasks.api]
            command = "sleep 600"
            depends_on = { migrate = "done" }
        """), "/nowhere/taskmux.toml")
    assert "'done'" in bad.value.message and "completed_successfully" in bad.value.message
    with pytest.raises(ConfigError) as never:
        parse(textwrap.dedent(base + """
            [tasks.api]
            command = "sleep 600"
            depends_on = { db = "completed_successfully" }
        """), "/nowhere/taskmux.toml")
    assert "not a one-shot" in never.value.message and "tasks.api.depends_on.db" in \
        never.value.message


def test_a_one_shot_migration_gates_the_api(env: dict[str, str], tmp_path: str) -> None:
    folder = str(tmp_path / "p")
    migrated = os.path.join(folder, "migrated")
    seen = os.path.join(folder, "api.saw")
    look = f"if test -f {migrated}; then echo migrated; else echo early; fi > {seen}.new"
    proj = write_project(folder, f"""
        name = "migrating"
        [tasks.migrate]
        command = "sleep 1; touch {migrated}"
        type = "oneshot"
        [tasks.api]
        command = "{look}; mv {seen}.new {seen}; exec sleep 600"
        depends_on = {{ migrate = "completed_successfully" }}
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    wait_until(lambda: os.path.exists(seen), 10, "api to start")
    assert read(seen).strip() == "migrated"
    m = task(env, proj, "migrate")
    assert (m["state"], m["completed"], m["type"]) == ("exited", True, "oneshot")
    assert m["restarts"] == 0 and "task_completed" in events_of(env, proj, "migrate")
    assert task(env, proj, "api")["state"] == "running"


def test_a_failed_one_shot_fails_the_start_of_what_needs_it(env: dict[str, str],
                                                            tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "badmigration"
        [tasks.migrate]
        command = "exit 4"
        type = "oneshot"
        restart_policy = "no"
        [tasks.api]
        command = "exec sleep 600"
        depends_on = { migrate = "completed_successfully" }
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code != 0
    assert "migrate" in out["error"] and "api" in out["error"]
    assert task(env, proj, "api")["state"] == "stopped"
    assert task(env, proj, "migrate")["completed"] is False


def test_restart_takes_along_the_dependents_that_ask_for_it(env: dict[str, str],
                                                            tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "along"
        [tasks.api]
        command = "exec sleep 600"
        [tasks.web]
        command = "exec sleep 601"
        depends_on = { api = { condition = "started", restart = true } }
        [tasks.worker]
        command = "exec sleep 602"
        depends_on = ["api"]
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    before = {t["name"]: t["pid"] for t in status(env, proj)["tasks"]}
    code, out = run_json(["restart", "api"], env, cwd=proj)
    assert code == 0, out
    assert {r["task"]: (r["action"], r.get("because")) for r in out["results"]} == {
        "api": ("restarted", None), "web": ("restarted", "api")}
    after = {t["name"]: t for t in status(env, proj)["tasks"]}
    assert after["worker"]["pid"] == before["worker"]  # the list form: not restarted
    for name in ("api", "web"):
        assert after[name]["state"] == "running" and after[name]["pid"] != before[name]
    text = run_cli(["restart", "api"], env, cwd=proj).stdout
    assert "web: restarted" in text and "depends on api with restart = true" in text
