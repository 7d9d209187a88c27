"""A broken taskmux.toml does not block the commands that would explain it: logs, events,
status, inspect, health and url work from the registry's record of the project and the
daemon's last valid copy, say that the file is broken, and a ``config_valid`` event follows
the fix."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.helpers import read, run_cli, run_json, wait_until, write_whole
from tests.projects import wait_state, write_project

PROJECT = """
    name = "mended"
    [tasks.web]
    command = "echo web-says-hello; sleep 600"
    host = "web"
"""


def events(env: dict[str, str], kind: str) -> list[dict[str, Any]]:
    code, out = run_json(["events", "--all-projects"], env, cwd=env["TASKMUX_HOME"])
    assert code == 0, out
    return [e for e in out["events"] if e["project"] == "mended" and e["event"] == kind]


@pytest.mark.slow
def test_read_only_commands_work_while_the_file_is_broken(env: dict[str, str],
                                                         tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), PROJECT)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    wait_state(env, proj, "web", "running")
    log = os.path.join(env["TASKMUX_HOME"], "projects", "mended", "logs", "web.log")
    wait_until(lambda: os.path.exists(log) and "web-says-hello" in read(log), 10,
               "the task's first line")
    path = os.path.join(proj, "taskmux.toml")
    with open(path) as fh:
        good = fh.read()
    write_whole(path, good.replace("[tasks.web]", "[tasks.web"))  # a syntax error mid-edit
    wait_until(lambda: events(env, "config_invalid"), 10, "the config_invalid event")

    for where, extra in ((proj, []), (env["TASKMUX_HOME"], ["-p", "mended"])):
        for argv in (["logs"], ["logs", "web"], ["events"], ["status"], ["inspect", "web"],
                     ["health"], ["url", "web"]):
            plain = run_cli([*argv, *extra], env, cwd=where)
            assert plain.returncode == 0, (argv, extra, plain.stderr)
            assert "Traceback" not in plain.stderr
            said = plain.stdout + plain.stderr
            assert path in said and "Expected" in said, (argv, extra, said)  # the file's error
            if argv != ["status"]:  # status shows it in its own first lines
                assert "warning: showing project 'mended' as last" in plain.stderr, said
        code, out = run_json(["logs", *extra], env, cwd=where)
        assert code == 0 and out["project"] == "mended", out
        assert any("web-says-hello" in line for line in out["lines"])
        assert path in out["config_error"]
        code, out = run_json(["events", *extra], env, cwd=where)
        assert code == 0 and "config_invalid" in {e["event"] for e in out["events"]}
        code, out = run_json(["health", *extra], env, cwd=where)
        assert code == 0 and path in out["config_error"] and out["total_count"] == 1
        code, out = run_json(["status", *extra], env, cwd=where)
        assert code == 0 and out["state"] == "error" and path in out["config_error"]
    stderr = run_cli(["logs"], env, cwd=proj).stderr
    assert "showing project 'mended' as last registered" in stderr
    # A daemon started while the file is broken knows the project from its last valid copy.
    assert run_json(["daemon", "restart"], env)[0] == 0
    for argv in (["status"], ["health"], ["inspect", "web"]):
        plain = run_cli(argv, env, cwd=proj)
        assert plain.returncode == 0 and path in plain.stdout + plain.stderr, plain.stderr

    write_whole(path, good)
    [fixed] = wait_until(lambda: events(env, "config_valid"), 10, "the config_valid event")
    assert fixed["details"]["config"] == path
    plain = run_cli(["logs"], env, cwd=proj)
    assert plain.returncode == 0 and "warning" not in plain.stderr
    code, out = run_json(["status"], env, cwd=proj)
    assert out["state"] == "ok" and out["config_error"] is None


def test_a_broken_file_never_registered_is_still_an_error(env: dict[str, str],
                                                          tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "q"), 'name = "never"\n[tasks.a\n')
    for argv in (["logs"], ["events"]):
        code, out = run_json(argv, env, cwd=proj)
        assert code == 1 and "cannot read" in out["error"] and "Expected" in out["error"], out
