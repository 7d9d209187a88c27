"""``config show|set|path``: the global settings in config.toml."""

from __future__ import annotations

from taskmuxctl.context import Context
from taskmuxctl.core.protocol import Method, RpcError
from taskmuxctl.core.result import CommandError, Result
from taskmuxctl.core.rpcclient import DaemonUnavailable

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any


def _settings() -> Any:
    from taskmuxctl.core import settings

    return settings


def _toml(value: Any) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(unset)"
    return json.dumps(value)


def show(ctx: Context, args: Any) -> Result:
    mod = _settings()
    try:
        current = mod.load(ctx.paths.config)
    except RpcError as exc:
        raise CommandError(exc.message, exc.code, exc.data) from None
    values = current.model_dump(mode="json")
    explicit = set(mod.overrides(ctx.paths.config))
    width = max(len(k) for k in values)
    lines = [f"# {ctx.paths.config}" + ("" if explicit else " (absent: all defaults)")]
    for field in mod.describe_fields():
        key = field["key"]
        mark = "" if key in explicit else "   # default"
        lines.append(f"{key:<{width}} = {_toml(values[key])}{mark}")
    return Result({"path": ctx.paths.config, "config": values, "overrides": sorted(explicit)},
                  "\n".join(lines))


def set_(ctx: Context, args: Any) -> Result:
    mod = _settings()
    try:
        new = mod.set_value(ctx.paths.config, args.key, args.value)
    except RpcError as exc:
        raise CommandError(exc.message, exc.code, exc.data) from None
    value = new.model_dump(mode="json")[args.key]
    reloaded = False
    try:
        ctx.call(Method.CONFIG_RELOAD, start=False)
        reloaded = True
    except DaemonUnavailable:
        pass
    note = "the running daemon reloaded it" if reloaded else "the daemon reads it when it starts"
    return Result({"key": args.key, "value": value, "path": ctx.paths.config,
                   "daemon_reloaded": reloaded},
                  f"{args.key} = {_toml(value)}  ({note})")


def path(ctx: Context, args: Any) -> Result:
    return Result({"path": ctx.paths.config}, ctx.paths.config)
