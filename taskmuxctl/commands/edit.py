"""``add`` and ``remove``: edit taskmux.toml with tomlkit, keeping comments and layout."""

from __future__ import annotations

import os

from taskmuxctl.context import Context
from taskmuxctl.core.protocol import Code, Method, RpcError
from taskmuxctl.core.result import CommandError, Result
from taskmuxctl.core.rpcclient import DaemonUnavailable
from taskmuxctl.core.whichproject import require_config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _config_path(ctx: Context, args: Any) -> str:
    name = getattr(args, "project", None)
    if name:
        out = ctx.call(Method.PROJECT_LIST)
        for p in out["projects"]:
            if p["name"] == name:
                return str(p["config"])
        raise CommandError(f"no project named {name!r} is registered", Code.PROJECT_NOT_FOUND)
    return require_config()


def _validate_or_restore(path: str, before: str, after: str) -> None:
    """Write ``after`` only if it is a valid config; otherwise explain and keep ``before``."""
    from taskmuxctl import quickconfig
    from taskmuxctl.core.fsutil import atomic_write
    from taskmuxctl.core.projectrules import ConfigError

    try:
        quickconfig.parse(after, path)
    except ConfigError as exc:
        raise CommandError(f"the change would make the file invalid, so it was not written:\n"
                           f"{exc.message}", exc.code, exc.data) from None
    del before
    atomic_write(path, after, mode=os.stat(path).st_mode & 0o777)


def _target(args: Any, path: str) -> dict[str, Any]:
    name = getattr(args, "project", None)
    return {"project": name} if name else {"config": path, "cwd": os.getcwd()}


def _apply_live(ctx: Context, args: Any, path: str) -> dict[str, Any] | None:
    """Have a running daemon apply the edited file now, so that what the command says and
    what ``status`` shows next agree; None when no daemon runs or the project is not known
    to it (the file is applied when the project is next started)."""
    try:
        out: dict[str, Any] = ctx.call(Method.PROJECT_RELOAD, _target(args, path), start=False)
    except DaemonUnavailable:
        return None
    except RpcError as exc:
        if exc.code == Code.PROJECT_NOT_FOUND:
            return None
        raise
    return out


def add(ctx: Context, args: Any) -> Result:
    import tomlkit

    path = _config_path(ctx, args)
    with open(path, encoding="utf-8") as fh:
        before = fh.read()
    doc = tomlkit.parse(before)
    tasks = doc.get("tasks")
    if tasks is None:
        tasks = tomlkit.table(is_super_table=True)
        doc["tasks"] = tasks
    if args.task in tasks:
        raise CommandError(f"task {args.task!r} already exists in {path}; remove it first or "
                           "edit the file", Code.TASK_EXISTS, {"task": args.task})
    table = tomlkit.table()
    table["command"] = args.command
    for key, value in (("cwd", args.cwd), ("host", args.host),
                       ("restart_policy", args.restart_policy),
                       ("health_url", args.health_url), ("health_check", args.health_check)):
        if value is not None:
            table[key] = value
    if args.depends_on:
        table["depends_on"] = list(args.depends_on)
    if args.no_auto_start:
        table["auto_start"] = False
    tasks[args.task] = table
    after = tomlkit.dumps(doc)
    _validate_or_restore(path, before, after)
    live = _apply_live(ctx, args, path)
    started = live is not None and args.task in live["running"]
    text = f"added task {args.task!r} to {path}"
    text += ("; the project is running, so it started" if started
             else f"; start it with `taskmux start {args.task}`")
    return Result({"task": args.task, "config": path, "action": "added", "started": started},
                  text)


def remove(ctx: Context, args: Any) -> Result:
    import tomlkit

    path = _config_path(ctx, args)
    with open(path, encoding="utf-8") as fh:
        before = fh.read()
    doc = tomlkit.parse(before)
    tasks = doc.get("tasks")
    if tasks is None or args.task not in tasks:
        raise CommandError(f"task {args.task!r} is not in {path}", Code.TASK_NOT_FOUND,
                           {"task": args.task})
    # Refuse before stopping anything: a refused removal leaves the task as it was.
    for name, task in tasks.items():
        deps = task.get("depends_on") if hasattr(task, "get") else None
        if deps is not None and args.task in deps:
            raise CommandError(f"task {name!r} depends on {args.task!r}; remove that dependency "
                               "first", Code.USAGE, {"task": args.task, "dependent": name})
    stopped = False
    try:
        out = ctx.call(Method.PROJECT_STOP, {**_target(args, path), "tasks": [args.task]},
                       start=False)
        stopped = out.get("action") == "stopped"
    except DaemonUnavailable:
        pass
    except RpcError as exc:
        if exc.code not in (Code.PROJECT_NOT_FOUND, Code.TASK_NOT_FOUND):
            raise
    del tasks[args.task]
    after = tomlkit.dumps(doc)
    # tomlkit leaves the blank line that separated the removed table; end as the file did.
    ending = before[len(before.rstrip("\n")):] or "\n"
    after = after.rstrip("\n") + ending
    _validate_or_restore(path, before, after)
    _apply_live(ctx, args, path)
    return Result({"task": args.task, "config": path, "action": "removed", "stopped": stopped},
                  f"removed task {args.task!r} from {path}"
                  + (" (stopped it first)" if stopped else ""))
