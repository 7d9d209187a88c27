"""``project.*``, ``task.*``, ``health.*`` and ``runner.*`` RPC methods."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import Field

from taskmuxctl.core import projectconfig as cfgmod
from taskmuxctl.core.errors import ClientError
from taskmuxctl.core.protocol import Code, Method
from taskmuxctl.core.rpctypes import (
    ActionsResult,
    HealthResult,
    HealthRow,
    InspectResult,
    ProjectEntry,
    ProjectList,
    ProjectState,
    ProjectStatus,
    RegisterResult,
    TaskInspect,
    UnregisterResult,
)
from taskmuxd.projects import warmrunner
from taskmuxd.projects.manager import Projects
from taskmuxd.projects.panes import PaneMethods
from taskmuxd.projects.project import Project
from taskmuxd.projects.task import idle_info
from taskmuxd.runrecord import FormatError, RunRecord, record_from_json

if TYPE_CHECKING:
    from taskmuxd.handlertype import Handler

# Bounds of the params (checked by taskmuxd.rpc.params before a method runs).
TaskNames = Annotated[list[str], Field(max_length=cfgmod.MAX_TASKS)]
# A variable's value may be as long as the kernel allows one argument string (128 KiB).
Environment = Annotated[dict[str, Annotated[str, Field(max_length=128 * 1024)]],
                        Field(max_length=4096)]
RunId = Annotated[int, Field(ge=0, le=2**63 - 1)]
RunnerRecord = Annotated[dict[str, Any], Field(max_length=64)]


class ResourceFigures(Protocol):
    """What the task methods show of the resource sampler (``taskmuxd.sampler.Sampler``)."""

    def figures(self, project: str, task: str) -> dict[str, Any]: ...

    def history(self, project: str, task: str) -> dict[str, Any]: ...


def status_of(projects: Projects, resources: ResourceFigures, project: Project
              ) -> ProjectStatus:
    problem = projects.problems.get(project.name)
    tasks = project.task_infos(lambda task: resources.figures(project.name, task))
    return {
        "project": project.name,
        "session": project.name,
        "config": project.loaded.path,
        "state": problem[0] if problem else "ok",
        "config_error": problem[1] if problem else None,
        "wanted_up": project.record.running,
        "tasks": tasks,
    }


class ProjectMethods:
    """The ``project.*``, ``task.*``, ``health.*`` and ``runner.*`` namespace (with
    ``task.send`` and ``project.tmux`` from ``panes``). ``disk_status`` is the disk watch's
    section of ``daemon.status``, or None."""

    def __init__(self, projects: Projects, resources: ResourceFigures,
                 disk_status: Callable[[], dict[str, Any] | None]) -> None:
        self.projects = projects
        self.resources = resources
        self.disk_status = disk_status

    def handlers(self) -> Mapping[str, Handler]:
        """Every method waits for the start's adoption of running tasks before it runs."""
        plain: dict[str, Handler] = {
            Method.PROJECT_STATUS: self.project_status,
            Method.PROJECT_START: self.project_start,
            Method.PROJECT_STOP: self.project_stop,
            Method.PROJECT_RELOAD: self.project_reload,
            Method.PROJECT_RESTART: self.project_restart,
            Method.PROJECT_LIST: self.project_list,
            Method.PROJECT_REGISTER: self.project_register,
            Method.PROJECT_UNREGISTER: self.project_unregister,
            Method.TASK_KILL: self.task_kill,
            Method.TASK_INSPECT: self.task_inspect,
            Method.HEALTH_CHECK: self.health_check,
            Method.RUNNER_STARTED: self.runner_started,
            Method.RUNNER_EXITED: self.runner_exited,
            Method.RUNNER_NOTIFY: self.runner_notify,
            **PaneMethods(self.projects).handlers(),
        }
        return {name: self._gated(handler) for name, handler in plain.items()}

    def _gated(self, handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def gated(*args: Any, **kwargs: Any) -> Any:
            await self.projects.started.wait()  # calls that arrive while tasks are adopted
            return await handler(*args, **kwargs)

        return gated

    async def project_status(self, project: str | None = None, config: str | None = None,
                             cwd: str | None = None) -> ProjectStatus:
        if not project and config and not any(
                p.loaded.path == os.path.abspath(config) for p in self.projects.projects.values()):
            loaded = await self.projects.load_config(config, cwd)
            found = self.projects.projects.get(loaded.name)
            if found is None or found.loaded.path != loaded.path:
                # Known config, not supervised yet: show it without registering anything.
                return {"project": loaded.name, "session": loaded.name, "config": loaded.path,
                        "state": "not_registered", "config_error": None, "wanted_up": False,
                        "running": False, "tasks": [
                            idle_info(n, t, self.projects.url_for(loaded.name, t.host))
                            for n, t in sorted(loaded.project.tasks.items())]}
        p = await self.projects.resolve(project, config, cwd)
        info = status_of(self.projects, self.resources, p)
        info["running"] = await self.projects.tmux.has_session(p.name)
        disk = self.disk_status()
        if disk and disk.get("full"):
            info["disk_full"] = disk.get("message")
        return info

    async def project_start(self, project: str | None = None, config: str | None = None,
                            cwd: str | None = None, tasks: TaskNames | None = None,
                            env: Environment | None = None,
                            force: bool = False) -> ActionsResult:
        if project and not config:
            p = self.projects.get(project)
            await self.projects.reload(p)
        else:
            p = await self.projects.ensure(config, cwd, force=force)
        results = await p.start(tasks or None, env)
        return _actions(p, results)

    async def project_reload(self, project: str | None = None, config: str | None = None,
                             cwd: str | None = None) -> dict[str, Any]:
        """Apply the project's taskmux.toml now, as the file watcher would a moment later."""
        p = await self.projects.resolve(project, config, cwd)
        diff = await self.projects.reload(p)
        problem = self.projects.problems.get(p.name)
        if problem is not None:
            raise ClientError(problem[1], {"project": p.name, "state": problem[0]},
                              code=Code.CONFIG_INVALID)
        diff = diff or {"added": [], "removed": [], "changed": []}
        return {"project": p.name, "reloaded": any(diff.values()), **diff,
                "running": sorted(n for n in diff["added"] + diff["changed"]
                                  if p.tasks[n].live)}

    async def project_stop(self, project: str | None = None, config: str | None = None,
                           cwd: str | None = None,
                           tasks: TaskNames | None = None) -> ActionsResult:
        p = await self.projects.resolve(project, config, cwd)
        return _actions(p, await p.stop(tasks or None))

    async def project_restart(self, project: str | None = None, config: str | None = None,
                              cwd: str | None = None,
                              tasks: TaskNames | None = None) -> ActionsResult:
        p = await self.projects.resolve(project, config, cwd)
        return _actions(p, await p.restart(tasks or None))

    async def task_kill(self, task: str, project: str | None = None, config: str | None = None,
                        cwd: str | None = None) -> ActionsResult:
        p = await self.projects.resolve(project, config, cwd)
        return _actions(p, [await p.kill(task)])

    async def task_inspect(self, task: str, project: str | None = None, config: str | None = None,
                           cwd: str | None = None) -> InspectResult:
        p = await self.projects.resolve(project, config, cwd)
        t = p.task(task)
        info: TaskInspect = {
            **t.info(self.projects.url_for(p.name, t.config.host)), **p.group_info(t),
            "project": p.name, "config": t.config.model_dump(mode="json"),
            "log": p.log_path(t), "run_id": t.record.run_id,
            "runner": _runner_record(p, task), "cwd": p.loaded.task_cwd(t.config),
            "health_probe": p.probe_spec(t).method,
            "policy": {k: v for k, v in vars(t.record.policy).items()
                       if k in ("attempt", "manual_stop", "restarts", "cause")},
            "resources": {**self.resources.figures(p.name, task),
                          "history": self.resources.history(p.name, task)}}
        return {"task": info, "config_error": _problem(self.projects, p)}

    async def health_check(self, project: str | None = None, config: str | None = None,
                           cwd: str | None = None) -> HealthResult:
        p = await self.projects.resolve(project, config, cwd)
        rows: list[HealthRow] = []
        for t in sorted(p.tasks.values(), key=lambda t: t.name):
            h = t.health
            # A stopped task nobody asked to run (auto_start = false, or stopped by the user)
            # is neither healthy nor unhealthy: it is left out of the count.
            idle = t.state.value == "stopped" and (not t.config.auto_start
                                                   or t.record.policy.manual_stop)
            rows.append({
                "name": t.name, "state": t.state.value, "healthy": h.ok, "counted": not idle,
                "method": h.last.method if h.last else p.probe_spec(t).method,
                "detail": h.last.detail if h.last else None,
                "failures": h.failures,
                "last_failure": h.last_failure.detail if h.last_failure else None,
                "checked_at": h.last_at,
            })
        healthy = sum(1 for r in rows if r["healthy"] and r["counted"])
        counted = sum(1 for r in rows if r["counted"])
        return {"project": p.name, "healthy_count": healthy, "total_count": counted,
                "not_counted": len(rows) - counted,
                "tasks": rows, "config_error": _problem(self.projects, p)}

    async def project_list(self) -> ProjectList:
        out: list[ProjectEntry] = []
        entries = self.projects.registry.load()
        for name, entry in sorted(entries.items()):
            p = self.projects.projects.get(name)
            problem = self.projects.problems.get(name)
            state: ProjectState = problem[0] if problem else ("ok" if p else "error")
            running = sum(1 for t in p.tasks.values() if t.live) if p else 0
            out.append({"name": name, "config": entry.config, "state": state,
                        "error": problem[1] if problem else None,
                        "tasks_total": len(p.tasks) if p else 0, "tasks_running": running,
                        "wanted_up": p.record.running if p else False})
        return {"projects": out}

    async def project_register(self, config: str, force: bool = False) -> RegisterResult:
        loaded = await self.projects.load_file(config)
        action = self.projects.registry.register(loaded.name, loaded.path, force=force)
        p = self.projects.projects.get(loaded.name)
        if p is None:
            p = Project(self.projects.services, loaded.name, loaded)
            self.projects.projects[loaded.name] = p
        else:
            await self.projects.apply(p, loaded)
        self.projects.watcher.watch(loaded.path)
        self.projects.config_fixed(loaded.name, loaded.path)
        self.projects.remember_config(p)
        if action != "unchanged":
            self.projects.events.emit("project_registered", loaded.name, None, config=loaded.path,
                               action=action)
        return {"project": loaded.name, "config": loaded.path, "action": action}

    async def project_unregister(self, project: str) -> UnregisterResult:
        p = self.projects.projects.get(project)
        if p is not None and any(t.live for t in p.tasks.values()):
            await p.stop(None)
        if p is not None:  # no runner stays warm for a project that is gone
            warmrunner.release_all(list(p.tasks.values()))
        removed = self.projects.registry.unregister(project)
        gone = self.projects.projects.pop(project, None)
        if gone is not None:
            self.projects.watcher.unwatch(gone.loaded.path)
        self.projects.forget_routes(project)
        self.projects.problems.pop(project, None)
        if removed:
            self.projects.events.emit("project_unregistered", project, None)
        return {"project": project, "action": "unregistered" if removed else "not_registered"}

    async def runner_started(self, project: str, task: str, run_id: RunId,
                             record: RunnerRecord) -> dict[str, Any]:
        self.report_started(project, task, run_id, _record(record, run_id))
        return {}

    async def runner_exited(self, project: str, task: str, run_id: RunId,
                            record: RunnerRecord) -> dict[str, Any]:
        self.report_exited(project, task, run_id, _record(record, run_id))
        return {}

    async def runner_notify(self, project: str, task: str, run_id: RunId,
                            record: RunnerRecord) -> dict[str, Any]:
        self.report_notify(project, task, run_id, _record(record, run_id))
        return {}

    # -- the same reports through the report door (``taskmuxd.reportdoor``) ----------------

    def reports(self) -> dict[str, Callable[[str, str, int, dict[str, Any]], None]]:
        """What takes each runner report arriving at the report door, its shape checked
        there; a record the one reader refuses raises ``FormatError``."""
        def door(take: Callable[[str, str, int, RunRecord], None]) \
                -> Callable[[str, str, int, dict[str, Any]], None]:
            def report(project: str, task: str, run_id: int, record: dict[str, Any]) -> None:
                take(project, task, run_id, record_from_json({**record, "run_id": run_id}))
            return report

        return {Method.RUNNER_STARTED: door(self.report_started),
                Method.RUNNER_EXITED: door(self.report_exited),
                Method.RUNNER_NOTIFY: door(self.report_notify)}

    def report_started(self, project: str, task: str, run_id: int, record: RunRecord) -> None:
        p = self.projects.projects.get(project)
        if p is not None:
            p.runner_started(task, record)

    def report_exited(self, project: str, task: str, run_id: int, record: RunRecord) -> None:
        self.projects.runner_exited(project, task, record)

    def report_notify(self, project: str, task: str, run_id: int, record: RunRecord) -> None:
        p = self.projects.projects.get(project)
        if p is not None:
            p.runner_notified(task, record)


def _actions(p: Project, results: list[dict[str, Any]]) -> ActionsResult:
    out: ActionsResult = {"project": p.name, "results": results}
    if len(results) == 1:
        out["task"] = results[0]["task"]
        out["action"] = results[0]["action"]
    return out


def _problem(projects: Projects, p: Project) -> str | None:
    """What is wrong with the project's taskmux.toml (its last valid version is in use)."""
    problem = projects.problems.get(p.name)
    return problem[1] if problem else None


def _runner_record(p: Project, task: str) -> dict[str, Any] | None:
    from taskmuxd.projects.state import read_runner_record
    from taskmuxd.runrecord import to_json

    record = read_runner_record(p.files, task)
    return to_json(record) if record is not None else None


def _record(record: dict[str, Any], run_id: int) -> RunRecord:
    """A runner's report, read by the one reader of runner records (``runrecord``)."""
    try:
        return record_from_json({**record, "run_id": run_id})
    except FormatError as exc:
        raise ClientError(str(exc), {"run_id": run_id}) from None
