"""The one door to tmux. Every tmux command the daemon runs goes through ``Tmux.run``, which
logs it with its exit status and stderr, and turns failure into ``TmuxError``.

Commands go over one persistent control-mode connection (``tmuxcontrol``) while there is one:
no tmux process per launch, restart or status. There is none while the server is not running
(or has no session to attach to); then each command runs as a ``tmux`` process, and the first
one that succeeds (the ``new-session`` of a first launch) connects again.

What tmux reports on the connection becomes supervision events, given to ``on_event`` as they
come: ``SessionsChanged`` (a session came or went), ``WindowClosed`` (a window was closed,
whoever closed it), ``PanesDead`` (the panes whose process has ended: every connection
subscribes, with ``refresh-client -B``, to one format listing the dead panes of every
session, which tmux looks at once a second and reports when it changes, and reports in full
on each new connection) and ``ServerGone`` (the connection ended: the server exited or was
killed; the restore path). Nothing here changes any task's state: the projects map these
onto their supervisors' events.

"No server running" and "no such session" are facts, reported as such (empty results); tmux
missing or failing is an error, never mistaken for "no windows". Output is parsed here, where
it enters, into typed values.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from taskmuxctl.core.errors import DaemonError
from taskmuxctl.core.protocol import Code
from taskmuxd import ownenv, privacy
from taskmuxd.tmuxcontrol import (
    Connection,
    ConnectionLost,
    Event,
    Reply,
    SessionsChanged,
    SubscriptionChanged,
    WindowClose,
)

log = logging.getLogger("taskmuxd.tmux")

SEP = "\x1f"  # unit separator: cannot appear in names taskmux allows
WINDOW_FORMAT = SEP.join([
    "#{session_name}", "#{window_id}", "#{window_name}", "#{@taskmux_task}", "#{pane_id}",
    "#{pane_pid}", "#{pane_dead}", "#{pane_dead_status}",
])
_DYING = "server exited unexpectedly"
DYING_SERVER_TRIES = 5  # a client that met a server on its way out asks again, this often
DYING_SERVER_PAUSE = 0.02  # seconds, times the attempt
_NO_SERVER = ("no server running", "error connecting to", "server exited unexpectedly")
_NO_TARGET = ("can't find session", "can't find window", "can't find pane", "session not found")
# Commands that change nothing: asked again through a process when the connection ended
# before their answer. Any other command may have run: the caller hears of the failure.
_READ_ONLY = frozenset(("list-windows", "list-sessions", "list-panes", "has-session",
                        "display-message", "show-options", "show-buffer"))
RECONNECT_PAUSE = 2.0  # seconds before connecting again after an attempt that failed
DEAD_SUBSCRIPTION = "taskmux-dead"
# Every dead pane of every session: "%pane.@window.pid.status " each (status empty when a
# signal ended it). tmux expands it once a second and reports it when it changes.
DEAD_FORMAT = ("#{S:#{W:#{P:#{?pane_dead,#{pane_id}.#{window_id}.#{pane_pid}."
               "#{pane_dead_status} ,}}}}")
MAX_DEAD_PANES = 10_000  # read from one report (hostile input is bounded)


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


@dataclass(frozen=True)
class DeadPane:
    pane_id: str
    window_id: str
    pid: int | None  # the process that ran in it (the runner, for a task's pane)
    status: int | None  # its exit status; None when a signal ended it


@dataclass(frozen=True)
class WindowClosed:
    """A window was closed (by taskmux, the user, or its last pane ending without
    ``remain-on-exit``)."""

    window_id: str


@dataclass(frozen=True)
class PanesDead:
    """Every pane of the server whose process has ended, as of now (a full list)."""

    panes: tuple[DeadPane, ...]


@dataclass(frozen=True)
class ServerGone:
    """The control connection ended: the server exited or was killed, or let the client go
    (its session was closed). Whether the sessions are gone is for the listener to ask."""


TmuxEvent = SessionsChanged | WindowClosed | PanesDead | ServerGone
__all__ = ["DeadPane", "PanesDead", "ServerGone", "SessionsChanged", "Tmux", "TmuxError",
           "TmuxEvent", "Window", "WindowClosed", "parse_dead", "parse_window"]


def parse_dead(value: str) -> PanesDead:
    """The value of ``DEAD_FORMAT`` as typed panes; malformed entries are skipped."""
    panes = []
    for item in value.split()[:MAX_DEAD_PANES]:
        parts = item.split(".")
        if len(parts) != 4 or not parts[0].startswith("%") or not parts[1].startswith("@"):
            continue
        pid, status = parts[2], parts[3]
        panes.append(DeadPane(parts[0], parts[1], int(pid) if pid.isdigit() else None,
                              int(status) if status.lstrip("-").isdigit() else None))
    return PanesDead(tuple(panes))


class Tmux:
    """A tmux server: the user's default one, or ``-L socket_name``."""

    def __init__(self, socket_name: str | None = None, binary: str | None = None) -> None:
        self.socket_name = socket_name
        self.binary = binary or shutil.which("tmux") or "tmux"
        self.base = [self.binary] + (["-L", socket_name] if socket_name else [])
        self.on_event: Callable[[TmuxEvent], None] | None = None
        self.control: Connection | None = None
        self.connects = 0  # control connections made
        self.processes = 0  # tmux processes run for commands
        self._connecting: asyncio.Task[bool] | None = None
        self._retry_at = 0.0
        self._closed = True

    def describe(self) -> str:
        return f"tmux -L {self.socket_name}" if self.socket_name else "tmux (default server)"

    # -- the control connection -------------------------------------------------------------

    async def start(self) -> None:
        """Connect, when a server with a session is there to connect to."""
        self._closed = False
        await self.connect()

    async def close(self) -> None:
        self._closed = True
        if self._connecting is not None:
            await asyncio.gather(self._connecting, return_exceptions=True)
            self._connecting = None
        control, self.control = self.control, None
        if control is not None:
            await control.close()

    @property
    def connected(self) -> bool:
        return self.control is not None and self.control.alive

    async def connect(self) -> bool:
        """Whether a control connection is up (one attempt at a time)."""
        if self.connected:
            return True
        if self._closed:
            return False
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._open())
        return await asyncio.shield(self._connecting)

    async def _open(self) -> bool:
        conn = Connection(self.base, _tmux_env(), privacy.child_umask(), self._event,
                          self._lost)
        if not await conn.open():
            self._retry_at = time.monotonic() + RECONNECT_PAUSE
            return False
        if self._closed:
            await conn.close()
            return False
        self.control = conn
        self.connects += 1
        log.debug("control connection to %s", self.describe())
        # Not awaited: the answer is of no use, and a request waits its turn on the line.
        conn.request([["refresh-client", "-B",
                       f"{DEAD_SUBSCRIPTION}::{DEAD_FORMAT}"]]).add_done_callback(_subscribed)
        return True

    def _event(self, event: Event) -> None:
        if isinstance(event, SessionsChanged):
            self._tell(event)
        elif isinstance(event, WindowClose):
            self._tell(WindowClosed(event.window_id))
        elif isinstance(event, SubscriptionChanged) and event.name == DEAD_SUBSCRIPTION:
            self._tell(parse_dead(event.value))

    def _lost(self) -> None:
        """The server went away or let the client go: say so at once, and connect again if
        there is still something to attach to."""
        self.control = None
        self._tell(ServerGone())
        if not self._closed:
            self._connecting = asyncio.get_running_loop().create_task(self._open())

    def _tell(self, event: TmuxEvent) -> None:
        if self.on_event is not None and not self._closed:
            try:
                self.on_event(event)
            except Exception:  # a listener's bug must not end the connection's reader
                log.exception("handling %r failed", event)

    def _after_process(self, first: str) -> None:
        """A command ran as a process and succeeded: there is a server; connect to it."""
        if self._closed or self.connected or (
                self._connecting is not None and not self._connecting.done()):
            return
        if first == "new-session" or time.monotonic() >= self._retry_at:
            self._connecting = asyncio.get_running_loop().create_task(self._open())

    async def run(self, *commands: Sequence[str], allow_missing: bool = False,
                  input: bytes | None = None) -> str | None:
        """Run one or more tmux commands in a single invocation (joined with ``;``).

        ``input`` is given to tmux on stdin (``load-buffer -b NAME -`` reads it). Returns
        stdout; None when ``allow_missing`` and the server or target does not exist.
        """
        if input is None and self.control is not None and self.control.alive:
            try:
                reply = await self.control.request(commands)
            except ConnectionLost:
                if not all(cmd[0] in _READ_ONLY for cmd in commands):
                    raise TmuxError("tmux went away while running "
                                    f"{', '.join(cmd[0] for cmd in commands)}") from None
            else:
                text = "".join(line + "\n" for line in reply.lines)
                if reply.ok:
                    return text
                self._failed(["(control)", *_joined(commands)], None, text.strip(),
                             allow_missing)
                return None
        return await self._run_process(commands, allow_missing, input)

    def _failed(self, argv: list[str], status: int | None, stderr: str,
                allow_missing: bool) -> None:
        """Raise TmuxError, unless the target or server is missing and that is allowed."""
        lowered = stderr.lower()
        if allow_missing and any(s in lowered for s in _NO_SERVER + _NO_TARGET):
            return
        log.warning("%s failed (%s): %s", _show(argv), status, stderr)
        raise TmuxError(f"tmux failed: {stderr or 'exit status ' + str(status)}",
                        {"argv": argv, "status": status, "stderr": stderr})

    async def _run_process(self, commands: Sequence[Sequence[str]], allow_missing: bool,
                           input: bytes | None) -> str | None:
        argv = [*self.base, *_joined(commands)]
        for attempt in range(1, DYING_SERVER_TRIES + 1):
            returncode, out, stderr = await self._spawn(argv, input)
            # The client reached a server on its way out (killed, or its last session just
            # closed): nothing ran. Once it is gone the next client starts a new one.
            if returncode == 0 or _DYING not in stderr.lower() or attempt == DYING_SERVER_TRIES:
                break
            await asyncio.sleep(DYING_SERVER_PAUSE * attempt)
        if returncode == 0:
            if commands:
                self._after_process(commands[0][0])
            return out.decode(errors="replace")
        self._failed(argv, returncode, stderr, allow_missing)
        return None

    async def _spawn(self, argv: list[str], input: bytes | None) -> tuple[int | None, bytes, str]:
        """One tmux client process: its status, stdout and stderr."""
        self.processes += 1
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
        return proc.returncode, out, stderr

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


