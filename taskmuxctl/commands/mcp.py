"""``mcp`` (the MCP server on stdio) and ``mcp install`` (configure a coding agent to run it)."""

from __future__ import annotations

import os
import sys

from taskmuxctl.context import Context
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.result import CommandError, Result

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

HINTS = {
    ("claude", "project"): "Claude Code asks once before it uses servers from .mcp.json; "
                           "commit the file to share it",
    ("codex", "project"): "Codex reads .codex/config.toml only in projects you trust",
    ("cursor", "project"): "enable it in Cursor's MCP settings if it shows as disabled",
}


def serve(ctx: Context, args: Any) -> Result:
    from taskmuxctl.mcp.stdioserver import Server

    # stdout carries protocol messages only: keep a private handle on it, and point fd 1 (and
    # sys.stdout) at stderr so nothing else, not even a child process, can write there.
    protocol_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    server = Server(ctx.paths, os.getcwd(), sys.stdin.buffer, protocol_out)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    return Result({}, None)


def _server_command() -> tuple[str, list[str]]:
    """How the agent should start this taskmux: ``taskmux`` when that name on PATH is this
    installation, else the absolute path (or ``python -m taskmuxctl``)."""
    import shutil

    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not script or script.endswith("__main__.py") or not os.path.exists(script):
        return sys.executable, ["-m", "taskmuxctl", "mcp"]
    for name in ("taskmux", "taskmuxctl"):
        found = shutil.which(name)
        if found and os.path.realpath(found) == os.path.realpath(script):
            return name, ["mcp"]
    return script, ["mcp"]


def install(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.whichproject import find_config
    from taskmuxctl.mcp import install as inst

    config = find_config()
    project_dir = os.path.dirname(config) if config else os.getcwd()
    scope = args.scope or ("user" if args.client == "codex" else "project")
    command, command_args = _server_command()
    env = {"TASKMUX_HOME": os.environ["TASKMUX_HOME"]} if os.environ.get("TASKMUX_HOME") else {}
    try:
        out = inst.install(args.client, scope, project_dir, args.name or "taskmux", command,
                           command_args, env, dict(os.environ))
    except inst.InstallError as exc:
        raise CommandError(str(exc), Code.USAGE) from None
    except OSError as exc:
        raise CommandError(f"cannot write the {args.client} config: {exc}",
                           Code.PERMISSION_DENIED) from None
    verb = {"added": "added", "updated": "updated", "unchanged": "already had"}[out["action"]]
    text = (f"{verb} MCP server {out['name']!r} in {out['path']} ({args.client}, {scope} "
            f"scope): {command} {' '.join(command_args)}")
    hint = HINTS.get((args.client, scope))
    if hint and out["action"] != "unchanged":
        text += f"\n{hint}"
    return Result(out, text)
