"""``daemon install`` and ``daemon uninstall``."""

from __future__ import annotations

import os
import shutil
import sys

from taskmuxctl.context import Context
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.result import EXIT_USAGE, CommandError, Result

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any

    from taskmuxctl.service.target import Target


def _scope(args: Any) -> str | None:
    if args.system and args.user_unit:
        raise CommandError("choose one of --system and --user-unit", Code.USAGE,
                           exit_code=EXIT_USAGE)
    return "system" if args.system else "user" if args.user_unit else None


def _target(args: Any, scope: str | None) -> Target:
    from taskmuxctl.service.target import TargetError, resolve

    try:
        return resolve(args.user, scope)
    except TargetError as exc:
        raise CommandError(str(exc), Code.SERVICE_UNAVAILABLE) from None


def _linger_warning(target: Target) -> str | None:
    if target.manager != "systemd" or target.scope != "user":
        return None
    if os.path.exists(target.on_disk(f"/var/lib/systemd/linger/{target.user}")):
        return None
    return (f"{target.unit} starts when {target.user} logs in, not at boot; to start it at "
            f"boot: loginctl enable-linger {target.user}")


def install(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.daemonprogram import daemon_program
    from taskmuxctl.service import install as install_mod
    from taskmuxctl.service.escape import UnrepresentableError

    target = _target(args, _scope(args))
    program = daemon_program(target.paths)
    try:
        data = install_mod.install(target, program, shutil.which("tmux"), dry_run=args.dry_run)
    except UnrepresentableError as exc:
        raise CommandError(f"cannot write the service files: {exc}", Code.SERVICE_FAILED
                           ) from None
    warning = _linger_warning(target)
    data["warnings"] = [warning] if warning else []
    what = f"{target.describe()} for {target.user}"
    if args.dry_run:
        lines = [f"dry run: {what} (nothing is changed)"]
        for item in data["files"]:
            verb = {"create": "would create", "update": "would rewrite",
                    "unchanged": "already right:"}[item["action"]]
            lines.append(f"--- {verb} {item['path']}")
            if item["action"] != "unchanged":
                lines.append(data["content"][item["path"]].rstrip("\n"))
        lines.append(f"then it would reload {target.manager}, enable and start {target.unit} "
                     "(restart it if it runs and a file changed), and wait for the daemon")
        return Result(data, "\n".join(lines))
    if not data["actions"]:
        text = (f"{what} is already installed, enabled and running (pid {data['pid']}); "
                "nothing changed")
    else:
        lines = [f"installed {what}:"] + [f"  {a}" for a in data["actions"]]
        lines.append(f"taskmuxd is running under {target.manager} (pid {data['pid']}); "
                     f"state directory: {target.state_dir}")
        text = "\n".join(lines)
    if warning:
        text += f"\nnote: {warning}"
    return Result(data, text)


def uninstall(ctx: Context, args: Any) -> Result:
    from taskmuxctl.core.paths import Paths
    from taskmuxctl.service import install as install_mod
    from taskmuxctl.service import record as record_mod

    scope = _scope(args)
    target = _target(args, scope)
    if scope is None:
        # Without a flag, remove what `daemon install` recorded for that state directory.
        rec = record_mod.load(Paths(target.state_dir))
        if rec is not None and rec.scope != target.scope:
            target = _target(args, rec.scope)
    data = install_mod.uninstall(target)
    if not data["changed"]:
        return Result(data, f"no {target.describe()} is installed for {target.user}; "
                            "nothing to do")
    lines = [f"uninstalled {target.describe()} for {target.user}:"]
    lines += [f"  {a}" for a in data["actions"]]
    if data["kept"]:
        lines.append(f"  kept {', '.join(data['kept'])}: still used by "
                     f"{', '.join(data['other_instances'])}")
    lines.append(f"the state directory {target.state_dir} is kept; tasks keep running in tmux;"
                 f" `{_ctl()} daemon start` runs the daemon without a service")
    return Result(data, "\n".join(lines))


def _ctl() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name in ("taskmux", "taskmuxctl") else "taskmuxctl"
