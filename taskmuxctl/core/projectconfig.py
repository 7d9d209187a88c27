"""``taskmux.toml``: the project's tasks, validated with pydantic.

Every problem is reported together, each with the file, the key path (``tasks.web.depends_on``),
the line where it can be found, and what would be valid. Loading never starts anything.

Loading is bounded whatever the file holds: only a regular file is read (opened without
blocking, so a FIFO or a device is refused rather than waited on), at most
``MAX_CONFIG_BYTES`` of it, with at most ``MAX_TASKS`` tasks; finding problems and their lines
is linear in the file's size, dependency checks are iterative (a chain of thousands of tasks
is fine), and nesting too deep for the TOML parser is a problem like any other. The daemon
runs ``load`` in a worker thread, never on its event loop.
"""

from __future__ import annotations

import errno
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from taskmuxctl.core.errors import ClientError
from taskmuxctl.core.fsutil import UnreadableFile, read_regular_file
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.suggest import closest, did_you_mean

CONFIG_NAME = "taskmux.toml"
MAX_CONFIG_BYTES = 1024 * 1024
MAX_TASKS = 5000
MAX_PROBLEMS_SHOWN = 50
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
HOST_RE = re.compile(r"^(@|\*|[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)$")
SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?i?b?)?\s*$", re.IGNORECASE)
MAX_PATTERN = 1000  # characters of a ready_log_line pattern
NAME_RULE = ("lowercase letters, digits and hyphens, starting and ending with a letter or "
             "digit, at most 63 characters (it names a tmux window, a log file and a DNS label)")