def _subscribed(done: asyncio.Future[Reply]) -> None:
    if done.cancelled() or done.exception() is not None:
        return  # the connection ended already: the next one subscribes again
    if not done.result().ok:  # an older tmux: the sweep and the runners' reports remain
        log.info("tmux refused the dead-pane subscription: %s", " ".join(done.result().lines))


def parse_window(line: str) -> Window:
    parts = line.split(SEP)
    if len(parts) != 8:
        raise TmuxError(f"unexpected tmux output: {line!r}")
    session, wid, name, task, pane, pid, dead, status = parts
    return Window(session, wid, name, task, pane, int(pid) if pid.isdigit() else None,
                  dead == "1", int(status) if status.lstrip("-").isdigit() else None)


def _joined(commands: Sequence[Sequence[str]]) -> list[str]:
    """Commands as one tmux command line's arguments, separated by ``;``."""
    argv: list[str] = []
    for i, cmd in enumerate(commands):
        if i:
            argv.append(";")
        argv.extend(cmd)
    return argv


def _tmux_env() -> dict[str, str]:
    """tmux run from inside a tmux pane would talk to that server; the socket decides."""
    env = ownenv.for_child(dict(os.environ))
    env.pop("TMUX", None)
    env.pop("TMUX_PANE", None)
    return env


def _show(argv: list[str]) -> str:
    return " ".join(a if a and " " not in a else repr(a) for a in argv)
