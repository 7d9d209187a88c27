"""What a command returns, and how it is shown: text for people, an envelope for ``--json``.

Success: ``{"ok": true, ...data}``. Failure: ``{"ok": false, "error": "...", "code": N}``
(plus ``"data"`` when the error carries details). The exit status is 0 on success and
non-zero on any failure; a command may choose another (``status`` follows LSB).
"""

from __future__ import annotations

import sys

from taskmuxctl.core import jsonio
from taskmuxctl.core.protocol import RpcError, error_name

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class Result:
    __slots__ = ("data", "exit_code", "text")

    def __init__(self, data: dict[str, Any] | None = None, text: str | None = None,
                 exit_code: int = EXIT_OK) -> None:
        self.data = data or {}
        self.text = text
        self.exit_code = exit_code


class CommandError(RpcError):
    """A failure the user can act on: the message says what is wrong and what to do."""

    def __init__(self, message: str, code: int, data: Any = None,
                 exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(code, message, data)
        self.exit_code = exit_code


def envelope_ok(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": True}
    out.update(data)
    out["ok"] = True
    return out


def envelope_error(err: RpcError) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": False, "error": err.message, "code": err.code,
                           "kind": error_name(err.code)}
    if err.data is not None:
        out["data"] = err.data
    return out


def render(result: Result, as_json: bool) -> int:
    if as_json:
        sys.stdout.write(jsonio.dumps(envelope_ok(result.data)) + "\n")
    elif result.text is not None:
        sys.stdout.write(result.text if result.text.endswith("\n") or not result.text
                         else result.text + "\n")
    return result.exit_code


def render_error(err: RpcError, as_json: bool, prog: str = "taskmux") -> int:
    if as_json:
        sys.stdout.write(jsonio.dumps(envelope_error(err)) + "\n")
    else:
        sys.stderr.write(f"{prog}: error: {err.message}\n")
    exit_code = getattr(err, "exit_code", EXIT_FAILURE)
    return exit_code if isinstance(exit_code, int) and exit_code else EXIT_FAILURE
