"""One project's supervisor: every task's state, the health verdicts, dependency gating and
recovery, decided from events with the clock passed in.

``Machine.handle(event, now, jitter)`` returns the actions to carry out. Per task it asks the
restart policy (``taskmuxd.policy``) for the transition, judges probe results
(``verdict``), and after every event looks again at what waits on dependencies:

- a start request (``start``, a restore) starts each task once its dependencies meet their
  conditions, and fails it when one cannot (it failed, or the request's timeout passed);
- a restart that is due while a dependency does not meet its condition is *held*
  (``waiting_for`` names what it waits for) and launched once it does;
- a ``fatal`` task whose dependency was seen not ready is restarted, with a fresh streak,
  once every dependency is ready again (``DEPENDENCY_READY``).

A stop climbs a ladder, one wake-up per rung: SIGINT, SIGTERM after ``stop_grace`` seconds,
SIGKILL after as many again, and ``KILL_WAIT`` seconds later the exit is recorded though no
report came. A stop of a task whose process was not reported yet waits ``REPORT_WAIT`` for it
first. A kill is SIGKILL at once, then the same last wait.

No clock, no I/O: ``taskmuxd.projects.project`` performs the actions and feeds back results.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field

from taskmuxctl.core import taskorder
from taskmuxd import policy
from taskmuxd.policy import Ev, State, TaskState
from taskmuxd.supervisor import messages as m
from taskmuxd.supervisor.taskspec import TaskSpec
from taskmuxd.supervisor.verdict import Judgement, judge, next_probe_in

WAITING = (TaskState.BACKOFF, TaskState.FATAL)  # states whose restart is scheduled
LIVE = (TaskState.STARTING, TaskState.RUNNING, TaskState.STOPPING)
KILL_WAIT = 5.0  # seconds after SIGKILL before an exit nobody reported is recorded
REPORT_WAIT = 15.0  # seconds a stop waits for the process of a run still starting
LADDER = ("SIGINT", "SIGTERM", "SIGKILL")


@dataclass
class TaskView:
    state: State = field(default_factory=State)
    health: Judgement = field(default_factory=Judgement)
    held: bool = False  # a due restart, waiting for its dependencies
    # Watched while FATAL with dependencies: whether one was seen not ready since.
    dependency_lost: bool | None = None
    settling: bool = False  # launched; its launch (after_start hook included) not over yet
    reported: bool = True  # the runner reported the current run's process
    rung: int | None = None  # while stopping: -1 waiting for the report, 0.. the ladder's


@dataclass
class StartRequest:
    tasks: tuple[str, ...]
    deadline: float
    results: dict[str, m.Outcome] = field(default_factory=dict)
    launching: set[str] = field(default_factory=set)


class Machine:
    def __init__(self, specs: Mapping[str, TaskSpec],
                 states: Mapping[str, State] | None = None) -> None:
        self.specs: dict[str, TaskSpec] = {}
        self.tasks: dict[str, TaskView] = {}
        self.requests: dict[int, StartRequest] = {}
        self._changed: set[str] | None = None
        self._held: set[str] = set()
        self._watched: set[str] = set()
        self.configure(specs, states or {})

    # -- configuration ----------------------------------------------------------------------

    def configure(self, specs: Mapping[str, TaskSpec],
                  states: Mapping[str, State] | None = None) -> list[m.Action]:
        """Take a new configuration (a config diff): tasks added start stopped (or from
        ``states``), tasks gone are forgotten with their wake-ups."""
        actions: list[m.Action] = []
        for name in list(self.tasks):
            if name not in specs:
                del self.tasks[name]
                actions.append(m.CancelWake(name))
        self.specs = dict(specs)
        for name in specs:
            if name not in self.tasks:
                self.tasks[name] = TaskView((states or {}).get(name, State()))
        # What ``_settle`` must look at: restarts held for dependencies, and fatal tasks
        # with dependencies (or whose ``dependency_lost`` is still set).
        self._held = {n for n, v in self.tasks.items() if v.held}
        self._watched = {n for n, v in self.tasks.items() if v.dependency_lost is not None
                         or (v.state.state == TaskState.FATAL and self.specs[n].depends_on)}
        self._order = taskorder.levels({n: list(s.depends_on) for n, s in self.specs.items()})
        return actions

    # -- queries ----------------------------------------------------------------------------

    def state(self, name: str) -> TaskState:
        return self.tasks[name].state.state

    def completed(self, name: str) -> bool:
        """A one-shot whose last run ended with one of its success codes."""
        spec, s = self.specs[name].policy, self.tasks[name].state
        return (spec.oneshot and s.state == TaskState.EXITED and s.last_exit_signal is None
                and (s.last_exit_code or 0) in spec.success_exit_codes)

    def ready(self, name: str) -> bool:
        """Running, and healthy where a probe gates it."""
        view = self.tasks[name]
        if view.state.state != TaskState.RUNNING:
            return False
        return bool(view.health.ok) if self.specs[name].gated_by_probe else True

    def meets(self, name: str, condition: str) -> bool | None:
        """Whether ``name`` meets a dependent's ``condition`` now: True, None (not yet), or
        False (not without someone starting it again: it failed, or was stopped)."""
        if condition == "completed_successfully":
            if self.completed(name):
                return True
        elif condition == "started":
            if self.state(name) == TaskState.RUNNING or self.completed(name):
                return True
        elif self.ready(name) or self.completed(name):
            return True
        s = self.state(name)
        if s == TaskState.FATAL or (s == TaskState.EXITED and not self.completed(name)):
            return False
        return None

    def waiting_for(self, name: str) -> list[str]:
        """The dependencies of ``name`` that do not meet their condition now."""
        return [d for d, cond in self.specs[name].depends_on.items()
                if d in self.tasks and self.meets(d, cond) is not True]

    def held(self, name: str) -> list[str]:
        """What a held restart of ``name`` waits for (empty when none is held)."""
        return self.waiting_for(name) if self.tasks[name].held else []

    def levels(self, names: list[str] | set[str] | None = None) -> list[list[str]]:
        """The start order (kept to ``names``): each level depends only on earlier ones."""
        return self._order if names is None else taskorder.within(self._order, names)

    def stop_levels(self, names: list[str] | set[str]) -> list[list[str]]:
        return taskorder.stop_levels(self._order, names)

    def restarted_with(self, names: list[str]) -> dict[str, str]:
        """The live dependents a restart of ``names`` restarts too, each with the task that
        brought it in (``restart = true`` on that dependency)."""
        got = taskorder.restarted_with({n: s.restart_with for n, s in self.specs.items()}, names)
        return {n: why for n, why in got.items() if self.state(n) in LIVE}

    # -- events -----------------------------------------------------------------------------

    def handle(self, event: m.Event, now: float, jitter: float = 0.0) -> list[m.Action]:
        if event.task and event.task not in self.tasks:
            return []
        out: list[m.Action] = []
        # The tasks whose state or settling this event changed (None: any may have): only
        # those of a start request's launches can have a new outcome.
        self._changed = None if isinstance(event, m.ConfigChanged) else set()
        if isinstance(event, m.Command):
            self._step(event.task, policy.Event(event.kind), now, jitter, out)
        elif isinstance(event, m.RunnerStarted):
            view = self.tasks[event.task]
            view.reported = True
            if view.state.state == TaskState.STARTING:
                self._step(event.task, policy.Event(Ev.LAUNCHED), now, jitter, out)
            elif view.state.state == TaskState.STOPPING and view.rung == -1:
                self._climb(event.task, 0, now, out)  # stopped while starting: now it can be
        elif isinstance(event, m.RunnerExited):
            self._step(event.task, policy.Event(Ev.EXITED, event.exit_code, event.exit_signal),
                       now, jitter, out)
        elif isinstance(event, m.LaunchFailed):
            self._step(event.task, policy.Event(Ev.LAUNCH_FAILED), now, jitter, out)
        elif isinstance(event, m.Aborted):
            self._step(event.task, policy.Event(Ev.ABORTED), now, jitter, out)
        elif isinstance(event, m.ProbeResult):
            self._probed(event, now, jitter, out)
        elif isinstance(event, m.TimerFired) and event.task:
            rung = self.tasks[event.task].rung
            if rung is not None:
                self._climb(event.task, rung + 1, now, out)
            else:
                self._due(event.task, now, jitter, out)
        elif isinstance(event, m.Adopted):
            self._adopted(event, now, jitter, out)
        elif isinstance(event, m.LaunchSettled):
            self.tasks[event.task].settling = False
            self._mark(event.task)
        elif isinstance(event, m.ConfigChanged):
            out.extend(self.configure(event.specs, event.states))
        elif isinstance(event, m.StartRequested):
            self.requests[event.request] = StartRequest(
                tuple(t for t in event.tasks if t in self.tasks), now + event.timeout)
            out.append(m.WakeAt("", now + event.timeout))
        self._settle(now, jitter, out)
        return out

    def _step(self, name: str, ev: policy.Event, now: float, jitter: float,
              out: list[m.Action]) -> None:
        view, spec = self.tasks[name], self.specs[name]
        before = view.state.state
        try:
            new, actions = policy.decide(spec.policy, view.state, ev, now, jitter)
        except policy.TransitionError:
            out.append(m.Refused(name, before.value, ev.kind.value))
            return
        view.state = new
        self._mark(name)
        if new.state == TaskState.FATAL and spec.depends_on:
            self._watched.add(name)
        if new.state not in WAITING:
            view.held = False
        if before == TaskState.STOPPING and new.state != TaskState.STOPPING:
            view.rung = None
            out.append(m.CancelWake(name))  # the ladder's next rung
        for a in actions:
            if isinstance(a, policy.Launch):
                view.health = Judgement()
                view.settling = True
                view.reported = False
                out.append(m.Launch(name))
            elif isinstance(a, policy.Stop):
                self._climb(name, -1 if not view.reported else 0, now, out)
            elif isinstance(a, policy.Kill):
                out.append(m.Signal(name, "SIGKILL", kill=True))
                if new.state == TaskState.STOPPING:
                    view.rung = len(LADDER)
                    out.append(m.WakeAt(name, now + KILL_WAIT))
            elif isinstance(a, policy.Schedule):
                out.append(m.WakeAt(name, a.at))
            elif isinstance(a, policy.CancelSchedule):
                out.append(m.CancelWake(name))
            elif isinstance(a, policy.Emit):
                out.append(m.Emit(name, a.event, dict(a.details)))
        if before == TaskState.STARTING and new.state == TaskState.RUNNING:
            self._begin_judging(name, now, out)
        elif before == TaskState.RUNNING and new.state != TaskState.RUNNING:
            out.append(m.StopProbing(name))
        if new.state not in (TaskState.RUNNING, TaskState.STOPPING):
            view.health = Judgement()  # a process that is gone is not judged
        if new.state not in (TaskState.STARTING, TaskState.RUNNING):
            view.settling = False
        out.append(m.Save(name))

    def _mark(self, name: str) -> None:
        if self._changed is not None:
            self._changed.add(name)

    def _climb(self, name: str, rung: int, now: float, out: list[m.Action]) -> None:
        """Take the stop ladder's rung ``rung`` (-1: wait for the process to be reported)."""
        view, grace = self.tasks[name], self.specs[name].stop_grace
        if view.state.state != TaskState.STOPPING:
            view.rung = None
            return
        view.rung = rung
        if rung < 0:
            out.append(m.WakeAt(name, now + REPORT_WAIT))
        elif rung < len(LADDER):
            out.append(m.Signal(name, LADDER[rung]))
            last = rung == len(LADDER) - 1
            out.append(m.WakeAt(name, now + (KILL_WAIT if last else grace)))
        else:  # no report after the last rung: record the exit ourselves
            view.rung = None
            out.append(m.RecordExit(name))

    def _begin_judging(self, name: str, now: float, out: list[m.Action]) -> None:
        view = self.tasks[name]
        kind = self.specs[name].health.kind
        if kind == "process":
            # The runner reports the exit at once: polling the process would add nothing.
            view.health = Judgement(True, 0)
        else:
            view.health = Judgement()
            if kind == "probe":
                out.append(m.Probe(name, now))

    def _probed(self, e: m.ProbeResult, now: float, jitter: float,
                out: list[m.Action]) -> None:
        view, spec = self.tasks[e.task], self.specs[e.task]
        if view.state.state != TaskState.RUNNING:
            return  # a probe that finished after the run
        view.health, outcome = judge(spec.health, view.health, e.ok, now,
                                     view.state.started_at)
        if outcome.event == "health_recovered":
            out.append(m.Emit(e.task, "health_recovered", {"method": e.method}))
        elif outcome.event == "health_check_failed":
            out.append(m.Emit(e.task, "health_check_failed", {
                "attempt": outcome.attempt, "method": e.method, "reason": e.reason}))
        if outcome.turned_unhealthy:
            self._step(e.task, policy.Event(Ev.UNHEALTHY), now, jitter, out)
        if view.state.state == TaskState.RUNNING and spec.health.kind == "probe":
            started = view.state.started_at
            out.append(m.Probe(e.task, now + next_probe_in(
                view.health.ok, spec.health.interval,
                None if started is None else now - started)))
        out.append(m.Save(e.task))

    def _due(self, name: str, now: float, jitter: float, out: list[m.Action]) -> None:
        """A scheduled restart is due. It waits while a dependency is not ready (a restore, a
        database blip): launched once what it needs is back, not before."""
        view = self.tasks[name]
        if view.state.state in WAITING and self.waiting_for(name):
            if not view.held:
                view.held = True
                self._held.add(name)
                out.append(m.Emit(name, "restart_held", {"waiting_for": self.waiting_for(name)}))
                out.append(m.Save(name))
            return
        self._step(name, policy.Event(Ev.TIMER), now, jitter, out)

    def _adopted(self, e: m.Adopted, now: float, jitter: float, out: list[m.Action]) -> None:
        """What a new daemon found for a task's record: every in-between state has one rule."""
        name, view = e.task, self.tasks[e.task]
        s = view.state.state
        if s in WAITING:
            if view.state.restart_at is not None:
                out.append(m.WakeAt(name, max(view.state.restart_at, now)))
            return
        if s not in LIVE:
            return
        if e.found == "running":
            if s == TaskState.STARTING:
                self._step(name, policy.Event(Ev.LAUNCHED), now, jitter, out)
            elif s == TaskState.RUNNING:
                self._begin_judging(name, now, out)
            else:  # STOPPING: carry the stop on, from the first rung
                view.reported = True
                self._climb(name, 0, now, out)
            out.append(m.Emit(name, "task_adopted", {}))
        elif e.found == "exited":
            self._step(name, policy.Event(Ev.EXITED, e.exit_code, e.exit_signal), now, jitter,
                       out)
        elif e.found == "launching" and s == TaskState.STARTING:
            out.append(m.FinishLaunch(name))
        else:  # gone, and nobody recorded how: as a SIGKILL
            self._step(name, policy.Event(Ev.EXITED, None, int(signal.SIGKILL)), now, jitter, out)

    def _settle(self, now: float, jitter: float, out: list[m.Action]) -> None:
        """After any event: move start requests on, launch held restarts whose dependencies
        are ready, and restart ``fatal`` tasks whose lost dependencies are back."""
        for rid in sorted(self.requests):
            self._move_request(rid, now, jitter, out)
        # Only the tasks that may need it: those held, and those fatal with dependencies
        # or watched since (the others' flags are already clear), in name order.
        for name in sorted(self._held):
            view = self.tasks[name]
            self._held.discard(name)
            if view.held:
                if view.state.state not in WAITING:
                    view.held = False
                elif not self.waiting_for(name):
                    view.held = False
                    self._step(name, policy.Event(Ev.TIMER), now, jitter, out)
                else:
                    self._held.add(name)
        for name in sorted(self._watched):
            view = self.tasks[name]
            if view.state.state != TaskState.FATAL or not self.specs[name].depends_on:
                view.dependency_lost = None
                self._watched.discard(name)
                continue
            lost = bool(view.dependency_lost)
            if self.waiting_for(name):
                view.dependency_lost = True
            elif lost and not view.state.manual_stop:
                view.dependency_lost = None
                self._step(name, policy.Event(Ev.DEPENDENCY_READY), now, jitter, out)
            else:
                view.dependency_lost = False


    # -- start requests ---------------------------------------------------------------------

    def _move_request(self, rid: int, now: float, jitter: float, out: list[m.Action]) -> None:
        """Decide what can be decided of a start request, until nothing more can; answer it
        once every task is decided."""
        req = self.requests[rid]
        changed = self._changed
        moved = True
        while moved:
            moved = False
            for name in req.tasks:
                if name in req.results:
                    continue
                if name in req.launching:
                    if changed is not None and name not in changed:
                        continue  # as undecided as when last looked at
                    outcome = self._launch_outcome(name)
                else:
                    outcome, ready = self._gate(req, name, now)
                    if ready:
                        outcome = self._begin(req, name, now, jitter, out)
                if outcome is not None:
                    req.results[name] = outcome
                    moved = True
        if len(req.results) == len(req.tasks):
            del self.requests[rid]
            out.append(m.Answer(rid, tuple(req.results[n] for n in req.tasks)))

    def _gate(self, req: StartRequest, name: str, now: float) -> tuple[m.Outcome | None, bool]:
        """(a failed outcome, False) when a dependency cannot meet its condition, or the
        request ran out of time waiting for one; (None, False) while it may still; (None,
        True) once every dependency meets its condition."""
        for dep, cond in self.specs[name].depends_on.items():
            if dep not in self.tasks:
                continue
            words = cond.replace("_", " ")
            mine = req.results.get(dep)
            if dep in req.tasks and mine is None:
                verdict: bool | None = None  # started by this request: not judged on an old run
            elif mine is not None and mine.action == "failed":
                verdict = False
            else:
                verdict = self.meets(dep, cond)
            view = self.tasks[dep]
            if verdict is False:
                return m.Outcome(name, "failed", "dependency",
                                 f"its dependency {dep} failed (waiting for it to be {words}; "
                                 f"state {view.state.state.value})"), False
            if verdict is None:
                if now >= req.deadline:
                    return m.Outcome(name, "failed", "dependency",
                                     f"{dep} was not {words} in time (state "
                                     f"{view.state.state.value}, healthy {view.health.ok}); "
                                     f"see `taskmux logs {dep}`"), False
                return None, False
        return None, True

    def _begin(self, req: StartRequest, name: str, now: float, jitter: float,
               out: list[m.Action]) -> m.Outcome | None:
        """Every dependency is there: start the task (unless it runs already)."""
        if self.state(name) in (TaskState.STARTING, TaskState.RUNNING):
            return m.Outcome(name, "already_running")
        req.launching.add(name)
        self._step(name, policy.Event(Ev.START), now, jitter, out)
        return self._launch_outcome(name)

    def _launch_outcome(self, name: str) -> m.Outcome | None:
        view = self.tasks[name]
        s = view.state.state
        if s in (TaskState.STARTING, TaskState.STOPPING) or (
                s == TaskState.RUNNING and view.settling):
            return None
        if s == TaskState.RUNNING or self.completed(name):
            return m.Outcome(name, "started")
        return m.Outcome(name, "failed", "launch", f"state {s.value}")
