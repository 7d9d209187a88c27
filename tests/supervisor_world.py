"""A fake world for the supervisor machine: a fake clock, and tasks that do what the test says
when launched. Carries out the machine's actions the way the daemon would, in milliseconds."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from taskmuxd.policy import Ev, State, TaskState
from taskmuxd.supervisor import messages as m
from taskmuxd.supervisor.machine import Machine
from taskmuxd.supervisor.taskspec import TaskSpec

# What a launched task does: "run" (reports its process), "crash" (runs, then exits 1),
# "complete" (runs, then exits 0), "hang" (never reports), or an exit code to exit with.
Behaviour = str | int


class World:
    def __init__(self, specs: Mapping[str, TaskSpec],
                 states: Mapping[str, State] | None = None) -> None:
        self.m = Machine(specs, states)
        self.now = 1000.0
        self.wakes: dict[str, float] = {}
        self.probes: dict[str, float] = {}
        self.behaviour: dict[str, Behaviour] = {}
        self.healthy: dict[str, bool] = {}  # a probe's answer per task (default: passes)
        self.launches: list[tuple[float, str]] = []
        self.signals: list[tuple[float, m.Signal]] = []
        self.recorded: list[tuple[float, str]] = []  # exits recorded though none was reported
        self.emitted: list[tuple[str, str, dict[str, object]]] = []
        self.finishing: list[str] = []
        self.answers: dict[int, dict[str, m.Outcome]] = {}
        self.deadlines: list[float] = []
        self._requests = 0
        self.obey_signals = True  # a signalled task exits at once (SIGINT; SIGKILL for a kill)
        self.alive: set[str] = set()  # tasks whose process runs
        self._queue: list[m.Event] = []

    # -- driving ----------------------------------------------------------------------------

    def feed(self, event: m.Event) -> None:
        self._queue.append(event)
        while self._queue:
            event = self._queue.pop(0)
            if isinstance(event, m.RunnerStarted) or (
                    isinstance(event, m.Adopted) and event.found == "running"):
                self.alive.add(event.task)
            elif isinstance(event, m.RunnerExited):
                self.alive.discard(event.task)
            self._apply(self.m.handle(event, self.now))

    def command(self, task: str, kind: Ev) -> None:
        self.feed(m.Command(task, kind))

    def start(self, *tasks: str) -> None:
        for t in tasks:
            self.command(t, Ev.START)

    def request(self, *tasks: str, timeout: float = 120.0) -> int:
        """``taskmux start`` of ``tasks``: gated on dependencies, answered in ``answers``."""
        self._requests += 1
        self.feed(m.StartRequested(self._requests, tasks, timeout))
        return self._requests

    def outcome(self, request: int) -> dict[str, tuple[str, str]] | None:
        got = self.answers.get(request)
        return None if got is None else {t: (o.action, o.error) for t, o in got.items()}

    def exit(self, task: str, code: int | None = 0, sig: int | None = None) -> None:
        self.feed(m.RunnerExited(task, code, sig))

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass, firing wake-ups and probes in time order."""
        end = self.now + seconds
        while True:
            due = [(at, 0, t) for t, at in self.wakes.items()] + [
                (at, 1, t) for t, at in self.probes.items()] + [
                (at, 2, "") for at in self.deadlines]
            due = [d for d in due if d[0] <= end]
            if not due:
                break
            at, kind, task = min(due)
            self.now = max(self.now, at)
            if kind == 2:
                self.deadlines.remove(at)
                self.feed(m.TimerFired(""))
            elif kind == 0:
                del self.wakes[task]
                self.feed(m.TimerFired(task))
            else:
                del self.probes[task]
                ok = self.healthy.get(task, True)
                self.feed(m.ProbeResult(task, ok, "fine" if ok else "refused", "tcp"))
        self.now = end

    def until(self, cond: Callable[[], bool], limit: float = 3600.0, step: float = 0.1) -> float:
        """Advance in steps until ``cond`` holds; the fake seconds it took."""
        began = self.now
        while not cond():
            assert self.now - began < limit, f"not within {limit}s of fake time"
            self.advance(step)
        return self.now - began

    # -- what the daemon would do -----------------------------------------------------------

    def _apply(self, actions: list[m.Action]) -> None:
        for a in actions:
            if isinstance(a, m.Answer):
                self.answers[a.request] = {o.task: o for o in a.outcomes}
            elif isinstance(a, m.WakeAt) and not a.task:
                self.deadlines.append(a.at)
            elif isinstance(a, m.WakeAt):
                self.wakes[a.task] = a.at
            elif isinstance(a, m.CancelWake):
                self.wakes.pop(a.task, None)
            elif isinstance(a, m.Probe):
                self.probes[a.task] = a.at
            elif isinstance(a, m.StopProbing):
                self.probes.pop(a.task, None)
            elif isinstance(a, m.Signal):
                self.signals.append((self.now, a))
                if self.obey_signals and a.task in self.alive:
                    self._queue.append(m.RunnerExited(a.task, None, 9 if a.kill else 2))
            elif isinstance(a, m.RecordExit):
                self.recorded.append((self.now, a.task))
                self._queue.append(m.RunnerExited(a.task, None, 9))
            elif isinstance(a, m.FinishLaunch):
                self.finishing.append(a.task)
            elif isinstance(a, m.Emit):
                self.emitted.append((a.task, a.event, a.details))
            elif isinstance(a, m.Launch):
                self.launches.append((self.now, a.task))
                self._launched(a.task)

    def _launched(self, task: str) -> None:
        b = self.behaviour.get(task, "run")
        if b == "hang":
            return
        self._queue.append(m.RunnerStarted(task))
        # One that exits at once does so before its launch is over (its after_start hook).
        if b == "crash":
            self._queue.append(m.RunnerExited(task, 1))
        elif b == "complete":
            self._queue.append(m.RunnerExited(task, 0))
        elif isinstance(b, int):
            self._queue.append(m.RunnerExited(task, b))
        self._queue.append(m.LaunchSettled(task))

    # -- looking ----------------------------------------------------------------------------

    def state(self, task: str) -> TaskState:
        return self.m.state(task)

    def events(self, task: str) -> list[str]:
        return [e for t, e, _ in self.emitted if t == task]

    def launch_times(self, task: str) -> list[float]:
        return [round(at - 1000.0, 3) for at, t in self.launches if t == task]
