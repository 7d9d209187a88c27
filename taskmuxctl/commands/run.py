"""``taskmux run TASK``: a task against the real stack, for CI and agents.

It starts TASK and what it depends on (gated as ``start`` gates them), waits for TASK's run to
end (its process exits: a one-shot completes or fails, a service exits however its restart
policy then treats it), prints what TASK wrote to its log during the run, stops what this
command started (and only that: what was already running stays), in reverse dependency order,
and exits with TASK's exit code (128 + N for a signal N, as a shell does). Ctrl-C stops what it
started and exits 130; ``--timeout`` does the same with 124. A task already running is refused:
its run did not begin here, so its exit is not this command's to report.
"""

from __future__ import annotations

import time

from taskmuxctl.core.protocol import Code, Method, RpcError
from taskmuxctl.core.result import CommandError, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from taskmuxctl.context import Context

POLL = 0.2  # seconds between looks at the status
EXIT_TIMEOUT = 124
EXIT_INTERRUPTED = 130
LIVE = ("starting", "running", "stopping", "backoff")


def _tasks(ctx: Context, params: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    out = ctx.call(Method.PROJECT_STATUS, params)
    return out["project"], {t["name"]: t for t in out["tasks"]}


def closure(tasks: dict[str, dict[str, Any]], name: str) -> set[str]:
    """``name`` and everything it depends on, transitively."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        n = todo.pop()
        if n in seen or n not in tasks:
            continue
        seen.add(n)
        todo.extend(tasks[n].get("depends_on") or [])
    return seen


def finished(t: dict[str, Any], began: float) -> bool:
    """Whether the task's run has ended since ``began`` (wall clock): its last exit is
    newer. Whatever its policy did next (restart it, give up) does not matter."""
    at = (t.get("last_exit") or {}).get("at")
    return isinstance(at, int | float) and at >= began


def exit_code_of(t: dict[str, Any]) -> int:
    last = t.get("last_exit") or {}
    if last.get("signal") is not None:
        return 128 + int(last["signal"])
    code = last.get("code")
    return int(code) if isinstance(code, int) else 1


def run(ctx: Context, args: Any) -> Result:
    from taskmuxctl.commands.project import _params

    params = _params(args)
    name = args.task
    project, tasks = _tasks(ctx, params)
    if name not in tasks:
        raise CommandError(f"no task {name!r} in {project}; tasks: "
                           f"{', '.join(sorted(tasks)) or '(none)'}", Code.TASK_NOT_FOUND,
                           {"task": name})
    if tasks[name]["state"] in LIVE:
        raise CommandError(f"{name} is already {tasks[name]['state']}; stop it first (`taskmux "
                           f"stop {name}`), or wait for it with `taskmux wait`",
                           Code.TASK_START_FAILED, {"task": name})
    wanted = closure(tasks, name)
    live_before = {n for n, t in tasks.items() if t["state"] in LIVE}
    began = time.time()
    deadline = None if args.timeout is None else time.monotonic() + max(args.timeout, 0.0)
    outcome: dict[str, Any] = {"project": project, "task": name}
    try:
        try:
            ctx.call(Method.PROJECT_START, _params(args, tasks=[name]))
        except RpcError as exc:
            _, tasks = _tasks(ctx, params)
            if not finished(tasks[name], began):  # it did not run: a dependency failed
                _stop_started(ctx, params, wanted, live_before)
                raise CommandError(f"{name} could not start: {exc.message}", exc.code,
                                   exc.data) from None
        last = _wait_finished(ctx, params, name, began, deadline)
    except KeyboardInterrupt:
        stopped = _stop_started(ctx, params, wanted, live_before)
        return Result({**outcome, "interrupted": True, "stopped": stopped},
                      f"interrupted; stopped {', '.join(stopped) or 'nothing'}",
                      exit_code=EXIT_INTERRUPTED)
    lines = _log_since(ctx, args, name, began)
    stopped = _stop_started(ctx, params, wanted, live_before)
    if last is None:
        return Result({**outcome, "timeout": args.timeout, "stopped": stopped, "lines": lines},
                      "\n".join([*lines, f"{name} did not finish within {args.timeout:g}s; "
                                 f"stopped {', '.join(stopped) or 'nothing'}"]),
                      exit_code=EXIT_TIMEOUT)
    code = exit_code_of(last)
    summary = f"{name}: {_exit_text(last)}; stopped {', '.join(stopped) or 'nothing'}"
    return Result({**outcome, "exit_code": code, "last_exit": last.get("last_exit"),
                   "stopped": stopped, "lines": lines}, "\n".join([*lines, summary]),
                  exit_code=code)


def _exit_text(t: dict[str, Any]) -> str:
    last = t.get("last_exit") or {}
    if last.get("signal") is not None:
        return f"killed by signal {last['signal']}"
    return f"exited with code {last.get('code')}"


def _wait_finished(ctx: Context, params: dict[str, Any], name: str, began: float,
                   deadline: float | None) -> dict[str, Any] | None:
    """TASK's status once its run ended; None when the deadline passed first."""
    while True:
        _, tasks = _tasks(ctx, params)
        if finished(tasks[name], began):
            return tasks[name]
        if deadline is not None and time.monotonic() >= deadline:
            return None
        left = POLL if deadline is None else max(min(POLL, deadline - time.monotonic()), 0.0)
        time.sleep(left)


def _stop_started(ctx: Context, params: dict[str, Any], wanted: set[str],
                  live_before: set[str]) -> list[str]:
    """Stop the tasks of ``wanted`` that are live now and were not before (the daemon stops
    dependents before what they depend on)."""
    _, tasks = _tasks(ctx, params)
    mine = sorted(n for n in wanted - live_before
                  if tasks.get(n, {}).get("state") in LIVE)
    if mine:
        ctx.call(Method.PROJECT_STOP, {**params, "tasks": mine})
    return mine


def _log_since(ctx: Context, args: Any, name: str, since: float) -> list[str]:
    """What TASK wrote to its log since ``since`` (wall clock); empty through --host, where
    the files are the other machine's."""
    if ctx.paths.host:
        return []
    from taskmuxctl import logread, projectfile

    pf = projectfile.load(args.project, ctx.paths)
    rows = logread.merged({name: logread.read_lines(pf.log_path(ctx.paths, name))})
    return [line for _t, line in logread.since_filter(rows, since - 0.001)]
