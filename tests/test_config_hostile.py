"""A hostile or broken taskmux.toml: never blocks the daemon, never a traceback, always a clear
error (a ``config_invalid`` event for a registered project), and what runs keeps running."""

from __future__ import annotations

import os
from typing import Any

import pytest

from taskmuxctl.core.protocol import Code
from tests.helpers import call, run_cli, run_json, wait_until, write_whole
from tests.projects import status, write_project

SLEEPER = """
    name = "{name}"
    [tasks.app]
    command = "sleep 600"
"""


def socket_of(env: dict[str, str]) -> str:
    return os.path.join(env["TASKMUX_HOME"], "ctl.sock")


def config_events(env: dict[str, str], project: str) -> list[dict[str, Any]]:
    code, out = run_json(["events", "--all-projects"], env, cwd=env["TASKMUX_HOME"])
    assert code == 0, out
    return [e for e in out["events"]
            if e["project"] == project and e["event"] == "config_invalid"]


def project_state(env: dict[str, str], name: str) -> dict[str, Any]:
    return dict(call(socket_of(env), "project.status", {"project": name}))


def replace_with(path: str, make: Any) -> None:
    os.unlink(path)
    make(path)


def check(env: dict[str, str], cwd: str) -> tuple[int, dict[str, Any], str]:
    """``taskmux check`` as JSON, and its plain stderr (which must hold no traceback)."""
    code, out = run_json(["check"], env, cwd=cwd)
    plain = run_cli(["check"], env, cwd=cwd)
    assert "Traceback" not in plain.stderr + plain.stdout, plain.stderr
    assert plain.returncode == code
    return code, out, plain.stderr


def test_a_fifo_is_refused_while_other_clients_are_answered(env: dict[str, str],
                                                            tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), SLEEPER.format(name="fifo"))
    assert run_json(["start"], env, cwd=proj)[0] == 0
    pid = status(env, proj)["tasks"][0]["pid"]
    path = os.path.join(proj, "taskmux.toml")
    replace_with(path, os.mkfifo)  # the watcher reloads it: nobody ever writes into it
    sock = socket_of(env)
    # A client naming another FIFO directly gets a clear error, and so does everyone after.
    other = str(tmp_path / "q")
    os.makedirs(other)
    os.mkfifo(os.path.join(other, "taskmux.toml"))
    try:
        call(sock, "project.status", {"config": os.path.join(other, "taskmux.toml")})
        raise AssertionError("a FIFO was accepted as taskmux.toml")
    except RuntimeError as exc:
        error = exc.args[0]
    assert error["code"] == Code.CONFIG_INVALID
    assert "FIFO" in error["message"] and "regular file" in error["message"]
    assert call(sock, "daemon.ping") == {"pong": True}
    code, out = run_json(["start"], env, cwd=other)
    assert code == 1 and "FIFO" in out["error"], out
    wait_until(lambda: config_events(env, "fifo"), 10, "the config_invalid event")
    [event] = config_events(env, "fifo")[-1:]
    assert "FIFO" in event["details"]["error"]
    state = project_state(env, "fifo")
    assert state["state"] == "error" and "FIFO" in state["config_error"]
    assert [t["pid"] for t in state["tasks"]] == [pid]  # what ran keeps running
    code, out, _ = check(env, proj)
    assert code == 1 and out["code"] == Code.CONFIG_INVALID and "FIFO" in out["error"]
    assert call(sock, "daemon.ping") == {"pong": True}


def test_other_special_files_and_links_are_named_for_what_they_are(env: dict[str, str],
                                                                   tmp_path: str) -> None:
    proj = str(tmp_path / "p")
    os.makedirs(proj)
    path = os.path.join(proj, "taskmux.toml")
    os.symlink("taskmux.toml", path)  # a link to itself: ELOOP
    code, out, _ = check(env, proj)
    assert code == 1 and out["code"] == Code.CONFIG_INVALID, out
    assert "symbolic link loop" in out["error"] and "no taskmux.toml" not in out["error"]
    os.unlink(path)
    os.symlink("/dev/zero", path)
    code, out, _ = check(env, proj)
    assert code == 1 and "character device" in out["error"], out
    os.unlink(path)
    with open(path, "w") as fh:
        fh.write('name = "big"\n' + "# padding\n" * 120_000)
    code, out, _ = check(env, proj)
    assert code == 1 and "larger than 1048576 bytes" in out["error"], out
    code, out = run_json(["start"], env, cwd=proj)  # the daemon refuses it the same way
    assert code == 1 and "larger than 1048576 bytes" in out["error"], out


