"""Project commands: start, stop, restart, kill, status, inspect, health, url, check."""

from __future__ import annotations

import os

from taskmuxctl.context import Context
from taskmuxctl.core import humanize
from taskmuxctl.core.protocol import Method
from taskmuxctl.core.result import Result
from taskmuxctl.core.whichproject import project_params

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    from taskmuxctl.core.rpctypes import HealthResult, InspectResult


def _params(args: Any, **extra: Any) -> dict[str, Any]:
    params = project_params(getattr(args, "project", None))
    params.update({k: v for k, v in extra.items() if v is not None})
    return params


def _warn_config(ctx: Context, out: Mapping[str, Any]) -> None:
    """A read-only command answered from the last valid config: say the file is broken."""
    if out.get("config_error"):
        from taskmuxctl.projectfile import say_broken

        name = out.get("project") or out.get("task", {}).get("project")
        say_broken(out["config_error"], f"project {name!r} as last loaded", ctx.prog)


def _action_result(out: dict[str, Any], verb: str) -> Result:
    lines = []
    for r in out.get("results", []):
        action = r["action"]
        extra = ""
        if r.get("pid"):
            extra = f" (pid {r['pid']}" + (f", port {r['port']}" if r.get("port") else "") + ")"
        if r.get("error"):
            extra = f": {r['error']}"
        if r.get("because"):
            extra += f" — it depends on {r['because']} with restart = true"
        lines.append(f"{r['task']}: {action.replace('_', ' ')}{extra}")
    if not lines:
        lines.append(f"nothing to {verb} in {out.get('project')}")
    return Result(out, "\n".join(lines))


def start(ctx: Context, args: Any) -> Result:
    # The environment tasks start with is the caller's, on its own machine; through --host
    # this machine's would be wrong over there (and would hand it its secrets): the project
    # keeps the one it has.
    params = _params(args, tasks=args.tasks or None,
                     env=None if ctx.paths.host else dict(os.environ),
                     force=True if args.force else None)
    out = ctx.call(Method.PROJECT_START, params)
    result = _action_result(out, "start")
    if getattr(args, "wait", False):
        from taskmuxctl.commands.wait import wait_until

        names = [r["task"] for r in out.get("results", [])]
        if names:
            ready = wait_until(ctx, _params(args), names, "ready", args.timeout)
            out["ready"] = ready.data["tasks"]
            result = Result(out, f"{result.text}\n{ready.text}")
    if args.monitor:
        from taskmuxctl.commands.events import follow_after

        return follow_after(ctx, result, out["project"])
    return result


def stop(ctx: Context, args: Any) -> Result:
    return _action_result(ctx.call(Method.PROJECT_STOP, _params(args, tasks=args.tasks or None)),
                          "stop")


def restart(ctx: Context, args: Any) -> Result:
    return _action_result(
        ctx.call(Method.PROJECT_RESTART, _params(args, tasks=args.tasks or None)), "restart")


def kill(ctx: Context, args: Any) -> Result:
    return _action_result(ctx.call(Method.TASK_KILL, _params(args, task=args.task)), "kill")


def status(ctx: Context, args: Any) -> Result:
    out = ctx.call(Method.PROJECT_STATUS, _params(args))
    head = f"{out['project']}  ({out['config']})"
    state = "session running" if out.get("running") else "session not running"
    if out.get("state") not in ("ok", None):
        state += f"; {out['state'].replace('_', ' ')}"
    lines = [f"{head}: {state}"]
    if out.get("disk_full"):
        lines.append(f"  ! {out['disk_full']}")
    if out.get("config_error"):
        lines.append(f"  ! {out['config_error']}")
    rows = []
    notes: dict[int, str] = {}
    for t in out["tasks"]:
        detail = ""
        if t.get("waiting_for"):
            detail = f"restart waits for {', '.join(t['waiting_for'])}"
        elif t["state"] == "backoff" and t.get("next_restart_in") is not None:
            detail = f"restart in {t['next_restart_in']:.0f}s"
        elif t["state"] == "fatal" and t.get("next_restart_in") is not None:
            detail = (humanize.last_exit(t["last_exit"]) + "; " if t.get("last_exit") else "") \
                + f"next try in {t['next_restart_in']:.0f}s"
        elif t.get("completed"):
            detail = "completed"
        elif t.get("last_exit") and t["state"] != "running":
            detail = humanize.last_exit(t["last_exit"])
        if t.get("manually_stopped") and t["state"] == "stopped":
            detail = "stopped by you"
        if t.get("notify_status"):  # the task's own STATUS= (sd_notify)
            detail = f"{detail}; {t['notify_status']}" if detail else t["notify_status"]
        health = {True: "healthy", False: "unhealthy", None: "-"}[t.get("healthy")]
        procs = t.get("processes") or 0
        res = t.get("resources") or {}
        live = t["state"] in ("starting", "running", "stopping")
        rows.append([t["name"], t["state"], humanize.dash(t.get("main_pid") or t.get("pid")),
                     str(procs) if procs else "-",
                     humanize.cpu(res.get("cpu")) if live else "-",
                     humanize.size(res.get("rss")) if live else "-",
                     humanize.dash(t.get("port")),
                     health, str(t.get("restarts", 0)), humanize.duration(t.get("uptime")),
                     humanize.dash(t.get("url")), detail])
        if t.get("healthy") is False and t.get("last_health_failure"):
            notes[len(rows) - 1] = f"last health failure: {t['last_health_failure']}"
    table = humanize.table(["TASK", "STATE", "PID", "PROCS", "CPU", "MEM", "PORT", "HEALTH",
                          "RESTARTS",
                          "UPTIME", "URL", "NOTES"], rows).splitlines()
    lines.append(table[0])
    for i, line in enumerate(table[1:]):
        lines.append(line)
        if i in notes:
            lines.append(f"      └ {notes[i]}")
    if not out["tasks"]:
        lines.append("  (no tasks; add one with `taskmux add NAME \"COMMAND\"`)")
    return Result(out, "\n".join(lines))


