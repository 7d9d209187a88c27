"""taskmux.toml validation (`check`), the registry commands, and add/remove editing."""

from __future__ import annotations

import os
import subprocess

import pytest

from taskmuxctl.core.protocol import Code
from tests.helpers import BIN, read, run_cli, run_json
from tests.projects import task, write_project

CASES = [
    ("unknown key", """
        name = "x"
        [tasks.web]
        command = "true"
        colour = "red"
     """, "tasks.web.colour", 4, ["unknown key 'colour'", "valid keys here", "command"]),
    ("bad type", """
        name = "x"
        [tasks.web]
        command = "true"
        max_restarts = "lots"
     """, "tasks.web.max_restarts", 4, ["valid integer", "'lots'"]),
    ("bad policy", """
        name = "x"
        [tasks.web]
        command = "true"
        restart_policy = "sometimes"
     """, "tasks.web.restart_policy", 4, ["'no', 'on-failure' or 'always'"]),
    ("bad task name", """
        name = "x"
        [tasks.Web_1]
        command = "true"
     """, "tasks.Web_1", 2, ["not a valid task name", "lowercase letters"]),
    ("unknown dependency", """
        name = "x"
        [tasks.web]
        command = "true"
        depends_on = ["api"]
     """, "tasks.web.depends_on", 4, ["'api'", "tasks: web"]),
    ("cycle", """
        name = "x"
        [tasks.a]
        command = "true"
        depends_on = ["b"]
        [tasks.b]
        command = "true"
        depends_on = ["a"]
     """, "tasks.a.depends_on", 4, ["dependency cycle: a -> b -> a"]),
    ("missing cwd", """
        name = "x"
        [tasks.web]
        command = "true"
        cwd = "no/such/dir"
     """, "tasks.web.cwd", 4, ["does not exist"]),
    ("missing command", """
        name = "x"
        [tasks.web]
        cwd = "."
     """, "tasks.web.command", 2, ["required"]),
    ("misspelt key", """
        name = "x"
        [tasks.web]
        comand = "true"
     """, "tasks.web.comand", 3, ["unknown key 'comand'; did you mean 'command'? ('command' "
                                  "is required)"]),
    ("misspelt dependency", """
        name = "x"
        [tasks.web]
        command = "true"
        [tasks.api]
        command = "true"
        depends_on = ["wbe"]
     """, "tasks.api.depends_on", 6, ["'wbe'", "did you mean 'web'?"]),
    ("bad project name", """
        name = "My Project"
     """, "name", 1, ["not a valid project name"]),
    ("not toml", """
        name = "x
     """, "", 1, ["not valid TOML"]),
    ("bad ready_log_line", """
        name = "x"
        [tasks.db]
        command = "true"
        ready_log_line = "ready (to"
     """, "tasks.db.ready_log_line", 4, ["not a valid regular expression",
                                         "missing ), unterminated subpattern"]),
    ("two readiness sources", """
        name = "x"
        [tasks.db]
        command = "true"
        ready = "notify"
        ready_log_line = "ready"
     """, "tasks.db.ready_log_line", 5, ["choose one readiness source"]),
    ("probes with the task's own word", """
        name = "x"
        [tasks.db]
        command = "true"
        ready_log_line = "ready"
        health_url = "http://127.0.0.1:1/"
     """, "tasks.db.health_url", 5, ["judged on its own word", "remove health_url"]),
    ("bad watchdog_sec", """
        name = "x"
        [tasks.db]
        command = "true"
        watchdog_sec = 0
     """, "tasks.db.watchdog_sec", 4, ["greater than 0"]),
]


@pytest.mark.parametrize(("label", "toml", "key", "line", "words"), CASES,
                         ids=[c[0] for c in CASES])
def test_check_reports_each_problem_with_file_key_line(
        module_env: dict[str, str], tmp_path: str, label: str, toml: str, key: str, line: int,
        words: list[str]) -> None:
    env = module_env  # refused starts register nothing: one daemon serves every case
    proj = write_project(str(tmp_path / "p"), toml)
    path = os.path.join(proj, "taskmux.toml")
    code, out = run_json(["check"], env, cwd=proj)
    assert code == 1, out
    assert out["code"] == Code.CONFIG_INVALID
    problems = out["data"]["problems"]
    match = [p for p in problems if p["key"] == key]
    assert match, problems
    assert match[0]["line"] == line, match
    assert out["data"]["path"] == path
    text = run_cli(["check"], env, cwd=proj).stderr
    assert f"{path}:{line}:" in text
    for word in words:
        assert word in out["error"], (word, out["error"])
    # Starting is refused the same way, and registers nothing.
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 1 and out["code"] == Code.CONFIG_INVALID
    assert run_json(["daemon", "list"], env)[1]["projects"] == []


