"""The task state machine and the restart policy: pure, table-driven, the clock passed in.

``decide(spec, state, event, now, jitter)`` returns the new state and the actions to take; it
does no I/O and reads no clock. The supervisor performs the actions and feeds what happens
back as events. Every allowed (state, event) pair is in ``TRANSITIONS``; any other pair is a
bug, reported with both names.

Vocabulary from supervisord, with a better backoff: a failed run is retried after
``backoff ** attempt`` seconds (capped at 60, plus up to 10% jitter); the attempt count
resets once a run has stayed healthy for 60 s; after ``max_restarts`` retries the task is
FATAL, and is tried again every ``retry_after`` seconds (``0``: it stays down until someone
starts it). A FATAL task is also tried again, with a fresh streak, when a dependency that was
not ready is ready again (DEPENDENCY_READY, fed by the supervisor). A stop or kill by the
user blocks every restart until the user starts or restarts the task.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

BACKOFF_CAP = 60.0
RESET_AFTER_HEALTHY = 60.0
RETRY_AFTER_DEFAULT = 300.0
JITTER_FRACTION = 0.1


class TaskState(enum.StrEnum):
    STOPPED = "stopped"  # not running: never started, or stopped on request
    STARTING = "starting"  # launched; the runner has not reported the process yet
    RUNNING = "running"
    STOPPING = "stopping"  # a stop is in progress (C-c, then SIGTERM, then SIGKILL)
    BACKOFF = "backoff"  # exited or failed; a restart is scheduled
    EXITED = "exited"  # exited, and the policy does not restart it
    FATAL = "fatal"  # max_restarts reached: tried again only every retry_after seconds


class Ev(enum.StrEnum):
    START = "start"  # the user (or auto_start) asks for it to run
    STOP = "stop"  # the user stops it
    KILL = "kill"  # the user kills it (SIGKILL, window destroyed)
    RESTART = "restart"  # the user restarts it
    LAUNCHED = "launched"  # the runner reports the process started
    LAUNCH_FAILED = "launch_failed"  # the launch itself failed (tmux error, runner silent)
    EXITED = "exited"  # the process exited (code or signal)
    UNHEALTHY = "unhealthy"  # health_retries consecutive probes failed
    TIMER = "timer"  # a scheduled restart is due
    ABORTED = "aborted"  # a before_start hook failed: the start is called off, not retried
    DEPENDENCY_READY = "dependency_ready"  # a dependency that was not ready is ready again


class Cause(enum.StrEnum):
    """Why a STOPPING task is stopping: decides what its exit leads to."""

    USER_STOP = "user_stop"
    USER_KILL = "user_kill"
    USER_RESTART = "user_restart"
    UNHEALTHY = "unhealthy"


RestartPolicy = Literal["no", "on-failure", "always"]


@dataclass(frozen=True)
class PolicySpec:
    """The task's restart settings (from taskmux.toml)."""

    restart_policy: RestartPolicy = "on-failure"
    max_restarts: int = 5
    restart_backoff: float = 2.0
    retry_after: float = RETRY_AFTER_DEFAULT  # seconds between tries once FATAL; 0: never
    oneshot: bool = False  # done (EXITED) once it exits with a success code
    success_exit_codes: frozenset[int] = frozenset({0})
    restart_delay: float = 1.0  # the first restart's wait; restart n > 1: backoff ** (n-1)


@dataclass(frozen=True)
class Event:
    kind: Ev
    exit_code: int | None = None
    exit_signal: int | None = None


@dataclass(frozen=True)
class State:
    state: TaskState = TaskState.STOPPED
    attempt: int = 0  # restarts made in the current streak of failures
    manual_stop: bool = False
    cause: Cause | None = None  # set while STOPPING
    started_at: float | None = None  # monotonic seconds, when the current run began
    unhealthy_at: float | None = None  # last time the run was judged unhealthy
    restart_at: float | None = None  # when BACKOFF ends, or when a FATAL task is tried again
    last_exit_code: int | None = None
    last_exit_signal: int | None = None
    restarts: int = 0  # automatic restarts since the user last started it


@dataclass(frozen=True)
class Launch:
    """Start the task's process (a new run)."""


@dataclass(frozen=True)
class Stop:
    """Stop the running process: C-c, SIGTERM after the grace period, then SIGKILL."""


@dataclass(frozen=True)
class Kill:
    """SIGKILL the process group now and destroy the window."""


@dataclass(frozen=True)
class Schedule:
    at: float


@dataclass(frozen=True)
class CancelSchedule:
    pass


@dataclass(frozen=True)
class Emit:
    event: str
    details: dict[str, object] = field(default_factory=dict)


