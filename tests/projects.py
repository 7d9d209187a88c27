"""Helpers for tests that run projects: write a taskmux.toml, read status, wait on tasks."""

from __future__ import annotations

import os
import subprocess
import textwrap
from typing import Any

from taskmuxctl.core.whichproject import project_params
from tests.helpers import call, run_json, wait_until


def write_project(folder: str, toml: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "taskmux.toml")
    with open(path, "w") as fh:
        fh.write(textwrap.dedent(toml).lstrip())
    return folder


def status(env: dict[str, str], cwd: str) -> dict[str, Any]:
    """What `taskmux --json status` prints in ``cwd``. Asked of the running daemon directly
    (the same ``project.status`` call with the same parameters the command sends), so that a
    test polling a task's state does not start a CLI process per look; through the command
    itself when no daemon answers (it then starts one, as a user's next command would) or the
    call fails (the command's own error then shows)."""
    sock = os.path.join(env["TASKMUX_HOME"], "ctl.sock")
    # What the command sends from ``cwd`` (its getcwd() reads the real path).
    params = project_params(None, os.path.realpath(cwd))
    if params["config"] is not None:
        try:
            return {"ok": True, **call(sock, "project.status", params, timeout=60.0)}
        except (OSError, RuntimeError, IndexError, ValueError):
            pass
    code, out = run_json(["status"], env, cwd=cwd)
    assert code == 0, out
    return out


def task(env: dict[str, str], cwd: str, name: str) -> dict[str, Any]:
    for t in status(env, cwd)["tasks"]:
        if t["name"] == name:
            return t
    raise AssertionError(f"no task {name}")


def wait_state(env: dict[str, str], cwd: str, name: str, state: str,
               timeout: float = 20.0) -> dict[str, Any]:
    return wait_until(lambda: (t := task(env, cwd, name))["state"] == state and t,
                      timeout, f"{name} to be {state}")


def tmux(socket: str, *args: str) -> str:
    return subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True,
                          check=True).stdout


def windows(socket: str, session: str) -> list[str]:
    out = tmux(socket, "list-windows", "-t", f"={session}", "-F", "#{@taskmux_task}")
    return [line for line in out.splitlines() if line]


def pid_alive(pid: int) -> bool:
    from tests.helpers import pid_gone

    return not pid_gone(pid)
