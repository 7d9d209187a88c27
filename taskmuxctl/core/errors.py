"""The daemon's error tree: each error knows its stable code and whose fault it is.

OS, tmux and library exceptions are translated once, where they enter, with ``raise ... from``;
the RPC layer turns a ``TaskmuxError`` into a JSON-RPC error object.
"""

from __future__ import annotations

from typing import Any

from taskmuxctl.core.protocol import Code, RpcError


class TaskmuxError(RpcError):
    """Base of every error the daemon reports to a caller."""

    default_code = Code.INTERNAL_ERROR

    def __init__(self, message: str, data: Any = None, code: int | None = None) -> None:
        super().__init__(self.default_code if code is None else code, message, data)


class ClientError(TaskmuxError):
    """The caller asked for something wrong: fix the request or the config."""

    default_code = Code.USAGE


class TaskError(TaskmuxError):
    """A task (or its hook) misbehaved: see its log."""

    default_code = Code.TASK_START_FAILED


class DaemonError(TaskmuxError):
    """The daemon or its environment (tmux, the file system) failed."""

    default_code = Code.INTERNAL_ERROR


class SettingsError(ClientError):
    default_code = Code.SETTINGS_INVALID
