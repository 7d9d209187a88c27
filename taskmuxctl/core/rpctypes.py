"""The shapes of RPC params and results, shared by the client, the daemon and the MCP server.

``taskmuxctl.core.protocol`` names the methods and the error codes; this module says what their
params and results hold, as ``TypedDict``s that mypy checks on both sides of the socket. The
daemon's handlers return them; the client and the MCP server build params with them. The
client's hot path imports this module only for type checking (``typing`` costs start-up time;
tests/test_imports.py guards that), the daemon imports it at run time. No ``from __future__
import annotations`` here: Python 3.11 reads ``NotRequired`` only from evaluated annotations.
"""

from typing import Any, Literal, NotRequired, TypedDict

from taskmuxctl.core.protocol import Method

# What a task is doing (``taskmuxd.policy.TaskState``'s values).
TaskStateName = Literal["stopped", "starting", "running", "stopping", "backoff", "exited",
                        "fatal"]
# A registered project's state in ``project.list`` and ``project.status``.
ProjectState = Literal["ok", "error", "config_missing", "not_registered"]
# What ``project.register`` (and ``start``) did to the registry.
RegistryAction = Literal["registered", "repointed", "replaced", "unchanged"]


class ErrorObject(TypedDict):
    """A JSON-RPC error object."""

    code: int
    message: str
    data: NotRequired[Any]


# -- params -------------------------------------------------------------------------------


class ProjectTarget(TypedDict, total=False):
    """Which project a call is about: by registered name, or by its taskmux.toml (``config``,
    found from ``cwd``)."""

    project: str | None
    config: str | None
    cwd: str | None


class TasksParams(ProjectTarget, total=False):
    """``project.stop`` and ``project.restart``: the named tasks (default: all)."""

    tasks: list[str] | None


class StartParams(TasksParams, total=False):
    """``project.start``."""

    env: dict[str, str] | None
    force: bool


class TaskParams(ProjectTarget):
    """``task.kill`` and ``task.inspect``: one task."""

    task: str


class PingParams(TypedDict, total=False):
    delay: float


# -- results ------------------------------------------------------------------------------


class PingResult(TypedDict):
    pong: bool


class VersionResult(TypedDict):
    version: str
    protocol: int


class DaemonStatus(TypedDict):
    """``daemon.status``'s own keys; the started daemon adds a section per subsystem."""

    pid: int
    uid: int
    version: str
    protocol: int
    uptime: float
    started_at: float
    socket: str
    home: str
    projects: int
    stopping: bool
    ready: bool
    calls_in_flight: int
    calls_served: int


class ShutdownResult(TypedDict):
    stopping: bool
    pid: int


class ConfigResult(TypedDict):
    """``config.get`` and ``config.reload``: the daemon's settings file and its values."""

    path: str
    config: dict[str, Any]


class LastExit(TypedDict):
    code: int | None
    signal: int | None
    at: float | None


class ReadinessInfo(TypedDict):
    """What a task said of its own readiness (``sd_notify``), and how it is judged ready."""

    notify_status: str | None
    ready_by: str | None
    ready_source: str | None
    watchdog_sec: float | None


class TaskInfo(ReadinessInfo):
    """One task in ``project.status`` (and the base of ``task.inspect``); a task not
    supervised yet has the same keys, with nothing known but its configuration."""

    name: str
    state: TaskStateName
    pid: int | None
    pgid: int | None
    main_pid: int | None
    processes: int
    port: int | None
    host: str | None
    url: str | None
    restarts: int
    restart_attempt: int
    last_exit: LastExit | None
    started_at: float | None
    uptime: float | None
    next_restart_in: float | None
    healthy: bool | None
    health_method: str | None
    last_health_failure: str | None
    manually_stopped: bool
    auto_start: bool
    depends_on: list[str]
    command: str
    window: str | None
    restart_policy: str
    type: str
    completed: bool


class StatusTask(TaskInfo):
    """A supervised task in ``project.status``: what it waits for, what it uses."""

    waiting_for: list[str]
    resources: dict[str, Any]


class ProjectStatus(TypedDict):
    """``project.status``."""

    project: str
    session: str
    config: str
    state: ProjectState
    config_error: str | None
    wanted_up: bool
    tasks: list[StatusTask] | list[TaskInfo]  # TaskInfo: a project not supervised yet
    running: NotRequired[bool]
    disk_full: NotRequired[str | None]


class TaskAction(TypedDict):
    """What one start, stop, restart or kill did to one task."""

    task: str
    action: str


class ActionsResult(TypedDict):
    """``project.start``/``stop``/``restart`` and ``task.kill``."""

    project: str
    results: list[dict[str, Any]]
    task: NotRequired[str]
    action: NotRequired[str]


class HealthRow(TypedDict):
    """One task in ``health.check``; ``counted`` False: stopped and not wanted up."""

    name: str
    state: TaskStateName
    healthy: bool | None
    counted: bool
    method: str
    detail: str | None
    failures: int
    last_failure: str | None
    checked_at: float | None


class HealthResult(TypedDict):
    """``health.check``."""

    project: str
    healthy_count: int
    total_count: int
    not_counted: int
    tasks: list[HealthRow]
    config_error: str | None


class ProjectEntry(TypedDict):
    """One registered project in ``project.list``."""

    name: str
    config: str
    state: ProjectState
    error: str | None
    tasks_total: int
    tasks_running: int
    wanted_up: bool


class ProjectList(TypedDict):
    """``project.list``."""

    projects: list[ProjectEntry]


class RegisterResult(TypedDict):
    project: str
    config: str
    action: RegistryAction


class UnregisterResult(TypedDict):
    project: str
    action: Literal["unregistered", "not_registered"]


# Which shape each method's params and result have, where one is declared here. A test
# (tests/test_rpc_inprocess.py) holds them to the daemon's handlers: the params' keys are the
# handler's parameters, the result is what the handler says it returns.
PARAMS: dict[str, type] = {
    Method.DAEMON_PING: PingParams,
    Method.PROJECT_STATUS: ProjectTarget,
    Method.PROJECT_START: StartParams,
    Method.PROJECT_STOP: TasksParams,
    Method.PROJECT_RESTART: TasksParams,
    Method.HEALTH_CHECK: ProjectTarget,
    Method.TASK_KILL: TaskParams,
    Method.TASK_INSPECT: TaskParams,
}
RESULTS: dict[str, type] = {
    Method.DAEMON_PING: PingResult,
    Method.DAEMON_VERSION: VersionResult,
    Method.DAEMON_SHUTDOWN: ShutdownResult,
    Method.CONFIG_GET: ConfigResult,
    Method.CONFIG_RELOAD: ConfigResult,
    Method.PROJECT_START: ActionsResult,
    Method.PROJECT_STOP: ActionsResult,
    Method.PROJECT_RESTART: ActionsResult,
    Method.TASK_KILL: ActionsResult,
    Method.PROJECT_STATUS: ProjectStatus,
    Method.PROJECT_LIST: ProjectList,
    Method.HEALTH_CHECK: HealthResult,
    Method.PROJECT_REGISTER: RegisterResult,
    Method.PROJECT_UNREGISTER: UnregisterResult,
}
