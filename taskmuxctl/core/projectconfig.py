"""``taskmux.toml``: the project's tasks, validated with pydantic.

Every problem is reported together, each with the file, the key path (``tasks.web.depends_on``),
the line where it can be found, and what would be valid. Loading never starts anything.

Loading is bounded whatever the file holds: only a regular file is read (opened without
blocking, so a FIFO or a device is refused rather than waited on), at most
``MAX_CONFIG_BYTES`` of it, with at most ``MAX_TASKS`` tasks; finding problems and their lines
is linear in the file's size, dependency checks are iterative (a chain of thousands of tasks
is fine), and nesting too deep for the TOML parser is a problem like any other. The daemon
runs ``load`` in a worker thread, never on its event loop.

What needs no pydantic (reading, TOML, lines, the checks across tasks, the problems) is in
``projectrules``, whose names this module re-exports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from taskmuxctl.core.projectrules import (
    CONDITIONS,
    CONFIG_NAME,
    HOST_RE,
    MAX_CONFIG_BYTES,
    MAX_PATTERN,
    MAX_PROBLEMS_SHOWN,
    MAX_TASKS,
    NAME_RE,
    NAME_RULE,
    SIZE_RE,
    Condition,
    ConfigError,
    ConfigNotFound,
    LineIndex,
    Problem,
    ReadySource,
    TaskRules,
    check_across,
    closure,
    env_values,
    find_cycle,
    find_line,
    parse_size,
    parse_toml,
    read,
    start_order,
)
from taskmuxctl.core.suggest import closest

__all__ = [
    "CONDITIONS", "CONFIG_NAME", "HOST_RE", "MAX_CONFIG_BYTES", "MAX_PATTERN",
    "MAX_PROBLEMS_SHOWN", "MAX_TASKS", "NAME_RE", "NAME_RULE", "SIZE_RE", "Condition",
    "ConfigError", "ConfigNotFound", "Dependency", "Hooks", "LineIndex", "LoadedConfig",
    "Problem", "ProjectConfig", "ReadySource", "TaskConfig", "closure", "find_cycle",
    "find_line", "load", "load_guarded", "parse", "parse_size", "start_order",
]


class Hooks(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    before_start: str | None = None
    after_start: str | None = None
    before_stop: str | None = None
    after_stop: str | None = None


class Dependency(BaseModel):
    """The long form of one ``depends_on`` entry: ``db = { condition = "healthy", restart =
    true }``. ``restart``: a restart of the dependency restarts this task too (default false,
    as in docker compose)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    condition: Condition | None = None
    restart: bool = False


def _depends_on(value: object) -> object:
    """One clear message for a wrong ``depends_on`` (not one per form it might have been)."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if isinstance(value, dict):
        for dep, cond in value.items():
            if isinstance(cond, dict):
                extra = sorted(set(cond) - {"condition", "restart"})
                if extra:
                    raise ValueError(f"the entry for {dep!r} has {', '.join(map(repr, extra))}; "
                                     "it takes `condition` and `restart`")
                if not isinstance(cond.get("restart", False), bool):
                    raise ValueError(f"`restart` of {dep!r} must be true or false, not "
                                     f"{cond['restart']!r}")
            named = cond.get("condition", "healthy") if isinstance(cond, dict) else cond
            if named not in CONDITIONS:
                raise ValueError(f"the condition on {dep!r} is {named!r}; use one of "
                                 f"{', '.join(map(repr, CONDITIONS))}")
        return value
    raise ValueError(f"expected a list of task names, e.g. [\"db\"], or a table of task = "
                     f"condition ({', '.join(CONDITIONS)}), e.g. {{ migrate = "
                     f"\"completed_successfully\" }}, or task = {{ condition = \"healthy\", "
                     f"restart = true }}; got {value!r}")


class TaskConfig(TaskRules, BaseModel):
    """One task. What its settings mean (``ready_source``, ``condition_on``, ...) is in
    ``TaskRules``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str = Field(min_length=1)
    auto_start: bool = True
    cwd: str | None = None
    env: Annotated[dict[str, str], BeforeValidator(env_values)] = Field(default_factory=dict)
    env_file: str | None = None
    shell: str | None = None
    host: str | None = None
    host_path: str = "/"
    port: Literal["auto"] | None = None
    # A list of task names, or a table of name = condition. Iterating gives the names.
    depends_on: Annotated[list[str] | dict[str, Condition | Dependency],
                          BeforeValidator(_depends_on)] = Field(default_factory=list)
    type: Literal["service", "oneshot"] = "service"
    success_exit_codes: list[Annotated[int, Field(ge=0, le=255)]] = Field(
        default_factory=lambda: [0], min_length=1)
    stop_grace_period: float = Field(5.0, ge=0, le=3600)
    restart_policy: Literal["no", "on-failure", "always"] = "on-failure"
    max_restarts: int = Field(5, ge=0)
    restart_backoff: float = Field(2.0, ge=1.0, le=60.0)
    restart_delay: float = Field(1.0, ge=0, le=60.0)
    retry_after: float = Field(300.0, ge=0, le=86400)
    log_file: str | None = None
    log_max_size: Annotated[int, BeforeValidator(parse_size)] = Field(10 * 1024 * 1024, ge=1024)
    log_max_files: int = Field(3, ge=1, le=100)
    hooks: Hooks = Field(default_factory=Hooks)
    health_url: str | None = None
    health_expected_status: int = Field(200, ge=100, le=599)
    health_expected_body: str | None = None
    health_check: str | None = None
    health_interval: float = Field(10.0, gt=0)
    health_timeout: float = Field(5.0, gt=0)
    health_retries: int = Field(3, ge=1)
    health_grace: float = Field(10.0, ge=0)
    # Readiness from the task itself (see taskmuxd/projects/readiness.py).
    ready: Literal["notify"] | None = None
    ready_log_line: str | None = Field(None, min_length=1, max_length=MAX_PATTERN)
    startup_timeout: float = Field(90.0, ge=0, le=86400)
    watchdog_sec: float | None = Field(None, gt=0, le=86400)


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "taskmux"
    auto_start: bool = True
    auto_daemon: bool = False  # taskmux 0.6: the daemon now always supervises; accepted
    agent_context: bool = True
    hooks: Hooks = Field(default_factory=Hooks)
    tasks: dict[str, TaskConfig] = Field(default_factory=dict)


