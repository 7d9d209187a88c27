"""``taskmux fleet add|remove|list|status|start|stop|restart|logs|events|update``: many
machines' daemons at once, over ssh (``update``'s stages are in ``taskmuxctl.rollout``)."""

from __future__ import annotations

import os

from taskmuxctl import fleet
from taskmuxctl.context import Context
from taskmuxctl.core import humanize
from taskmuxctl.core.protocol import Code, Method
from taskmuxctl.core.result import EXIT_FAILURE, EXIT_USAGE, CommandError, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def add(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.sshchannel import parse_target

    problem = fleet.check_name(args.name)
    if problem:
        raise CommandError(problem, Code.USAGE, {"name": args.name}, exit_code=EXIT_USAGE)
    parse_target(args.target)
    groups = list(dict.fromkeys(args.group or []))
    for g in groups:
        problem = fleet.check_name(g, "group name")
        if problem:
            raise CommandError(problem, Code.USAGE, {"group": g}, exit_code=EXIT_USAGE)
    hosts = fleet.load(ctx.paths)
    host = fleet.Host(args.name, args.target, groups)
    action = "added"
    for i, h in enumerate(hosts):
        if h.name == args.name:
            hosts[i] = host
            action = "updated"
            break
    else:
        hosts.append(host)
    fleet.save(ctx.paths, hosts)
    return Result({"host": host.as_dict(), "action": action, "path": fleet.path(ctx.paths)},
                  f"{args.name}: {action} ({args.target})")


def remove(ctx: Context, args: Any) -> Result:
    hosts = fleet.load(ctx.paths)
    kept = [h for h in hosts if h.name != args.name]
    if len(kept) == len(hosts):
        raise CommandError(f"no host named {args.name!r} in {fleet.path(ctx.paths)}; "
                           "`taskmux fleet list` shows them", Code.USAGE,
                           {"name": args.name}, exit_code=EXIT_USAGE)
    fleet.save(ctx.paths, kept)
    return Result({"name": args.name, "action": "removed"}, f"{args.name}: removed")


def list_(ctx: Context, args: Any) -> Result:
    hosts = fleet.load(ctx.paths)
    data = {"hosts": [h.as_dict() for h in hosts], "path": fleet.path(ctx.paths)}
    if not hosts:
        return Result(data, "no hosts; add one with `taskmux fleet add NAME "
                            "ssh://[USER@]HOST[:PORT] [--group GROUP]`")
    rows = [[h.name, h.target, ",".join(h.groups) or "-"] for h in hosts]
    return Result(data, humanize.table(["HOST", "TARGET", "GROUPS"], rows, indent=""))


def _chosen(ctx: Context, args: Any) -> list[fleet.Host]:
    if args.deadline <= 0:
        raise CommandError("--deadline must be more than 0 seconds", Code.USAGE,
                           exit_code=EXIT_USAGE)
    hosts = fleet.select(fleet.load(ctx.paths), args.group)
    # ssh gives up connecting within the deadline too (unless told otherwise).
    os.environ.setdefault("TASKMUX_SSH_CONNECT_TIMEOUT", str(max(1, int(args.deadline))))
    return hosts


NO_HOSTS = "no hosts; add one with `taskmux fleet add`"


def status(ctx: Context, args: Any) -> Result:
    hosts = _chosen(ctx, args)
    if not hosts:
        return Result({"hosts": [], "all_ok": True}, NO_HOSTS)
    entries = fleet.survey(ctx.paths, hosts, args.deadline)
    rows = []
    notes = []
    for e in entries:
        if e["ok"]:
            unhealthy = e["unhealthy"]
            rows.append([e["name"], "yes", str(e["daemon_version"]), str(e["projects"]),
                         f"{e['tasks_up']}/{e['tasks_total']}",
                         ",".join(unhealthy) if unhealthy else "-"])
        else:
            rows.append([e["name"], "yes" if e["reachable"] else "no", "-", "-", "-", "-"])
            notes.append(f"! {e['name']}: {e['error']}")
    text = humanize.table(["HOST", "REACHABLE", "DAEMON", "PROJECTS", "TASKS UP", "UNHEALTHY"],
                        rows, indent="")
    every = all(e["ok"] for e in entries)
    return Result({"hosts": entries, "all_ok": every}, "\n".join([text, *notes]),
                  exit_code=0 if every else EXIT_FAILURE)


def _action(ctx: Context, args: Any, method: str, verb: str) -> Result:
    hosts = _chosen(ctx, args)
    if not hosts:
        return Result({"hosts": [], "all_ok": True}, NO_HOSTS)
    entries = fleet.survey(ctx.paths, hosts, args.deadline,
                           fleet.action_on(method, args.project, list(args.tasks or [])))
    lines = []
    for e in entries:
        if e["ok"]:
            done = e["results"]
            count = sum(len(r) for r in done.values())
            lines.append(f"{e['name']}: {verb} {count} task(s) in "
                         f"{', '.join(done) or 'no project'}")
        else:
            lines.append(f"! {e['name']}: {e['error']}")
    every = all(e["ok"] for e in entries)
    return Result({"hosts": entries, "all_ok": every}, "\n".join(lines),
                  exit_code=0 if every else EXIT_FAILURE)


def start(ctx: Context, args: Any) -> Result:
    return _action(ctx, args, Method.PROJECT_START, "start")


def stop(ctx: Context, args: Any) -> Result:
    return _action(ctx, args, Method.PROJECT_STOP, "stop")


def restart(ctx: Context, args: Any) -> Result:
    return _action(ctx, args, Method.PROJECT_RESTART, "restart")


def _fan_out(ctx: Context, args: Any, words: list[str]) -> Result:
    import sys

    from taskmuxctl.core.sshchannel import fan_out, parse_target

    hosts = fleet.select(fleet.load(ctx.paths), args.group)
    if not hosts:
        return Result({"hosts": [], "all_ok": True}, NO_HOSTS)
    named = [(h.name, parse_target(h.target)) for h in hosts]
    if ctx.as_json:
        words = ["--json", *words]
    try:
        failed, errors = fan_out(ctx.paths, named, words, ctx.as_json)
    except KeyboardInterrupt:
        return Result({}, None, exit_code=130)
    said = dict(line.split(": ", 1) for line in errors)
    if not ctx.as_json:
        for line in errors:
            sys.stderr.write(f"! {line}\n")
    # The lines are printed already, as they came; last, with --json, one entry per machine.
    summary = [{"name": h.name, "ok": h.name not in said,
                **({"error": said[h.name]} if h.name in said else {})} for h in hosts]
    return Result({"hosts": summary, "all_ok": not failed}, None,
                  exit_code=EXIT_FAILURE if failed else 0)


def logs(ctx: Context, args: Any) -> Result:
    if not args.project:
        raise CommandError("name the project with -p NAME (each machine's logs are per "
                           "project); `taskmux fleet status` counts the projects",
                           Code.USAGE, exit_code=EXIT_USAGE)
    words = ["logs", "-p", args.project, "-n", str(args.lines)]
    if args.task:
        words.append(args.task)
    if args.grep:
        words += ["-g", args.grep]
    if args.since:
        words += ["--since", args.since]
    if args.follow:
        words.append("-f")
    return _fan_out(ctx, args, words)


def events(ctx: Context, args: Any) -> Result:
    words = ["events"]
    if args.project:
        words += ["-p", args.project]
    else:  # no project named: every project of each machine
        words.append("--all-projects")
    if args.since:
        words += ["--since", args.since]
    if args.lines is not None:
        words += ["-n", str(args.lines)]
    if args.follow:
        words.append("-f")
    return _fan_out(ctx, args, words)


def update(ctx: Context, args: Any) -> Result:
    """``fleet update``: canaries, then waves; halts at the first failure (see ``rollout``)."""
    import sys

    from taskmuxctl import rollout
    from taskmuxctl.core.update.release import is_version

    if args.to is not None and not is_version(args.to):
        raise CommandError(f"--to {args.to!r} is not a version (like 1.2.3)", Code.USAGE,
                           exit_code=EXIT_USAGE)
    for name, value, low in (("--canary", args.canary, 0), ("--wave", args.wave, 1)):
        if value < low:
            raise CommandError(f"{name} must be at least {low}", Code.USAGE,
                               exit_code=EXIT_USAGE)
    for name, value in (("--soak", args.soak), ("--settle", args.settle),
                        ("--timeout", args.timeout)):
        if not 0 <= value <= 7 * 86400 or (value == 0 and name != "--soak"):
            raise CommandError(f"{name} must be more than 0 seconds and at most a week",
                               Code.USAGE, exit_code=EXIT_USAGE)
    hosts = fleet.select(fleet.load(ctx.paths), args.group)
    if not hosts:
        return Result({"hosts": [], "completed": True}, NO_HOSTS)
    # The machines' daemons are only watched here: never started by a probe (the update
    # over there starts them).
    os.environ["TASKMUX_NO_DAEMON_START"] = "1"

    def say(line: str) -> None:
        if not ctx.as_json:
            sys.stderr.write(f"  {line}\n")
            sys.stderr.flush()

    plan = rollout.Plan(to=args.to, canary=args.canary, wave=args.wave, soak=args.soak,
                        settle=args.settle, force=args.force)
    ops = rollout.SshOps(ctx.paths, update_timeout=args.timeout)
    done = rollout.Runner(hosts, ops, plan, say).run()
    lines = rollout_text(done)
    return Result(done.as_dict(), "\n".join(lines),
                  exit_code=0 if done.completed else EXIT_FAILURE)


def rollout_text(done: Any) -> list[str]:
    """The table and the notes under it (``fleet update`` without --json)."""
    rows = [[e["name"], e["phase"] or "-", str(e["from"] or "-"), str(e["to"] or "-"),
             e["outcome"], e["reason"] or ""] for e in done.hosts]
    lines = [humanize.table(["HOST", "PHASE", "FROM", "TO", "OUTCOME", "REASON"], rows, indent="")]
    if done.completed:
        lines.append(f"rollout of {done.version} completed")
    else:
        assert done.halted is not None
        where = f" at {done.halted['host']}" if done.halted["host"] else ""
        lines.append(f"! rollout of {done.version or 'a release'} halted{where}: "
                     f"{done.halted['reason']}")
        if done.marked_bad:
            lines.append(f"! {done.version} is marked bad on {', '.join(done.marked_bad)} "
                         "(auto-update skips it there)")
        for e in done.hosts:
            if e.get("mark_bad_error"):
                from taskmuxctl.core.sshchannel import parse_target

                lines.append(f"! could not mark it bad on {e['name']} ({e['mark_bad_error']});"
                             f" once it is back: `ssh {parse_target(e['target']).ssh_words} "
                             f"taskmux update --mark-bad {done.version}`")
            if e.get("reverted_to"):
                lines.append(f"! {e['name']} was put back on {e['reverted_to']}")
            if e.get("revert_error"):
                lines.append(f"! {e['name']} still runs {done.version}: putting it back failed "
                             f"({e['revert_error']})")
    return lines
