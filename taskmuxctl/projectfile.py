"""What the client itself reads from taskmux.toml (tomllib only): the project's name and the
tasks' log files, so that ``logs`` and ``events`` work while the daemon is down."""

from __future__ import annotations

import os

from taskmuxctl.paths import Paths
from taskmuxctl.project import require_config
from taskmuxctl.protocol import Code
from taskmuxctl.result import CommandError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ProjectFile:
    def __init__(self, path: str, data: dict[str, Any]) -> None:
        self.path = path
        self.name = str(data.get("name", "taskmux"))
        tasks = data.get("tasks", {})
        self.tasks: dict[str, dict[str, Any]] = tasks if isinstance(tasks, dict) else {}

    def log_path(self, paths: Paths, task: str) -> str:
        custom = self.tasks.get(task, {}).get("log_file")
        if custom:
            return os.path.join(os.path.dirname(self.path), os.path.expanduser(str(custom)))
        return paths.task_log(self.name, task)


def load(project: str | None, paths: Paths) -> ProjectFile:
    """The project named (via the registry) or the taskmux.toml here or above."""
    import tomllib

    path: str | None
    if project:
        path = _registered(paths, project)
        if path is None:
            return ProjectFile("", {"name": project})
    else:
        path = require_config(hint="run from a project folder or pass -p NAME")
    from taskmuxctl.fsutil import read_regular_file

    try:
        text = read_regular_file(path, 1024 * 1024).decode("utf-8")
        return ProjectFile(path, tomllib.loads(text))
    except (OSError, UnicodeDecodeError, RecursionError, tomllib.TOMLDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}", Code.CONFIG_INVALID) from None


def _registered(paths: Paths, project: str) -> str | None:
    import json

    try:
        with open(paths.registry, encoding="utf-8") as fh:
            entry = json.load(fh)["projects"].get(project)
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    return str(entry["config"]) if entry else None
