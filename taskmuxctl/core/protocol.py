"""The wire protocol between taskmuxctl and taskmuxd: framing, method names, error codes.

JSON-RPC 2.0, one UTF-8 JSON message per line (NDJSON) on ``ctl.sock``. This module is the
single definition both sides use; it is stdlib only so the client stays fast.
"""

from __future__ import annotations

from taskmuxctl.core import jsonio

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, Literal

    # Whose fault an error is (``ERRORS``).
    Fault = Literal["client", "task", "daemon"]

PROTOCOL_VERSION = 1
# One request or response line, newline excluded. Generous for status of many projects,
# small enough that a misbehaving peer cannot make the daemon buffer without bound.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class FrameTooLarge(Exception):
    """A peer sent more than ``MAX_MESSAGE_BYTES`` without a newline."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"message longer than {limit} bytes")
        self.limit = limit


class LineFramer:
    """Bytes in, complete lines out. No I/O: the daemon drives it from asyncio, the client
    from a blocking socket."""

    __slots__ = ("_buf", "_limit")

    def __init__(self, limit: int = MAX_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every line they complete (without the newline).

        Blank lines are skipped. Raises FrameTooLarge when an unfinished line passes the limit.
        """
        self._buf += data
        lines: list[bytes] = []
        start = 0
        while True:
            nl = self._buf.find(b"\n", start)
            if nl < 0:
                break
            line = bytes(self._buf[start:nl]).rstrip(b"\r")
            if len(line) > self._limit:
                del self._buf[: nl + 1]
                raise FrameTooLarge(self._limit)
            if line.strip():
                lines.append(line)
            start = nl + 1
        if start:
            del self._buf[:start]
        if len(self._buf) > self._limit:
            self._buf.clear()
            raise FrameTooLarge(self._limit)
        return lines

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held back."""
        return len(self._buf)


def encode(message: Any) -> bytes:
    """One message as a line of compact JSON."""
    return jsonio.dumps(message).encode() + b"\n"


def request(method: str, params: Mapping[str, Any] | None,
            req_id: int | str | None) -> dict[str, Any]:
    """A request (``req_id`` None: a notification); ``params`` is one of the shapes in
    ``taskmuxctl.core.rpctypes`` or any JSON object."""
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params:
        msg["params"] = params
    if req_id is not None:
        msg["id"] = req_id
    return msg


class Method:
    """Method names, namespaced by subsystem."""

    DAEMON_PING = "daemon.ping"
    DAEMON_VERSION = "daemon.version"
    DAEMON_STATUS = "daemon.status"
    DAEMON_SHUTDOWN = "daemon.shutdown"
    CONFIG_GET = "config.get"
    CONFIG_RELOAD = "config.reload"
    UPDATE_STATUS = "update.status"
    UPDATE_CHECK = "update.check"
    UPDATE_RESTART = "update.restart"
    PROJECT_LIST = "project.list"
    PROJECT_REGISTER = "project.register"
    PROJECT_UNREGISTER = "project.unregister"
    PROJECT_STATUS = "project.status"
    PROJECT_START = "project.start"
    PROJECT_STOP = "project.stop"
    PROJECT_RESTART = "project.restart"
    PROJECT_RELOAD = "project.reload"  # apply taskmux.toml now (add/remove use it)
    TASK_KILL = "task.kill"
    TASK_INSPECT = "task.inspect"
    TASK_SEND = "task.send"
    PROJECT_TMUX = "project.tmux"  # where a project's (or task's) tmux session/window is
    HEALTH_CHECK = "health.check"
    RUNNER_STARTED = "runner.started"  # notifications from a task's runner
    RUNNER_EXITED = "runner.exited"
    RUNNER_NOTIFY = "runner.notify"  # the task's readiness, watchdog or status changed
    CA_INFO = "ca.info"
    CA_MINT = "ca.mint"
    CA_STATUS = "ca.status"
    DNS_INFO = "dns.info"
    ROUTES_LIST = "routes.list"
    DASHBOARD_SESSION = "dashboard.session"  # a one-time link to the web dashboard
    EVENTS_SUBSCRIBE = "events.subscribe"  # then notifications on the same connection:
    EVENTS_UNSUBSCRIBE = "events.unsubscribe"
    EVENT_NOTICE = "events.event"  # {"subscription", "event"}
    EVENTS_DROPPED_NOTICE = "events.dropped"  # {"subscription", "reason", "cursor"}
    # Test hooks, served only when the daemon's environment has TASKMUX_TEST_HOOKS=1.
    ROUTES_SET = "routes.set"
    ROUTES_REMOVE = "routes.remove"
    DEBUG_IDENTITY = "debug.identity"
    DEBUG_EMIT = "debug.emit"  # a burst of test events


class ErrorInfo(tuple[str, "Fault"]):
    """(name, fault); fault is "client" (the caller's input), "task" (the task's own doing)
    or "daemon" (the daemon or its environment)."""

    __slots__ = ()

    def __new__(cls, name: str, fault: Fault) -> ErrorInfo:
        return super().__new__(cls, (name, fault))

    @property
    def name(self) -> str:
        return self[0]

    @property
    def fault(self) -> Fault:
        return self[1]


class Code:
    """Stable numeric error codes. Never renumber one; add new ones."""

    # JSON-RPC 2.0's own.
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    # The Model Context Protocol's own (taskmuxctl.mcp): the client asked for a protocol
    # version the server does not speak.
    UNSUPPORTED_PROTOCOL_VERSION = -32022
    # The caller's input.
    CONFIG_NOT_FOUND = 101
    CONFIG_INVALID = 102
    SETTINGS_INVALID = 103
    SETTINGS_UNKNOWN_KEY = 104  # E104 in taskmux 0.6
    MESSAGE_TOO_LARGE = 105
    PERMISSION_DENIED = 106
    PROJECT_NOT_FOUND = 110
    TASK_NOT_FOUND = 111
    TASK_EXISTS = 112
    TASK_NOT_RUNNING = 113  # asked to type into a task that has no running process
    USAGE = 120
    REGISTRY_CONFLICT = 305  # E305 in taskmux 0.6
    # The task's own doing.
    HOOK_FAILED = 201
    DEPENDENCY_TIMEOUT = 202
    TASK_START_FAILED = 203
    WAIT_TIMEOUT = 204  # `taskmux wait`: the condition did not hold in time
    TASK_FAILED = 205  # `taskmux wait`: a task cannot meet the condition (fatal, stopped)
    # The daemon's side or its environment.
    TMUX_UNAVAILABLE = 301
    STATE_CORRUPT = 302
    DISK_FULL = 303  # the state directory's file system has no room
    SHUTTING_DOWN = 310
    # Raised by the client itself, never sent on the wire.
    DAEMON_NOT_RUNNING = 401
    DAEMON_UNREACHABLE = 402
    DAEMON_TIMEOUT = 403
    DAEMON_PROTOCOL = 404
    DAEMON_START_FAILED = 405
    SERVICE_FAILED = 406  # systemctl/launchctl refused or failed
    SERVICE_UNAVAILABLE = 407  # no usable service manager, or not allowed to use it
    # Self-update (issue 7).
    UPDATE_NOT_INSTALLED = 701
    UPDATE_BUSY = 702
    UPDATE_REFUSED = 703
    UPDATE_UNVERIFIED = 704
    UPDATE_DOWNLOAD_FAILED = 705
    UPDATE_INSTALL_FAILED = 706
    UPDATE_ROLLED_BACK = 707
    UPDATE_NO_PREVIOUS = 708
    UPDATE_NOT_SUPERVISED = 709


ERRORS: dict[int, ErrorInfo] = {
    Code.PARSE_ERROR: ErrorInfo("parse_error", "client"),
    Code.INVALID_REQUEST: ErrorInfo("invalid_request", "client"),
    Code.METHOD_NOT_FOUND: ErrorInfo("method_not_found", "client"),
    Code.INVALID_PARAMS: ErrorInfo("invalid_params", "client"),
    Code.INTERNAL_ERROR: ErrorInfo("internal_error", "daemon"),
    Code.UNSUPPORTED_PROTOCOL_VERSION: ErrorInfo("unsupported_protocol_version", "client"),
    Code.CONFIG_NOT_FOUND: ErrorInfo("config_not_found", "client"),
    Code.CONFIG_INVALID: ErrorInfo("config_invalid", "client"),
    Code.SETTINGS_INVALID: ErrorInfo("settings_invalid", "client"),
    Code.SETTINGS_UNKNOWN_KEY: ErrorInfo("settings_unknown_key", "client"),
    Code.MESSAGE_TOO_LARGE: ErrorInfo("message_too_large", "client"),
    Code.PERMISSION_DENIED: ErrorInfo("permission_denied", "client"),
    Code.PROJECT_NOT_FOUND: ErrorInfo("project_not_found", "client"),
    Code.TASK_NOT_FOUND: ErrorInfo("task_not_found", "client"),
    Code.TASK_EXISTS: ErrorInfo("task_exists", "client"),
    Code.TASK_NOT_RUNNING: ErrorInfo("task_not_running", "client"),
    Code.USAGE: ErrorInfo("usage", "client"),
    Code.REGISTRY_CONFLICT: ErrorInfo("registry_conflict", "client"),
    Code.HOOK_FAILED: ErrorInfo("hook_failed", "task"),
    Code.DEPENDENCY_TIMEOUT: ErrorInfo("dependency_timeout", "task"),
    Code.TASK_START_FAILED: ErrorInfo("task_start_failed", "task"),
    Code.WAIT_TIMEOUT: ErrorInfo("wait_timeout", "task"),
    Code.TASK_FAILED: ErrorInfo("task_failed", "task"),
    Code.TMUX_UNAVAILABLE: ErrorInfo("tmux_unavailable", "daemon"),
    Code.STATE_CORRUPT: ErrorInfo("state_corrupt", "daemon"),
    Code.DISK_FULL: ErrorInfo("disk_full", "daemon"),
    Code.SHUTTING_DOWN: ErrorInfo("shutting_down", "daemon"),
    Code.DAEMON_NOT_RUNNING: ErrorInfo("daemon_not_running", "daemon"),
    Code.DAEMON_UNREACHABLE: ErrorInfo("daemon_unreachable", "daemon"),
    Code.DAEMON_TIMEOUT: ErrorInfo("daemon_timeout", "daemon"),
    Code.DAEMON_PROTOCOL: ErrorInfo("daemon_protocol", "daemon"),
    Code.DAEMON_START_FAILED: ErrorInfo("daemon_start_failed", "daemon"),
    Code.SERVICE_FAILED: ErrorInfo("service_failed", "daemon"),
    Code.SERVICE_UNAVAILABLE: ErrorInfo("service_unavailable", "client"),
    Code.UPDATE_NOT_INSTALLED: ErrorInfo("update_not_installed", "client"),
    Code.UPDATE_BUSY: ErrorInfo("update_busy", "daemon"),
    Code.UPDATE_REFUSED: ErrorInfo("update_refused", "client"),
    Code.UPDATE_UNVERIFIED: ErrorInfo("update_unverified", "daemon"),
    Code.UPDATE_DOWNLOAD_FAILED: ErrorInfo("update_download_failed", "daemon"),
    Code.UPDATE_INSTALL_FAILED: ErrorInfo("update_install_failed", "daemon"),
    Code.UPDATE_ROLLED_BACK: ErrorInfo("update_rolled_back", "daemon"),
    Code.UPDATE_NO_PREVIOUS: ErrorInfo("update_no_previous", "client"),
    Code.UPDATE_NOT_SUPERVISED: ErrorInfo("update_not_supervised", "client"),
}


def error_name(code: int) -> str:
    info = ERRORS.get(code)
    return info.name if info else "error"


class RpcError(Exception):
    """A JSON-RPC error object, raised on the side that receives it."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_error(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


class DaemonUnavailable(RpcError):
    """The daemon could not be reached; ``reason`` says why, the message says what to do."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(code, message, {"reason": reason})
        self.reason = reason
