"""`taskmux top` in a real terminal: a tmux pane of its own server runs the command; keys go
in with send-keys and the screen is read with capture-pane. A restart from the view really
restarts; attach leaves the view for the task's window and detaching comes back to it."""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import BIN, run_json, wait_until
from tests.projects import task, write_project

pytest.importorskip("textual", reason="top needs textual")


@pytest.fixture
def view() -> Iterator[str]:
    """A tmux server (its own socket) whose pane plays the user's terminal."""
    name = f"tmxview-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        subprocess.run(["tmux", "-L", name, "kill-server"], capture_output=True, check=False)
        folder = os.path.join(os.environ.get("TMUX_TMPDIR", "/tmp"), f"tmux-{os.getuid()}")
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(folder, name))


def screen(view: str) -> str:
    return subprocess.run(["tmux", "-L", view, "capture-pane", "-p", "-t", "top"],
                          capture_output=True, text=True, check=False).stdout


def keys(view: str, *names: str) -> None:
    subprocess.run(["tmux", "-L", view, "send-keys", "-t", "top", *names], check=True)


def test_top_in_a_pane_restarts_and_attaches(env: dict[str, str], tmp_path: Any,
                                             view: str, tmux_socket: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "panedemo"
        [tasks.api]
        command = "echo api-window-here; sleep 600"
        [tasks.web]
        command = "sleep 600"
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    before = task(env, proj, "api")["pid"]
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()
                       if k.startswith("TASKMUX_") or k in ("PATH", "HOME"))
    # TMUX unset in the pane: attaching from the view nests a client, as in a terminal
    command = f"env -u TMUX {exports} {os.path.join(BIN, 'taskmuxctl')} top -p panedemo"
    subprocess.run(["tmux", "-L", view, "new-session", "-d", "-s", "top", "-x", "160", "-y",
                    "40", command], check=True, env={**os.environ, "TERM": "xterm-256color"})
    wait_until(lambda: "2/2 running" in (s := screen(view)) and "api" in s and "web" in s,
               timeout=30, what="top's first frame")
    # the first row (api) is selected: its log shows below
    wait_until(lambda: "api-window-here" in screen(view), timeout=20, what="api's log")
    keys(view, "r")
    after = wait_until(lambda: (t := task(env, proj, "api"))["state"] == "running"
                       and t["pid"] != before and t["pid"], timeout=30,
                       what="api restarted from the view")
    assert after != before
    wait_until(lambda: "panedemo/api: restarted" in screen(view), timeout=20,
               what="the view to say so")
    # attach: the pane becomes a tmux client of the tasks' server at api's window
    keys(view, "a")

    def viewers() -> list[str]:
        """The session's clients, but for the daemon's own control-mode connection."""
        out = subprocess.run(["tmux", "-L", tmux_socket, "list-clients", "-F",
                              "#{client_name} #{client_session} #{client_control_mode}"],
                             capture_output=True, text=True, check=False).stdout
        return [line.split()[0] for line in out.splitlines()
                if line.split()[1:] == ["panedemo", "0"]]

    [client] = wait_until(viewers, timeout=20, what="the view's pane attached to the session")
    subprocess.run(["tmux", "-L", tmux_socket, "detach-client", "-t", client], check=True)
    wait_until(lambda: "2/2 running" in screen(view), timeout=20, what="back in the view")
    keys(view, "q")
    wait_until(lambda: subprocess.run(["tmux", "-L", view, "has-session", "-t", "top"],
                                      capture_output=True, check=False).returncode != 0,
               timeout=20, what="top to quit")