def test_check_ok_prints_the_start_order(module_env: dict[str, str], tmp_path: str) -> None:
    env = module_env
    proj = write_project(str(tmp_path / "p"), """
        name = "fine"
        [tasks.db]
        command = "true"
        [tasks.api]
        command = "true"
        depends_on = ["db"]
        [tasks.migrate]
        command = "true"
        type = "oneshot"
        [tasks.web]
        command = "true"
        [tasks.web.depends_on]
        api = { condition = "started", restart = true }
        migrate = "completed_successfully"
    """)
    code, out = run_json(["check"], env, cwd=proj)
    assert code == 0 and out["start_order"] == [["db", "migrate"], ["api"], ["web"]]
    assert out["conditions"] == {"api": {"db": "healthy"},
                                 "web": {"api": "started", "migrate": "completed_successfully"}}
    assert out["restarts_with"] == {"web": ["api"]}
    text = subprocess.run([f"{BIN}/taskmux", "check"], env=env, cwd=proj, text=True,
                          capture_output=True).stdout
    assert "web waits for api started (restarts with it), migrate completed successfully" \
        in text


def test_check_leaves_manual_tasks_out_of_the_start_order(module_env: dict[str, str],
                                                          tmp_path: str) -> None:
    env = module_env
    proj = write_project(str(tmp_path / "p"), """
        name = "fine"
        [tasks.db]
        command = "true"
        auto_start = false
        [tasks.api]
        command = "true"
        depends_on = ["db"]
        [tasks.seed]
        command = "true"
        auto_start = false
    """)
    code, out = run_json(["check"], env, cwd=proj)
    # db is manual but api needs it, so `start` starts it; seed only starts by name.
    assert code == 0 and out["start_order"] == [["db"], ["api"]] and out["manual"] == ["seed"]
    text = run_cli(["check"], env, cwd=proj).stdout
    assert "3 tasks; start order: [db] → [api]" in text
    assert "not started by `taskmux start` (auto_start = false): seed" in text


def test_no_config_is_an_error_and_no_phantom_project(module_env: dict[str, str],
                                                      tmp_path: str) -> None:
    env = module_env
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    said = set()
    for argv in (["start"], ["status"], ["check"], ["logs"], ["events"]):
        code, out = run_json(argv, env, cwd=empty)
        assert code == 1 and out["code"] == Code.CONFIG_NOT_FOUND, (argv, out)
        assert "taskmux.toml" in out["error"] and "taskmux init" in out["error"]
        said.add(out["error"])
    # One wording whichever command says it (the client or the daemon).
    assert said == {f"no taskmux.toml in {empty} or any folder above it; create one with "
                    "`taskmux init`, or name a registered project with -p NAME"}
    assert run_json(["daemon", "list"], env)[1]["projects"] == []


def test_a_misspelt_key_is_one_problem(module_env: dict[str, str], tmp_path: str) -> None:
    env = module_env
    proj = write_project(str(tmp_path / "p"), """
        name = "x"
        [tasks.web]
        comand = "true"
        colour = "red"
    """)
    code, out = run_json(["check"], env, cwd=proj)
    assert code == 1
    assert [p["key"] for p in out["data"]["problems"]] == ["tasks.web.comand",
                                                            "tasks.web.colour"]
    # Nothing is close to `colour`: the valid keys are listed instead.
    assert "valid keys here" in out["data"]["problems"][1]["message"]


