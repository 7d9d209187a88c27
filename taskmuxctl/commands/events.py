"""``events``: the event history (read straight from events.jsonl), and following it."""

from __future__ import annotations

from taskmuxctl.context import Context
from taskmuxctl.result import Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def follow_after(ctx: Context, result: Result, project: str) -> Result:
    """Print ``result``, then the project's events as they happen, until interrupted."""
    import sys

    from taskmuxctl.result import render

    render(result, ctx.as_json)
    sys.stdout.flush()
    from taskmuxctl.eventlog import follow, format_event

    try:
        for event in follow(ctx.paths.events, project=project, task=None, since=None, tail=0):
            if ctx.as_json:
                from taskmuxctl import jsonio

                print(jsonio.dumps(event), flush=True)
            else:
                print(format_event(event), flush=True)
    except KeyboardInterrupt:
        pass
    return Result(result.data, None if not ctx.as_json else None, result.exit_code)
