"""Values for tab completion (argcomplete calls these only while completing)."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any


def settings_keys(**_: Any) -> list[str]:
    try:
        from taskmuxctl.core.settings import Settings
    except ImportError:
        return []
    return sorted(Settings.model_fields)


def projects(**_: Any) -> list[str]:
    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.rpcclient import call

    try:
        result = call(Paths.from_env(), "project.list", timeout=2)
    except Exception:
        return []
    return [p["name"] for p in result.get("projects", [])]


def tasks(prefix: str = "", parsed_args: Any = None, **_: Any) -> list[str]:
    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.rpcclient import call
    from taskmuxctl.core.whichproject import project_params

    params = project_params(getattr(parsed_args, "project", None))
    try:
        result = call(Paths.from_env(), "project.status", params, timeout=2)
    except Exception:
        return []
    return [t["name"] for t in result.get("tasks", [])]


COMPLETERS = {"settings": settings_keys, "projects": projects, "tasks": tasks}
