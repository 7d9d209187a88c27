"""The projects subsystem: the registry, every supervised project, adoption and the sweep.

At start it loads the registry and re-adopts what still runs in tmux from the recorded state:
no task is started twice, none is restarted; exits that happened while the daemon was away are
handled now. A project that should be up whose tmux session is gone (reboot, kill-server) is
brought back with its auto_start tasks, minus the manually stopped ones.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import tomllib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from taskmuxctl.core import projectconfig as cfgmod
from taskmuxctl.core.daemonctl import alive
from taskmuxctl.core.errors import ClientError
from taskmuxctl.core.eventlog import EventLog
from taskmuxctl.core.fsutil import atomic_write
from taskmuxctl.core.humanize import plural
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.whichproject import no_project_message
from taskmuxd import proctree
from taskmuxd.cgroups import TaskGroups
from taskmuxd.jobs import Jobs
from taskmuxd.policy import TaskState
from taskmuxd.projects import delayedgrant, ownership, restartgrant, stopping, taskstart, warmrunner
from taskmuxd.projects import state as st
from taskmuxd.projects.ownership import RunnerWatch
from taskmuxd.projects.project import Project, Services
from taskmuxd.projects.registry import Registry
from taskmuxd.projects.watcher import ConfigWatcher
from taskmuxd.routes import Backend, RouteTable
from taskmuxd.runrecord import RunRecord
from taskmuxd.supervisor import messages as m
from taskmuxd.supervisor.machine import WAITING
from taskmuxd.tmux import (
    PanesDead,
    ServerGone,
    SessionsChanged,
    Tmux,
    TmuxError,
    TmuxEvent,
    WindowClosed,
)

if TYPE_CHECKING:
    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.settings import Settings

log = logging.getLogger("taskmuxd.projects")

RESTORE_CHECK_DELAY = 0.5
TMUX_CHANGE_DELAY = 0.05  # a burst of tmux notifications is looked at once
RESTORE_SETTLE = 5.0  # seconds a restore waits for the exits of the session's tasks
# A task that died of one of these likely lost its pane (tmux went away, or closed the window).
HANGUP_SIGNALS = (signal.SIGHUP, signal.SIGTERM)


# What is wrong with a registered project's taskmux.toml (its last valid version is in use).
ProblemState = Literal["config_missing", "error"]


class ProjectNotFound(ClientError):
    default_code = Code.PROJECT_NOT_FOUND


class Projects:
    """The ``supervision`` subsystem. ``settings`` reads the daemon's current settings (they
    change on reload); ``routes`` is where it publishes which task answers which name, and
    ``url_of`` says under which URL the proxy serves a backend."""

    name = "supervision"

    def __init__(self, paths: Paths, settings: Callable[[], Settings], events: EventLog,
                 routes: RouteTable, url_of: Callable[[Backend], str | None]) -> None:
        self.paths = paths
        self._settings = settings
        self.events = events
        self.routes = routes
        self._url_of = url_of
        self.registry = Registry(self.paths.registry)
        socket_name = os.environ.get("TASKMUX_TMUX_SOCKET") or settings().tmux_socket
        self.tmux = Tmux(socket_name)
        self.projects: dict[str, Project] = {}
        self.problems: dict[str, tuple[ProblemState, str]] = {}  # name -> (state, message)
        self.jobs = Jobs("projects")
        self.started = asyncio.Event()
        self._restore_check: asyncio.TimerHandle | None = None
        self._tmux_check: asyncio.TimerHandle | None = None
        self.watcher = ConfigWatcher(self._config_touched)
        self._remembered: dict[str, str] = {}  # project -> the last_config text written
        self._published: dict[str, list[Backend]] = {}
        self._web: dict[str, tuple[cfgmod.LoadedConfig, list[tuple[str, str]]]] = {}
        self.services = Services(
            paths=self.paths, tmux=self.tmux, events=self.events,
            dependency_timeout=lambda: float(settings().dependency_timeout),
            url_for=self.url_for, on_change=self._changed, spawn=self.jobs.spawn,
            runners=RunnerWatch(), groups=TaskGroups.detect(),
            warm_runner_seconds=lambda: float(settings().warm_runner_seconds))

    # -- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.jobs.start()
        self.watcher.start()
        entries = self.registry.load()
        if self.registry.corrupt_moved_to:
            self.events.emit("state_corrupt", None, None, moved_to=self.registry.corrupt_moved_to)
        for entry in entries.values():
            await self._load_registered(entry.name, entry.config)
            self.watcher.watch(entry.config)
        self.tmux.on_event = self._tmux_event
        await self.tmux.start()
        try:
            windows = await self.tmux.windows()
        except TmuxError as exc:
            log.error("cannot list tmux windows (%s); tasks will be adopted when tmux answers",
                      exc.message)
            windows = None
        for project in self.projects.values():
            await self._adopt(project, windows)
        self.jobs.spawn(self._sweep_forever(), "sweep")
        self.started.set()

    async def stop(self) -> None:
        self.watcher.stop()
        for project in self.projects.values():
            for task in project.tasks.values():
                if task.timer is not None:
                    task.timer.cancel()
            project.persist()
        await st.drain()
        self.services.runners.close()
        await self.jobs.stop()
        await self.tmux.close()

    def status(self) -> dict[str, Any]:
        running = sum(1 for p in self.projects.values() for t in p.tasks.values()
                      if t.state == TaskState.RUNNING)
        total = sum(len(p.tasks) for p in self.projects.values())
        return {"registered": len(self.projects) + len(self.problems), "tasks_running": running,
                "tasks_total": total, "tmux": self.tmux.describe(),
                # Commands go over one control-mode connection while it is up; processes:
                # tmux commands run as processes since the daemon started.
                "tmux_control": self.tmux.connected, "tmux_processes": self.tmux.processes,
                "summary": f"{running}/{plural(total, 'task')} running in "
                           f"{plural(len(self.projects), 'project')} on {self.tmux.describe()}"}

    def settings_changed(self, old: Any, new: Any) -> None:
        del old
        # A lowered warm_runner_seconds applies to the runners already waiting warm too.
        seconds = float(new.warm_runner_seconds)
        for project in self.projects.values():
            warmrunner.setting_lowered(list(project.tasks.values()), seconds)

    # -- loading --------------------------------------------------------------------------

    async def load_file(self, path: str) -> cfgmod.LoadedConfig:
        """``config.load`` in a worker thread, so no file (a FIFO, a slow disk, a huge or
        hostile taskmux.toml) holds up the event loop; every failure is a ConfigError or
        ConfigNotFound with a clear message."""
        return await asyncio.to_thread(cfgmod.load_guarded, path)

    async def _load_registered(self, name: str, config_path: str) -> Project | None:
        files = st.ProjectFiles(self.paths, name)
        loaded: cfgmod.LoadedConfig | None
        try:
            loaded = await self.load_file(config_path)
            self.problems.pop(name, None)
        except cfgmod.ConfigNotFound as exc:
            self.problems[name] = ("config_missing", exc.message)
            loaded = await asyncio.to_thread(self._last_good, files, config_path)
        except cfgmod.ConfigError as exc:
            self.problems[name] = ("error", exc.message)
            loaded = await asyncio.to_thread(self._last_good, files, config_path)
        if loaded is None:
            return None
        project = Project(self.services, name, loaded)
        self.projects[name] = project
        return project

    def _last_good(self, files: st.ProjectFiles, config_path: str) -> cfgmod.LoadedConfig | None:
        """The last valid taskmux.toml, so running tasks stay supervised through a bad edit."""
        try:
            with open(files.last_config, encoding="utf-8") as fh:
                text = fh.read()
            return cfgmod.LoadedConfig(config_path, cfgmod.ProjectConfig.model_validate(
                tomllib.loads(text)), text)
        except (OSError, ValueError, RecursionError):
            return None

    def remember_config(self, project: Project) -> None:
        """Keep the project's last good taskmux.toml (written, with fsyncs on the loop, only
        when it differs from what this daemon last kept: every start asks)."""
        if self._remembered.get(project.name) == project.loaded.text:
            return
        atomic_write(project.files.last_config, project.loaded.text)
        self._remembered[project.name] = project.loaded.text

    def config_fixed(self, name: str, path: str) -> None:
        """``name``'s taskmux.toml reads cleanly again: forget the problem and, if there was
        one, say that it is gone (a ``config_valid`` event)."""
        problem = self.problems.pop(name, None)
        if problem is not None:
            self.events.emit("config_valid", name, None, config=path, was=problem[0])

    # -- finding a project from a command's params ------------------------------------------

    def get(self, name: str) -> Project:
        project = self.projects.get(name)
        if project is None:
            if name in self.problems:
                state, message = self.problems[name]
                raise ClientError(f"project {name!r} cannot be loaded ({state}): {message}",
                                  {"project": name, "state": state}, code=Code.CONFIG_INVALID)
            raise ProjectNotFound(
                f"no project named {name!r} is registered; registered: "
                f"{', '.join(sorted(self.projects)) or '(none)'}. Run `taskmux start` in its "
                "folder, or `taskmux daemon register -c PATH`", {"project": name})
        return project

    async def load_config(self, config: str | None, cwd: str | None) -> cfgmod.LoadedConfig:
        if not config:
            raise cfgmod.ConfigNotFound(no_project_message(cwd), {"cwd": cwd})
        return await self.load_file(config)

    async def resolve(self, project: str | None, config: str | None, cwd: str | None) -> Project:
        """The registered project named, or the one whose taskmux.toml is ``config``."""
        if project:
            return self.get(project)
        try:
            loaded = await self.load_config(config, cwd)
        except cfgmod.ConfigError:
            # A broken edit: the project is still supervised with its last good config.
            for known in self.projects.values():
                if config and known.loaded.path == os.path.abspath(config):
                    return known
            raise
        existing = self.projects.get(loaded.name)
        if existing is None or existing.loaded.path != loaded.path:
            raise ProjectNotFound(
                f"project {loaded.name!r} ({loaded.path}) is not running under taskmux yet; "
                "start it with `taskmux start`",
                {"project": loaded.name, "config": loaded.path, "registered": False})
        return existing

    async def ensure(self, config: str | None, cwd: str | None, force: bool = False) -> Project:
        """Register (if needed) and load the project of ``config``; used by start."""
        loaded = await self.load_config(config, cwd)
        action = self.registry.register(loaded.name, loaded.path, force=force)
        if action != "unchanged":
            self.events.emit("project_registered", loaded.name, None, config=loaded.path,
                             action=action)
        project = self.projects.get(loaded.name)
        if project is None:
            project = Project(self.services, loaded.name, loaded)
            self.projects[loaded.name] = project
        elif project.loaded.path != loaded.path or project.loaded.text != loaded.text:
            self.watcher.unwatch(project.loaded.path)
            async with project.reload_lock:
                await self.apply(project, loaded)
        self.watcher.watch(loaded.path)
        self.config_fixed(loaded.name, loaded.path)
        self.remember_config(project)
        return project

    # -- live config ----------------------------------------------------------------------

    def _config_touched(self, path: str) -> None:
        for project in list(self.projects.values()):
            if project.loaded.path == path:
                self.jobs.spawn(self.reload(project), f"reload {project.name}")

    async def reload(self, project: Project) -> dict[str, list[str]] | None:
        """Re-read a project's taskmux.toml. Invalid: nothing changes, the error is reported.
        Valid: applied as a diff (added auto_start tasks start, removed stop, changed
        restart, the rest untouched)."""
        async with project.reload_lock:  # one reload at a time per project
            return await self._reload(project)

    async def _reload(self, project: Project) -> dict[str, list[str]] | None:
        path = project.loaded.path
        try:
            loaded = await self.load_file(path)
        except (cfgmod.ConfigError, cfgmod.ConfigNotFound) as exc:
            state: ProblemState = "config_missing" if isinstance(
                exc, cfgmod.ConfigNotFound) else "error"
            self.problems[project.name] = (state, exc.message)
            log.error("%s: %s; keeping the running configuration", project.name, exc.message)
            self.events.emit("config_invalid", project.name, None, error=exc.message,
                             state=state)
            project.touch()
            return None
        if loaded.name != project.name:
            message = (f"{path} now names the project {loaded.name!r} instead of "
                       f"{project.name!r}; renaming is not applied live: stop the project, "
                       "then start it again")
            self.problems[project.name] = ("error", message)
            self.events.emit("config_invalid", project.name, None, error=message)
            return None
        self.config_fixed(project.name, path)
        if loaded.text == project.loaded.text:
            return None
        diff = await self.apply(project, loaded)
        self.remember_config(project)
        self.events.emit("config_reloaded", project.name, None, **diff)
        return diff

    async def apply(self, project: Project, loaded: cfgmod.LoadedConfig) -> dict[str, list[str]]:
        old = project.loaded.project.tasks
        new = loaded.project.tasks
        diff = {"added": sorted(set(new) - set(old)), "removed": sorted(set(old) - set(new)),
                "changed": sorted(n for n in set(old) & set(new) if old[n] != new[n])}
        # A warm runner of a task removed or changed ends: the next start gets a fresh one.
        warmrunner.release_all([project.tasks[n] for n in diff["removed"] + diff["changed"]])
        await delayedgrant.withdraw(project, [project.tasks[n] for n in diff["removed"]
                                              + diff["changed"]])
        live_removed = [n for n in diff["removed"] if project.tasks[n].live]
        if live_removed:
            await project.stop(live_removed)
        for name in diff["removed"]:
            task = project.tasks.pop(name)
            if task.timer is not None:
                task.timer.cancel()
            project.record.tasks.pop(name, None)
            st.delete_task(project.files, name)
            if task.record.window_id:
                await stopping.close_window(self.tmux, project.name, task.record.window_id,
                                            name)
        project._sync_tasks(loaded)
        if project.record.running:
            restart = [n for n in diff["changed"] if project.tasks[n].live]
            if restart:
                await project.restart(restart)
            start = [n for n in diff["added"] if project.tasks[n].config.auto_start]
            if start:
                await project.start(start, None)
        project.touch()
        return diff

    # -- adoption, restore and the sweep -----------------------------------------------------

    async def _adopt(self, project: Project, windows: list[Any] | None) -> None:
        """Reconcile what the last daemon recorded with what the runners recorded, by
        identity, and tell the supervisor what was found (``Adopted``): it has one rule for
        every in-between state. The launch was written ahead, so the daemon's run id is never
        behind a runner's unless a file was lost."""
        for task in project.tasks.values():
            rec = task.record
            if task.state in (TaskState.BACKOFF, TaskState.FATAL):
                runner = st.read_runner_record(project.files, task.name)
                task.exit_own = runner is not None and runner.run_id == rec.run_id \
                    and runner.ended_by == "exit"  # its policy's restart, a restore leaves
                await delayedgrant.adopt(project, task)  # a grant with the wait: revoked
                project.handle(m.Adopted(task.name, "waiting"))
                continue
            if not task.live:
                warmrunner.adopt(project, task)  # a stopped task's runner, waiting warm?
                continue
            runner = st.read_runner_record(project.files, task.name)
            run = runner.run_id if runner else None
            if runner and runner.after_run is not None and runner.status == "running" \
                    and ownership.runner_record_alive(runner) \
                    and restartgrant.take(project, task, runner):
                continue  # run N+1 began on its grant meanwhile: N's exit, then N+1 taken
            if runner and run is not None and run > rec.run_id and \
                    ownership.runner_record_alive(runner):
                rec.run_id = run  # a record lost after the launch: the runner knows better
            current = runner is not None and run == rec.run_id
            status = runner.status if runner else None
            if current and runner and status == "running" and \
                    ownership.runner_record_alive(runner):
                was_starting = task.state == TaskState.STARTING
                project.take_runner(task, runner)
                project.handle(m.Adopted(task.name, "running"))
                if was_starting and task.state == TaskState.RUNNING:
                    taskstart.started(project, task)
                log.info("adopted %s/%s (pid %s)", project.name, task.name, rec.pid)
            elif current and runner and status in ("exited", "failed"):
                project.runner_exited(task.name, runner)
            elif task.state == TaskState.STARTING and (not current or status == "starting"):
                project.handle(m.Adopted(task.name, "launching"))
            else:
                rec.clean = False
                runner_now = st.read_runner_record(project.files, task.name)
                if runner_now and runner_now.run_id == rec.run_id and \
                        runner_now.status in ("exited", "failed"):
                    project.runner_exited(task.name, runner_now)
                else:
                    project.services.runners.unwatch(project.task_key(task))
                    rec.exited_wall = time.time()
                    project.handle(m.Adopted(task.name, "gone"))
        if windows is not None:
            await self._restore_if_gone(project, windows)
        project.touch()

    async def _restore_if_gone(self, project: Project, windows: list[Any] | None = None) -> None:
        if not project.record.running:
            return
        if windows is None:
            alive = await self.tmux.has_session(project.name)
        else:
            alive = any(w.session == project.name for w in windows)
        if alive or project.restoring:
            return
        fresh = any(task.record.window_id for task in project.tasks.values())
        for task in project.tasks.values():
            task.record.window_id = None
        project.restoring = True
        self.jobs.spawn(self._restore(project, fresh), f"restore {project.name}")

    async def _restore(self, project: Project, fresh: bool) -> None:
        """Bring back a project whose tmux session went away: once the runners have reported
        the exits of its tasks, in dependency order, gated like `start` (a dependent waits for
        what it needs). A task that was down already, its restart scheduled after a crash of
        its own (``backoff``, ``fatal``), keeps its schedule, wait and count: it comes back
        at its time, as the restart, not now as a new start. ``fresh``: the loss is new (not
        a sweep's look again), so it is told even when only such tasks wait."""
        try:
            await project.changed.wait_for(lambda: not any(
                t.state in (TaskState.RUNNING, TaskState.STOPPING)
                for t in project.tasks.values()), RESTORE_SETTLE)
            waiting = sorted(t.name for t in project.tasks.values()
                             if t.state in WAITING and t.exit_own)
            starts = sorted(t.name for t in project.tasks.values() if t.config.auto_start
                            and not t.record.policy.manual_stop and not t.live
                            and t.name not in waiting)
            if not (starts or (fresh and waiting)) or not project.record.running:
                return
            log.info("tmux session %s is gone; bringing back %s%s", project.name, starts,
                     f", and {waiting} at their restarts" if waiting else "")
            self.events.emit("project_restored", project.name, None, tasks=starts,
                             waiting=waiting)
            if starts:
                await project.restore(starts)
        finally:
            project.restoring = False

    def _tmux_event(self, event: TmuxEvent) -> None:
        """What tmux reported, to every project (each maps it onto its supervisor's events:
        a runner gone, an exit nobody reported), and to the restore path."""
        if isinstance(event, WindowClosed):
            for project in list(self.projects.values()):
                project.tmux_window_closed(event.window_id)
        elif isinstance(event, PanesDead):
            for project in list(self.projects.values()):
                project.tmux_panes_dead(event.panes)
        elif isinstance(event, ServerGone):
            self._tmux_changed(0.0)
        elif isinstance(event, SessionsChanged):
            self._tmux_changed(TMUX_CHANGE_DELAY)

    def _tmux_changed(self, delay: float) -> None:
        """tmux says sessions came or went, or that the server went away: look at once (not
        at the next sweep) whether a project that should be up lost its session (a burst of
        changes is looked at once, after ``delay``)."""
        if self._tmux_check is not None:
            self._tmux_check.cancel()
        self._tmux_check = asyncio.get_running_loop().call_later(
            delay, lambda: self.jobs.spawn(self._restore_check_all(), "tmux changed"))

    async def _restore_check_all(self) -> None:
        for project in list(self.projects.values()):
            try:
                await self._restore_if_gone(project)
            except TmuxError as exc:
                log.warning("restore check: %s", exc.message)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(float(self._settings().health_check_interval))
            await self.sweep()

    async def sweep(self) -> None:
        """The safety net (runners are watched through pidfds; this catches what a platform
        without them, or a missed wake-up, left): exits nobody reported, vanished sessions."""
        for project in list(self.projects.values()):
            for task in project.tasks.values():
                rec = task.record
                if task.state != TaskState.RUNNING:
                    continue
                rid = rec.runner_id()
                if rid is not None and not proctree.is_alive(rid):
                    project.runner_gone(task, rec.run_id)
                elif rid is None and not _alive(rec.runner_pid or rec.pid):
                    rec.clean = False
                    stopping.exit_unreported(project, task, rec.run_id, signal.SIGKILL)
            try:
                await self._restore_if_gone(project)
            except TmuxError as exc:
                log.warning("sweep: %s", exc.message)

    def runner_exited(self, project_name: str, task_name: str, record: RunRecord) -> None:
        project = self.projects.get(project_name)
        if project is None:
            return
        project.runner_exited(task_name, record)
        # The window went away (tmux kill-server, a closed window): look soon, not at the
        # next sweep, whether the whole session went with it.
        hangup = record.ended_by in ("hangup", "pane_write_failed") or \
            record.exit_signal in HANGUP_SIGNALS
        if hangup and project.record.running:
            # A hang-up often means tmux went away; look soon rather than at the next sweep.
            if self._restore_check is not None:
                self._restore_check.cancel()
            self._restore_check = asyncio.get_running_loop().call_later(
                RESTORE_CHECK_DELAY, lambda: self.jobs.spawn(self.sweep(), "restore check"))

    # -- URLs and listeners ---------------------------------------------------------------

    def url_for(self, project: str, host: str | None) -> str | None:
        if host is None:
            return None
        return self._url_of(Backend(project, "", host, None, "stopped", False))  # the name only

    def _changed(self, project: Project) -> None:
        self._publish_routes(project)


    def _publish_routes(self, project: Project) -> None:
        """Tell the proxy and DNS which task answers which name (only when that changed)."""
        web = self._web_tasks(project)
        if not web and project.name not in self._published:
            return  # no web tasks: nothing to route, no certificate to mint (every change)
        tasks = project.tasks
        backends = [Backend(project.name, name, host, t.record.port, t.state.value, t.ready)
                    for name, host in web if (t := tasks.get(name)) is not None]
        if self._published.get(project.name) != backends:
            self._published[project.name] = backends
            self.routes.set_project(project.name, backends)

    def _web_tasks(self, project: Project) -> list[tuple[str, str]]:
        """(task, host) of the project's tasks with a host, by name: looked up once per
        configuration (every change of every task asks, a start of 100 tasks hundreds of
        times)."""
        cached = self._web.get(project.name)
        if cached is not None and cached[0] is project.loaded:
            return cached[1]
        web = sorted((name, t.config.host) for name, t in project.tasks.items() if t.config.host)
        self._web[project.name] = (project.loaded, web)
        return web

    def forget_routes(self, name: str) -> None:
        self._web.pop(name, None)
        self._published.pop(name, None)
        self.routes.remove_project(name)


def _alive(pid: object) -> bool:
    return isinstance(pid, int) and alive(pid)
