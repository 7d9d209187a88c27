"""The MCP server's tools: a thin bridge to the daemon (through the client's ``Context``) and
to the log and event files (read directly, as ``taskmux logs`` and ``events`` do).

Each tool works on the project of the server's working directory unless its ``project``
argument names a registered one. A tool returns (data, text); what goes wrong with the call
itself (a task that does not exist, no project here, the daemon not starting) is a
``ToolFailure``, reported to the client as a result with ``isError``.
"""

from __future__ import annotations

import json
import os
import threading

from taskmuxctl import logread, projectfile
from taskmuxctl.context import Context
from taskmuxctl.core import eventread
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code, Method, RpcError, error_name
from taskmuxctl.core.whichproject import find_config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any

    from taskmuxctl.core.rpctypes import (
        InspectResult,
        ProjectTarget,
        StartParams,
        TaskParams,
        TasksParams,
    )
    from taskmuxctl.mcp.eventfeed import Hub

MAX_LOG_LINES = 2000
MAX_WAIT = 300.0

_PROJECT = {"type": "string", "description": "a registered project's name (default: the "
            "project whose taskmux.toml is in the server's working directory or above)"}
_TASK = {"type": "string", "description": "the task's name (as in taskmux.toml)"}


def _tasks(what: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"},
            "description": f"task names (default: {what})"}


def _schema(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "additionalProperties": False}
    if required:
        out["required"] = list(required)
    return out


READ_ONLY = {"readOnlyHint": True, "openWorldHint": False}
TOOLS: list[dict[str, Any]] = [
    {"name": "status", "title": "Project status",
     "description": "Live state of every task of the project: state (running, stopped, backoff, "
     "exited, fatal...), pid, port, URL, health, restarts, uptime, last exit. Ask this instead "
     "of guessing whether a server is up or on which port.",
     "inputSchema": _schema({"project": _PROJECT}), "annotations": READ_ONLY},
    {"name": "inspect", "title": "Inspect a task",
     "description": "Everything taskmux knows about one task: its config, state, process, "
     "port, URL, log file, working folder, health probe and restart policy state.",
     "inputSchema": _schema({"task": _TASK, "project": _PROJECT}, ("task",)),
     "annotations": READ_ONLY},
    {"name": "logs", "title": "Task logs",
     "description": "Recent output of one task (or of all, interleaved by time), each line "
     "time-stamped (UTC). Filter by time (since) and by a regular expression (grep).",
     "inputSchema": _schema({
         "task": {**_TASK, "description": "one task (default: every task, interleaved)"},
         "project": _PROJECT,
         "lines": {"type": "integer", "minimum": 0, "maximum": MAX_LOG_LINES,
                   "description": "the last N lines (default 100)"},
         "since": {"type": "string", "description": "only lines newer than this: 30s, 5m, "
                   "1h, 2d or an ISO time (UTC)"},
         "grep": {"type": "string", "description": "only lines matching this regular "
                  "expression"},
         "context": {"type": "integer", "minimum": 0, "maximum": 50,
                     "description": "lines of context around grep matches (default 0)"}}),
     "annotations": READ_ONLY},
    {"name": "start", "title": "Start tasks",
     "description": "Start the project's auto_start tasks, or the named ones and what they "
     "depend on, in dependency order; waits until they run (and are healthy, for "
     "dependencies).",
     "inputSchema": _schema({"tasks": _tasks("the auto_start tasks"), "project": _PROJECT}),
     "annotations": {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": True,
                     "openWorldHint": False}},
    {"name": "stop", "title": "Stop tasks",
     "description": "Stop tasks (Ctrl-C, then SIGTERM, then SIGKILL); they stay stopped (no "
     "automatic restart) until started again.",
     "inputSchema": _schema({"tasks": _tasks("all"), "project": _PROJECT}),
     "annotations": {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": True,
                     "openWorldHint": False}},
    {"name": "restart", "title": "Restart tasks",
     "description": "Stop and start tasks again, e.g. after changing their configuration, "
     "dependencies or environment; returns each task's new state.",
     "inputSchema": _schema({"tasks": _tasks("the running and auto_start ones"),
                             "project": _PROJECT}),
     "annotations": {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False,
                     "openWorldHint": False}},
    {"name": "health", "title": "Health checks",
     "description": "The result of each task's latest health probe (URL, command, TCP port "
     "or process), with the failure reason and consecutive failures.",
     "inputSchema": _schema({"project": _PROJECT}), "annotations": READ_ONLY},
    {"name": "events", "title": "Event history",
     "description": "What happened to the tasks and when: starts, stops, exits (with codes), "
     "automatic restarts, health failures and recoveries, config reloads. With wait_seconds, "
     "waits for the next new events instead (returns as soon as some arrive).",
     "inputSchema": _schema({
         "project": _PROJECT,
         "task": {**_TASK, "description": "only this task's events"},
         "since": {"type": "string", "description": "only events newer than 30s, 5m, 1h, 2d or "
                   "an ISO time"},
         "lines": {"type": "integer", "minimum": 1, "maximum": 1000,
                   "description": "the last N events (default 50)"},
         "all_projects": {"type": "boolean", "description": "every project, not just this one"},
         "wait_seconds": {"type": "number", "minimum": 0, "maximum": MAX_WAIT,
                          "description": "wait up to this long for new events and return "
                          "those (instead of the history)"}}),
     "annotations": READ_ONLY},
    {"name": "list_projects", "title": "List projects",
     "description": "Every project registered with the taskmux daemon on this machine, with "
     "its config file, state and running tasks; use a name as the project argument.",
     "inputSchema": _schema({}), "annotations": READ_ONLY},
]
BY_NAME = {t["name"]: t for t in TOOLS}


