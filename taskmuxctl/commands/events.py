"""``events`` and ``watch``: the event history, read straight from events.jsonl; followed
(``-f``) as the daemon pushes it (``events.subscribe``), or from the file while the daemon
is not running."""

from __future__ import annotations

import sys

from taskmuxctl import projectfile
from taskmuxctl.context import Context
from taskmuxctl.core import eventread
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.result import CommandError, Result, render

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

RELOAD_EVENTS = {"config_reloaded", "config_invalid", "config_valid", "task_started",
                 "task_stopped", "task_restarted", "project_registered"}


def _since(text: str | None) -> float | None:
    if not text:
        return None
    from taskmuxctl.core.timefmt import TimeError, parse_since

    try:
        return parse_since(text)
    except TimeError as exc:
        raise CommandError(str(exc), Code.USAGE) from None


def _project(ctx: Context, args: Any) -> str | None:
    if getattr(args, "all_projects", False):
        return None
    pf = projectfile.load(args.project, ctx.paths)
    projectfile.warn_broken(pf, ctx.prog)  # a broken file: its registered record is used
    return pf.name


def _stream(ctx: Context, events: Any) -> None:
    from taskmuxctl.core import jsonio

    try:
        for e in events:
            line = jsonio.dumps(e) if ctx.as_json else eventread.format_event(e)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        pass


def pushed(ctx: Context, project: str | None, task: str | None, since: float | None,
           tail: int, kinds: set[str] | None = None,
           after: int | None = None) -> Iterator[dict[str, Any]]:
    """The last ``tail`` matching events from the file, then new ones as the daemon pushes
    them (resuming after a reconnection without a gap); polling the file instead when the
    daemon is not running. ``after``: push every event after this id (read by the caller
    earlier), not only those after the file's newest when the stream starts."""
    from taskmuxctl import eventfollow
    from taskmuxctl.core.rpcclient import DaemonUnavailable

    cursor = after if after is not None else eventfollow.last_id(ctx.paths.events) or 0
    try:
        stream = eventfollow.follow(ctx.paths, project, task, kinds, cursor,
                                    on_gap=lambda n: sys.stderr.write(
                                        f"{ctx.prog}: note: {n} event(s) were trimmed from the "
                                        "history before they could be shown\n"))
    except DaemonUnavailable:
        yield from eventread.follow(ctx.paths.events, project, task, since, tail, kinds)
        return
    if tail:
        for e in eventread.read(ctx.paths.events, project, task, since, None, kinds)[-tail:]:
            if not isinstance(e.get("id"), int) or e["id"] <= cursor:
                yield e
    for e in stream:
        if eventread.matches(e, None, None, since):
            yield e


def events(ctx: Context, args: Any) -> Result:
    project = _project(ctx, args)
    since = _since(args.since)
    if args.follow:
        _stream(ctx, pushed(ctx, project, args.task, since, args.lines or 10))
        return Result({}, None)
    skipped = [0]
    found = eventread.read(ctx.paths.events, project, args.task, since, args.lines,
                          skipped=skipped)
    text = "\n".join(eventread.format_event(e) for e in found) or "(no events)"
    data: dict[str, Any] = {"events": found, "count": len(found)}
    if skipped[0]:
        data["skipped_lines"] = skipped[0]
        sys.stderr.write(f"{ctx.prog}: note: skipped {skipped[0]} damaged line(s) in "
                         f"{ctx.paths.events} (a writer was cut off mid-line; the rest is "
                         "intact)\n")
    return Result(data, text)


def watch(ctx: Context, args: Any) -> Result:
    project = _project(ctx, args)
    if not ctx.as_json:
        print(f"watching {'every project' if project is None else project} for config "
              "reloads (Ctrl-C to stop)", flush=True)
    _stream(ctx, pushed(ctx, project, None, None, 0, RELOAD_EVENTS))
    return Result({}, None)


def follow_after(ctx: Context, result: Result, project: str) -> Result:
    """``start --monitor``: print the start's result, then the project's events until Ctrl-C.
    Every event after the start's answer is shown, those from before the stream is open too
    (a task that crashed as soon as it started): where the stream begins is read before the
    result is printed."""
    from taskmuxctl import eventfollow

    after = eventfollow.last_id(ctx.paths.events) or 0
    render(result, ctx.as_json)
    sys.stdout.flush()
    _stream(ctx, pushed(ctx, project, None, None, 0, after=after))
    return Result({}, None)
