"""Putting runners into tmux windows, many at once.

Launches asked for in the same turn of the event loop go to tmux in one invocation: a project
of a hundred independent tasks starts with one ``tmux`` process, not a hundred. Each window is
created at the end of the project's session (``-a -t =P:{end}``) so the options that follow in
the same invocation can name it, and marked with ``@taskmux_task`` so taskmux recognises its
windows whatever their names become.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field

from taskmuxd.proctree import MARKER_VAR
from taskmuxd.tmux import Tmux

log = logging.getLogger("taskmuxd.launcher")

# tmux passes a command line to its server in one message of at most 16 KiB.
MAX_INVOCATION_BYTES = 12_000
# runner_main.py runs the runner from its compiled module (a script is compiled at every start).
RUNNER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "runner_main.py")


def runner_argv(spec_path: str, marker: str) -> list[str]:
    """The runner's command line; the marker names the run in ``ps`` and /proc."""
    return [sys.executable, "-I", "-S", RUNNER, spec_path, marker]


@dataclass
class LaunchRequest:
    task: str
    spec_path: str
    cwd: str
    window_id: str | None  # respawn in this window when it still exists
    marker: str  # TASKMUX_RUN for the runner's environment
    done: asyncio.Future[str] = field(default_factory=lambda: asyncio.get_running_loop()
                                      .create_future())


class Launcher:
    """Batches launches for one tmux session (one project)."""

    def __init__(self, tmux: Tmux, session: str) -> None:
        self.tmux = tmux
        self.session = session
        self._queue: list[LaunchRequest] = []
        self._scheduled = False
        self._lock = asyncio.Lock()

    async def launch(self, task: str, spec_path: str, cwd: str, window_id: str | None,
                     marker: str) -> str:
        """Start the runner for ``task``; return the window id it runs in."""
        req = LaunchRequest(task, spec_path, cwd, window_id, marker)
        self._queue.append(req)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_soon)
        return await req.done

    def _flush_soon(self) -> None:
        batch, self._queue, self._scheduled = self._queue, [], False
        asyncio.get_running_loop().create_task(self._flush(batch))

    async def _flush(self, batch: list[LaunchRequest]) -> None:
        # One batch at a time: a batch looks at the session's windows before it creates
        # any, so two at once would both create the session.
        async with self._lock:
            await self._flush_one(batch)

    async def _flush_one(self, batch: list[LaunchRequest]) -> None:
        try:
            # A window is reused only when it is still marked as this task's: a new tmux
            # server hands out the same window ids again, to other tasks' windows. A session
            # always has a window, so none listed means no session (or no server) yet.
            existing = {(w.window_id, w.task) for w in await self.tmux.windows(self.session)}
            creating = not existing
            chunks: list[list[tuple[LaunchRequest, list[list[str]]]]] = [[]]
            size, session_exists = 0, not creating
            for req in batch:
                commands, session_exists = self._commands(req, existing, session_exists)
                cost = sum(len(a) + 1 for cmd in commands for a in cmd)
                if chunks[-1] and size + cost > MAX_INVOCATION_BYTES:
                    chunks.append([])
                    size = 0
                chunks[-1].append((req, commands))
                size += cost
            if creating:
                # A new session, on a server that may be new too: the first chunk (with the
                # new-session) as one tmux process, then the control connection up before
                # the rest, which go over it rather than as processes.
                await self._run(chunks.pop(0))
                await self.tmux.connect()
            if self.tmux.connected:
                # Pipelined: every chunk is written to the connection at once and tmux runs
                # them in order, with no round trip between them. A chunk that fails fails
                # its own launches only: tmux runs the others' windows all the same.
                outcomes = await asyncio.gather(*(self._run(chunk) for chunk in chunks),
                                                return_exceptions=True)
                for chunk, outcome in zip(chunks, outcomes, strict=True):
                    if isinstance(outcome, BaseException):
                        for req, _commands in chunk:
                            if not req.done.done():
                                req.done.set_exception(outcome)
            else:  # tmux processes: one at a time, so that no two interleave their windows
                for chunk in chunks:
                    await self._run(chunk)
        except Exception as exc:
            for req in batch:
                if not req.done.done():
                    req.done.set_exception(exc)

    def _commands(self, req: LaunchRequest, existing: set[tuple[str, str]],
                  session_exists: bool) -> tuple[list[list[str]], bool]:
        argv = runner_argv(req.spec_path, req.marker)
        env = ["-e", f"{MARKER_VAR}={req.marker}"]
        if req.window_id and (req.window_id, req.task) in existing:
            return [["respawn-pane", "-k", "-t", req.window_id, "-c", req.cwd, *env, *argv]], \
                session_exists
        target = f"={self.session}"
        end = f"{target}:{{end}}"
        if not session_exists:
            first = ["new-session", "-d", "-s", self.session, "-n", req.task, "-c", req.cwd,
                     *env, "-P", "-F", "#{window_id}", *argv]
        else:
            first = ["new-window", "-d", "-a", "-t", end, "-n", req.task, "-c", req.cwd, *env,
                     "-P", "-F", "#{window_id}", *argv]
        commands = [first]
        for option, value in (("remain-on-exit", "on"), ("automatic-rename", "off"),
                              ("allow-rename", "off"), ("@taskmux_task", req.task)):
            commands.append(["set-option", "-w", "-t", end, option, value])
        return commands, True

    async def _run(self, chunk: list[tuple[LaunchRequest, list[list[str]]]]) -> None:
        """One tmux invocation for a chunk of launches."""
        out = await self.tmux.run(*(cmd for _req, cmds in chunk for cmd in cmds))
        ids = [line.strip() for line in (out or "").splitlines() if line.strip()]
        creates = [req for req, cmds in chunk if cmds[0][0] != "respawn-pane"]
        if len(ids) != len(creates):
            raise RuntimeError(f"tmux reported {len(ids)} new windows for {len(creates)}")
        for req, wid in zip(creates, ids, strict=True):
            req.done.set_result(wid)
        for req, _cmds in chunk:
            if not req.done.done():
                req.done.set_result(req.window_id or "")
