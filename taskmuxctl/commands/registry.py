"""``daemon list|register|unregister``: the projects the daemon supervises."""

from __future__ import annotations

import os

from taskmuxctl.context import Context
from taskmuxctl.core import humanize
from taskmuxctl.core.protocol import Method
from taskmuxctl.core.result import Result
from taskmuxctl.core.whichproject import require_config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from taskmuxctl.core.rpctypes import ProjectList


def list_(ctx: Context, args: Any) -> Result:
    out: ProjectList = ctx.call(Method.PROJECT_LIST)
    rows = [[p["name"], p["state"], f"{p['tasks_running']}/{p['tasks_total']}", p["config"]]
            for p in out["projects"]]
    if not rows:
        return Result(dict(out), "no projects registered; `taskmux start` in a project folder "
                           "registers it")
    text = humanize.table(["PROJECT", "STATE", "RUNNING", "CONFIG"], rows, indent="")
    errors = [f"! {p['name']}: {p['error']}" for p in out["projects"] if p.get("error")]
    return Result(dict(out), "\n".join([text, *errors]))


def register(ctx: Context, args: Any) -> Result:
    path = require_config(args.config, "pass -c PATH")
    out = ctx.call(Method.PROJECT_REGISTER, {"config": os.path.abspath(path),
                                             "force": bool(args.force)})
    return Result(out, f"{out['project']}: {out['action']} ({out['config']})")


def unregister(ctx: Context, args: Any) -> Result:
    out = ctx.call(Method.PROJECT_UNREGISTER, {"project": args.name})
    return Result(out, f"{out['project']}: {out['action'].replace('_', ' ')}")