class ToolFailure(Exception):
    """A tool call that failed for a reason the model can act on."""

    def __init__(self, message: str, code: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.data = data

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.message}
        if self.code is not None:
            out.update(code=self.code, kind=error_name(self.code))
        if self.data is not None:
            out["data"] = self.data
        return out


def check_arguments(schema: dict[str, Any], args: dict[str, Any]) -> None:
    """Enough JSON Schema for these tools: types, bounds, required, no unknown keys."""
    props = schema.get("properties", {})
    for key in schema.get("required", []):
        if key not in args:
            raise ToolFailure(f"missing argument {key!r}")
    for key, value in args.items():
        spec = props.get(key)
        if spec is None:
            raise ToolFailure(f"unknown argument {key!r}; arguments: {', '.join(props) or '-'}")
        kind = spec["type"]
        ok = {"string": isinstance(value, str),
              "boolean": isinstance(value, bool),
              "integer": isinstance(value, int) and not isinstance(value, bool),
              "number": isinstance(value, int | float) and not isinstance(value, bool),
              "array": isinstance(value, list) and all(isinstance(v, str) for v in value),
              }[kind]
        if not ok:
            what = "a list of strings" if kind == "array" else f"a {kind}"
            raise ToolFailure(f"argument {key!r} must be {what}, got {value!r}")
        if kind in ("integer", "number") and not (
                spec.get("minimum", value) <= value <= spec.get("maximum", value)):
            raise ToolFailure(f"argument {key!r} must be between {spec.get('minimum')} and "
                              f"{spec.get('maximum')}, got {value!r}")