def inspect(ctx: Context, args: Any) -> Result:
    out: InspectResult = ctx.call(Method.TASK_INSPECT, _params(args, task=args.task))
    _warn_config(ctx, out)
    from taskmuxctl.core import jsonio

    shown = dict(out["task"])
    res = shown.get("resources")
    if isinstance(res, dict) and isinstance(res.get("history"), dict):  # --json has it all
        samples = len(res["history"].get("time") or [])
        shown["resources"] = {**res, "history": f"{samples} samples (see --json)"}
    return Result(dict(out), jsonio.dumps(shown))


def health(ctx: Context, args: Any) -> Result:
    out: HealthResult = ctx.call(Method.HEALTH_CHECK, _params(args))
    _warn_config(ctx, out)
    rows = []
    for t in out["tasks"]:
        mark = {True: "healthy", False: "unhealthy", None: "unknown"}[t["healthy"]] \
            if t.get("counted", True) else "-"
        row = [t["name"], t["state"], mark]
        if args.verbose:
            detail = t["detail"] if t["healthy"] else t["last_failure"] or t["detail"]
            row += [t["method"], str(t["failures"]), humanize.dash(detail)]
        rows.append(row)
    headers = ["TASK", "STATE", "HEALTH"] + (["PROBE", "FAILS", "DETAIL"] if args.verbose else [])
    head = f"{out['healthy_count']}/{out['total_count']} healthy"
    idle = out.get("not_counted") or 0
    if idle:
        head += f" ({idle} stopped task{'s' if idle > 1 else ''} not meant to run, not counted)"
    text = head + "\n" + humanize.table(headers, rows)
    return Result(dict(out), text)


def url(ctx: Context, args: Any) -> Result:
    out: InspectResult = ctx.call(Method.TASK_INSPECT, _params(args, task=args.task))
    _warn_config(ctx, out)
    task = out["task"]
    if not task.get("url"):
        from taskmuxctl.core.protocol import Code
        from taskmuxctl.core.result import CommandError

        raise CommandError(f"task {args.task!r} has no URL: give it a `host` in taskmux.toml "
                           f"(e.g. host = \"{args.task}\")", Code.USAGE, {"task": args.task})
    return Result({"task": args.task, "url": task["url"]}, task["url"])


def check(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core import projectrules as cfgmod
    from taskmuxctl.quickconfig import load_config

    loaded = load_config(args.config)
    tasks = loaded.project.tasks
    # What `taskmux start` starts: the auto_start tasks and what they depend on.
    auto = [n for n, t in tasks.items() if t.auto_start] if loaded.project.auto_start else []
    started = cfgmod.closure(tasks, auto)
    order = cfgmod.start_order({n: t for n, t in tasks.items() if n in started})
    manual = sorted(set(tasks) - started)
    text = (f"{loaded.path}: OK — project {loaded.name!r}, {humanize.plural(len(tasks), 'task')}; "
            "start order: "
            + (" → ".join("[" + ", ".join(w) + "]" for w in order) or "(nothing)"))
    if manual:
        text += (f"\n  not started by `taskmux start` (auto_start = false): {', '.join(manual)}"
                 "; start one with `taskmux start NAME`")
    waits = {n: {d: t.condition_on(d, tasks[d]) for d in t.depends_on}
             for n, t in sorted(tasks.items()) if t.depends_on}
    along = {n: sorted(d for d in t.depends_on if t.restarts_with(d))
             for n, t in sorted(tasks.items()) if any(t.restarts_with(d) for d in t.depends_on)}
    for name, conds in waits.items():
        text += f"\n  {name} waits for " + ", ".join(
            f"{d} {c.replace('_', ' ')}" + (" (restarts with it)" if d in along.get(name, [])
                                             else "") for d, c in conds.items())
    ready = {n: "READY=1 on its NOTIFY_SOCKET" if t.ready_source == "notify"
             else f"a line of its output matching {t.ready_log_line!r}"
             for n, t in sorted(tasks.items()) if t.ready_source}
    for name, how in ready.items():
        text += f"\n  {name} is ready on {how}"
    return Result({"config": loaded.path, "project": loaded.name, "tasks": sorted(tasks),
                   "start_order": order, "manual": manual, "conditions": waits,
                   "restarts_with": along, "ready": ready}, text)
