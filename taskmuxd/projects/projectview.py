"""What the modules carved out of ``Project`` see of it: ``ProjectView``, a Protocol.

``taskstart``, ``stopping``, ``readiness``, ``probeactions`` and ``taskport`` carry out parts of
a project's work (a launch, a stop ladder, a task's own readiness, a probe, a port claim).
They take the project as their first argument, and ``Project`` imports them; typed against the
``Project`` class they would import it back, an import circle even when only the type checker
follows it. They are typed against this Protocol instead, which lists exactly what they use;
``Project`` satisfies it structurally (mypy checks that wherever a project is passed to them),
and this module imports none of them.

``Rung`` lives here because the view names it: the signals asked for in one turn of the loop,
which the project holds and ``stopping`` sends as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from taskmuxctl.core.eventlog import EventLog
    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.projectconfig import LoadedConfig
    from taskmuxd.cgroups import TaskGroups
    from taskmuxd.healthprobes import ProbeSpec
    from taskmuxd.jobs import Changed
    from taskmuxd.projects.hooks import HookName
    from taskmuxd.projects.ownership import RunnerWatch
    from taskmuxd.projects.state import ProjectFiles
    from taskmuxd.projects.task import TaskRuntime
    from taskmuxd.projects.windowbatch import Launcher
    from taskmuxd.runrecord import RunRecord
    from taskmuxd.supervisor import messages as m
    from taskmuxd.supervisor.machine import Machine
    from taskmuxd.tmux import Tmux


@dataclass(frozen=True)
class Rung:
    """One signal asked for a task's run (``kill``: close its window too)."""

    task: TaskRuntime
    sig: int
    kill: bool
    run_id: int


class ServicesView(Protocol):
    """What the helpers use of the daemon-wide services a project is given (``Services``)."""

    @property
    def paths(self) -> Paths: ...
    @property
    def tmux(self) -> Tmux: ...
    @property
    def events(self) -> EventLog: ...
    @property
    def spawn(self) -> Callable[[Any, str], asyncio.Task[None]]: ...
    @property
    def runners(self) -> RunnerWatch: ...
    @property
    def groups(self) -> TaskGroups: ...
    @property
    def warm_runner_seconds(self) -> Callable[[], float]: ...


class ProjectView(Protocol):
    """What the helpers use of a ``Project``: read-only but for ``rungs``, which ``stopping``
    takes and empties."""

    rungs: list[Rung]

    @property
    def name(self) -> str: ...
    @property
    def services(self) -> ServicesView: ...
    @property
    def files(self) -> ProjectFiles: ...
    @property
    def loaded(self) -> LoadedConfig: ...
    @property
    def machine(self) -> Machine: ...
    @property
    def tasks(self) -> dict[str, TaskRuntime]: ...
    @property
    def launcher(self) -> Launcher: ...
    @property
    def changed(self) -> Changed: ...

    def handle(self, *events: m.Event) -> None: ...
    def touch(self) -> None: ...
    def save_task(self, task: TaskRuntime) -> None: ...
    def write_ahead(self, task: TaskRuntime) -> None: ...
    def ahead_placed(self, name: str) -> asyncio.Future[None] | None: ...
    def flush(self) -> None: ...
    def task_env(self, task: TaskRuntime, port: int | None) -> dict[str, str]: ...
    async def after_hook(self, task: TaskRuntime, which: HookName, command: str) -> None: ...
    def log_path(self, task: TaskRuntime) -> str: ...
    def task_key(self, task: TaskRuntime) -> str: ...
    def probe_spec(self, task: TaskRuntime) -> ProbeSpec: ...
    def runner_started(self, task_name: str, record: RunRecord) -> None: ...
    def runner_exited(self, task_name: str, record: RunRecord) -> None: ...
    def take_runner(self, task: TaskRuntime, record: RunRecord) -> None: ...