def test_a_misspelt_task_name_names_the_closest_task(env: dict[str, str],
                                                     tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "typos"
        [tasks.web]
        command = "sleep 600"
        auto_start = false
        [tasks.worker]
        command = "sleep 600"
        auto_start = false
    """)
    for argv in (["logs", "wbe"], ["start", "wbe"], ["restart", "wbe"], ["inspect", "wbe"]):
        code, out = run_json(argv, env, cwd=proj)
        assert code == 1 and out["code"] == Code.TASK_NOT_FOUND, (argv, out)
        assert "did you mean 'web'?" in out["error"], (argv, out)
    code, out = run_json(["logs", "zzz"], env, cwd=proj)
    assert "did you mean" not in out["error"] and "tasks: web, worker" in out["error"]


@pytest.mark.slow
def test_add_and_remove_keep_comments(env: dict[str, str], tmp_path: str) -> None:
    original = """\
# The dev environment
name = "edits"  # short name

# Database first
[tasks.db]
command = "sleep 600"  # keep it running
"""
    proj = str(tmp_path / "p")
    os.makedirs(proj)
    path = os.path.join(proj, "taskmux.toml")
    with open(path, "w") as fh:
        fh.write(original)
    code, out = run_json(["add", "api", "sleep 601", "--host", "api", "--depends-on", "db"],
                         env, cwd=proj)
    assert code == 0, out
    text = read(path)
    assert text.startswith(original)
    assert "[tasks.api]" in text and 'depends_on = ["db"]' in text and 'host = "api"' in text
    code, out = run_json(["add", "api", "x"], env, cwd=proj)
    assert code == 1 and out["code"] == Code.TASK_EXISTS
    code, out = run_json(["add", "bad", "x", "--depends-on", "ghost"], env, cwd=proj)
    assert code == 1 and "ghost" in out["error"]
    assert "[tasks.bad]" not in read(path)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    assert task(env, proj, "api")["state"] == "running"
    # A dependency is not removed, and nothing is stopped for the refused attempt.
    code, out = run_json(["remove", "db"], env, cwd=proj)
    assert code == 1 and "api" in out["error"]
    assert task(env, proj, "db")["state"] == "running"
    # With the project running, an added task is applied at once, not when the watcher fires.
    code, out = run_json(["add", "jobs", "sleep 602"], env, cwd=proj)
    assert code == 0 and out["started"] is True, out
    assert task(env, proj, "jobs")["state"] == "running"
    code, out = run_json(["remove", "jobs"], env, cwd=proj)
    assert code == 0 and out["stopped"] is True
    code, out = run_json(["status"], env, cwd=proj)
    assert [t["name"] for t in out["tasks"]] == ["api", "db"]
    code, out = run_json(["remove", "api"], env, cwd=proj)
    assert code == 0 and out["stopped"] is True
    assert read(path) == original


def test_registry_list_register_unregister(env: dict[str, str], tmp_path: str) -> None:
    a = write_project(str(tmp_path / "a"), """
        name = "same"
        [tasks.t]
        command = "sleep 600"
    """)
    b = write_project(str(tmp_path / "b"), """
        name = "same"
        [tasks.t]
        command = "sleep 600"
    """)
    code, out = run_json(["daemon", "register"], env, cwd=a)
    assert (code, out["action"]) == (0, "registered")
    code, out = run_json(["daemon", "register", "-c", os.path.join(b, "taskmux.toml")], env)
    assert code == 1 and out["code"] == Code.REGISTRY_CONFLICT
    assert "--force" in out["error"]
    code, out = run_json(["daemon", "register", "--force"], env, cwd=b)
    assert (code, out["action"]) == (0, "replaced")
    # A config that moved is re-pointed automatically once the old path is gone.
    os.rename(os.path.join(b, "taskmux.toml"), os.path.join(a, "moved.toml"))
    os.unlink(os.path.join(a, "taskmux.toml"))
    os.rename(os.path.join(a, "moved.toml"), os.path.join(a, "taskmux.toml"))
    code, out = run_json(["daemon", "register"], env, cwd=a)
    assert (code, out["action"]) == (0, "repointed")
    code, out = run_json(["daemon", "list"], env)
    assert [(p["name"], p["state"], p["config"]) for p in out["projects"]] == [
        ("same", "ok", os.path.join(a, "taskmux.toml"))]
    code, out = run_json(["daemon", "unregister", "same"], env)
    assert (code, out["action"]) == (0, "unregistered")
    assert run_json(["daemon", "list"], env)[1]["projects"] == []


def test_list_shows_config_missing_and_error(env: dict[str, str], tmp_path: str) -> None:
    gone = write_project(str(tmp_path / "gone"), """
        name = "gone"
        [tasks.t]
        command = "sleep 600"
    """)
    broken = write_project(str(tmp_path / "broken"), """
        name = "broken"
        [tasks.t]
        command = "sleep 600"
    """)
    for proj in (gone, broken):
        assert run_json(["daemon", "register"], env, cwd=proj)[0] == 0
    os.unlink(os.path.join(gone, "taskmux.toml"))
    with open(os.path.join(broken, "taskmux.toml"), "a") as fh:
        fh.write("oops = 1\n")
    assert run_json(["daemon", "restart"], env)[0] == 0
    states = {p["name"]: p["state"] for p in run_json(["daemon", "list"], env)[1]["projects"]}
    assert states == {"gone": "config_missing", "broken": "error"}