Action = Launch | Stop | Kill | Schedule | CancelSchedule | Emit


class TransitionError(Exception):
    """A (state, event) pair the table does not allow: a bug in the caller."""

    def __init__(self, state: TaskState, event: Ev) -> None:
        super().__init__(f"no transition from {state.value!r} on {event.value!r}")
        self.state = state
        self.event = event


def backoff_delay(spec: PolicySpec, attempt: int, jitter: float = 0.0) -> float:
    """Seconds before restart number ``attempt + 1``: ``restart_delay`` the first time (0: at
    once), then backoff ** attempt; capped, jittered.

    ``jitter`` in [0, 1) spreads restarts of many tasks so they do not all land at once.
    """
    base = min(spec.restart_delay if attempt == 0 else spec.restart_backoff ** attempt,
               BACKOFF_CAP)
    return base * (1.0 + JITTER_FRACTION * min(max(jitter, 0.0), 1.0))


def _scheduled(s: State) -> bool:
    """A restart is scheduled: in BACKOFF, or a FATAL task's next try."""
    return s.state == TaskState.BACKOFF or (s.state == TaskState.FATAL
                                            and s.restart_at is not None)


def _healthy_for(s: State, now: float) -> float:
    if s.started_at is None:
        return 0.0
    since = s.started_at if s.unhealthy_at is None else max(s.started_at, s.unhealthy_at)
    return max(now - since, 0.0)


def _exit_details(e: Event) -> dict[str, object]:
    return {"exit_code": e.exit_code, "signal": e.exit_signal}


def _after_failure(spec: PolicySpec, s: State, now: float, jitter: float, failed: bool,
                   reason: str, emits: list[Action]) -> tuple[State, list[Action]]:
    """The run ended; decide between a restart after backoff, EXITED and FATAL."""
    wants = spec.restart_policy == "always" or (spec.restart_policy == "on-failure" and failed)
    attempt = 0 if _healthy_for(s, now) >= RESET_AFTER_HEALTHY else s.attempt
    base = replace(s, started_at=None, unhealthy_at=None, cause=None, attempt=attempt)
    if not wants:
        return replace(base, state=TaskState.EXITED), emits
    if attempt >= spec.max_restarts:
        details: dict[str, object] = {"max_restarts": spec.max_restarts, "reason": reason,
                                      "retry_after": spec.retry_after or None}
        if spec.retry_after <= 0:
            return replace(base, state=TaskState.FATAL, restart_at=None), [
                *emits, Emit("max_restarts_reached", details)]
        at = now + spec.retry_after
        return replace(base, state=TaskState.FATAL, restart_at=at), [
            *emits, Emit("max_restarts_reached", details), Schedule(at)]
    delay = backoff_delay(spec, attempt, jitter)
    return replace(base, state=TaskState.BACKOFF, attempt=attempt + 1, restart_at=now + delay,
                   restarts=s.restarts + 1), [
        *emits, Emit("auto_restart", {"reason": reason, "attempt": attempt + 1,
                                      "delay": round(delay, 3)}),
        Schedule(now + delay)]


Handler = Callable[[PolicySpec, State, Event, float, float], tuple[State, list[Action]]]


