"""What the client itself reads from taskmux.toml (tomllib only): the project's name and the
tasks' log files, so that ``logs`` and ``events`` work while the daemon is down.

A taskmux.toml that cannot be read (a syntax error mid-edit) does not stop these commands:
the registry says which project the file belongs to, and the daemon's copy of its last valid
version (``projects/NAME/config.last.toml``) gives the tasks. ``ProjectFile.broken`` then
holds what is wrong with the file, and ``warn_broken`` says so on stderr.
"""

from __future__ import annotations

import os

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.result import CommandError
from taskmuxctl.core.whichproject import require_config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_BYTES = 1024 * 1024
LAST_VALID = "config.last.toml"


class ProjectFile:
    def __init__(self, path: str, data: dict[str, Any], broken: str | None = None) -> None:
        self.path = path
        self.name = str(data.get("name", "taskmux"))
        tasks = data.get("tasks", {})
        self.tasks: dict[str, dict[str, Any]] = tasks if isinstance(tasks, dict) else {}
        self.broken = broken  # what is wrong with the file, when its last valid copy is used

    def log_path(self, paths: Paths, task: str) -> str:
        custom = self.tasks.get(task, {}).get("log_file")
        if custom:
            return os.path.join(os.path.dirname(self.path), os.path.expanduser(str(custom)))
        return paths.task_log(self.name, task)


def load(project: str | None, paths: Paths) -> ProjectFile:
    """The project named (via the registry) or the taskmux.toml here or above."""
    path: str | None
    if project:
        path = _registered(paths, project)
        if path is None:
            return ProjectFile("", {"name": project})
    else:
        path = require_config()
    return from_path(path, paths, project)


def from_path(path: str, paths: Paths, project: str | None = None) -> ProjectFile:
    """The taskmux.toml at ``path``; when it cannot be read, the registered project's last
    valid copy (with ``broken`` set), else the CommandError saying what is wrong."""
    try:
        return ProjectFile(path, _read_toml(path))
    except CommandError as exc:
        name = project or _registered_name(paths, path)
        if name is None:
            raise
        try:
            data = _read_toml(os.path.join(paths.project_dir(name), LAST_VALID))
        except CommandError:
            data = {}
        data["name"] = name
        return ProjectFile(path, data, broken=exc.message)


def _read_toml(path: str) -> dict[str, Any]:
    import tomllib

    from taskmuxctl.core.fsutil import read_regular_file

    try:
        return tomllib.loads(read_regular_file(path, MAX_BYTES).decode("utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, tomllib.TOMLDecodeError) as exc:
        raise CommandError(f"cannot read {path}: {exc}", Code.CONFIG_INVALID) from None


def warn_broken(pf: ProjectFile, prog: str = "taskmux") -> None:
    """Say on stderr when ``pf`` comes from the registry because its file is broken."""
    if pf.broken:
        say_broken(pf.broken, f"project {pf.name!r} as last registered", prog)


def say_broken(problem: str, shown: str, prog: str = "taskmux") -> None:
    """The file's problem, and what is shown instead (a read-only command goes on)."""
    import sys

    sys.stderr.write(f"{prog}: warning: {problem}\n{prog}: warning: showing {shown}; "
                     "`taskmux check` says what to fix\n")


def _registry(paths: Paths) -> dict[str, Any]:
    import json

    try:
        with open(paths.registry, encoding="utf-8") as fh:
            projects = json.load(fh)["projects"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return projects if isinstance(projects, dict) else {}


def _registered(paths: Paths, project: str) -> str | None:
    entry = _registry(paths).get(project)
    try:
        return str(entry["config"]) if entry else None
    except (KeyError, TypeError):
        return None


def _registered_name(paths: Paths, config: str) -> str | None:
    """The registered project whose taskmux.toml is ``config``."""
    config = os.path.abspath(config)
    for name, entry in _registry(paths).items():
        if isinstance(entry, dict) and entry.get("config") == config:
            return str(name)
    return None
