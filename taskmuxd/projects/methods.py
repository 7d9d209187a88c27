"""``project.*``, ``task.*``, ``health.*`` and ``runner.*`` RPC methods."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from taskmuxctl.protocol import Code, Method
from taskmuxd.errors import ClientError
from taskmuxd.projects import config as cfgmod
from taskmuxd.projects.manager import Projects
from taskmuxd.projects.project import Project
from taskmuxd.runrecord import FormatError, RunRecord, record_from_json

if TYPE_CHECKING:
    from taskmuxd.daemon import Daemon


# Bounds of the params (checked by taskmuxd.rpc.params before a method runs).
TaskNames = Annotated[list[str], Field(max_length=cfgmod.MAX_TASKS)]
# A variable's value may be as long as the kernel allows one argument string (128 KiB).
Environment = Annotated[dict[str, Annotated[str, Field(max_length=128 * 1024)]],
                        Field(max_length=4096)]
RunId = Annotated[int, Field(ge=0, le=2**63 - 1)]
RunnerRecord = Annotated[dict[str, Any], Field(max_length=64)]


def status_of(projects: Projects, project: Project) -> dict[str, Any]:
    problem = projects.problems.get(project.name)
    tasks = project.task_infos()
    sampler = projects.daemon.resources
    for t in tasks:
        t["resources"] = sampler.figures(project.name, t["name"])
    return {
        "project": project.name,
        "session": project.name,
        "config": project.loaded.path,
        "state": problem[0] if problem else "ok",
        "config_error": problem[1] if problem else None,
        "wanted_up": project.record.running,
        "tasks": tasks,
    }


def register(daemon: Daemon, projects: Projects) -> None:
    def add(name: str, handler: Any) -> None:
        @functools.wraps(handler)
        async def gated(*args: Any, **kwargs: Any) -> Any:
            await projects.started.wait()  # calls that arrive while tasks are being adopted
            return await handler(*args, **kwargs)

        daemon.methods.add(name, gated)

    async def project_status(project: str | None = None, config: str | None = None,
                             cwd: str | None = None) -> dict[str, Any]:
        if not project and config and not any(
                p.loaded.path == os.path.abspath(config) for p in projects.projects.values()):
            loaded = await projects.load_config(config, cwd)
            found = projects.projects.get(loaded.name)
            if found is None or found.loaded.path != loaded.path:
                # Known config, not supervised yet: show it without registering anything.
                return {"project": loaded.name, "session": loaded.name, "config": loaded.path,
                        "state": "not_registered", "config_error": None, "wanted_up": False,
                        "running": False, "tasks": [
                            {"name": n, "state": "stopped", "pid": None, "port": None,
                             "host": t.host, "url": projects.url_for(loaded.name, t.host),
                             "restarts": 0, "last_exit": None, "uptime": None,
                             "healthy": None, "auto_start": t.auto_start,
                             "command": t.command, "depends_on": list(t.depends_on)}
                            for n, t in sorted(loaded.project.tasks.items())]}
        p = await projects.resolve(project, config, cwd)
        info = status_of(projects, p)
        info["running"] = await projects.tmux.has_session(p.name)
        disk = projects.daemon.subsystem_status("disk")
        if disk and disk.get("full"):
            info["disk_full"] = disk.get("message")
        return info

    async def project_start(project: str | None = None, config: str | None = None,
                            cwd: str | None = None, tasks: TaskNames | None = None,
                            env: Environment | None = None,
                            force: bool = False) -> dict[str, Any]:
        if project and not config:
            p = projects.get(project)
            await projects.reload(p)
        else:
            p = await projects.ensure(config, cwd, force=force)
        results = await p.start(tasks or None, env)
        return _actions(p, results)

    async def project_reload(project: str | None = None, config: str | None = None,
                             cwd: str | None = None) -> dict[str, Any]:
        """Apply the project's taskmux.toml now, as the file watcher would a moment later."""
        p = await projects.resolve(project, config, cwd)
        diff = await projects.reload(p)
        problem = projects.problems.get(p.name)
        if problem is not None:
            raise ClientError(problem[1], {"project": p.name, "state": problem[0]},
                              code=Code.CONFIG_INVALID)
        diff = diff or {"added": [], "removed": [], "changed": []}
        return {"project": p.name, "reloaded": any(diff.values()), **diff,
                "running": sorted(n for n in diff["added"] + diff["changed"]
                                  if p.tasks[n].live)}

    async def project_stop(project: str | None = None, config: str | None = None,
                           cwd: str | None = None,
                           tasks: TaskNames | None = None) -> dict[str, Any]:
        p = await projects.resolve(project, config, cwd)
        return _actions(p, await p.stop(tasks or None))

    async def project_restart(project: str | None = None, config: str | None = None,
                              cwd: str | None = None,
                              tasks: TaskNames | None = None) -> dict[str, Any]:
        p = await projects.resolve(project, config, cwd)
        return _actions(p, await p.restart(tasks or None))

    async def task_kill(task: str, project: str | None = None, config: str | None = None,
                        cwd: str | None = None) -> dict[str, Any]:
        p = await projects.resolve(project, config, cwd)
        return _actions(p, [await p.kill(task)])

    async def task_inspect(task: str, project: str | None = None, config: str | None = None,
                           cwd: str | None = None) -> dict[str, Any]:
        p = await projects.resolve(project, config, cwd)
        t = p.task(task)
        info = t.info(projects.url_for(p.name, t.config.host))
        info.update(project=p.name, config=t.config.model_dump(mode="json"),
                    log=p.log_path(t), run_id=t.record.run_id,
                    runner=_runner_record(p, task), cwd=p.loaded.task_cwd(t.config),
                    health_probe=p.probe_spec(t).method, **p.group_info(t),
                    policy={k: v for k, v in vars(t.record.policy).items()
                            if k in ("attempt", "manual_stop", "restarts", "cause")},
                    resources={**daemon.resources.figures(p.name, task),
                               "history": daemon.resources.history(p.name, task)})
        return {"task": info, "config_error": _problem(projects, p)}

    async def health_check(project: str | None = None, config: str | None = None,
                           cwd: str | None = None) -> dict[str, Any]:
        p = await projects.resolve(project, config, cwd)
        rows = []
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
                "tasks": rows, "config_error": _problem(projects, p)}

    async def project_list() -> dict[str, Any]:
        out = []
        entries = projects.registry.load()
        for name, entry in sorted(entries.items()):
            p = projects.projects.get(name)
            problem = projects.problems.get(name)
            state = problem[0] if problem else ("ok" if p else "error")
            running = sum(1 for t in p.tasks.values() if t.live) if p else 0
            out.append({"name": name, "config": entry.config, "state": state,
                        "error": problem[1] if problem else None,
                        "tasks_total": len(p.tasks) if p else 0, "tasks_running": running,
                        "wanted_up": p.record.running if p else False})
        return {"projects": out}

    async def project_register(config: str, force: bool = False) -> dict[str, Any]:
        loaded = await projects.load_file(config)
        action = projects.registry.register(loaded.name, loaded.path, force=force)
        p = projects.projects.get(loaded.name)
        if p is None:
            p = Project(projects.services, loaded.name, loaded)
            projects.projects[loaded.name] = p
        else:
            await projects.apply(p, loaded)
        projects.watcher.watch(loaded.path)
        projects.config_fixed(loaded.name, loaded.path)
        projects.remember_config(p)
        if action != "unchanged":
            daemon.events.emit("project_registered", loaded.name, None, config=loaded.path,
                               action=action)
        return {"project": loaded.name, "config": loaded.path, "action": action}

    async def project_unregister(project: str) -> dict[str, Any]:
        p = projects.projects.get(project)
        if p is not None and any(t.live for t in p.tasks.values()):
            await p.stop(None)
        removed = projects.registry.unregister(project)
        gone = projects.projects.pop(project, None)
        if gone is not None:
            projects.watcher.unwatch(gone.loaded.path)
        projects.forget_routes(project)
        projects.problems.pop(project, None)
        if removed:
            daemon.events.emit("project_unregistered", project, None)
        return {"project": project, "action": "unregistered" if removed else "not_registered"}

    async def runner_started(project: str, task: str, run_id: RunId,
                             record: RunnerRecord) -> dict[str, Any]:
        p = projects.projects.get(project)
        if p is not None:
            p.runner_started(task, _record(record, run_id))
        return {}

    async def runner_exited(project: str, task: str, run_id: RunId,
                            record: RunnerRecord) -> dict[str, Any]:
        projects.runner_exited(project, task, _record(record, run_id))
        return {}

    async def runner_notify(project: str, task: str, run_id: RunId,
                            record: RunnerRecord) -> dict[str, Any]:
        p = projects.projects.get(project)
        if p is not None:
            p.runner_notified(task, _record(record, run_id))
        return {}

    add(Method.PROJECT_STATUS, project_status)
    add(Method.PROJECT_START, project_start)
    add(Method.PROJECT_STOP, project_stop)
    add(Method.PROJECT_RELOAD, project_reload)
    add(Method.PROJECT_RESTART, project_restart)
    add(Method.PROJECT_LIST, project_list)
    add(Method.PROJECT_REGISTER, project_register)
    add(Method.PROJECT_UNREGISTER, project_unregister)
    add(Method.TASK_KILL, task_kill)
    add(Method.TASK_INSPECT, task_inspect)
    add(Method.HEALTH_CHECK, health_check)
    add(Method.RUNNER_STARTED, runner_started)
    add(Method.RUNNER_EXITED, runner_exited)
    add(Method.RUNNER_NOTIFY, runner_notify)
    from taskmuxd.projects import panes

    panes.register(projects, add)


def _actions(p: Project, results: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"project": p.name, "results": results}
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