def _start(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[State,
                                                                               list[Action]]:
    extra: list[Action] = [CancelSchedule()] if _scheduled(s) else []
    return replace(s, state=TaskState.STARTING, manual_stop=False, attempt=0, restarts=0,
                   cause=None, restart_at=None, started_at=None, unhealthy_at=None), [
        *extra, Launch()]


def _noop(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[State,
                                                                              list[Action]]:
    return s, []


def _stop(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[State,
                                                                              list[Action]]:
    return replace(s, state=TaskState.STOPPING, manual_stop=True, cause=Cause.USER_STOP), [
        Stop()]


def _stop_idle(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[State,
                                                                                   list[Action]]:
    extra: list[Action] = [CancelSchedule()] if _scheduled(s) else []
    return replace(s, state=TaskState.STOPPED, manual_stop=True, restart_at=None), extra


def _stop_again(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[
        State, list[Action]]:
    """Stop while stopping: a restart or health restart in progress becomes a plain stop."""
    return replace(s, manual_stop=True, cause=Cause.USER_STOP), []


def _kill(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[State,
                                                                              list[Action]]:
    extra: list[Action] = [CancelSchedule()] if _scheduled(s) else []
    live = s.state in (TaskState.STARTING, TaskState.RUNNING, TaskState.STOPPING)
    new_state = TaskState.STOPPING if live else TaskState.STOPPED
    return replace(s, state=new_state, manual_stop=True, restart_at=None,
                   cause=Cause.USER_KILL if live else None), [*extra, Kill()]


def _restart_live(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[
        State, list[Action]]:
    already = s.state == TaskState.STOPPING
    return replace(s, state=TaskState.STOPPING, manual_stop=False, attempt=0, restarts=0,
                   cause=Cause.USER_RESTART), [] if already else [Stop()]


def _launched(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[
        State, list[Action]]:
    return replace(s, state=TaskState.RUNNING, started_at=now, unhealthy_at=None), []


def _launch_failed(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[
        State, list[Action]]:
    return _after_failure(spec, replace(s, started_at=None), now, j, True, "launch_failed",
                          [Emit("task_exited", {"reason": "launch_failed"})])


def _exited(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[
        State, list[Action]]:
    failed = e.exit_signal is not None or (e.exit_code or 0) not in spec.success_exit_codes
    s = replace(s, last_exit_code=e.exit_code, last_exit_signal=e.exit_signal)
    if spec.oneshot and not failed:  # done: a one-shot is not restarted after success
        return replace(s, state=TaskState.EXITED, started_at=None, unhealthy_at=None,
                       cause=None, attempt=0), [
            Emit("task_exited", _exit_details(e)), Emit("task_completed", _exit_details(e))]
    reason = "crashed" if failed else "exited"
    return _after_failure(spec, s, now, j, failed, reason,
                          [Emit("task_exited", _exit_details(e))])


def _exited_while_stopping(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[
        State, list[Action]]:
    s = replace(s, last_exit_code=e.exit_code, last_exit_signal=e.exit_signal,
                started_at=s.started_at)
    if s.cause == Cause.USER_RESTART:
        return replace(s, state=TaskState.STARTING, cause=None, started_at=None,
                       unhealthy_at=None), [Launch()]
    if s.cause == Cause.UNHEALTHY:
        return _after_failure(spec, s, now, j, True, "unhealthy",
                              [Emit("task_exited", _exit_details(e))])
    return replace(s, state=TaskState.STOPPED, cause=None, started_at=None,
                   unhealthy_at=None), []


def _aborted(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[
        State, list[Action]]:
    return replace(s, state=TaskState.EXITED, started_at=None, cause=None), []


def _unhealthy(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[
        State, list[Action]]:
    s = replace(s, unhealthy_at=now)
    if spec.restart_policy == "no" or s.manual_stop:
        return s, []
    return replace(s, state=TaskState.STOPPING, cause=Cause.UNHEALTHY), [Stop()]


def _fatal_timer(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[
        State, list[Action]]:
    """A FATAL task's slow retry. The streak is not reset: a failure of this try is FATAL
    again at once, with the next try ``retry_after`` later; a run that stays healthy for
    RESET_AFTER_HEALTHY resets it as any run does."""
    if s.restart_at is None or s.manual_stop:
        return s, []  # a timer left from before a stop, or retries are off
    if now < s.restart_at:
        return s, [Schedule(s.restart_at)]
    return replace(s, state=TaskState.STARTING, restart_at=None, restarts=s.restarts + 1), [
        Emit("fatal_retry", {"attempt": s.attempt, "retry_after": spec.retry_after}),
        Launch()]


def _dependency_ready(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[
        State, list[Action]]:
    """FATAL while a dependency was down, and it is back: try again with a fresh streak."""
    if s.manual_stop:
        return s, []
    extra: list[Action] = [CancelSchedule()] if s.restart_at is not None else []
    return replace(s, state=TaskState.STARTING, attempt=0, restart_at=None, cause=None,
                   started_at=None, unhealthy_at=None, restarts=s.restarts + 1), [
        *extra, Emit("dependency_recovered", {}), Launch()]


def _timer(spec: PolicySpec, s: State, e: Event, now: float, j: float) -> tuple[State,
                                                                               list[Action]]:
    if s.restart_at is not None and now < s.restart_at:
        return s, [Schedule(s.restart_at)]  # woke early: wait the rest
    return replace(s, state=TaskState.STARTING, restart_at=None), [Launch()]


IDLE = (TaskState.STOPPED, TaskState.EXITED, TaskState.FATAL)
LIVE = (TaskState.STARTING, TaskState.RUNNING)
SAME = None  # in a target list: the state the task was in


@dataclass(frozen=True)
class Transition:
    """One row of the table: the handler, and every state it may lead to (``SAME``: stays)."""

    handler: Handler
    targets: tuple[TaskState | None, ...]


TRANSITIONS: dict[tuple[TaskState, Ev], Transition] = {}


def _on(states: tuple[TaskState, ...], kinds: tuple[Ev, ...], handler: Handler,
        *targets: TaskState | None) -> None:
    for st in states:
        for kind in kinds:
            TRANSITIONS[(st, kind)] = Transition(handler, targets or (SAME,))


# Where ``_after_failure`` may lead.
AFTER_FAILURE = (TaskState.BACKOFF, TaskState.EXITED, TaskState.FATAL)

_on(IDLE, (Ev.START, Ev.RESTART), _start, TaskState.STARTING)
_on(IDLE, (Ev.STOP,), _stop_idle, TaskState.STOPPED)
_on(IDLE, (Ev.KILL,), _kill, TaskState.STOPPED)
# Late reports: an exit seen already, a probe that finished after the process, a timer that
# fired after a stop, a launch that was called off.
_on(IDLE, (Ev.EXITED, Ev.UNHEALTHY, Ev.TIMER, Ev.LAUNCH_FAILED, Ev.ABORTED, Ev.DEPENDENCY_READY),
    _noop)
_on(LIVE, (Ev.START, Ev.TIMER), _noop)  # already running
_on(LIVE, (Ev.STOP,), _stop, TaskState.STOPPING)
_on(LIVE, (Ev.KILL,), _kill, TaskState.STOPPING)
_on(LIVE, (Ev.RESTART,), _restart_live, TaskState.STOPPING)
_on(LIVE, (Ev.EXITED,), _exited, *AFTER_FAILURE)
# Running, or a restart already on its way.
_on((*LIVE, TaskState.STOPPING, TaskState.BACKOFF), (Ev.DEPENDENCY_READY,), _noop)
_on((TaskState.FATAL,), (Ev.TIMER,), _fatal_timer, SAME, TaskState.STARTING)
_on((TaskState.FATAL,), (Ev.DEPENDENCY_READY,), _dependency_ready, SAME, TaskState.STARTING)
_on((TaskState.STARTING,), (Ev.LAUNCHED,), _launched, TaskState.RUNNING)
_on((TaskState.STARTING,), (Ev.LAUNCH_FAILED,), _launch_failed, *AFTER_FAILURE)
_on((TaskState.STARTING,), (Ev.ABORTED,), _aborted, TaskState.EXITED)
_on((TaskState.STARTING,), (Ev.UNHEALTHY,), _noop)  # not judged before it runs
_on((TaskState.RUNNING,), (Ev.LAUNCHED,), _noop)  # a repeated report
_on((TaskState.RUNNING,), (Ev.UNHEALTHY,), _unhealthy, SAME, TaskState.STOPPING)
# Start again once stopped.
_on((TaskState.STOPPING,), (Ev.START, Ev.RESTART), _restart_live, TaskState.STOPPING)
_on((TaskState.STOPPING,), (Ev.STOP,), _stop_again, TaskState.STOPPING)
_on((TaskState.STOPPING,), (Ev.KILL,), _kill, TaskState.STOPPING)
_on((TaskState.STOPPING,), (Ev.EXITED, Ev.LAUNCH_FAILED, Ev.ABORTED), _exited_while_stopping,
    TaskState.STARTING, TaskState.STOPPED, *AFTER_FAILURE)
_on((TaskState.STOPPING,), (Ev.LAUNCHED, Ev.UNHEALTHY, Ev.TIMER), _noop)
_on((TaskState.BACKOFF,), (Ev.START, Ev.RESTART), _start, TaskState.STARTING)
_on((TaskState.BACKOFF,), (Ev.STOP,), _stop_idle, TaskState.STOPPED)
_on((TaskState.BACKOFF,), (Ev.KILL,), _kill, TaskState.STOPPED)
_on((TaskState.BACKOFF,), (Ev.TIMER,), _timer, SAME, TaskState.STARTING)
_on((TaskState.BACKOFF,), (Ev.EXITED, Ev.UNHEALTHY, Ev.LAUNCH_FAILED, Ev.ABORTED), _noop)


def targets_of(state: TaskState, kind: Ev) -> tuple[TaskState, ...]:
    """The states (state, kind) may lead to, ``SAME`` resolved."""
    return tuple(state if t is SAME else t for t in TRANSITIONS[(state, kind)].targets)


def decide(spec: PolicySpec, state: State, event: Event, now: float,
           jitter: float = 0.0) -> tuple[State, list[Action]]:
    """The next state and the actions to carry out. ``now`` is monotonic seconds."""
    row = TRANSITIONS.get((state.state, event.kind))
    if row is None:
        raise TransitionError(state.state, event.kind)
    return row.handler(spec, state, event, now, jitter)
