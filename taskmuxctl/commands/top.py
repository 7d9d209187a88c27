"""``top``: the live full-screen view of every project's tasks (Textual, imported here only)."""

from __future__ import annotations

import sys

from taskmuxctl.context import Context
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.result import CommandError, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def top(ctx: Context, args: Any) -> Result:
    if ctx.as_json:
        raise CommandError("top is a full-screen view; for JSON use `taskmux status --json` or "
                           "`taskmux events -f --json`", Code.USAGE)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CommandError("top needs a terminal; use `taskmux status` or `taskmux events -f`",
                           Code.USAGE)
    ctx.daemon()  # started now if it is not running (and allowed), before the screen opens
    try:
        from taskmuxctl.top.app import run
    except ImportError as exc:
        raise CommandError(f"top needs the Python package textual ({exc}); reinstall taskmux",
                           Code.USAGE) from None
    run(ctx.paths, args.project)
    return Result({}, None)
