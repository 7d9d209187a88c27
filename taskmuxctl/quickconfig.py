"""taskmux.toml for the client's commands (``check``, ``init``, ``inject``, ``add``, ``remove``),
without pydantic when the file is plainly valid.

Importing pydantic and building the config models costs a command about 100 ms of CPU, most of
its run. A file whose every value already has its model's exact type and is in range (a string
where a string goes, a bool, an int, a finite number, a choice from the list) is accepted here
with the model's defaults filled in, then goes through the same checks across tasks
(``projectrules.check_across``) as the full path. Anything else (an unknown key, a wrong type, a
value out of range, a form the table below does not know) goes to ``projectconfig``, whose
pydantic models have the last word and write every message. So this path never accepts a file
the models refuse, and a file with problems gets the same messages either way;
``tests/test_quick_config.py`` holds the table to the models.
"""

from __future__ import annotations

import math
import os

from taskmuxctl.core.projectrules import (
    CONDITIONS,
    MAX_PATTERN,
    ConfigError,
    ConfigNotFound,
    LineIndex,
    TaskRules,
    check_across,
    env_values,
    parse_size,
    parse_toml,
    read,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from taskmuxctl.core.projectconfig import LoadedConfig

    # A field: (kind, default, lower bound, whether the lower bound is excluded, upper bound).
    Spec = tuple[Any, Any, float | None, bool, float | None]


class Unsure(Exception):
    """The quick check cannot vouch for a value: the models decide."""


# Each field of the models (``Spec``): its kind ("str", "bool", "int", "float", or a tuple of the
# strings allowed), its default (None: optional; ...: required), its lower bound, whether that
# bound is excluded (gt rather than ge), its upper bound. A string's bounds are its length's.
HOOK_KEYS = ("before_start", "after_start", "before_stop", "after_stop")
SPECIAL = ("env", "depends_on", "success_exit_codes", "log_max_size", "hooks")
TASK_FIELDS: dict[str, Spec] = {
    "command": ("str", ..., 1, False, None),  # ...: required
    "auto_start": ("bool", True, None, False, None),
    "cwd": ("str", None, None, False, None),
    "env_file": ("str", None, None, False, None),
    "shell": ("str", None, None, False, None),
    "host": ("str", None, None, False, None),
    "host_path": ("str", "/", None, False, None),
    "port": (("auto",), None, None, False, None),
    "type": (("service", "oneshot"), "service", None, False, None),
    "stop_grace_period": ("float", 5.0, 0, False, 3600),
    "restart_policy": (("no", "on-failure", "always"), "on-failure", None, False, None),
    "max_restarts": ("int", 5, 0, False, None),
    "restart_backoff": ("float", 2.0, 1.0, False, 60.0),
    "restart_delay": ("float", 1.0, 0, False, 60.0),
    "retry_after": ("float", 300.0, 0, False, 86400),
    "log_file": ("str", None, None, False, None),
    "log_max_files": ("int", 3, 1, False, 100),
    "health_url": ("str", None, None, False, None),
    "health_expected_status": ("int", 200, 100, False, 599),
    "health_expected_body": ("str", None, None, False, None),
    "health_check": ("str", None, None, False, None),
    "health_interval": ("float", 10.0, 0, True, None),
    "health_timeout": ("float", 5.0, 0, True, None),
    "health_retries": ("int", 3, 1, False, None),
    "health_grace": ("float", 10.0, 0, False, None),
    "ready": (("notify",), None, None, False, None),
    "ready_log_line": ("str", None, 1, False, MAX_PATTERN),
    "startup_timeout": ("float", 90.0, 0, False, 86400),
    "watchdog_sec": ("float", None, 0, True, 86400),
}
PROJECT_FIELDS: dict[str, Spec] = {
    "name": ("str", "taskmux", None, False, None),
    "auto_start": ("bool", True, None, False, None),
    "auto_daemon": ("bool", False, None, False, None),
    "agent_context": ("bool", True, None, False, None),
}
LOG_MAX_SIZE = (10 * 1024 * 1024, 1024)  # default, least


def _value(spec: Spec, value: object) -> object:
    kind, _, low, open_low, high = spec
    if kind == "str":
        if type(value) is not str:
            raise Unsure
        size: float = len(value)
    elif kind == "bool":
        if type(value) is not bool:
            raise Unsure
        return value
    elif kind == "int":
        if type(value) is not int:
            raise Unsure
        size = value
    elif kind == "float":
        if type(value) not in (int, float) or not math.isfinite(value):  # type: ignore[arg-type]
            raise Unsure
        value = size = float(value)  # type: ignore[arg-type]
    else:
        if type(value) is not str or value not in kind:
            raise Unsure
        return value
    if low is not None and (size < low or (open_low and size == low)):
        raise Unsure
    if high is not None and size > high:
        raise Unsure
    return value


def _fields(table: dict[str, Spec], raw: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, spec in table.items():
        if key in raw:
            out[key] = _value(spec, raw[key])
        elif spec[1] is ...:
            raise Unsure
        else:
            out[key] = spec[1]
    return out


def _hooks(raw: object) -> dict[str, str | None]:
    if not isinstance(raw, dict) or not set(raw) <= set(HOOK_KEYS) \
            or not all(type(v) is str for v in raw.values()):
        raise Unsure
    return {k: raw.get(k) for k in HOOK_KEYS}


class DependencyView:
    """A long-form ``depends_on`` entry, as ``projectconfig.Dependency`` has it."""

    __slots__ = ("condition", "restart")

    def __init__(self, condition: str | None, restart: bool) -> None:
        self.condition = condition
        self.restart = restart


def _depends_on(raw: object) -> list[str] | dict[str, str | DependencyView]:
    if isinstance(raw, list) and all(type(d) is str for d in raw):
        return list(raw)
    if not isinstance(raw, dict):
        raise Unsure
    out: dict[str, str | DependencyView] = {}
    for dep, entry in raw.items():
        if type(entry) is str and entry in CONDITIONS:
            out[dep] = entry
        elif isinstance(entry, dict) and set(entry) <= {"condition", "restart"} \
                and entry.get("condition", CONDITIONS[0]) in CONDITIONS \
                and type(entry.get("condition", "")) is str \
                and type(entry.get("restart", False)) is bool:
            out[dep] = DependencyView(entry.get("condition"), entry.get("restart", False))
        else:
            raise Unsure
    return out


class TaskView(TaskRules):
    """A task's settings as ``projectconfig.TaskConfig`` has them, defaults filled in."""

    command: str
    auto_start: bool
    cwd: str | None
    env: dict[str, str]
    env_file: str | None
    shell: str | None
    host: str | None
    host_path: str
    port: str | None
    depends_on: list[str] | dict[str, str | DependencyView]
    type: str
    success_exit_codes: list[int]
    stop_grace_period: float
    restart_policy: str
    max_restarts: int
    restart_backoff: float
    restart_delay: float
    retry_after: float
    log_file: str | None
    log_max_size: int
    log_max_files: int
    hooks: dict[str, str | None]
    health_url: str | None
    health_expected_status: int
    health_expected_body: str | None
    health_check: str | None
    health_interval: float
    health_timeout: float
    health_retries: int
    health_grace: float
    ready: str | None
    ready_log_line: str | None
    startup_timeout: float
    watchdog_sec: float | None

    def __init__(self, raw: object) -> None:
        if not isinstance(raw, dict) or not set(raw) <= {*TASK_FIELDS, *SPECIAL}:
            raise Unsure
        self.__dict__.update(_fields(TASK_FIELDS, raw))
        env = env_values(raw.get("env", {}))
        if not isinstance(env, dict) or not all(type(v) is str for v in env.values()):
            raise Unsure
        self.env = env
        self.depends_on = _depends_on(raw.get("depends_on", []))
        codes = raw.get("success_exit_codes", [0])
        if not isinstance(codes, list) or not codes \
                or not all(type(c) is int and 0 <= c <= 255 for c in codes):
            raise Unsure
        self.success_exit_codes = list(codes)
        size = parse_size(raw.get("log_max_size", LOG_MAX_SIZE[0]))  # ValueError: Unsure
        if type(size) is not int or size < LOG_MAX_SIZE[1]:
            raise Unsure
        self.log_max_size = size
        self.hooks = _hooks(raw.get("hooks", {}))


class ProjectView:
    """A project's settings as ``projectconfig.ProjectConfig`` has them, defaults filled in."""

    name: str
    auto_start: bool
    auto_daemon: bool
    agent_context: bool
    hooks: dict[str, str | None]
    tasks: dict[str, TaskView]

    def __init__(self, raw: dict[str, Any]) -> None:
        if not set(raw) <= {*PROJECT_FIELDS, "hooks", "tasks"}:
            raise Unsure
        self.__dict__.update(_fields(PROJECT_FIELDS, raw))
        self.hooks = _hooks(raw.get("hooks", {}))
        tasks = raw.get("tasks", {})
        if not isinstance(tasks, dict):
            raise Unsure
        self.tasks = {name: TaskView(task) for name, task in tasks.items()}


class QuickLoaded:
    """What ``projectconfig.LoadedConfig`` gives the client's commands."""

    def __init__(self, path: str, project: ProjectView, text: str) -> None:
        self.path = path
        self.project = project
        self.text = text

    @property
    def folder(self) -> str:
        return os.path.dirname(self.path)

    @property
    def name(self) -> str:
        return self.project.name


def view(raw: dict[str, Any]) -> ProjectView | None:
    """The project in ``raw`` (read TOML) when every value is plainly valid, else None (the
    models decide; so does any surprise here)."""
    try:
        return ProjectView(raw)
    except Exception:
        return None


def parse(text: str, path: str) -> QuickLoaded | LoadedConfig:
    """``projectconfig.parse``: the same result, the same ConfigError."""
    project = view(parse_toml(text, path))
    if project is None:
        from taskmuxctl.core import projectconfig

        return projectconfig.parse(text, path)
    problems = check_across(project, os.path.dirname(path), LineIndex(text))
    if problems:
        raise ConfigError(path, problems)
    return QuickLoaded(path, project, text)


def load_guarded(path: str) -> QuickLoaded | LoadedConfig:
    """``projectconfig.load_guarded``: any failure but a ConfigError or ConfigNotFound is
    left to it, so that it is reported (and logged) as it says."""
    try:
        found, text = read(path)
        return parse(text, found)
    except (ConfigError, ConfigNotFound):
        raise
    except Exception:
        from taskmuxctl.core import projectconfig

        return projectconfig.load_guarded(path)


def load_config(given: str | None = None) -> QuickLoaded | LoadedConfig:
    """The checked config of the taskmux.toml given (-c PATH) or here or above
    (``whichproject.require_config``); its problems as a CommandError."""
    from taskmuxctl.core.result import CommandError
    from taskmuxctl.core.whichproject import require_config

    try:
        return load_guarded(require_config(given))
    except (ConfigError, ConfigNotFound) as exc:
        raise CommandError(exc.message, exc.code, exc.data) from None
