"""One persistent connection to a tmux server in control mode (``tmux -C``), for ``tmux.Tmux``.

The connection is a control client attached to an existing session with ``no-output`` (no
``%output`` flood) and ``ignore-size`` (it never resizes anyone's windows): tmux shows that
session as attached. It never creates a session nor starts a server (``-N``), so the server
lives and dies exactly as it would without taskmux's connection (tmux 3.2 or newer; with an
older tmux there is no connection and every command runs as a process).

What tmux writes is parsed here into typed values: ``Reply`` for each command's
``%begin``/``%end`` (or ``%error``) block, and notifications (``SessionsChanged``,
``WindowClose``, ``SubscriptionChanged``, ``Exit``, ``Notification`` for the rest). A request
is one line of commands joined with ``;``: tmux answers each command with a block, and stops
at the first error, so a request is complete after as many ``%end`` blocks as it had commands
or at its first ``%error``. Arguments are always double-quoted with tmux's own escapes
(``quote``), so a path, an environment value or a format with a unit separator arrives as it
was.

The connection ends when tmux ends it: the server exits (``kill-server``, its last session
gone) or detaches it. Requests still waiting then fail with ``ConnectionLost``; the owner
(``Tmux``) hears of it at once through ``on_lost`` and decides whether to reconnect.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("taskmuxd.tmux")

LINE_LIMIT = 4 * 1024 * 1024  # bytes in one line tmux sends (a long list-windows, a buffer)
REPLY_LIMIT = 64 * 1024 * 1024  # bytes of output one request may gather
OPEN_TIMEOUT = 5.0
ATTACH_FLAGS = "no-output,ignore-size"


class ConnectionLost(Exception):
    """The control client ended before the request was answered."""


@dataclass(frozen=True)
class Reply:
    """One command's block: its output lines, and whether it ended in ``%error``. ``mine``:
    sent by this client (tmux also reports, with flags 0, the attach command itself)."""

    ok: bool
    lines: tuple[str, ...]
    mine: bool = True


@dataclass(frozen=True)
class Notification:
    """A ``%name args...`` line outside a block that has no class of its own."""

    name: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class SessionsChanged:
    """A session was created or destroyed (any session of the server)."""


@dataclass(frozen=True)
class WindowClose:
    window_id: str


@dataclass(frozen=True)
class SubscriptionChanged:
    """``%subscription-changed``: the value of a format subscribed to with ``refresh-client
    -B name:what:format`` changed (tmux looks at most once a second). ``session``,
    ``window``, ``index`` and ``pane`` say where, ``-`` where the subscription does not
    reach (one for the whole session)."""

    name: str
    session: str
    window: str
    index: str
    pane: str
    value: str


@dataclass(frozen=True)
class Exit:
    """tmux is ending this client (the server is exiting, or the client was detached)."""

    reason: str = ""


Event = Reply | Notification | SessionsChanged | WindowClose | SubscriptionChanged | Exit


_ESCAPES = {**{c: f"\\{c:03o}" for c in (*range(32), 127)},
            ord("\n"): "\\n", ord("\\"): "\\\\", ord('"'): '\\"', ord("$"): "\\$"}


def quote(arg: str) -> str:
    """``arg`` as one argument of a tmux command line: double quotes, with ``\\``, ``"``
    and ``$`` escaped and control characters written as octal escapes (one ``translate``,
    in C: a launch's command line is a few thousand characters)."""
    return f'"{arg.translate(_ESCAPES)}"'


def command_line(commands: Sequence[Sequence[str]]) -> str:
    """One control-mode line that runs ``commands`` in order."""
    return " ; ".join(" ".join(quote(a) for a in cmd) for cmd in commands)


@dataclass
class Parser:
    """Lines from tmux in, typed events out. Inside a block every line is output, even one
    that looks like a notification; the block ends only at the ``%end``/``%error`` line
    with the same time, number and flags as its ``%begin``."""

    _block: tuple[str, str, str] | None = None
    _lines: list[str] = field(default_factory=list)

    def feed(self, line: str) -> Event | None:
        if self._block is not None:
            word, _, rest = line.partition(" ")
            if word in ("%end", "%error") and tuple(rest.split(" ")) == self._block:
                flags = self._block[2]
                reply = Reply(word == "%end", tuple(self._lines), mine=flags.endswith("1"))
                self._block, self._lines = None, []
                return reply
            self._lines.append(line)
            return None
        if not line.startswith("%"):
            return Notification("(stray)", (line,))  # tmux writes nothing outside blocks
        name, *args = line[1:].split(" ")
        if name == "begin" and len(args) == 3:
            self._block = (args[0], args[1], args[2])
            return None
        if name == "sessions-changed":
            return SessionsChanged()
        if name in ("window-close", "unlinked-window-close") and args:
            return WindowClose(args[0])
        if name == "subscription-changed":
            return _subscription(line)
        if name == "exit":
            return Exit(" ".join(args))
        return Notification(name, tuple(args))


def _subscription(line: str) -> Event:
    """``%subscription-changed name $s @w index %p [reserved...] : value``: the value is
    everything after the first `` : `` (it may hold spaces and colons of its own)."""
    head, sep, value = line.partition(" : ")
    if not sep and line.endswith(" :"):  # an empty value
        head, sep = line[:-2], " : "
    words = head.split(" ")
    if not sep or len(words) < 6:
        return Notification("subscription-changed", tuple(words[1:]))
    return SubscriptionChanged(words[1], words[2], words[3], words[4], words[5], value)


@dataclass
class _Pending:
    left: int  # %end blocks still to come
    lines: list[str]
    done: asyncio.Future[Reply]
    size: int = 0


class Connection:
    """A control client of one tmux server (``base``: ``tmux [-L NAME]``)."""

    def __init__(self, base: Sequence[str], env: dict[str, str], umask: int,
                 on_event: Callable[[Event], None], on_lost: Callable[[], None]) -> None:
        self.base = list(base)
        self.env = env
        self.umask = umask
        self.on_event = on_event
        self.on_lost = on_lost
        self.proc: asyncio.subprocess.Process | None = None
        self.alive = False
        self._pending: collections.deque[_Pending] = collections.deque()
        self._reader: asyncio.Task[None] | None = None
        self._attached: asyncio.Future[bool] | None = None

    async def open(self) -> bool:
        """Attach to the server; False when there is no server or no session to attach to
        (nothing is started)."""
        loop = asyncio.get_running_loop()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.base, "-N", "-C", "attach-session", "-f", ATTACH_FLAGS,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, env=self.env, umask=self.umask,
                limit=LINE_LIMIT)
        except OSError as exc:
            log.debug("tmux control client not started: %s", exc)
            return False
        self._attached = loop.create_future()
        self._reader = loop.create_task(self._read(self.proc))
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                ok = await asyncio.shield(self._attached)
        except TimeoutError:
            ok = False
        if not ok:
            await self.close()
            return False
        self.alive = True
        return True

    def request(self, commands: Sequence[Sequence[str]]) -> asyncio.Future[Reply]:
        """Send ``commands`` as one line; the future is their combined reply (output of
        every command; ``ok`` False at the first error, with the error's lines)."""
        done: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        if not self.alive or self.proc is None or self.proc.stdin is None:
            done.set_exception(ConnectionLost("not connected"))
            return done
        self._pending.append(_Pending(len(commands), [], done))
        self.proc.stdin.write(command_line(commands).encode() + b"\n")
        return done

    async def close(self) -> None:
        """End the client (tmux detaches it; the session and the server are untouched)."""
        self._lose()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # tmux detaches a control client at end of input
            try:
                async with asyncio.timeout(2):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        parser = Parser()
        assert proc.stdout is not None
        try:
            while True:
                raw = await proc.stdout.readline()
                if not raw.endswith(b"\n"):
                    break  # end of output: the client is gone
                event = parser.feed(raw[:-1].decode(errors="replace"))
                if event is not None:
                    self._dispatch(event)
        except (ValueError, asyncio.LimitOverrunError, OSError) as exc:
            log.warning("tmux control connection: %s", exc)
        finally:
            if self._attached is not None and not self._attached.done():
                self._attached.set_result(False)
            if proc.stdin is not None:  # tmux exits at the end of its output, or of input
                proc.stdin.close()
            self._ended()

    def _ended(self) -> None:
        """The client is over (``%exit``, or its output ended): tell the owner, once."""
        was_alive = self.alive
        self._lose()
        if was_alive:
            self.on_lost()

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Reply):
            if not event.mine:  # the attach command's own block: attached (or refused)
                if self._attached is not None and not self._attached.done():
                    self._attached.set_result(event.ok)
                return
            self._answer(event)
            return
        if isinstance(event, Exit):
            if self._attached is not None and not self._attached.done():
                self._attached.set_result(False)
            self._ended()  # nothing more comes: no need to wait for the end of the output
            return
        self.on_event(event)

    def _answer(self, reply: Reply) -> None:
        if not self._pending:
            log.warning("tmux control connection: a reply nobody asked for: %r", reply)
            return
        head = self._pending[0]
        head.size += sum(len(line) + 1 for line in reply.lines)
        if head.size <= REPLY_LIMIT:  # beyond it the blocks are still counted, not kept
            head.lines.extend(reply.lines)
        head.left -= 1
        if not reply.ok or head.left <= 0:
            self._pending.popleft()
            if not head.done.done():
                head.done.set_result(Reply(reply.ok and head.size <= REPLY_LIMIT,
                                           tuple(head.lines)))

    def _lose(self) -> None:
        self.alive = False
        while self._pending:
            pending = self._pending.popleft()
            if not pending.done.done():
                pending.done.set_exception(ConnectionLost("the tmux control client ended"))
