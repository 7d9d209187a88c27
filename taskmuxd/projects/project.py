"""A supervised project: the asyncio side of its supervisor machine.

``handle`` is the only way a task changes state: it passes an event (what tmux, a runner, a
probe or the user said) to the project's ``supervisor.machine.Machine`` with the time, and
carries out the actions that come back (launch a runner: ``taskstart``; signal a process
group: ``stopping``; probe: ``probeactions``; set a timer; write an event or a record). The
commands (``start``, ``stop``, ``restart``, ``kill``) add hooks, and wait for the results to
answer the client, in the machine's dependency order.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from taskmuxctl.core.daemonctl import alive
from taskmuxctl.core.errors import ClientError, TaskError
from taskmuxctl.core.eventlog import EventLog
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.projectconfig import LoadedConfig, TaskConfig, closure
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.rpctypes import StatusTask, TaskGroup
from taskmuxd import proctree
from taskmuxd.cgroups import TaskGroups
from taskmuxd.healthprobes import ProbeSpec
from taskmuxd.jobs import Changed
from taskmuxd.policy import Ev, PolicySpec, State, TaskState
from taskmuxd.projects import (
    delayedgrant,
    environment,
    ownership,
    probeactions,
    readiness,
    restartgrant,
    stopping,
    strangers,
    taskstart,
    warmrunner,
)
from taskmuxd.projects import state as st
from taskmuxd.projects.hooks import HOOK_TIMEOUT, HookName, HookRun, run_hook
from taskmuxd.projects.ownership import RunnerWatch
from taskmuxd.projects.projectview import Rung
from taskmuxd.projects.task import TaskRuntime
from taskmuxd.projects.taskstart import LAUNCH_TIMEOUT
from taskmuxd.projects.windowbatch import Launcher
from taskmuxd.runrecord import RunRecord
from taskmuxd.supervisor import messages as m
from taskmuxd.supervisor.machine import KILL_WAIT, Machine
from taskmuxd.supervisor.taskspec import TaskSpec
from taskmuxd.supervisor.verdict import HealthSpec
from taskmuxd.tmux import DeadPane, Tmux

log = logging.getLogger("taskmuxd.project")

HOLD_LIMIT = 5.0  # seconds a stop may hold its tasks' own files (``hold_saves``)
SAVE_RETRY = 5.0  # seconds between attempts to write a state file that could not be written
PID_EVENTS = ("task_adopted",)  # events the machine emits that carry the task's pid
_requests = itertools.count(1)  # start requests, numbered daemon-wide


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
    # Seconds a stopped task's runner stays warm in its pane (``warmrunner``); 0: none.
    warm_runner_seconds: Callable[[], float] = lambda: 0.0


class TaskNotFound(ClientError):
    default_code = Code.TASK_NOT_FOUND


class Project:
    def __init__(self, services: Services, name: str, loaded: LoadedConfig) -> None:
        self.services = services
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
        self._ahead: set[str] = set()  # dirty records that a signal waits for (see flush)
        self._ahead_placed: dict[str, asyncio.Future[None]] = {}
        self._journaled: set[str] = set()  # in ahead.json; their own files not yet durable
        self._holding: dict[str, int] = {}  # own files held while a stop runs (hold_saves)
        self._held: dict[str, bool] = {}  # held own files → whether journaled
        self.rungs: list[Rung] = []  # signals asked for in this turn of the loop
        self._unsaved: set[str] = set()  # writes that failed, retried every SAVE_RETRY
        self._retry: asyncio.TimerHandle | None = None
        self._record_unsaved = False
        self.restoring = False  # bringing the project back after its tmux session went away
        self.config_error: str | None = None
        self.machine = Machine({})
        self._answers: dict[int, asyncio.Future[tuple[m.Outcome, ...]]] = {}
        self._self_judged: list[str] = []
        self._self_judged_set: frozenset[str] = frozenset()
        self._transitions: dict[tuple[str, str, str], list[str]] = {}
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
        tasks = loaded.project.tasks
        # The tasks that judge their own readiness (the others' ``settle`` does nothing).
        self._self_judged = [n for n, c in tasks.items() if readiness.self_judged(c)]
        self._self_judged_set = frozenset(self._self_judged)
        specs = {n: task_spec(c, tasks) for n, c in tasks.items()}
        states = {n: t.record.policy for n, t in self.tasks.items()}
        if self.machine.specs:
            self.handle(m.ConfigChanged(specs, states))
        else:  # the first configuration, before the loop may run
            self.machine.configure(specs, states)

    def task(self, name: str) -> TaskRuntime:
        try:
            return self.tasks[name]
        except KeyError:
            from taskmuxctl.core.suggest import did_you_mean

            raise TaskNotFound(
                f"task {name!r} not found in {self.loaded.path}"
                f"{did_you_mean(name, self.tasks)}; tasks: "
                f"{', '.join(sorted(self.tasks)) or '(none)'}",
                {"task": name, "tasks": sorted(self.tasks)}) from None

    # -- the state machine ----------------------------------------------------------------

    def handle(self, *events: m.Event) -> None:
        """Feed events to the machine, in order, with the time, and carry out the actions of
        each (the events given together share the bookkeeping after them: a stop of a
        hundred tasks is one call, not a hundred).

        The bookkeeping touches only the tasks an event or its actions name: the machine
        changes a task's state or health only with an action naming it (every step ends
        with a ``Save``), so the others need no look (a start of a hundred tasks would
        otherwise visit every task at each of its hundreds of events). A new configuration
        can change any task: it looks at all."""
        before: dict[str, State] = {}
        now = time.monotonic()
        for event in events:
            actions = self.machine.handle(event, now, random.random())
            if isinstance(event, m.ConfigChanged):
                names: Iterable[str] = list(self.tasks)
            else:
                names = {event.task, *(getattr(a, "task", "") for a in actions)}
            for name in names:
                task = self.tasks.get(name)
                if task is None:
                    continue
                before.setdefault(name, task.record.policy)
                self._sync(task)
            for action in actions:
                try:
                    self._perform(action)
                except Exception:  # one failed action (a write) must not lose the ones after
                    log.exception("%s: carrying out %s failed", self.name, action)
        why = type(events[0]).__name__ if len(events) == 1 else f"{len(events)} events"
        for name, was in before.items():
            changed = self.tasks.get(name)
            if changed is None or changed.record.policy is was or changed.state == was.state:
                continue
            self._log_transition(name, was.state.value, changed.state.value, why)
            if not changed.live:
                changed.wake_exit_waiters()
        for name, was in before.items():
            task = self.tasks.get(name)
            if task is None:
                continue
            if name in self._self_judged_set:
                readiness.settle(self, task)  # the task's own word, once its run is judged
            delayedgrant.after_event(self, task)  # out of backoff: its grant taken back
            decided = now if was.restart_at != task.record.policy.restart_at else None
            delayedgrant.hold(self, task, decided)  # into backoff: granted with its wait
            if task.waiting_runner is not None and not warmrunner.keep(self, task):
                taskstart.release_waiting(self, task)  # a runner waiting for no relaunch
        self.touch()

    def _log_transition(self, name: str, was: str, now: str, why: str) -> None:
        """Log a change of state; the changes of one turn of the loop go in one line per
        kind (a hundred tasks stopped: one line, not a hundred)."""
        if not self._transitions:
            try:
                asyncio.get_running_loop().call_soon(self._log_transitions)
            except RuntimeError:  # no loop (a test driving the project directly)
                log.info("%s/%s: %s -> %s (%s)", self.name, name, was, now, why)
                return
        self._transitions.setdefault((was, now, why), []).append(name)

    def _log_transitions(self) -> None:
        done, self._transitions = self._transitions, {}
        for (was, now, why), names in done.items():
            if len(names) == 1:
                log.info("%s/%s: %s -> %s (%s)", self.name, names[0], was, now, why)
            else:
                log.info("%s: %s -> %s (%s): %s", self.name, was, now, why, ", ".join(names))

    def command(self, task: TaskRuntime, kind: Ev) -> None:
        self.handle(m.Command(task.name, kind))

    def _perform(self, action: m.Action) -> None:
        if isinstance(action, m.Answer):
            answer = self._answers.get(action.request)
            if answer is not None and not answer.done():
                answer.set_result(action.outcomes)
            return
        if isinstance(action, m.WakeAt) and not action.task:  # a start request's deadline
            asyncio.get_running_loop().call_at(action.at, self.handle, m.TimerFired(""))
            return
        task = self.tasks.get(action.task)
        if task is None:
            return
        if isinstance(action, m.Save):
            self.save_task(task)
        elif isinstance(action, m.Launch):
            task.last_launch_error, task.last_launch_code = None, None
            if restartgrant.launched(task):  # the run granted ahead is there already
                self.save_task(task)
                return
            if delayedgrant.launching(self, task):  # a delayed grant: revoked first
                return
            run_id, clean = taskstart.begin(self, task)
            self.services.spawn(taskstart.launch(self, task, run_id, clean),
                                f"launch {self.name}/{task.name}")
        elif isinstance(action, m.Signal):
            # Written down before the signal (``stopping.send`` waits for it, once for all
            # the signals of this turn), as a launch is before tmux is asked: a daemon killed
            # right after finds the stop (and why: a restart) it had begun.
            stopping.send(self, task, getattr(signal, action.signal), action.kill)
        elif isinstance(action, m.RecordExit):
            stopping.exit_unreported(self, task, task.record.run_id, signal.SIGKILL)
        elif isinstance(action, m.WakeAt):
            if task.timer is not None:
                task.timer.cancel()
            task.timer = asyncio.get_running_loop().call_at(action.at, self._wake, task)
        elif isinstance(action, m.CancelWake):
            if task.timer is not None:
                task.timer.cancel()
                task.timer = None
        elif isinstance(action, m.Probe):
            probeactions.schedule(self, task, action.at)
        elif isinstance(action, m.StopProbing):
            probeactions.cancel(task)
        elif isinstance(action, m.Refused):
            log.error("%s/%s: no transition from %r on %r (ignored)", self.name, task.name,
                      action.state, action.event)
        elif isinstance(action, m.FinishLaunch):
            self.services.spawn(taskstart.finish(self, task, task.record.run_id),
                                f"reconcile {self.name}/{task.name}")
        elif isinstance(action, m.Emit):
            details = dict(action.details)
            if action.event in PID_EVENTS:
                details["pid"] = task.record.pid
            if action.event == "restart_held":
                log.info("%s/%s: restart waits for %s", self.name, task.name,
                         action.details.get("waiting_for"))
            self.services.events.emit(action.event, self.name, task.name, **details)

    def _sync(self, task: TaskRuntime) -> None:
        """The machine's state into the task's record, which status and the files show."""
        view = self.machine.tasks.get(task.name)
        if view is None:
            return
        task.record.policy = view.state
        task.health.ok, task.health.failures = view.health.ok, view.health.failures

    def _wake(self, task: TaskRuntime) -> None:
        task.timer = None
        if delayedgrant.defer(self, task):  # the runner's report may come first
            return
        self.handle(m.TimerFired(task.name))

    def waiting_for(self, task: TaskRuntime) -> list[str]:
        """The dependencies of ``task`` that are not ready now."""
        return self.machine.waiting_for(task.name)

    def touch(self) -> None:
        """Something changed: wake waiters, tell listeners."""
        self.changed.fire()
        self.services.on_change(self)

    def save_task(self, task: TaskRuntime) -> None:
        """Write the task's record within this turn of the event loop (changes made together
        are written together)."""
        if not self._dirty:
            asyncio.get_running_loop().call_soon(self.flush)
        self._dirty.add(task.name)

    def write_ahead(self, task: TaskRuntime) -> None:
        """The task's record goes into the next write-ahead batch: one file (``ahead.json``)
        for every task signalled in this turn of the loop, written before the tasks' own
        files (``stopping.written_ahead`` waits for it to be in place)."""
        self._ahead.add(task.name)
        self.save_task(task)

    def ahead_placed(self, name: str) -> asyncio.Future[None] | None:
        """The write-ahead batch of ``name`` not yet in place, if there is one."""
        return self._ahead_placed.get(name)

    def flush(self) -> None:
        """Hand the changed records to the writer thread (``statewriter``), which never holds
        up the loop; a record that could not be written is tried again every SAVE_RETRY.
        Records written ahead go first, together, as one file; their own files after it."""
        dirty, self._dirty = self._dirty | self._unsaved, set()
        self._unsaved = set()
        ahead = {n for n in self._ahead if n in self.tasks}
        self._ahead = set()
        if not ahead:
            self._submit(dirty)
            return
        # A batch still waiting for its tasks' own files is written again with this one
        # (the file holds one batch: the last).
        self._journaled |= ahead
        names = sorted(n for n in self._journaled if n in self.tasks)
        placed = st.save_ahead(self.files, self.record, names)
        for name in ahead:
            self._ahead_placed[name] = placed
        # The writer takes everything pending at once: the one file goes alone, first.
        placed.add_done_callback(functools.partial(self._ahead_done, sorted(ahead), dirty))

    def _ahead_done(self, names: list[str], dirty: set[str],
                    placed: asyncio.Future[None]) -> None:
        for name in names:
            if self._ahead_placed.get(name) is placed:
                del self._ahead_placed[name]
        exc = None if placed.cancelled() else placed.exception()
        if exc is not None:  # the tasks' own files carry the same records, a moment later
            log.error("cannot write ahead the records of %s: %s", ", ".join(names), exc)
        self._submit(dirty, set(names))

    def hold_saves(self, names: Iterable[str]) -> Callable[[], None]:
        """Hold the own files of ``names`` while they are stopped, for at most HOLD_LIMIT
        seconds; the function returned lets them go (each written once, as it is then).

        A stop changes each record up to three times within milliseconds (stopping, written
        ahead; stopped, on its runner's report; clean, after the look for strangers): one
        fsynced write each would be three hundred for a stop of a hundred tasks, on the
        writer while the runners and the loop need the processors. What a daemon killed
        meanwhile needs is already there: the records written ahead (``ahead.json``, kept
        in every later batch while their own files wait: ``_journaled``), and for what
        follows, the runners' records, from which a new daemon finishes the stop as after any
        report it did not live to save."""
        names = [n for n in names if n in self.tasks]
        for n in names:
            self._holding[n] = self._holding.get(n, 0) + 1
        done = False

        def release() -> None:
            nonlocal done
            if done:
                return
            done = True
            timer.cancel()
            if self._dirty:  # the changes of this turn (the last look's) held too
                self.flush()
            ready: set[str] = set()
            for n in names:
                left = self._holding.pop(n, 0) - 1
                if left > 0:
                    self._holding[n] = left
                elif n in self._held:
                    ready.add(n)
            journaled = {n for n in ready if self._held.pop(n)}
            if ready:
                self._submit(ready, journaled)

        timer = asyncio.get_running_loop().call_later(HOLD_LIMIT, release)
        return release

    def _submit(self, dirty: set[str], journaled: set[str] | None = None) -> None:
        records = {}
        for name in dirty:
            if name in self._holding:  # written once the stop lets it go (``hold_saves``)
                self._held[name] = self._held.get(name, False) or bool(journaled
                                                                       and name in journaled)
                continue
            task = self.tasks.get(name)
            if task is not None:
                records[name] = task.record
        if not records:
            return
        for name, done in st.save_tasks(self.files, records).items():
            done.add_done_callback(functools.partial(self._saved, name))
            if journaled and name in journaled:
                done.add_done_callback(functools.partial(self._own_file_written, name))

    def _own_file_written(self, name: str, fut: asyncio.Future[None]) -> None:
        """A task's own file is durable after its write-ahead: the next batch can leave it
        out."""
        if not fut.cancelled() and fut.exception() is None:
            self._journaled.discard(name)

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
        """Hand the project-level record to the writer (a stop's write-ahead batch carries
        it too: ``flush``)."""
        st.save(self.files, self.record).add_done_callback(self._record_saved)

    def _record_saved(self, fut: asyncio.Future[None]) -> None:
        exc = fut.exception()
        if exc is None:
            self._record_unsaved = False
            return
        log.error("cannot save %s: %s (trying again every %gs)", self.files.state, exc,
                  SAVE_RETRY)
        self._record_unsaved = True
        if self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(SAVE_RETRY, self._retry_save)

    def persist(self) -> None:
        """Write the project-level record and every task's."""
        self._save_record()
        self._holding.clear()  # nothing held any more (a daemon stopping: all written now)
        self._held.clear()
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
            "TASKMUX_HOME": self.services.paths.home})

    async def after_hook(self, task: TaskRuntime, which: HookName, command: str) -> None:
        try:
            await run_hook(HookRun(which, task.name, command),
                           self.task_env(task, task.record.port),
                           self.loaded.task_cwd(task.config))
        except TaskError as exc:
            log.warning("%s", exc.message)
            self.services.events.emit("hook_failed", self.name, task.name, hook=which,
                                      error=exc.message)

    def log_path(self, task: TaskRuntime) -> str:
        if task.config.log_file:
            return os.path.join(self.loaded.folder, os.path.expanduser(task.config.log_file))
        return self.services.paths.task_log(self.name, task.name)

    # -- what the runners report ----------------------------------------------------------

    def group_info(self, task: TaskRuntime) -> TaskGroup:
        """The task's cgroup and the CPU time it used, where a subtree was delegated."""
        path = self.services.groups.path(self.name, task.name)
        if path is None:
            return {}
        usec = self.services.groups.cpu_usec(self.name, task.name)
        return {"cgroup": path, "cpu_seconds": None if usec is None else usec / 1e6}

    def task_key(self, task: TaskRuntime) -> str:
        return f"{self.name}/{task.name}"

    def runner_started(self, task_name: str, record: RunRecord) -> None:
        task = self.tasks.get(task_name)
        if task is None or record.pid is None:
            return
        if record.after_run is not None and restartgrant.take(self, task, record):
            return
        if record.run_id != task.record.run_id:
            return
        self.take_runner(task, record)
        if task.state == TaskState.STARTING:
            self.handle(m.RunnerStarted(task.name))
            taskstart.started(self, task)  # every start, the automatic ones too
        else:
            self.save_task(task)
            self.touch()

    def take_runner(self, task: TaskRuntime, record: RunRecord) -> None:
        """Record the process a runner reports for the current run, and watch the runner."""
        rec = task.record
        rec.pid = record.pid
        rec.pgid = record.pgid or record.pid
        rec.runner_pid = record.runner_pid
        rec.pid_start = record.pid_start
        rec.runner_start = record.runner_start
        rec.boot_id = record.boot_id
        rec.started_wall = record.started_at or time.time()
        self.watch_runner(task)
        readiness.take(task, record, live=False)

    def runner_notified(self, task_name: str, record: RunRecord) -> None:
        """The runner saw the task become ready, miss its watchdog, or change its status."""
        task = self.tasks.get(task_name)
        if task is not None and task.live:
            readiness.take(task, record, live=True)
            readiness.settle(self, task)
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
        self.services.runners.watch(self.task_key(task), rec.runner_pid, still,
                                    lambda: self.runner_gone(task, run_id))

    def runner_gone(self, task: TaskRuntime, run_id: int) -> None:
        """The runner of ``run_id`` has ended. It normally said so first; if it could not (it
        was SIGKILLed), what it left running is ended before any relaunch (the record is not
        clean, so the next launch clears the task's marked processes first)."""
        if task.record.run_id != run_id or not task.live:
            return
        runner = st.read_runner_record(self.files, task.name)
        if runner and runner.run_id == run_id and runner.status in ("exited", "failed"):
            self.runner_exited(task.name, runner)  # its report, read before it arrived
            return
        self.services.events.emit("runner_lost", self.name, task.name,
                           runner_pid=task.record.runner_pid)
        # The runner is gone: its record cannot change any more (read once, above).
        stopping.exit_unreported(self, task, run_id, signal.SIGKILL, read=False)

    def runner_exited(self, task_name: str, record: RunRecord) -> None:
        task = self.tasks.get(task_name)
        if task is None or record.run_id != task.record.run_id or not task.live:
            return
        rec = task.record
        self.services.runners.unwatch(self.task_key(task))
        rec.clean = record.tree_clean is True
        if record.unscanned:  # its strangers are the daemon's to look for, with others
            strangers.note(self, task, record.run_id)
        taskstart.runner_waits(task, record)
        task.exit_by_stop = task.state == TaskState.STOPPING  # its runner may stay warm
        task.exit_own = record.ended_by == "exit"
        rec.exited_wall = record.exited_at or time.time()
        code, sig = record.exit_code, record.exit_signal
        if record.status == "failed" and code is None and sig is None:
            code = 127
        self.handle(m.RunnerExited(task.name, code, sig))

    # -- what tmux reports ----------------------------------------------------------------

    def tmux_window_closed(self, window_id: str) -> None:
        """tmux closed a task's window (the user's ``kill-window`` or ``kill-pane``, a
        ``kill`` of ours). Its runner had the hang-up and reports the task's end itself; a
        runner provably gone already (it could not) is a runner gone, now, as its pidfd would
        say. Either way the machine decides what follows; the next launch opens a new
        window."""
        for task in self.tasks.values():
            rec = task.record
            if rec.window_id != window_id:
                continue
            rec.window_id = None
            self.save_task(task)
            self.services.events.emit("window_closed", self.name, task.name, window=window_id,
                               state=task.state.value)
            rid = rec.runner_id()
            if task.live and rid is not None and not proctree.is_alive(rid):
                self.runner_gone(task, rec.run_id)
            self.touch()

    def tmux_panes_dead(self, panes: tuple[DeadPane, ...]) -> None:
        """tmux lists the panes whose process has ended. A live task whose window's pane is
        dead with its runner's pid has lost its runner: the runner's own report, if it wrote
        one, or an exit nobody reported (``runner_gone``). Reported again on every new
        connection, which is harmless: a task no longer live, or on another run, is left
        alone."""
        by_window = {p.window_id: p for p in panes}
        for task in list(self.tasks.values()):
            rec = task.record
            pane = by_window.get(rec.window_id) if rec.window_id else None
            if pane is None or not task.live or pane.pid is None or pane.pid != rec.runner_pid:
                continue
            log.info("%s/%s: tmux reports the pane of runner %s dead", self.name, task.name,
                     pane.pid)
            self.runner_gone(task, rec.run_id)

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
            "TASKMUX_PROJECT": self.name, "TASKMUX_HOME": self.services.paths.home})

    async def _global_hook(self, which: HookName) -> None:
        command = getattr(self.loaded.project.hooks, which)
        if command:
            await run_hook(HookRun(which, "project", command), self._project_env(),
                           self.loaded.folder)

    async def start(self, names: list[str] | None, env: dict[str, str] | None
                    ) -> list[dict[str, Any]]:
        if env and env != self.base_env:  # a fsync on the loop: only when it changed
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
            self.services.events.emit("session_started", self.name, None,
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
        return self.machine.levels(names)

    async def start_gated(self, todo: list[str]) -> dict[str, dict[str, Any]]:
        """Start ``todo``, each task once what it depends on is ready (within
        ``dependency_timeout``); independent tasks start in parallel. The machine decides;
        this waits for its answer."""
        timeout = self.services.dependency_timeout()
        rid = next(_requests)
        answer: asyncio.Future[tuple[m.Outcome, ...]] = \
            asyncio.get_running_loop().create_future()
        self._answers[rid] = answer
        try:
            self.handle(m.StartRequested(rid, tuple(todo), timeout))
            outcomes = await asyncio.wait_for(asyncio.shield(answer),
                                              timeout + LAUNCH_TIMEOUT + 2 * HOOK_TIMEOUT)
        except TimeoutError:
            outcomes = ()
        finally:
            self._answers.pop(rid, None)
        decided = {o.task: o for o in outcomes}
        return {n: self._result(n, decided.get(n)) for n in todo}

    def _result(self, name: str, o: m.Outcome | None) -> dict[str, Any]:
        task = self.tasks[name]
        if o is None:
            return {"task": name, "action": "failed", "error": f"state {task.state}"}
        if o.action == "started":
            return {"task": name, "action": "started", "pid": task.record.pid,
                    "port": task.record.port}
        if o.action == "already_running":
            return {"task": name, "action": "already_running"}
        if o.reason == "dependency":
            return {"task": name, "action": "failed", "reason": "dependency", "error": o.error}
        out: dict[str, Any] = {"task": name, "action": "failed",
                               "error": task.last_launch_error or o.error}
        if task.last_launch_code is not None:
            out["code"] = task.last_launch_code
        return out

    async def restore(self, names: list[str]) -> None:
        """Bring tasks back after their tmux session went away, gated like ``start``."""
        results = await self.start_gated(names)
        for r in results.values():
            if r["action"] == "failed":
                log.warning("%s/%s: not restored: %s", self.name, r["task"], r["error"])

    async def stop(self, names: list[str] | None) -> list[dict[str, Any]]:
        targets = self._targets(names, default_auto=False)
        if not names:
            self.set_running(False)
        await self._global_hook("before_stop")
        # Dependents before what they depend on: level by level, each with its grace period.
        results: list[dict[str, Any]] = []
        with warmrunner.after_answer(self):  # the orders to stay warm: once it has answered
            for level in self.machine.stop_levels(targets):
                results.extend(await self._stop_level(level))
        results.sort(key=lambda r: str(r["task"]))
        await self._global_hook("after_stop")
        if not names:
            self.services.events.emit("session_stopped", self.name, None)
        self.touch()
        return results

    async def _stop_level(self, names: list[str]) -> list[dict[str, Any]]:
        """Stop tasks that do not depend on each other, together: the ones with no
        ``before_stop`` hook to run first are asked in one event batch (their signals then
        go in one batch too: ``stopping``); the answer comes once every one is gone."""
        was_live = {n: self.tasks[n].live for n in names}
        hooked = {n for n in names if was_live[n] and self.tasks[n].config.hooks.before_stop}
        plain = [n for n in names if n not in hooked]
        release = self.hold_saves(n for n in names if was_live[n])
        try:
            with strangers.stopping(self):  # one look for the stop's strangers, at its end
                if plain:
                    self.handle(*(m.Command(n, Ev.STOP) for n in plain))
                results = list(await asyncio.gather(
                    *(self._stop_one(n, was_live[n], n in hooked) for n in names)))
            await strangers.settled(self)  # every process of the runs is gone: then answer
        finally:
            release()
        return results

    async def _stop_one(self, name: str, was_live: bool | None = None,
                        hooked: bool = True) -> dict[str, Any]:
        """Stop one task: its ``before_stop`` hook and the command when ``hooked`` (else the
        command was given already), then wait for its end."""
        task = self.tasks[name]
        if was_live is None:
            was_live = task.live
        if hooked:
            if task.config.hooks.before_stop and was_live:
                await run_hook(HookRun("before_stop", name, task.config.hooks.before_stop),
                               self.task_env(task, task.record.port),
                               self.loaded.task_cwd(task.config))
            self.command(task, Ev.STOP)
        await task.wait_exit()
        if was_live:
            self.services.events.emit("task_stopped", self.name, name,
                                      exit_code=task.record.policy.last_exit_code,
                                      signal=task.record.policy.last_exit_signal)
            if task.config.hooks.after_stop:
                await self.after_hook(task, "after_stop", task.config.hooks.after_stop)
        return {"task": name, "action": "stopped" if was_live else "already_stopped"}

    async def restart(self, names: list[str] | None) -> list[dict[str, Any]]:
        """Restart ``names``. A running dependent whose ``depends_on`` entry on one of them
        says ``restart = true`` is restarted too: stopped first (dependents before what they
        depend on), started again once what it needs is ready; its result says ``because``."""
        targets = self._targets(names, default_auto=False)
        if not names:
            targets = sorted(n for n, t in self.tasks.items() if t.live or t.config.auto_start)
        self.set_running(True)
        along = self.machine.restarted_with(targets)
        for level in self.machine.stop_levels(list(along)):
            await asyncio.gather(*(self._stop_one(n) for n in level))
        results = await self._restart_now(targets)
        if along:
            started = await self.start_gated(sorted(along))
            for name in sorted(along):
                r = started[name]
                ok = r["action"] in ("started", "already_running")
                task = self.tasks[name]
                self.services.events.emit("task_restarted", self.name, name, pid=task.record.pid,
                                          because=along[name])
                results.append({"task": name, "action": "restarted" if ok else "failed",
                                "pid": task.record.pid, "state": task.state.value,
                                "because": along[name],
                                **({"error": r["error"]} if "error" in r else {})})
        self.touch()
        return results

    async def _restart_now(self, targets: list[str]) -> list[dict[str, Any]]:
        results = []
        for name in targets:
            task = self.tasks[name]
            if task.live and task.config.hooks.before_stop:
                await run_hook(HookRun("before_stop", name, task.config.hooks.before_stop),
                               self.task_env(task, task.record.port),
                               self.loaded.task_cwd(task.config))
            self.command(task, Ev.RESTART)
        for name in targets:
            task = self.tasks[name]

            def settled(t: TaskRuntime = task) -> bool:
                return t.state not in (TaskState.STOPPING, TaskState.STARTING)

            await self.changed.wait_for(
                settled, task.config.stop_grace_period * 2 + KILL_WAIT + LAUNCH_TIMEOUT + 5)
            ok = task.state == TaskState.RUNNING
            self.services.events.emit("task_restarted", self.name, name, pid=task.record.pid)
            results.append({"task": name, "action": "restarted" if ok else "failed",
                            "pid": task.record.pid, "state": task.state.value})
        return results

    async def kill(self, name: str) -> dict[str, Any]:
        task = self.task(name)
        self.command(task, Ev.KILL)
        await task.wait_exit()
        await strangers.settled(self)
        self.services.events.emit("task_killed", self.name, name)
        return {"task": name, "action": "killed"}

    # -- status ---------------------------------------------------------------------------

    def task_infos(self, resources: Callable[[str], dict[str, Any]]) -> list[StatusTask]:
        """Every task's ``status`` row; ``resources`` gives a task's resource figures."""
        snap = ownership.snapshot()
        return [{**t.info(self.services.url_for(self.name, t.config.host), snap),
                 "waiting_for": self.machine.held(t.name), "resources": resources(t.name)}
                for t in sorted(self.tasks.values(), key=lambda t: t.name)]


def task_spec(cfg: TaskConfig, tasks: dict[str, TaskConfig]) -> TaskSpec:
    """What the supervisor machine needs of a task's configuration."""
    deps = {d: cfg.condition_on(d, tasks[d]) for d in cfg.depends_on if d in tasks}
    probed = bool(cfg.health_url or cfg.health_check) or cfg.wants_port
    return TaskSpec(
        policy=PolicySpec(cfg.restart_policy, cfg.max_restarts, cfg.restart_backoff,
                          cfg.retry_after, cfg.oneshot, frozenset(cfg.success_exit_codes),
                          cfg.restart_delay),
        depends_on=deps,
        restart_with=frozenset(d for d in deps if cfg.restarts_with(d)),
        health=HealthSpec("self", cfg.health_interval, 1, 0.0) if readiness.self_judged(cfg)
        else HealthSpec("probe" if probed else "process", cfg.health_interval,
                        cfg.health_retries, cfg.health_grace),
        gated_by_probe=cfg.has_health_check, stop_grace=cfg.stop_grace_period)
