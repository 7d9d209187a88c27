"""The rules of ``taskmux.toml`` that need no pydantic: reading the file, its TOML, the lines
of keys, the checks across tasks (names, dependencies, folders, hosts, patterns, cycles), the
problems and their message, and what a task's settings mean (``TaskRules``).

``projectconfig`` validates each value's type and range with pydantic and then applies these
rules; the client's quick path (``taskmuxctl.quickconfig``) checks a plain valid file without
loading pydantic and applies the same rules. ``projectconfig`` re-exports every name here.
"""

from __future__ import annotations

import errno
import os
import re
import tomllib
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from taskmuxctl.core.errors import ClientError
from taskmuxctl.core.fsutil import UnreadableFile, read_regular_file
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.suggest import did_you_mean

if TYPE_CHECKING:
    from collections.abc import Mapping

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


Condition = Literal["started", "healthy", "completed_successfully"]
# Where a task's readiness comes from besides probes (``TaskRules.ready_source``).
ReadySource = Literal["notify", "log"]
CONDITIONS = ("started", "healthy", "completed_successfully")


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


def env_values(value: object) -> object:
    """A task's ``env`` table with its numbers and booleans as the strings a program sees
    (``true``, not ``True``); anything else is left for the type check to refuse."""
    if isinstance(value, dict):
        return {k: (str(v).lower() if isinstance(v, bool) else str(v)) if
                isinstance(v, str | int | float | bool) else v for k, v in value.items()}
    return value


class TaskRules:
    """What a task's settings mean, for ``TaskConfig`` and the client's quick view alike. A
    long-form ``depends_on`` entry is anything with ``condition`` and ``restart``."""

    if TYPE_CHECKING:
        cwd: str | None
        env_file: str | None
        shell: str | None
        host: str | None
        port: str | None
        health_expected_body: str | None
        watchdog_sec: float | None
        health_url: str | None
        health_check: str | None
        ready: str | None
        ready_log_line: str | None
        type: str
        depends_on: Any

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

    def _entry(self, dep: str) -> Any:
        return self.depends_on.get(dep) if isinstance(self.depends_on, dict) else None

    def condition_on(self, dep: str, dep_config: TaskRules) -> str:
        """What this task waits for from ``dep``: the table form says; in the list form a
        one-shot must have completed successfully, any other task must be healthy (running,
        when it has no probe)."""
        entry = self._entry(dep)
        if entry is not None and not isinstance(entry, str):
            entry = entry.condition
        if entry is not None:
            return str(entry)
        return "completed_successfully" if dep_config.oneshot else "healthy"

    def restarts_with(self, dep: str) -> bool:
        """Whether a restart of ``dep`` restarts this task too (``restart = true``)."""
        entry = self._entry(dep)
        return entry is not None and not isinstance(entry, str) and bool(entry.restart)


class Problem(NamedTuple):  # not a dataclass: dataclasses costs the client ~8 ms to import
    key: str
    message: str
    line: int | None = None

    def render(self, path: str) -> str:
        where = f"{path}:{self.line}" if self.line else path
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


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


class ProjectRules(Protocol):
    """What ``check_across`` reads of a project: ``ProjectConfig``, or the client's quick view."""

    @property
    def name(self) -> str: ...

    @property
    def tasks(self) -> Mapping[str, TaskRules]: ...


def check_across(cfg: ProjectRules, folder: str, index: LineIndex) -> list[Problem]:
    """The problems no single value shows: names, dependencies, folders and files, hosts,
    patterns, readiness sources, shells, cycles."""
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


def parse_toml(text: str, path: str) -> dict[str, Any]:
    """The TOML of ``text``: a ConfigError when it is not TOML, is nested too deeply, or has
    more than ``MAX_TASKS`` tasks."""
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
    return raw


def read(path: str) -> tuple[str, str]:
    """The absolute path of the taskmux.toml at ``path`` (or in the folder ``path``) and its
    text; a ConfigNotFound or ConfigError saying what is wrong."""
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
        return path, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(path, [Problem("", f"not UTF-8 text: {exc}")]) from None


def start_order(tasks: Mapping[str, TaskRules]) -> list[list[str]]:
    """Tasks in waves: each wave depends only on earlier ones (the config is acyclic). The
    supervisor's one dependency order (``taskmuxctl.core.taskorder``)."""
    from taskmuxctl.core import taskorder

    return taskorder.levels({n: list(t.depends_on) for n, t in tasks.items()})


def closure(tasks: Mapping[str, TaskRules], names: list[str]) -> set[str]:
    """``names`` and everything they depend on, transitively."""
    from taskmuxctl.core import taskorder

    return taskorder.closure({n: list(t.depends_on) for n, t in tasks.items()}, names)
