"""``init`` (a taskmux.toml from what the folder holds, then the agent context) and ``inject``
(refresh the taskmux block in CLAUDE.md / AGENTS.md)."""

from __future__ import annotations

import os
import sys

from taskmuxctl import agentcontext
from taskmuxctl.context import Context
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.result import CommandError, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from taskmuxctl.core.projectconfig import LoadedConfig as FullConfig
    from taskmuxctl.quickconfig import QuickLoaded
    from taskmuxctl.scaffold.detect import Proposal

    LoadedConfig = QuickLoaded | FullConfig


def _ask(question: str, default: str) -> str:
    try:
        answer = input(question).strip()
    except EOFError:
        return default
    return answer or default


def _yes(question: str) -> bool:
    return _ask(question + " [Y/n] ", "y").lower() in ("y", "yes")


def _choose(proposals: list[Proposal], project: str) -> tuple[str, list[Proposal]]:
    """Ask, on a terminal, which proposed tasks to keep and the project's name."""
    from taskmuxctl.scaffold.detect import safe_name

    print(f"Found {len(proposals)} task(s) to propose:" if proposals else
          "Found nothing to run here (no package.json dev script, manage.py, Procfile or "
          "compose file).")
    kept = []
    for p in proposals:
        where = f"  (https://{p.host}.{project}.localhost)" if p.host else ""
        off = "" if p.auto_start else "  [not started automatically]"
        if _yes(f"  {p.name}: {p.command}{where}{off}\n    from {p.source}. Keep it?"):
            kept.append(p)
    name = _ask(f"Project name [{project}]: ", project)
    fixed = safe_name(name, project)
    if fixed != name:
        print(f"  using {fixed!r} (names are lowercase letters, digits and hyphens)")
    return fixed, kept


def _validate(path: str, text: str) -> LoadedConfig:
    from taskmuxctl import quickconfig
    from taskmuxctl.core.projectrules import ConfigError

    try:
        return quickconfig.parse(text, path)
    except ConfigError as exc:  # a bug in the proposal, not the user's doing
        raise CommandError(f"the generated file would not be valid, so it was not written:\n"
                           f"{exc.message}", exc.code, exc.data) from None


def init(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.fsutil import atomic_write
    from taskmuxctl.scaffold import detect, render

    folder = os.getcwd()
    path = os.path.join(folder, "taskmux.toml")
    if os.path.exists(path) and not args.force:
        raise CommandError(f"{path} already exists; keep it (edit it, or `taskmux add`), or "
                           "pass --force to replace it", Code.USAGE, {"config": path})
    proposals = detect.detect(folder)
    project = detect.safe_name(os.path.basename(folder))
    interactive = not args.defaults and not ctx.as_json and sys.stdin.isatty() \
        and sys.stdout.isatty()
    if interactive:
        project, proposals = _choose(proposals, project)
    text = render.render(project, proposals, agent_context=not args.no_agent_context)
    loaded = _validate(path, text)
    backup = None
    if os.path.exists(path):
        import shutil

        backup = path + ".bak"
        shutil.copy2(path, backup)
    atomic_write(path, text, mode=0o644)
    agent_files = [] if args.no_agent_context else inject_files(loaded)
    names = [p.name for p in proposals]
    lines = [f"wrote {path}: project {project!r}, {len(names)} task(s)"
             + (f" ({', '.join(names)})" if names else "")]
    if backup:
        lines.append(f"  the previous file is {backup}")
    lines += [f"{f['action']} the taskmux block in {f['path']}" for f in agent_files]
    lines.append("next: `taskmux start`, then `taskmux status`" if names else
                 "next: add a task with `taskmux add NAME \"COMMAND\"`, then `taskmux start`")
    return Result({"config": path, "project": project, "tasks": names,
                   "agent_files": agent_files}, "\n".join(lines))


def _block(loaded: LoadedConfig) -> str:
    tasks = [(n, t.command, t.host, t.auto_start) for n, t in loaded.project.tasks.items()]
    return agentcontext.render(loaded.name, tasks)


def inject_files(loaded: LoadedConfig) -> list[dict[str, str]]:
    """Put (or refresh) the block in the project's agent files; with ``agent_context =
    false``, take it out of the ones that have it. Returns what happened to each file."""
    enabled = loaded.project.agent_context
    block = _block(loaded)
    done = []
    for path, exists in agentcontext.targets(loaded.folder):
        if not exists and not enabled:
            continue
        try:
            before = agentcontext.read(path) if exists else ""
            after = agentcontext.apply(before, block) if enabled else agentcontext.remove(before)
        except agentcontext.BlockError as exc:
            raise CommandError(f"{path}: {exc}; fix the markers by hand (or delete the "
                               "partial block) and run `taskmux inject` again", Code.USAGE,
                               {"path": path}) from None
        except UnicodeDecodeError:
            raise CommandError(f"{path} is not UTF-8 text; not touching it", Code.USAGE,
                               {"path": path}) from None
        if after == before:
            action = "kept"
        elif not after and not enabled:
            os.unlink(os.path.realpath(path))  # taskmux created it and it held only the block
            action = "removed"
        else:
            agentcontext.write(path, after)
            action = ("removed" if not enabled else "updated" if agentcontext.START in before
                      else "added" if exists else "created")
        done.append({"path": path, "action": action})
    return done


def inject(ctx: Context, args: Any) -> Result:
    from taskmuxctl.quickconfig import load_config

    loaded = load_config(args.config)
    if args.print:
        block = _block(loaded)
        return Result({"project": loaded.name, "block": block,
                       "files": [p for p, _ in agentcontext.targets(loaded.folder)],
                       "enabled": loaded.project.agent_context}, block)
    files = inject_files(loaded)
    if not loaded.project.agent_context:
        note = f"agent_context = false in {loaded.path}: taskmux keeps no block"
        lines = [note] + [f"{f['action']} the taskmux block in {f['path']}" for f in files
                          if f["action"] != "kept"]
    else:
        lines = [f"{f['action']} the taskmux block in {f['path']}" for f in files]
    return Result({"project": loaded.name, "enabled": loaded.project.agent_context,
                   "files": files}, "\n".join(lines))
