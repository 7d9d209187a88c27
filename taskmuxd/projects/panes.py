"""Typing into a task's pane (``task.send``) and saying where a project lives in tmux
(``project.tmux``, for ``taskmux attach``).

Everything goes through ``Tmux.run``: literal text with ``send-keys -l``, key names with
``send-keys``, and multi-line (or long) text through a named buffer pasted with
``paste-buffer -p``, which tmux wraps in bracketed-paste markers when the program in the pane
asked for them (shells and REPLs do), so it arrives as one paste rather than line by line.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from taskmuxctl.core.errors import ClientError
from taskmuxctl.core.protocol import Code, Method
from taskmuxd.policy import TaskState
from taskmuxd.tmux import Window

if TYPE_CHECKING:
    from taskmuxd.handlertype import Handler
    from taskmuxd.projects.manager import Projects
    from taskmuxd.projects.project import Project
    from taskmuxd.projects.task import TaskRuntime

# Text longer than this goes through a buffer (stdin, no size limit) rather than the
# command line, which tmux caps at 16 KiB per message.
LITERAL_MAX_BYTES = 4096
MAX_SEND_BYTES = 1024 * 1024
_buffers = itertools.count(1)
# Bounds of task.send's params (checked by taskmuxd.rpc.params before the method runs).
SendText = Annotated[str, Field(max_length=MAX_SEND_BYTES)]
SendKeys = Annotated[list[str], Field(max_length=256)]


class TaskNotRunning(ClientError):
    default_code = Code.TASK_NOT_RUNNING


def plan(target: str, text: str | None, enter: bool, keys: list[str],
         buffer: str) -> tuple[list[list[str]], bytes | None]:
    """The tmux commands (one invocation) that type ``text``, then Enter, then ``keys``; and
    what to give tmux on stdin. Pure: the tests read it."""
    commands: list[list[str]] = []
    stdin: bytes | None = None
    if text:
        data = text.encode()
        if "\n" in text or len(data) > LITERAL_MAX_BYTES:
            stdin = data
            paste = ["paste-buffer", "-d", "-b", buffer, "-t", target]
            if "\n" in text:
                paste.insert(1, "-p")  # bracketed, when the pane's program asked for it
            commands += [["load-buffer", "-b", buffer, "-"], paste]
        else:
            commands.append(["send-keys", "-t", target, "-l", "--", text])
        if enter:
            commands.append(["send-keys", "-t", target, "Enter"])
    if keys:
        commands.append(["send-keys", "-t", target, *keys])
    return commands, stdin


async def task_window(projects: Projects, p: Project, task: TaskRuntime) -> Window | None:
    """The tmux window that runs ``task``, if it exists (found by its @taskmux_task mark)."""
    for w in await projects.tmux.windows(p.name):
        if w.task == task.name and (task.record.window_id in (None, w.window_id)):
            return w
    return None


class PaneMethods:
    """``task.send`` and ``project.tmux``: the part of the project namespace that talks to
    the panes through ``Tmux``."""

    def __init__(self, projects: Projects) -> None:
        self.projects = projects

    def handlers(self) -> Mapping[str, Handler]:
        return {Method.TASK_SEND: self.task_send, Method.PROJECT_TMUX: self.project_tmux}

    async def task_send(self, task: str, text: SendText | None = None, enter: bool = True,
                        keys: SendKeys | None = None, project: str | None = None,
                        config: str | None = None, cwd: str | None = None) -> dict[str, Any]:
        p = await self.projects.resolve(project, config, cwd)
        t = p.task(task)
        keys = list(keys or [])
        if not text and not keys:
            raise ClientError("nothing to send: give text, keys, or both", {"task": task})
        if text and len(text.encode()) > MAX_SEND_BYTES:
            raise ClientError(f"text too long ({len(text.encode())} bytes; at most "
                              f"{MAX_SEND_BYTES})", {"task": task})
        window = await task_window(self.projects, p, t) if t.state == TaskState.RUNNING else None
        if window is None or window.dead:
            raise TaskNotRunning(
                f"task {task!r} is {t.state.value}, so nothing reads what would be typed; "
                f"start it first (`taskmux start {task}`)",
                {"task": task, "state": t.state.value})
        buffer = f"taskmux-send-{os.getpid()}-{next(_buffers)}"
        commands, stdin = plan(window.pane_id, text, enter, keys, buffer)
        await self.projects.tmux.run(*commands, input=stdin)
        return {"project": p.name, "task": task, "window": window.window_id,
                "pane": window.pane_id, "bytes": len(text.encode()) if text else 0,
                "paste": stdin is not None, "enter": bool(text) and enter, "keys": keys}

    async def project_tmux(self, task: str | None = None, project: str | None = None,
                           config: str | None = None,
                           cwd: str | None = None) -> dict[str, Any]:
        p = await self.projects.resolve(project, config, cwd)
        tmux = self.projects.tmux
        running = await tmux.has_session(p.name)
        out: dict[str, Any] = {"project": p.name, "session": p.name, "running": running,
                               "socket_name": tmux.socket_name, "socket_path": None,
                               "task": task, "window": None, "pane": None}
        if task is not None:
            t = p.task(task)
            window = await task_window(self.projects, p, t) if running else None
            if window is not None:
                out.update(window=window.window_id, pane=window.pane_id)
        if running:
            path = await tmux.run(["display-message", "-p", "-t", f"={p.name}",
                                   "#{socket_path}"], allow_missing=True)
            out["socket_path"] = path.strip() if path else None
        return out
