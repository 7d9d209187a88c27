"""The one door to tmux. Every tmux command the daemon runs goes through ``Tmux.run``, which
logs it with its exit status and stderr, and turns failure into ``TmuxError``.

"No server running" and "no such session" are facts, reported as such (empty results); tmux
missing or failing is an error, never mistaken for "no windows". Output is parsed here, where
it enters, into typed values.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from taskmuxctl.protocol import Code
from taskmuxd import ownenv, privacy
from taskmuxd.errors import DaemonError

log = logging.getLogger("taskmuxd.tmux")

SEP = "\x1f"  # unit separator: cannot appear in names taskmux allows
WINDOW_FORMAT = SEP.join([
    "#{session_name}", "#{window_id}", "#{window_name}", "#{@taskmux_task}", "#{pane_id}",
    "#{pane_pid}", "#{pane_dead}", "#{pane_dead_status}",
])
_NO_SERVER = ("no server running", "error connecting to", "server exited unexpectedly")
_NO_TARGET = ("can't find session", "can't find window", "can't find pane", "session not found")


class TmuxError(DaemonError):
    default_code = Code.TMUX_UNAVAILABLE


@dataclass(frozen=True)
class Window:
    session: str
    window_id: str
    name: str
    task: str  # the @taskmux_task option; "" for windows taskmux did not make
    pane_id: str
    pane_pid: int | None
    dead: bool
    dead_status: int | None


class Tmux:
    """A tmux server: the user's default one, or ``-L socket_name``."""

    def __init__(self, socket_name: str | None = None, binary: str | None = None) -> None:
        self.socket_name = socket_name
        self.binary = binary or shutil.which("tmux") or "tmux"
        self.base = [self.binary] + (["-L", socket_name] if socket_name else [])

    def describe(self) -> str:
        return f"tmux -L {self.socket_name}" if self.socket_name else "tmux (default server)"

    async def run(self, *commands: Sequence[str], allow_missing: bool = False,
                  input: bytes | None = None) -> str | None:
        """Run one or more tmux commands in a single invocation (joined with ``;``).

        ``input`` is given to tmux on stdin (``load-buffer -b NAME -`` reads it). Returns
        stdout; None when ``allow_missing`` and the server or target does not exist.
        """
        argv = list(self.base)
        for i, cmd in enumerate(commands):
            if i:
                argv.append(";")
            argv.extend(cmd)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL if input is None else asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=_tmux_env(),
                umask=privacy.child_umask())
        except FileNotFoundError:
            raise TmuxError(f"tmux is not installed (looked for {self.binary!r}); install "
                            "tmux 3.0 or newer") from None
        out, err = await proc.communicate(input)
        stderr = err.decode(errors="replace").strip()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %s %s", _show(argv), proc.returncode, stderr)
        if proc.returncode == 0:
            return out.decode(errors="replace")
        lowered = stderr.lower()
        if allow_missing and any(s in lowered for s in _NO_SERVER + _NO_TARGET):
            return None
        log.warning("%s failed (%s): %s", _show(argv), proc.returncode, stderr)
        raise TmuxError(f"tmux failed: {stderr or 'exit status ' + str(proc.returncode)}",
                        {"argv": argv, "status": proc.returncode, "stderr": stderr})

    async def has_session(self, session: str) -> bool:
        out = await self.run(["has-session", "-t", f"={session}"], allow_missing=True)
        return out is not None

    async def windows(self, session: str | None = None) -> list[Window]:
        """Windows of ``session`` (or of every session); [] when there is no server."""
        cmd = ["list-windows", "-F", WINDOW_FORMAT]
        cmd += ["-t", f"={session}"] if session else ["-a"]
        out = await self.run(cmd, allow_missing=True)
        if out is None:
            return []
        return [parse_window(line) for line in out.splitlines() if line.strip()]


def parse_window(line: str) -> Window:
    parts = line.split(SEP)
    if len(parts) != 8:
        raise TmuxError(f"unexpected tmux output: {line!r}")
    session, wid, name, task, pane, pid, dead, status = parts
    return Window(session, wid, name, task, pane, int(pid) if pid.isdigit() else None,
                  dead == "1", int(status) if status.lstrip("-").isdigit() else None)


def _tmux_env() -> dict[str, str]:
    """tmux run from inside a tmux pane would talk to that server; the socket decides."""
    env = ownenv.for_child(dict(os.environ))
    env.pop("TMUX", None)
    env.pop("TMUX_PANE", None)
    return env


def _show(argv: list[str]) -> str:
    return " ".join(a if a and " " not in a else repr(a) for a in argv)