class Tools:
    def __init__(self, paths: Paths, cwd: str, hub: Hub | None = None,
                 on_project: Callable[[str], None] | None = None) -> None:
        self.paths = paths
        self.cwd = cwd
        self.hub = hub
        self.on_project = on_project or (lambda _name: None)

    def default_project(self) -> str | None:
        """The name in the taskmux.toml of the working directory (or above), if any."""
        path = find_config(self.cwd)
        if path is None:
            return None
        try:
            return self._load_file(path).name
        except ToolFailure:
            return None

    def call(self, name: str, args: dict[str, Any],
             cancelled: threading.Event) -> tuple[dict[str, Any], str]:
        check_arguments(BY_NAME[name]["inputSchema"], args)
        handler = getattr(self, "tool_" + name)
        try:
            data, text = handler(args, cancelled)
        except RpcError as exc:  # the daemon's errors, and the client's own (CommandError)
            raise ToolFailure(exc.message, exc.code, exc.data) from None
        if isinstance(data.get("project"), str):
            self.on_project(data["project"])
        return data, text

    # -- helpers -------------------------------------------------------------------------

    def _target(self, args: dict[str, Any], params: ProjectTarget) -> None:
        """Say in ``params`` which project a tool works on: the one named, or the one of
        the working folder."""
        if args.get("project"):
            params["project"] = args["project"]
            return
        config = find_config(self.cwd)
        if config is None:
            raise ToolFailure(
                f"no taskmux.toml in {self.cwd} or any folder above it, and no project "
                "argument; pass project (list_projects shows the registered ones)")
        params["config"], params["cwd"] = config, self.cwd

    def _project(self, args: dict[str, Any]) -> ProjectTarget:
        params: ProjectTarget = {}
        self._target(args, params)
        return params

    def _with_tasks(self, args: dict[str, Any], params: TasksParams) -> TasksParams:
        self._target(args, params)
        if args.get("tasks"):
            params["tasks"] = args["tasks"]
        return params

    def _call(self, method: str, params: Mapping[str, Any] | None) -> Any:
        ctx = Context(self.paths, as_json=True)
        try:
            return ctx.call(method, params)
        finally:
            ctx.close()

    def _project_file(self, args: dict[str, Any]) -> projectfile.ProjectFile:
        if args.get("project"):
            pf = projectfile.load(args["project"], self.paths)
            if not pf.path:
                raise ToolFailure(f"no project named {args['project']!r} is registered; "
                                  "list_projects shows the registered ones",
                                  Code.PROJECT_NOT_FOUND, {"project": args["project"]})
            return pf
        path = find_config(self.cwd)
        if path is None:
            raise ToolFailure(f"no taskmux.toml in {self.cwd} or above, and no project "
                              "argument; pass project (list_projects shows the registered ones)")
        return self._load_file(path)

    def _load_file(self, path: str) -> projectfile.ProjectFile:
        """The taskmux.toml at ``path`` (its registered last valid copy when it is broken)."""
        from taskmuxctl.core.result import CommandError

        try:
            return projectfile.from_path(path, self.paths)
        except CommandError as exc:
            raise ToolFailure(exc.message, exc.code) from None

    @staticmethod
    def _since(text: str | None) -> float | None:
        if not text:
            return None
        from taskmuxctl.core.timefmt import TimeError, parse_since

        try:
            return parse_since(text)
        except TimeError as exc:
            raise ToolFailure(str(exc)) from None

    # -- the tools -----------------------------------------------------------------------

    def tool_status(self, args: dict[str, Any], _c: threading.Event) -> tuple[Any, str]:
        out = self._call(Method.PROJECT_STATUS, self._project(args))
        return out, _json(out)

    def tool_inspect(self, args: dict[str, Any], _c: threading.Event) -> tuple[Any, str]:
        params: TaskParams = {"task": args["task"]}
        self._target(args, params)
        out: InspectResult = self._call(Method.TASK_INSPECT, params)
        return out, _json(out["task"])

    def tool_start(self, args: dict[str, Any], _c: threading.Event) -> tuple[Any, str]:
        params: StartParams = {"env": dict(os.environ)}
        out = self._call(Method.PROJECT_START, self._with_tasks(args, params))
        return out, _json(out)

    def tool_stop(self, args: dict[str, Any], _c: threading.Event) -> tuple[Any, str]:
        out = self._call(Method.PROJECT_STOP, self._with_tasks(args, {}))
        return out, _json(out)

    def tool_restart(self, args: dict[str, Any], _c: threading.Event) -> tuple[Any, str]:
        out = self._call(Method.PROJECT_RESTART, self._with_tasks(args, {}))
        return out, _json(out)

    def tool_health(self, args: dict[str, Any], _c: threading.Event) -> tuple[Any, str]:
        out = self._call(Method.HEALTH_CHECK, self._project(args))
        return out, _json(out)

    def tool_list_projects(self, args: dict[str, Any], _c: threading.Event) -> tuple[Any, str]:
        out = self._call(Method.PROJECT_LIST, None)
        return out, _json(out)

    def tool_logs(self, args: dict[str, Any], _c: threading.Event) -> tuple[Any, str]:
        import re

        pf = self._project_file(args)
        task = args.get("task")
        if task and pf.tasks and task not in pf.tasks:
            raise ToolFailure(f"task {task!r} not found in {pf.path}; tasks: "
                              f"{', '.join(sorted(pf.tasks))}", Code.TASK_NOT_FOUND,
                              {"task": task})
        names = [task] if task else sorted(pf.tasks)
        rows = logread.merged({n: logread.read_lines(pf.log_path(self.paths, n))
                               for n in names})
        rows = logread.since_filter(rows, self._since(args.get("since")))
        if args.get("grep"):
            try:
                rows = logread.grep(rows, args["grep"], int(args.get("context", 0)))
            except re.error as exc:
                raise ToolFailure(f"bad grep pattern {args['grep']!r}: {exc}") from None
        count = int(args.get("lines", 100))
        rows = rows[-count:] if count else []
        lines = [line if task else f"{t} | {line}" for t, line in rows]
        data = {"project": pf.name, "task": task, "lines": lines}
        if pf.broken:
            data["config_error"] = pf.broken
        return data, "\n".join(lines) if lines else "(no log lines)"

    def tool_events(self, args: dict[str, Any], cancelled: threading.Event
                    ) -> tuple[Any, str]:
        project = None if args.get("all_projects") else self._project_file(args).name
        task = args.get("task")
        wait = float(args.get("wait_seconds", 0))
        if wait > 0 and self.hub is not None:
            found = self.hub.wait(project, task, wait, cancelled)
            since = self._since(args.get("since"))
            found = [e for e in found if eventread.matches(e, project, task, since)]
        else:
            found = eventread.read(self.paths.events, project, task,
                                  self._since(args.get("since")), int(args.get("lines", 50)))
        text = "\n".join(eventread.format_event(e) for e in found) or (
            "(no new events)" if wait > 0 else "(no events)")
        return {"project": project, "events": found, "count": len(found)}, text


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)