def parse_size(value: object) -> int:
    """``"10MB"``, ``"512k"``, ``1048576`` → bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like \"10MB\"")
    if isinstance(value, int):
        return value
    m = SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"expected a size like \"10MB\", \"512KB\" or a number of bytes, "
                         f"got {value!r}")
    unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
    mult = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit]
    return int(float(m.group(1)) * mult)


def _env_value(value: object) -> object:
    if isinstance(value, dict):
        return {k: (str(v).lower() if isinstance(v, bool) else str(v)) if
                isinstance(v, str | int | float | bool) else v for k, v in value.items()}
    return value


class Hooks(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    before_start: str | None = None
    after_start: str | None = None
    before_stop: str | None = None
    after_stop: str | None = None


Condition = Literal["started", "healthy", "completed_successfully"]
# Where a task's readiness comes from besides probes (``TaskConfig.ready_source``).
ReadySource = Literal["notify", "log"]
CONDITIONS = ("started", "healthy", "completed_successfully")


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


class TaskConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str = Field(min_length=1)
    auto_start: bool = True
    cwd: str | None = None
    env: Annotated[dict[str, str], BeforeValidator(_env_value)] = Field(default_factory=dict)
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

    @property
    def wants_port(self) -> bool:
        return self.host is not None or self.port == "auto"

    @property
    def has_health_check(self) -> bool:
        """Whether "healthy" needs a verdict (a probe, or the task's own word)."""
        return bool(self.health_url or self.health_check or self.ready_source)

    @property
    def ready_source(self) -> ReadySource | None:
        """Where the task's readiness comes from besides probes: "notify" (it sends
        READY=1) or "log" (a line of its output matches ``ready_log_line``)."""
        if self.ready == "notify":
            return "notify"
        return "log" if self.ready_log_line else None

    @property
    def oneshot(self) -> bool:
        return self.type == "oneshot"

    def condition_on(self, dep: str, dep_config: TaskConfig) -> str:
        """What this task waits for from ``dep``: the table form says; in the list form a
        one-shot must have completed successfully, any other task must be healthy (running,
        when it has no probe)."""
        entry = self.depends_on.get(dep) if isinstance(self.depends_on, dict) else None
        if isinstance(entry, Dependency):
            entry = entry.condition
        if entry is not None:
            return entry
        return "completed_successfully" if dep_config.oneshot else "healthy"

    def restarts_with(self, dep: str) -> bool:
        """Whether a restart of ``dep`` restarts this task too (``restart = true``)."""
        entry = self.depends_on.get(dep) if isinstance(self.depends_on, dict) else None
        return isinstance(entry, Dependency) and entry.restart


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "taskmux"
    auto_start: bool = True
    auto_daemon: bool = False  # taskmux 0.6: the daemon now always supervises; accepted
    agent_context: bool = True
    hooks: Hooks = Field(default_factory=Hooks)
    tasks: dict[str, TaskConfig] = Field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    line: int | None = None

    def render(self, path: str) -> str:
        where = f"{path}:{self.line}" if self.line else path
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


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


class ConfigError(ClientError):
    default_code = Code.CONFIG_INVALID

    def __init__(self, path: str, problems: list[Problem]) -> None:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        lines = "\n".join("  " + p.render(path) for p in shown)
        if len(problems) > len(shown):
            lines += f"\n  … and {len(problems) - len(shown)} more"
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(
            f"{path} has {len(problems)} {noun}:\n{lines}",
            {"path": path, "count": len(problems),
             "problems": [{"key": p.key, "message": p.message, "line": p.line}
                          for p in shown]})
        self.problems = problems


class ConfigNotFound(ClientError):
    default_code = Code.CONFIG_NOT_FOUND


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*[\"']?([^\"'=\s]+)[\"']?\s*=")


class LineIndex:
    """Where each ``[table]`` header and each ``key =`` line of a TOML text is, built in one
    pass so that finding the line of every problem stays linear."""

    def __init__(self, text: str) -> None:
        self.headers: dict[str, int] = {}
        self.keys: dict[tuple[str, str], int] = {}  # (table, key) -> 0-based line
        table = ""
        for i, line in enumerate(text.splitlines()):
            m = _HEADER.match(line)
            if m:
                table = ".".join(part.strip().strip("\"'") for part in m.group(1).split("."))
                self.headers.setdefault(table, i)
                continue
            k = _KEY.match(line)
            if k:
                self.keys.setdefault((table, k.group(1)), i)

    def find(self, key_path: tuple[str | int, ...]) -> int | None:
        """The 1-based line of ``key_path``: its own ``[table]`` header, or the ``key =`` line
        inside its parent table; failing that, the nearest enclosing one."""
        keys = [str(k) for k in key_path if not isinstance(k, int)]
        for depth in range(len(keys), 0, -1):
            dotted = ".".join(keys[:depth])
            if dotted in self.headers:
                return self.headers[dotted] + 1
            parent, last = ".".join(keys[: depth - 1]), keys[depth - 1]
            if parent and parent not in self.headers:
                continue
            line = self.keys.get((parent, last))
            if line is not None:
                return line + 1
        return None


def find_line(text: str, key_path: tuple[str | int, ...]) -> int | None:
    """The 1-based line of ``key_path`` in the TOML text (see ``LineIndex.find``)."""
    return LineIndex(text).find(key_path)


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


def _check_semantics(cfg: ProjectConfig, folder: str, index: LineIndex) -> list[Problem]:
    problems: list[Problem] = []

    def add(loc: tuple[str, ...], message: str) -> None:
        problems.append(Problem(".".join(loc), message, index.find(loc)))

    if not NAME_RE.match(cfg.name):
        add(("name",), f"{cfg.name!r} is not a valid project name: use {NAME_RULE}")
    hosts: dict[str, str] = {}
    names = sorted(cfg.tasks)
    task_names = (", ".join(names[:20]) + (f", … ({len(names)} in all)" if len(names) > 20
                                            else "")) or "(none)"
    for name, task in cfg.tasks.items():
        where = ("tasks", name)
        if not NAME_RE.match(name):
            add(where, f"{name!r} is not a valid task name: use {NAME_RULE}")
        for dep in task.depends_on:
            if dep not in cfg.tasks:
                add((*where, "depends_on"), f"depends on {dep!r}, which is not a task here"
                    f"{did_you_mean(dep, names)}; tasks: {task_names}")
            elif dep == name:
                add((*where, "depends_on"), "a task cannot depend on itself")
            elif task.condition_on(dep, cfg.tasks[dep]) == "completed_successfully" \
                    and not cfg.tasks[dep].oneshot:
                add((*where, "depends_on", dep), f"{dep!r} is not a one-shot task, so it never "
                    f"completes: set type = \"oneshot\" on it, or wait for \"started\" or "
                    f"\"healthy\"")
        if task.cwd is not None and not os.path.isdir(os.path.join(folder, task.cwd)):
            add((*where, "cwd"), f"folder {os.path.join(folder, task.cwd)} does not exist; "
                "create it or fix the path (relative paths start at taskmux.toml's folder)")
        if task.env_file is not None and not os.path.isfile(os.path.join(folder, task.env_file)):
            add((*where, "env_file"), f"file {os.path.join(folder, task.env_file)} does not "
                "exist")
        if task.host is not None:
            if not HOST_RE.match(task.host):
                add((*where, "host"), f"{task.host!r} is not a valid host: use a DNS label "
                    "(lowercase letters, digits, hyphens), \"@\" for the project's own name, or "
                    "\"*\" for any other name under it")
            elif task.host in hosts:
                add((*where, "host"), f"host {task.host!r} is already used by task "
                    f"{hosts[task.host]!r}")
            else:
                hosts[task.host] = name
        if task.health_expected_body is not None:
            try:
                re.compile(task.health_expected_body)
            except re.error as exc:
                add((*where, "health_expected_body"), f"not a valid regular expression: {exc}")
        if task.ready_log_line is not None:
            try:
                re.compile(task.ready_log_line)
            except re.error as exc:
                add((*where, "ready_log_line"), f"not a valid regular expression: {exc}")
            if task.ready == "notify":
                add((*where, "ready_log_line"), "choose one readiness source: ready = "
                    "\"notify\" or ready_log_line, not both")
        if (task.ready_source or task.watchdog_sec) and (task.health_url or task.health_check):
            key = "health_url" if task.health_url else "health_check"
            add((*where, key), f"a task that says itself when it is ready or alive "
                "(ready_log_line, ready = \"notify\", watchdog_sec) is judged on its own word: "
                f"remove {key}, or those")
        if task.shell is not None and not os.path.isabs(task.shell):
            add((*where, "shell"), "give the shell's absolute path, e.g. \"/bin/bash\"")
    cycle = find_cycle({n: list(t.depends_on) for n, t in cfg.tasks.items()})
    if cycle:
        add(("tasks", cycle[0], "depends_on"),
            f"dependency cycle: {' -> '.join(cycle)}; remove one of these depends_on entries")
    return problems


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """One dependency cycle as a path (first node repeated at the end), or None. Iterative, so
    a chain of any length is fine."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path: list[str] = [root]
        pending: list[list[str]] = [[d for d in reversed(graph[root]) if d in graph]]
        state[root] = 1
        while path:
            todo = pending[-1]
            if not todo:
                state[path.pop()] = 2
                pending.pop()
                continue
            dep = todo.pop()
            if state.get(dep) == 1:
                return [*path[path.index(dep):], dep]
            if dep not in state:
                state[dep] = 1
                path.append(dep)
                pending.append([d for d in reversed(graph[dep]) if d in graph])
    return None


def parse(text: str, path: str) -> LoadedConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = None
        m = re.search(r"line (\d+)", str(exc))
        if m:
            line = int(m.group(1))
        raise ConfigError(path, [Problem("", f"not valid TOML: {exc}", line)]) from None
    except RecursionError:
        raise ConfigError(path, [Problem("", "arrays or tables are nested too deeply to read; "
                                         "taskmux.toml needs only a few levels")]) from None
    tasks = raw.get("tasks")
    if isinstance(tasks, dict) and len(tasks) > MAX_TASKS:
        raise ConfigError(path, [Problem("tasks", f"{len(tasks)} tasks; a project may have at "
                                         f"most {MAX_TASKS}: split it into several projects")])
    index = LineIndex(text)
    try:
        project = ProjectConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(path, _pydantic_problems(exc, index)) from None
    except RecursionError:
        raise ConfigError(path, [Problem("", "values are nested too deeply to check; "
                                         "taskmux.toml needs only a few levels")]) from None
    problems = _check_semantics(project, os.path.dirname(path), index)
    if problems:
        raise ConfigError(path, problems)
    return LoadedConfig(path, project, text)


def load(path: str) -> LoadedConfig:
    """Read and check the taskmux.toml at ``path`` (or in the folder ``path``). Blocking: the
    daemon calls it in a worker thread. Every failure is a ConfigError or ConfigNotFound."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, CONFIG_NAME)
    try:
        data = read_regular_file(path, MAX_CONFIG_BYTES)
    except FileNotFoundError:
        raise ConfigNotFound(
            f"no {CONFIG_NAME} at {path}; create one with `taskmux init`, or run from the "
            "project's folder, or name a registered project with -p NAME",
            {"path": path}) from None
    except UnreadableFile as exc:
        raise ConfigError(path, [Problem("", f"cannot be read: {exc}; taskmux.toml must be a "
                                         f"regular file of at most {MAX_CONFIG_BYTES} bytes")]
                          ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            message = ("is a symbolic link loop (a link that leads back to itself); point "
                       "it at the real taskmux.toml")
        else:
            message = f"cannot be read: {exc.strerror or exc}"
        raise ConfigError(path, [Problem("", message)]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [Problem("", f"not UTF-8 text: {exc}")]) from None
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


def start_order(tasks: dict[str, TaskConfig]) -> list[list[str]]:
    """Tasks in waves: each wave depends only on earlier ones (the config is acyclic). The
    supervisor's one dependency order (``taskmuxctl.core.taskorder``)."""
    from taskmuxctl.core import taskorder

    return taskorder.levels({n: list(t.depends_on) for n, t in tasks.items()})


def closure(tasks: dict[str, TaskConfig], names: list[str]) -> set[str]:
    """``names`` and everything they depend on, transitively."""
    from taskmuxctl.core import taskorder

    return taskorder.closure({n: list(t.depends_on) for n, t in tasks.items()}, names)