@dataclass(frozen=True)
class LoadedConfig:
    path: str
    project: ProjectConfig
    text: str = field(repr=False)

    @property
    def folder(self) -> str:
        return os.path.dirname(self.path)

    @property
    def name(self) -> str:
        return self.project.name

    def task_cwd(self, task: TaskConfig) -> str:
        return os.path.normpath(os.path.join(self.folder, task.cwd or "."))

    def task_env_file(self, task: TaskConfig) -> str | None:
        return os.path.join(self.folder, task.env_file) if task.env_file else None


def _pydantic_problems(exc: ValidationError, index: LineIndex) -> list[Problem]:
    errors = exc.errors()
    missing = {tuple(e["loc"]) for e in errors if e["type"] == "missing"}
    # A misspelt key is one problem, not two: `comand` names `command`, and the "command is
    # required" that follows from the typo is not reported separately.
    typos: dict[tuple[Any, ...], str] = {}
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            best = closest(str(loc[-1]), _valid_keys(loc))
            if best is not None:
                typos[loc] = best
    explained = {(*loc[:-1], best) for loc, best in typos.items()}
    problems = []
    for err in errors:
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden" and loc in typos:
            best = typos[loc]
            msg = f"unknown key {loc[-1]!r}; did you mean {best!r}?"
            if (*loc[:-1], best) in missing:
                msg += f" ({best!r} is required)"
        elif err["type"] == "extra_forbidden":
            valid = _valid_keys(loc)
            msg = f"unknown key {loc[-1]!r}; valid keys here: {', '.join(valid)}"
        elif err["type"] == "missing" and loc in explained:
            continue
        elif err["type"] == "missing":
            msg = "is required"
        else:
            msg = err["msg"]
            if "input" in err and err["type"] not in ("dict_type", "model_type"):
                msg += f" (got {err['input']!r})"
        problems.append(Problem(key, msg, index.find(loc)))
    return problems


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    parent = loc[:-1]
    if not parent:
        return sorted(ProjectConfig.model_fields)
    if parent[-1] == "hooks":
        return sorted(Hooks.model_fields)
    return sorted(TaskConfig.model_fields)


def parse(text: str, path: str) -> LoadedConfig:
    raw = parse_toml(text, path)
    index = LineIndex(text)
    try:
        project = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(path, _pydantic_problems(exc, index)) from None
    except RecursionError:
        raise ConfigError(path, [Problem("", "values are nested too deeply to check; "
                                         "taskmux.toml needs only a few levels")]) from None
    problems = check_across(project, os.path.dirname(path), index)
    if problems:
        raise ConfigError(path, problems)
    return LoadedConfig(path, project, text)


def load(path: str) -> LoadedConfig:
    """Read and check the taskmux.toml at ``path`` (or in the folder ``path``). Blocking: the
    daemon calls it in a worker thread. Every failure is a ConfigError or ConfigNotFound."""
    path, text = read(path)
    return parse(text, path)


def load_guarded(path: str) -> LoadedConfig:
    """``load``, with any other failure (a bug, or an input nobody foresaw) turned into a
    ConfigError too, so a caller never sees a traceback and a reload never dies silently."""
    try:
        return load(path)
    except (ConfigError, ConfigNotFound):
        raise
    except Exception as exc:
        import logging  # only here: the client's commands never load logging otherwise

        logging.getLogger("taskmuxd.config").exception("loading %s failed unexpectedly", path)
        raise ConfigError(os.path.abspath(path), [Problem(
            "", f"could not be loaded ({type(exc).__name__}: {str(exc)[:200]})")]) from None
