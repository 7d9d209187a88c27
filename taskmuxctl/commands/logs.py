"""``logs`` and ``logs-clean``: task logs read straight from their files."""

from __future__ import annotations

import os

from taskmuxctl import logread, projectfile
from taskmuxctl.context import Context
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.result import CommandError, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _paths(ctx: Context, args: Any) -> tuple[projectfile.ProjectFile, dict[str, str]]:
    pf = projectfile.load(args.project, ctx.paths)
    projectfile.warn_broken(pf, ctx.prog)
    names = [args.task] if args.task else sorted(pf.tasks)
    if args.task and pf.tasks and args.task not in pf.tasks:
        from taskmuxctl.core.suggest import did_you_mean

        raise CommandError(f"task {args.task!r} not found in {pf.path}"
                           f"{did_you_mean(args.task, pf.tasks)}; tasks: "
                           f"{', '.join(sorted(pf.tasks))}", Code.TASK_NOT_FOUND)
    if not names:
        logs_dir = ctx.paths.logs_dir(pf.name)
        names = sorted(f[:-4] for f in os.listdir(logs_dir) if f.endswith(".log")) \
            if os.path.isdir(logs_dir) else []
    return pf, {n: pf.log_path(ctx.paths, n) for n in names}


def _show(task: str, line: str, single: bool) -> str:
    return line if single else f"{task} | {line}"


def logs(ctx: Context, args: Any) -> Result:
    pf, paths = _paths(ctx, args)
    single = bool(args.task)
    since = None
    if args.since:
        from taskmuxctl.core.timefmt import TimeError, parse_since

        try:
            since = parse_since(args.since)
        except TimeError as exc:
            raise CommandError(str(exc), Code.USAGE) from None
    rows = logread.merged({t: logread.read_lines(p) for t, p in paths.items()})
    rows = logread.since_filter(rows, since)
    if args.grep:
        import re

        try:
            rows = logread.grep(rows, args.grep, args.context)
        except re.error as exc:
            raise CommandError(f"bad --grep pattern {args.grep!r}: {exc}", Code.USAGE) from None
    if args.lines is not None:
        rows = rows[-args.lines:] if args.lines > 0 else []
    if args.follow:
        return _follow(ctx, rows, paths, single, args.grep)
    lines = [_show(t, line, single) for t, line in rows]
    data = {"task": args.task, "project": pf.name, "lines": lines}
    if pf.broken:
        data["config_error"] = pf.broken
    return Result(data, "\n".join(lines) if lines else "(no log lines yet)")


def _follow(ctx: Context, rows: list[tuple[str, str]], paths: dict[str, str], single: bool,
            pattern: str | None) -> Result:
    import sys

    from taskmuxctl.core import jsonio

    rx = None
    if pattern:
        import re

        rx = re.compile(pattern)

    def emit(task: str, line: str) -> None:
        if ctx.as_json:
            sys.stdout.write(jsonio.dumps({"task": task, "line": line}) + "\n")
        else:
            sys.stdout.write(_show(task, line, single) + "\n")
        sys.stdout.flush()

    try:
        for task, line in rows:
            emit(task, line)
        for task, line in logread.follow(paths):
            if rx is None or rx.search(line):
                emit(task, line)
    except (KeyboardInterrupt, BrokenPipeError):
        pass
    return Result({}, None)


def clean(ctx: Context, args: Any) -> Result:
    pf, paths = _paths(ctx, args)
    removed = []
    for path in paths.values():
        for name in logread.log_files(path):
            if name == path:
                with open(name, "w"):
                    pass  # truncate: a runner may be appending to it
            else:
                os.unlink(name)
            removed.append(name)
    return Result({"project": pf.name, "task": args.task, "files": removed},
                  f"cleared {len(removed)} log file(s)")