def test_thousands_of_problems_get_one_clear_answer(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), 'name = "keys"\n' + "".join(
        f"unknown_{i} = {i}\n" for i in range(4000)))
    code, out, text = check(env, proj)
    assert code == 1 and out["code"] == Code.CONFIG_INVALID
    assert out["data"]["count"] == 4000
    assert "has 4000 problems" in out["error"] and "and 3950 more" in out["error"]
    assert "unknown key 'unknown_0'" in text and ":2:" in text  # file:line of the first
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 1 and out["code"] == Code.CONFIG_INVALID and out["data"]["count"] == 4000
    assert call(socket_of(env), "daemon.ping") == {"pong": True}
    too_many = write_project(str(tmp_path / "q"), 'name = "many"\n' + "".join(
        f'[tasks.t{i}]\ncommand = "true"\n' for i in range(5001)))
    code, out, _ = check(env, too_many)
    assert code == 1 and "5001 tasks; a project may have at most 5000" in out["error"]


def chain(n: int, cycle: bool = False) -> str:
    # Only the last task starts with the project; it needs every other one, so `start` (and
    # check's start order) takes the whole chain.
    tasks = [f'[tasks.t{i}]\ncommand = "true"\n'
             + ("auto_start = false\n" if i < n - 1 else "")
             + (f'depends_on = ["t{i - 1}"]\n' if i else
                (f'depends_on = ["t{n - 1}"]\n' if cycle else ""))
             for i in range(n)]
    return 'name = "chain"\n' + "".join(tasks)


@pytest.mark.slow
def test_a_2000_task_chain_and_deep_nesting_without_a_traceback(env: dict[str, str],
                                                                tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), chain(2000))
    code, out, _ = check(env, proj)
    assert code == 0, out
    assert len(out["start_order"]) == 2000 and out["start_order"][-1] == ["t1999"]
    write_project(proj, chain(2000, cycle=True))
    code, out, _ = check(env, proj)
    assert code == 1 and "dependency cycle: t0 -> t1999 -> t1998" in out["error"], out
    for deep in ("x = " + "[" * 3000 + "]" * 3000 + "\n",
                 "x = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n"):
        write_project(proj, 'name = "deep"\n' + deep)
        code, out, _ = check(env, proj)
        assert code == 1 and out["code"] == Code.CONFIG_INVALID, out
        assert "nested too deeply" in out["error"], out


@pytest.mark.slow
def test_a_reload_that_fails_is_reported_and_the_project_keeps_running(
        env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), SLEEPER.format(name="reload"))
    assert run_json(["start"], env, cwd=proj)[0] == 0
    pid = status(env, proj)["tasks"][0]["pid"]
    path = os.path.join(proj, "taskmux.toml")
    # The watcher picks this up (written whole: never read half written).
    write_whole(path, 'name = "reload"\nx = ' + "[" * 3000 + "]" * 3000 + "\n")
    wait_until(lambda: project_state(env, "reload")["state"] == "error", 10,
               "the failed reload to be reported")
    state = project_state(env, "reload")
    assert "nested too deeply" in state["config_error"]
    assert [t["pid"] for t in state["tasks"]] == [pid]
    assert any("nested too deeply" in e["details"]["error"]
               for e in config_events(env, "reload"))
    # A chain of 2000 is loaded (and applied) like anything else.
    write_whole(path, chain(2000).replace('name = "chain"', 'name = "reload"')
                + '[tasks.app]\ncommand = "sleep 600"\n')
    wait_until(lambda: project_state(env, "reload")["state"] == "ok", 30, "the good reload")
    state = project_state(env, "reload")
    assert len(state["tasks"]) == 2001
    assert next(t["pid"] for t in state["tasks"] if t["name"] == "app") == pid


def test_dependency_checks_are_iterative_and_linear() -> None:
    from taskmuxctl.core.projectconfig import TaskConfig, find_cycle, start_order

    n = 100_000
    graph = {f"t{i}": [f"t{i - 1}"] if i else [] for i in range(n)}
    assert find_cycle(graph) is None  # far deeper than any recursion limit
    graph["t0"] = [f"t{n - 1}"]
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == n + 1
    tasks = {f"t{i}": TaskConfig(command="true", depends_on=[f"t{i - 1}"] if i else [])
             for i in range(20_000)}
    tasks["side"] = TaskConfig(command="true", depends_on=["t0", "t0"])
    order = start_order(tasks)
    assert len(order) == 20_000 and order[:2] == [["t0"], ["side", "t1"]]
