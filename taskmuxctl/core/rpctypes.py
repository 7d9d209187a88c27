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


class CaMintParams(TypedDict, total=False):
    """``ca.mint``: one project's leaf (default: every project with routes)."""

    project: str | None


class SubscribeParams(TypedDict, total=False):
    """``events.subscribe``: which events, from after which ``cursor`` (default: from now),
    and how many may wait unsent before the subscription is dropped."""

    project: str | None
    task: str | None
    kinds: list[str] | None
    cursor: int | None
    queue: int


class UnsubscribeParams(TypedDict):
    subscription: int


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
    warm_runner_for: float | None  # seconds a stopped task's idle runner still waits
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



class TaskGroup(TypedDict, total=False):
    """The task's cgroup and the CPU time it used, where a subtree was delegated (else none)."""

    cgroup: str
    cpu_seconds: float | None


class TaskInspect(TaskInfo, TaskGroup):
    """One task in ``task.inspect``: what ``status`` shows, and the details."""

    project: str
    config: dict[str, Any]  # the task's table of taskmux.toml, defaults filled in
    log: str
    run_id: int
    runner: dict[str, Any] | None  # the runner's record of the current run, as written
    cwd: str
    health_probe: str
    policy: dict[str, Any]
    resources: dict[str, Any]


class InspectResult(TypedDict):
    """``task.inspect``."""

    task: TaskInspect
    config_error: str | None


# -- ca.*, dns.*, routes.* ------------------------------------------------------------------

# How host names resolve (the ``host_resolver`` setting).
HostResolver = Literal["etc_hosts", "dns_server", "noop"]


class LeafInfo(TypedDict):
    """One project's certificate in ``ca.info``."""

    project: str
    cert: str
    not_after: str  # ISO 8601
    names: list[str]


class CaInfo(TypedDict):
    """``ca.info``: the local CA (made on first need) and the leaves minted so far."""

    cert: str
    key: str
    subject: str
    fingerprint_sha256: str
    not_after: str
    permitted: list[str]  # DNS subtrees and loopback networks of its name constraint
    leaves: list[LeafInfo]


class CaStatus(TypedDict):
    """``ca.status``; ``trusted`` None: the system store cannot be checked here."""

    path: str
    exists: bool
    trusted: bool | None
    summary: str


class MintedLeaf(LeafInfo):
    key: str


class MintResult(TypedDict):
    """``ca.mint``."""

    minted: list[MintedLeaf]
    ca: str


class DnsInfo(TypedDict):
    """``dns.info``; ``status`` is the DNS subsystem's section of ``daemon.status``."""

    resolver: HostResolver
    tld: str
    port: int | None
    bound: bool
    hosts_file: str
    hostnames: list[str]
    status: dict[str, Any]


class Route(TypedDict):
    """One host name the proxy serves, in ``routes.list``; ``name`` None: the catch-all."""

    project: str
    task: str
    host: str
    name: str | None
    url: str | None
    port: int | None
    state: TaskStateName
    ready: bool


class RoutesList(TypedDict):
    """``routes.list``."""

    tld: str
    https_port: int | None
    routes: list[Route]


# -- events.* -----------------------------------------------------------------------------


class SubscribeResult(TypedDict):
    """``events.subscribe``: events after ``cursor`` follow as notifications; ``replayed`` of
    them from before the call, ``missed`` no longer kept."""

    subscription: int
    cursor: int
    replayed: int
    missed: int


class UnsubscribeResult(TypedDict):
    subscription: int
    removed: bool


# -- update.* -----------------------------------------------------------------------------

# What an update check decided (``taskmuxctl.core.update.decide``).
UpdateAction = Literal["install", "none", "refuse"]


class UpdateStatus(TypedDict):
    """``update.status``."""

    auto_update: bool | Literal["wave"]
    wave_delay: float | None
    current: str
    previous: str | None
    pinned: str | None
    bad_versions: list[str]
    last_check: float | None
    last_error: str | None
    summary: str
    installed_layout: bool
    channel: str
    available: str | None
    update_running: int | None  # the pid of an update in progress
    last_update: dict[str, Any] | None
    checks: int


class UpdateCheck(TypedDict):
    """``update.check`` (and ``taskmux update --check``): what an update would do now."""

    current: str
    offered: str
    action: UpdateAction
    available: bool
    reason: str
    installed_layout: bool
    pinned: str | None
    bad_versions: list[str]
    channel: str
    release: dict[str, Any]
    key_id: str


class RestartResult(TypedDict):
    """``update.restart``: the daemon stops in order and its service manager starts it."""

    restarting: bool
    pid: int
    manager: str

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
    Method.CA_MINT: CaMintParams,
    Method.EVENTS_SUBSCRIBE: SubscribeParams,
    Method.EVENTS_UNSUBSCRIBE: UnsubscribeParams,
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
    Method.TASK_INSPECT: InspectResult,
    Method.CA_INFO: CaInfo,
    Method.CA_STATUS: CaStatus,
    Method.CA_MINT: MintResult,
    Method.DNS_INFO: DnsInfo,
    Method.ROUTES_LIST: RoutesList,
    Method.EVENTS_SUBSCRIBE: SubscribeResult,
    Method.EVENTS_UNSUBSCRIBE: UnsubscribeResult,
    Method.UPDATE_STATUS: UpdateStatus,
    Method.UPDATE_CHECK: UpdateCheck,
    Method.UPDATE_RESTART: RestartResult,
}
