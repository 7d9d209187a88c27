"""The runner gives the task's pty the pane's window size (termios's own calls, no fcntl)."""

from __future__ import annotations

import os
import termios
from types import SimpleNamespace

from taskmuxd import runner


def test_the_panes_window_size_is_copied_to_the_tasks_pty() -> None:
    pane_master, pane = os.openpty()
    task_master, task_side = os.openpty()
    saved = os.dup(0)
    try:
        termios.tcsetwinsize(pane, (41, 137))
        os.dup2(pane, 0)  # the runner reads the size of its standard input: the pane
        runner.Runner.copy_window_size(SimpleNamespace(master=task_master))  # type: ignore[arg-type]
        assert termios.tcgetwinsize(task_side) == (41, 137)
    finally:
        os.dup2(saved, 0)
        for fd in (saved, pane_master, pane, task_master, task_side):
            os.close(fd)


def test_the_runner_does_not_load_fcntl() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.path.insert(0, sys.argv[1]); import taskmuxd.runner; "
            "print('fcntl' in sys.modules)")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, runner.__file__.rsplit(
        "/taskmuxd/", 1)[0]], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
