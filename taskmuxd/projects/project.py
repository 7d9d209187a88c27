"""A supervised project: its tasks' state machines driven by what tmux and the runners report.

``feed`` is the only way a task changes state: it asks ``policy.decide`` and carries out the
actions (launch a runner: ``launching``; signal a process group: ``stopping``; set a timer;
write an event). The commands (``start``, ``stop``, ``restart``, ``kill``) add ordering,
dependency gating and hooks on top.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskmuxctl.daemonctl import alive
from taskmuxctl.paths import Paths
from taskmuxctl.protocol import Code
from taskmuxd import proctree
from taskmuxd.cgroups import TaskGroups
from taskmuxd.errors import ClientError, TaskError
from taskmuxd.events import EventLog
from taskmuxd.health import ProbeSpec
from taskmuxd.jobs import Changed
from taskmuxd.policy import (
    CancelSchedule,
    Emit,
    Ev,
    Event,
    Kill,
    Launch,
    Schedule,
    Stop,
    TaskState,
    TransitionError,
    decide,
)
from taskmuxd.projects import environment, launching, ownership, stopping
from taskmuxd.projects import state as st
from taskmuxd.projects.config import LoadedConfig, closure, start_order
from taskmuxd.projects.hooks import HOOK_TIMEOUT, HookRun, run_hook
from taskmuxd.projects.launcher import Launcher
from taskmuxd.projects.launching import LAUNCH_TIMEOUT
from taskmuxd.projects.ownership import RunnerWatch
from taskmuxd.projects.stopping import KILL_WAIT
from taskmuxd.projects.task import TaskRuntime
from taskmuxd.tmux import Tmux

log = logging.getLogger("taskmuxd.project")

SAVE_RETRY = 5.0  # seconds between attempts to write a state file that could not be written
WAITING = (TaskState.BACKOFF, TaskState.FATAL)  # states whose restart is scheduled


@dataclass
class Services:
    paths: Paths
    tmux: Tmux
    events: EventLog
    dependency_timeout: Callable[[], float]
    url_for: Callable[[str, str | None], str | None]
    on_change: Callable[[Project], None]
    spawn: Callable[[Any, str], asyncio.Task[None]]
    runners: RunnerWatch
    groups: TaskGroups


class TaskNotFound(ClientError):
    default_code = Code.TASK_NOT_FOUND


class Project:
    def __init__(self, services: Services, name: str, loaded: LoadedConfig) -> None:
        self.s = services
        self.name = name
        self.loaded = loaded
        self.files = st.ProjectFiles(services.paths, name)
        self.files.ensure()
        self.record, corrupt = st.load(self.files)
        if corrupt:
            services.events.emit("state_corrupt", name, None, moved_to=corrupt)
        self.base_env = st.load_env(self.files) or {}
        self.tasks: dict[str, TaskRuntime] = {}
        self.launcher = Launcher(services.tmux, name)
        self.changed = Changed()
        self.reload_lock = asyncio.Lock()
        self._dirty: set[str] = set()
        self._unsaved: set[str] = set()  # writes that failed, retried every SAVE_RETRY
        self._retry: asyncio.TimerHandle | None = None
        self._record_unsaved = False
        self._held: set[str] = set()  # restarts that are due, waiting for their dependencies
        # FATAL tasks with dependencies -> whether one of those was seen not ready since
        self._fatal: dict[str, bool] = {}
        self.restoring = False  # bringing the project back after its tmux session went away
        self.config_error: str | None = None
        self._sync_tasks(loaded)

    # -- config ---------------------------------------------------------------------------

    def _sync_tasks(self, loaded: LoadedConfig) -> None:
        self.loaded = loaded
        for name, cfg in loaded.project.tasks.items():
            if name in self.tasks:
                self.tasks[name].config = cfg
            else:
                rec = self.record.tasks.setdefault(name, st.TaskRecord())
                self.tasks[name] = TaskRuntime(name, cfg, rec)

    def task(self, name: str) -> TaskRuntime:
        try:
            return self.tasks[name]
        except KeyError:
            from taskmuxctl.suggest import did_you_mean

            raise TaskNotFound(
                f"task {name!r} not found in {self.loaded.path}"
                f"{did_you_mean(name, self.tasks)}; tasks: "
                f"{', '.join(sorted(self.tasks)) or '(none)'}",
                {"task": name, "tasks": sorted(self.tasks)}) from None

    # -- the state machine ----------------------------------------------------------------

    def feed(self, task: TaskRuntime, event: Event) -> None:
        before = task.state
        try:
            new, actions = decide(task.policy_spec, task.record.policy, event, time.monotonic(),
                                  random.random())
        except TransitionError as exc:
            log.error("%s/%s: %s (ignored)", self.name, task.name, exc)
            return
        task.record.policy = new
        if new.state == TaskState.FATAL and task.config.depends_on:
            self._fatal.setdefault(task.name, False)
        else:
            self._fatal.pop(task.name, None)
        for action in actions:
            try:
                self._apply(task, action)
            except Exception:  # one failed action (a write) must not lose the ones after it
                log.exception("%s/%s: carrying out %s failed", self.name, task.name, action)
        if before != new.state:
            log.info("%s/%s: %s -> %s (%s)", self.name, task.name, before.value,
                     new.state.value, event.kind.value)
            if not task.live:
                task.wake_exit_waiters()
        self.save_task(task)
        self.touch()

    def _apply(self, task: TaskRuntime, action: object) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(action, Launch):
            run_id, clean = launching.begin(self, task)
            self.s.spawn(launching.launch(self, task, run_id, clean),
                         f"launch {self.name}/{task.name}")
        elif isinstance(action, Stop):
            self.s.spawn(stopping.stop_process(self, task, task.record.run_id),
                         f"stop {self.name}/{task.name}")
        elif isinstance(action, Kill):
            self.s.spawn(stopping.kill(self, task, task.record.run_id),
                         f"kill {self.name}/{task.name}")
        elif isinstance(action, Schedule):
            if task.timer is not None:
                task.timer.cancel()
            task.timer = loop.call_at(action.at, self._due, task)
        elif isinstance(action, CancelSchedule):
            if task.timer is not None:
                task.timer.cancel()
                task.timer = None
        elif isinstance(action, Emit):
            self.s.events.emit(action.event, self.name, task.name, **action.details)

    def waiting_for(self, task: TaskRuntime) -> list[str]:
        """The dependencies of ``task`` that are not ready now."""
        return [d for d in task.config.depends_on if d in self.tasks and self.tasks[d].meets(
            task.config.condition_on(d, self.tasks[d].config)) is not True]

    def _due(self, task: TaskRuntime) -> None:
        """A scheduled restart is due. It waits while a dependency is not ready (a restore, a
        database blip): the task is launched once what it needs is back, not before."""
        task.timer = None
        if task.state in WAITING and self.waiting_for(task):
            if task.name not in self._held:
                log.info("%s/%s: restart waits for %s", self.name, task.name,
                         ", ".join(self.waiting_for(task)))
            self._held.add(task.name)
            return
        self.feed(task, Event(Ev.TIMER))

    def _release_held(self) -> None:
        for name in sorted(self._held):
            task = self.tasks.get(name)
            if task is None or task.state not in WAITING:
                self._held.discard(name)
            elif not self.waiting_for(task):
                self._held.discard(name)
                self.feed(task, Event(Ev.TIMER))

    def touch(self) -> None:
        """Something changed: wake waiters, tell listeners, launch restarts whose dependencies
        are now ready."""
        self.changed.fire()
        self.s.on_change(self)
        if self._held:
            self._release_held()
        if self._fatal:
            self._recover_dependents()

    def _recover_dependents(self) -> None:
        """A task FATAL while a dependency was down (a database blip) is tried again, with a
        fresh streak, once its dependencies are all ready again."""
        for name in sorted(self._fatal):
            task = self.tasks.get(name)
            if task is None or task.state != TaskState.FATAL:
                self._fatal.pop(name, None)
            elif self.waiting_for(task):
                self._fatal[name] = True
            elif self._fatal[name] and not task.record.policy.manual_stop:
                self._fatal.pop(name, None)
                self.feed(task, Event(Ev.DEPENDENCY_READY))

    def save_task(self, task: TaskRuntime) -> None:
        """Write the task's record within this turn of the event loop (changes made together
        are written together)."""
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self.flush)
        self._dirty.add(task.name)

    def flush(self) -> None:
        """Hand the changed records to the writer thread (``statewriter``), which never holds
        up the loop; a record that could not be written is tried again every SAVE_RETRY."""
        dirty, self._dirty = self._dirty | self._unsaved, set()
        self._unsaved = set()
        for name in dirty:
            task = self.tasks.get(name)
            if task is not None:
                st.save_task(self.files, name, task.record).add_done_callback(
                    functools.partial(self._saved, name))

    def _saved(self, name: str, fut: asyncio.Future[None]) -> None:
        exc = fut.exception()
        if exc is None:
            return
        if not self._unsaved:
            log.error("cannot save the state of %s/%s: %s (trying again every %gs)",
                      self.name, name, exc, SAVE_RETRY)
        self._unsaved.add(name)
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(SAVE_RETRY, self._retry_save)

    def _retry_save(self) -> None:
        """A state file could not be written (a full disk): try again until it can."""
        self._retry = None
        if self._record_unsaved:
            self._save_record()
        if self._unsaved and not self._dirty:
            self.flush()

    def set_running(self, running: bool) -> None:
        """Whether the user wants the project up (restored when tmux goes away)."""
        if self.record.running != running:
            self.record.running = running
            self._save_record()

    def _save_record(self) -> None:
        try:
            st.save(self.files, self.record)
        except OSError as exc:
            log.error("cannot save %s: %s (trying again every %gs)", self.files.state, exc,
                      SAVE_RETRY)
            self._record_unsaved = True
            if self._retry is None:
                self._retry = asyncio.get_running_loop().call_later(SAVE_RETRY,
                                                                    self._retry_save)
        else:
            self._record_unsaved = False

    def persist(self) -> None:
        """Write the project-level record and every task's."""
        self._save_record()
        self._dirty.update(self.tasks)
        self.flush()

    # -- launching ------------------------------------------------------------------------

    def task_env(self, task: TaskRuntime, port: int | None) -> dict[str, str]:
        env_file = self.loaded.task_env_file(task.config)
        text = None
        if env_file:
            try:
                with open(env_file, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError as exc:
                raise TaskError(f"cannot read env_file {env_file}: {exc}") from None
        base = self.base_env or {k: v for k, v in os.environ.items()
                                 if k in ("PATH", "HOME", "USER", "LANG", "SHELL", "LOGNAME")}
        return environment.build(base, text, task.config.env, port, {
            "TASKMUX_PROJECT": self.name, "TASKMUX_TASK": task.name,
            "TASKMUX_HOME": self.s.paths.home})

    async def after_hook(self, task: TaskRuntime, which: str, command: str) -> None:
        try:
            await run_hook(HookRun(which, task.name, command),
                           self.task_env(task, task.record.port),
                           self.loaded.task_cwd(task.config))
        except TaskError as exc:
            log.warning("%s", exc.message)
            self.s.events.emit("hook_failed", self.name, task.name, hook=which,
                               error=exc.message)

    def log_path(self, task: TaskRuntime) -> str:
        if task.config.log_file:
            return os.path.join(self.loaded.folder, os.path.expanduser(task.config.log_file))
        return self.s.paths.task_log(self.name, task.name)

    # -- what the runners report ----------------------------------------------------------

    def group_info(self, task: TaskRuntime) -> dict[str, Any]:
        """The task's cgroup and the CPU time it used, where a subtree was delegated."""
        path = self.s.groups.path(self.name, task.name)
        if path is None:
            return {}
        usec = self.s.groups.cpu_usec(self.name, task.name)
        return {"cgroup": path, "cpu_seconds": None if usec is None else usec / 1e6}

    def task_key(self, task: TaskRuntime) -> str:
        return f"{self.name}/{task.name}"

    def runner_started(self, task_name: str, record: dict[str, Any]) -> None:
        task = self.tasks.get(task_name)
        if task is None or record.get("run_id") != task.record.run_id:
            return
        rec = task.record
        rec.pid = int(record["pid"])
        rec.pgid = int(record.get("pgid") or record["pid"])
        rec.runner_pid = record.get("runner_pid")
        rec.pid_start = record.get("pid_start")
        rec.runner_start = record.get("runner_start")
        rec.boot_id = record.get("boot_id")
        rec.started_wall = float(record.get("started_at") or time.time())
        self.watch_runner(task)
        if task.state == TaskState.STARTING:
            self.feed(task, Event(Ev.LAUNCHED))
            launching.started(self, task)  # every start, the automatic ones too
        else:
            self.save_task(task)
            self.touch()

    def watch_runner(self, task: TaskRuntime) -> None:
        """Hear of the runner's end the moment it happens (see ``ownership``)."""
        rec = task.record
        if not isinstance(rec.runner_pid, int):
            return
        rid = rec.runner_id()
        if rid is not None:
            still: Callable[[], bool] = lambda: proctree.is_alive(rid)  # noqa: E731
        elif not proctree.AVAILABLE:  # no /proc (macOS): the pid is all there is
            pid = rec.runner_pid
            still = lambda: alive(pid)  # noqa: E731
        else:
            return
        run_id = rec.run_id
        self.s.runners.watch(self.task_key(task), rec.runner_pid, still,
                             lambda: self.runner_gone(task, run_id))

    def runner_gone(self, task: TaskRuntime, run_id: int) -> None:
        """The runner of ``run_id`` has ended. It normally said so first; if it could not (it
        was SIGKILLed), what it left running is ended before any relaunch (the record is not
        clean, so the next launch clears the task's marked processes first)."""
        if task.record.run_id != run_id or not task.live:
            return
        runner = st.read_runner_record(self.files, task.name)
        if not (runner and runner.get("run_id") == run_id
                and runner.get("status") in ("exited", "failed")):
            self.s.events.emit("runner_lost", self.name, task.name,
                               runner_pid=task.record.runner_pid)
        stopping.exit_unreported(self, task, run_id, signal.SIGKILL)

    def runner_exited(self, task_name: str, record: dict[str, Any]) -> None:
        task = self.tasks.get(task_name)
        if task is None or record.get("run_id") != task.record.run_id or not task.live:
            return
        rec = task.record
        self.s.runners.unwatch(self.task_key(task))
        rec.clean = record.get("tree_clean") is True
        rec.exited_wall = float(record.get("exited_at") or time.time())
        if task.health_task is not None:
            task.health_task.cancel()
            task.health_task = None
        task.health.unjudge()  # a process that is gone is not judged
        code, sig = record.get("exit_code"), record.get("exit_signal")
        if record.get("status") == "failed" and code is None and sig is None:
            code = 127
        self.feed(task, Event(Ev.EXITED, code, sig))

    # -- health ---------------------------------------------------------------------------

    def probe_spec(self, task: TaskRuntime) -> ProbeSpec:
        cfg = task.config
        return ProbeSpec(
            url=cfg.health_url, expected_status=cfg.health_expected_status,
            expected_body=cfg.health_expected_body, command=cfg.health_check,
            port=task.record.port if cfg.wants_port else None, pid=task.record.pid,
            timeout=cfg.health_timeout, env=self.task_env(task, task.record.port),
            cwd=self.loaded.task_cwd(cfg))

    # -- commands -------------------------------------------------------------------------

    def _targets(self, names: list[str] | None, default_auto: bool) -> list[str]:
        for n in names or []:
            self.task(n)
        if names:
            return sorted(set(names))
        if default_auto:
            return sorted(n for n, t in self.tasks.items() if t.config.auto_start)
        return sorted(self.tasks)

    def _project_env(self) -> dict[str, str]:
        return environment.build(self.base_env, None, {}, None, {
            "TASKMUX_PROJECT": self.name, "TASKMUX_HOME": self.s.paths.home})

    async def _global_hook(self, which: str) -> None:
        command = getattr(self.loaded.project.hooks, which)
        if command:
            await run_hook(HookRun(which, "project", command), self._project_env(),
                           self.loaded.folder)

    async def start(self, names: list[str] | None, env: dict[str, str] | None
                    ) -> list[dict[str, Any]]:
        if env:
            self.base_env = env
            st.save_env(self.files, env)
        if not names and not self.loaded.project.auto_start:
            self.set_running(True)
            self.touch()
            return []
        wanted = self._targets(names, default_auto=True)
        todo = sorted(closure({n: t.config for n, t in self.tasks.items()}, wanted))
        self.set_running(True)
        await self._global_hook("before_start")
        results = await self.start_gated(todo)
        await self._global_hook("after_start")
        if not names:
            self.s.events.emit("session_started", self.name, None,
                               tasks=[n for n in todo if results[n]["action"] == "started"])
        self.touch()
        out = [results[n] for n in todo]
        failed = [r for r in out if r["action"] == "failed"]
        if failed:
            code = Code.TASK_START_FAILED
            if any(r.get("code") == Code.HOOK_FAILED for r in failed):
                code = Code.HOOK_FAILED
            elif any(r.get("reason") == "dependency" for r in failed):
                code = Code.DEPENDENCY_TIMEOUT
            lines = "; ".join(f"{r['task']}: {r['error']}" for r in failed)
            raise TaskError(f"could not start {len(failed)} task(s): {lines}",
                            {"results": out}, code=code)
        return out

    def levels(self, names: list[str] | set[str]) -> list[list[str]]:
        """``names`` in the dependency order ``taskmux check`` prints: each level depends only
        on earlier ones. Start goes forward, stop backward, restore forward."""
        wanted = set(names)
        waves = start_order({n: t.config for n, t in self.tasks.items()})
        return [w for w in ([n for n in wave if n in wanted] for wave in waves) if w]

    async def start_gated(self, todo: list[str]) -> dict[str, dict[str, Any]]:
        """Start ``todo``, each task once what it depends on is ready (within
        ``dependency_timeout``); independent tasks start in parallel."""
        deadline = time.monotonic() + self.s.dependency_timeout()
        results: dict[str, dict[str, Any]] = {}
        wanted = set(todo)

        async def one(name: str) -> None:
            try:
                await self._start_one(name, deadline, results, wanted)
            finally:
                self.changed.fire()  # its result is in: dependents waiting on it look again

        await asyncio.gather(*(one(n) for n in todo))
        return results

    async def restore(self, names: list[str]) -> None:
        """Bring tasks back after their tmux session went away, gated like ``start``."""
        results = await self.start_gated(names)
        for r in results.values():
            if r["action"] == "failed":
                log.warning("%s/%s: not restored: %s", self.name, r["task"], r["error"])

    async def _start_one(self, name: str, deadline: float,
                         results: dict[str, dict[str, Any]], todo: set[str]) -> None:
        task = self.tasks[name]
        for dep in task.config.depends_on:
            dep_task = self.tasks[dep]
            cond = task.config.condition_on(dep, dep_task.config)

            def verdict(d: TaskRuntime = dep_task, c: str = cond) -> bool | None:
                if d.name in todo and d.name not in results:
                    return None  # started by this same command: not judged on an old run
                if results.get(d.name, {}).get("action") == "failed":
                    return False
                return d.meets(c)

            if not await self.changed.wait_for(lambda: verdict() is not None,
                                               max(deadline - time.monotonic(), 0.01)):
                results[name] = {"task": name, "action": "failed", "reason": "dependency",
                                 "error": f"{dep} was not {cond.replace('_', ' ')} in time "
                                 f"(state {dep_task.state}, healthy {dep_task.health.ok}); "
                                 f"see `taskmux logs {dep}`"}
                return
            if not verdict():
                results[name] = {"task": name, "action": "failed", "reason": "dependency",
                                 "error": f"its dependency {dep} failed (waiting for it to be "
                                 f"{cond.replace('_', ' ')}; state {dep_task.state})"}
                return
        if task.live and task.state != TaskState.STOPPING:
            results[name] = {"task": name, "action": "already_running"}
            return
        task.last_launch_error = None
        self.feed(task, Event(Ev.START))
        await self.changed.wait_for(lambda: task.state != TaskState.STARTING,
                                    LAUNCH_TIMEOUT + HOOK_TIMEOUT)
        if task.state == TaskState.RUNNING:  # its after_start hook runs before we answer
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(task.launch_done.wait(), HOOK_TIMEOUT)
        if task.state == TaskState.RUNNING or task.completed:  # runner_started: task_started
            results[name] = {"task": name, "action": "started", "pid": task.record.pid,
                             "port": task.record.port}
        else:
            reason = task.last_launch_error or f"state {task.state}"
            results[name] = {"task": name, "action": "failed", "error": reason}
            if task.last_launch_code is not None:
                results[name]["code"] = task.last_launch_code

    async def stop(self, names: list[str] | None) -> list[dict[str, Any]]:
        targets = self._targets(names, default_auto=False)
        if not names:
            self.set_running(False)
        await self._global_hook("before_stop")
        # Dependents before what they depend on: level by level, each with its grace period.
        results: list[dict[str, Any]] = []
        for level in reversed(self.levels(targets)):
            results.extend(await asyncio.gather(*(self._stop_one(n) for n in level)))
        results.sort(key=lambda r: str(r["task"]))
        await self._global_hook("after_stop")
        if not names:
            self.s.events.emit("session_stopped", self.name, None)
        self.touch()
        return results

    async def _stop_one(self, name: str) -> dict[str, Any]:
        task = self.tasks[name]
        was_live = task.live
        if task.config.hooks.before_stop and was_live:
            await run_hook(HookRun("before_stop", name, task.config.hooks.before_stop),
                           self.task_env(task, task.record.port),
                           self.loaded.task_cwd(task.config))
        self.feed(task, Event(Ev.STOP))
        await task.wait_exit()
        if was_live:
            self.s.events.emit("task_stopped", self.name, name,
                               exit_code=task.record.policy.last_exit_code,
                               signal=task.record.policy.last_exit_signal)
            if task.config.hooks.after_stop:
                await self.after_hook(task, "after_stop", task.config.hooks.after_stop)
        return {"task": name, "action": "stopped" if was_live else "already_stopped"}

    async def restart(self, names: list[str] | None) -> list[dict[str, Any]]:
        targets = self._targets(names, default_auto=False)
        if not names:
            targets = sorted(n for n, t in self.tasks.items() if t.live or t.config.auto_start)
        self.set_running(True)
        results = []
        for name in targets:
            task = self.tasks[name]
            if task.live and task.config.hooks.before_stop:
                await run_hook(HookRun("before_stop", name, task.config.hooks.before_stop),
                               self.task_env(task, task.record.port),
                               self.loaded.task_cwd(task.config))
            self.feed(task, Event(Ev.RESTART))
        for name in targets:
            task = self.tasks[name]

            def settled(t: TaskRuntime = task) -> bool:
                return t.state not in (TaskState.STOPPING, TaskState.STARTING)

            await self.changed.wait_for(
                settled, task.config.stop_grace_period * 2 + KILL_WAIT + LAUNCH_TIMEOUT + 5)
            ok = task.state == TaskState.RUNNING
            self.s.events.emit("task_restarted", self.name, name, pid=task.record.pid)
            results.append({"task": name, "action": "restarted" if ok else "failed",
                            "pid": task.record.pid, "state": task.state.value})
        self.touch()
        return results

    async def kill(self, name: str) -> dict[str, Any]:
        task = self.task(name)
        self.feed(task, Event(Ev.KILL))
        await task.wait_exit()
        self.s.events.emit("task_killed", self.name, name)
        return {"task": name, "action": "killed"}

    # -- status ---------------------------------------------------------------------------

    def task_infos(self) -> list[dict[str, Any]]:
        snap = ownership.snapshot()
        return [{**t.info(self.s.url_for(self.name, t.config.host), snap),
                 "waiting_for": self.waiting_for(t) if t.name in self._held else []}
                for t in sorted(self.tasks.values(), key=lambda t: t.name)]
