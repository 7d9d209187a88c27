"""``send`` (type into a task's pane, through the daemon) and ``attach`` (put this terminal
on the project's tmux session)."""

from __future__ import annotations

import os

from taskmuxctl.context import Context
from taskmuxctl.core.protocol import Code, Method
from taskmuxctl.core.result import EXIT_USAGE, CommandError, Result
from taskmuxctl.core.whichproject import project_params

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def send(ctx: Context, args: Any) -> Result:
    text = " ".join(args.text) if args.text else None
    keys = list(args.keys or [])
    if not text and not keys:
        raise CommandError("give the text to type, or --keys KEY... (e.g. --keys C-c)",
                           Code.USAGE, exit_code=EXIT_USAGE)
    params = project_params(args.project)
    params.update(task=args.task, enter=not args.no_enter)
    if text:
        params["text"] = text
    if keys:
        params["keys"] = keys
    out = ctx.call(Method.TASK_SEND, params)
    parts = []
    if out["bytes"]:
        parts.append(("pasted" if out["paste"] else "typed") + f" {out['bytes']} bytes")
    if out["enter"]:
        parts.append("Enter")
    if out["keys"]:
        parts.append(" ".join(out["keys"]))
    return Result(out, f"{out['task']}: {', then '.join(parts)}")


def attach(ctx: Context, args: Any) -> Result:
    """Attach this terminal to the project's session, at the task's window.

    Unlike every other command this runs tmux itself, in the foreground: that is the user's own
    terminal becoming a tmux client, not tmux work on the daemon's behalf (the daemon only says
    which server, session and window). Inside tmux on the same server it switches instead.
    """
    import shutil

    params = project_params(args.project)
    if args.task:
        params["task"] = args.task
    out = ctx.call(Method.PROJECT_TMUX, params)
    if not out["running"]:
        raise CommandError(f"project {out['project']!r} has no tmux session (nothing runs); "
                           "start it with `taskmux start`", Code.TASK_NOT_RUNNING, out)
    if args.task and not out["window"]:
        raise CommandError(f"task {args.task!r} has no tmux window (it is not running); start "
                           f"it with `taskmux start {args.task}`", Code.TASK_NOT_RUNNING, out)
    tmux = shutil.which("tmux")
    if tmux is None:
        raise CommandError("tmux is not installed (not found on PATH)", Code.TMUX_UNAVAILABLE)
    argv = [tmux] + (["-L", out["socket_name"]] if out["socket_name"] else [])
    if out["window"]:
        argv += ["select-window", "-t", out["window"], ";"]
    inside = os.environ.get("TMUX")
    if inside:
        if inside.split(",")[0] != out["socket_path"]:
            raise CommandError(
                f"this terminal is inside another tmux server ({inside.split(',')[0]}), not "
                f"taskmux's ({out['socket_path']}); detach first, or nest it with `env -u TMUX "
                f"taskmux attach{' ' + args.task if args.task else ''}`", Code.USAGE, out)
        argv += ["switch-client", "-t", f"={out['session']}"]
    else:
        argv += ["attach-session", "-t", f"={out['session']}"]
    ctx.close()
    os.execv(tmux, argv)
    raise AssertionError("unreachable")  # pragma: no cover
