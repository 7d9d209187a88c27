"""A blocking JSON-RPC client for ``ctl.sock`` (stdlib only; ``_socket`` to skip ``enum``)."""

from __future__ import annotations

import _socket
import errno
import os

from taskmuxctl.core import jsonio
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code, LineFramer, RpcError, encode, request
from taskmuxctl.core.protocol import (
    DaemonUnavailable as DaemonUnavailable,  # noqa: PLC0414  (re-exported for its importers)
)

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

DEFAULT_TIMEOUT = 30.0


def _unavailable(paths: Paths, exc: OSError) -> DaemonUnavailable:
    sock = paths.socket
    start = "start it with `taskmuxctl daemon start`"
    if isinstance(exc, FileNotFoundError):
        return DaemonUnavailable(
            Code.DAEMON_NOT_RUNNING, "no_socket",
            f"the daemon is not running (no socket at {sock}); {start}",
        )
    if isinstance(exc, ConnectionRefusedError):
        return DaemonUnavailable(
            Code.DAEMON_NOT_RUNNING, "refused",
            f"the daemon is not running (socket {sock} refuses connections, left by a daemon "
            f"that stopped); {start}",
        )
    if isinstance(exc, PermissionError):
        return DaemonUnavailable(
            Code.DAEMON_UNREACHABLE, "permission",
            f"permission denied on {sock}: the daemon there belongs to another user; run "
            "taskmuxctl as that user, or set TASKMUX_HOME to your own state directory",
        )
    if isinstance(exc, TimeoutError):
        return DaemonUnavailable(
            Code.DAEMON_TIMEOUT, "timeout",
            f"the daemon did not answer on {sock} in time; see `taskmuxctl daemon status` "
            f"and the daemon log ({paths.daemon_log})",
        )
    if exc.errno == errno.ENAMETOOLONG or (paths.socket_path_problem() is not None):
        return DaemonUnavailable(
            Code.DAEMON_UNREACHABLE, "path_too_long", paths.socket_path_problem() or str(exc)
        )
    return DaemonUnavailable(
        Code.DAEMON_UNREACHABLE, "os_error", f"cannot reach the daemon on {sock}: {exc}"
    )


class Client:
    """One connection to the daemon; calls are sequential on it."""

    def __init__(self, paths: Paths, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.paths = paths
        self.timeout = timeout
        self._sock: Any = None
        self._framer = LineFramer()
        self._pending: list[bytes] = []
        self._next_id = 1
        self.heard = False  # the daemon sent at least one byte on this connection
        # The connection ended (end of file, reset, broken pipe) before the daemon sent a single
        # byte on it: a daemon killed while its listener still accepted looks like this.
        self.hung_up = False

    def connect(self) -> Client:
        if self.paths.host:  # the one door to another machine: ssh, then dial-stdio there
            from taskmuxctl.core.sshchannel import Channel, parse_target

            self._sock = Channel(self.paths, parse_target(self.paths.host), self.timeout,
                                 bool(os.environ.get("TASKMUX_NO_DAEMON_START")))
            return self
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.paths.socket)
        except OSError as exc:
            sock.close()
            raise _unavailable(self.paths, exc) from None
        self._sock = sock
        self.heard = self.hung_up = False
        return self

    def detach(self) -> Any:
        """Hand over the connected socket (``dial-stdio`` bridges it); the client forgets it."""
        if self._sock is None:
            self.connect()
        sock, self._sock = self._sock, None
        return sock

    def abort(self) -> None:
        """End the connection now, from another thread (``fleet``'s deadline): an ssh
        channel's ssh is killed, so a call blocked on it returns at once."""
        sock = self._sock
        kill = getattr(sock, "kill", None)
        if kill is not None:
            kill()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        return self if self._sock is not None else self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """Call ``method`` and return its result; raise RpcError for an error response."""
        if self._sock is None:
            self.connect()
        req_id = self._next_id
        self._next_id += 1
        try:
            try:
                self._sock.sendall(encode(request(method, params, req_id)))
            except (BrokenPipeError, ConnectionResetError):
                self._raise_refusal()
                raise
            while True:
                reply = self._read_message()
                if isinstance(reply, dict) and reply.get("id") == req_id:
                    break
                # A notification pushed by the daemon on this connection: not ours to answer.
        except OSError as exc:
            self.close()
            if isinstance(exc, (ConnectionResetError, BrokenPipeError)) and not self.heard:
                self.hung_up = True
            raise _unavailable(self.paths, exc) from None
        if "error" in reply:
            err = reply["error"]
            raise RpcError(int(err.get("code", Code.INTERNAL_ERROR)), str(err.get("message")),
                           err.get("data"))
        return reply.get("result")

    def set_timeout(self, seconds: float | None) -> None:
        """How long a read may wait from now on (``receive`` returns None after it)."""
        self.timeout = seconds if seconds is not None else DEFAULT_TIMEOUT
        setter = getattr(self._sock, "settimeout", None)
        if setter is not None:
            setter(seconds)

    def receive(self) -> Any:
        """The next message the daemon pushes (a notification), or None when none came
        within the timeout; DaemonUnavailable when the connection ended."""
        try:
            return self._read_message()
        except TimeoutError:
            return None
        except OSError as exc:
            self.close()
            raise _unavailable(self.paths, exc) from None

    def _raise_refusal(self) -> None:
        """The daemon closed on us before we spoke: if it said why, raise that."""
        try:
            reply = self._read_message()
        except (OSError, DaemonUnavailable):
            return
        if isinstance(reply, dict) and isinstance(reply.get("error"), dict):
            err = reply["error"]
            raise RpcError(int(err.get("code", Code.INTERNAL_ERROR)), str(err.get("message")),
                           err.get("data"))

    def _read_message(self) -> Any:
        while not self._pending:
            data = self._sock.recv(65536)
            if not data:
                self.hung_up = not self.heard
                if self.paths.host:
                    raise DaemonUnavailable(
                        Code.DAEMON_PROTOCOL, "closed",
                        f"the daemon on {self.paths.host} closed the connection before "
                        "answering; see `taskmux --host HOST daemon status` and its log")
                raise DaemonUnavailable(
                    Code.DAEMON_PROTOCOL, "closed",
                    "the daemon closed the connection before answering; see the daemon log "
                    f"({self.paths.daemon_log})",
                )
            self.heard = True
            self._pending.extend(self._framer.feed(data))
        line = self._pending.pop(0)
        try:
            return jsonio.loads(line)
        except jsonio.JSONError as exc:
            raise DaemonUnavailable(
                Code.DAEMON_PROTOCOL, "bad_reply", f"the daemon sent a malformed reply: {exc}"
            ) from None


def call(paths: Paths, method: str, params: Mapping[str, Any] | None = None,
         timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Connect, make one call, close."""
    with Client(paths, timeout) as client:
        return client.call(method, params)


def daemon_pid(paths: Paths) -> int | None:
    """The pid in ``daemon.pid`` if that process exists (it may not be answering)."""
    from taskmuxctl.core.fsutil import read_pid

    pid = read_pid(paths.pid_file)
    if pid is None:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid
