"""The restart policy as a pure state machine, driven with a fake clock (milliseconds)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from taskmuxd.policy import (
    BACKOFF_CAP,
    TRANSITIONS,
    CancelSchedule,
    Emit,
    Ev,
    Event,
    Kill,
    Launch,
    PolicySpec,
    Schedule,
    State,
    Stop,
    TaskState,
    TransitionError,
    backoff_delay,
    decide,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class Task:
    """A task under the policy, with a fake clock."""

    def __init__(self, policy: str = "on-failure", max_restarts: int = 5,
                 backoff: float = 2.0, retry_after: float = 300.0) -> None:
        self.spec = PolicySpec(policy, max_restarts, backoff, retry_after)
        self.state = State()
        self.clock = Clock()
        self.actions: list[object] = []

    def feed(self, kind: Ev, code: int | None = None, sig: int | None = None) -> list[object]:
        self.state, actions = decide(self.spec, self.state, Event(kind, code, sig),
                                     self.clock.now)
        self.actions += actions
        return actions

    def run(self) -> None:
        self.feed(Ev.START)
        self.feed(Ev.LAUNCHED)
        assert self.state.state == TaskState.RUNNING

    def emitted(self) -> list[str]:
        return [a.event for a in self.actions if isinstance(a, Emit)]


def test_every_pair_is_in_the_table_or_refused_by_name() -> None:
    for state in TaskState:
        for kind in Ev:
            if (state, kind) in TRANSITIONS:
                decide(PolicySpec(), State(state=state), Event(kind), 0.0)
            else:
                with pytest.raises(TransitionError) as info:
                    decide(PolicySpec(), State(state=state), Event(kind), 0.0)
                assert state.value in str(info.value) and kind.value in str(info.value)


EXITS = [(0, None), (1, None), (137, None), (None, 9), (None, 15)]


@pytest.mark.parametrize("policy", ["no", "on-failure", "always"])
@pytest.mark.parametrize(("code", "sig"), EXITS)
def test_policy_and_exit_combinations(policy: str, code: int | None, sig: int | None) -> None:
    t = Task(policy)
    t.run()
    actions = t.feed(Ev.EXITED, code, sig)
    failed = (code or 0) != 0 or sig is not None
    restarts = policy == "always" or (policy == "on-failure" and failed)
    if restarts:
        assert t.state.state == TaskState.BACKOFF
        assert any(isinstance(a, Schedule) for a in actions)
        assert "auto_restart" in t.emitted()
    else:
        assert t.state.state == TaskState.EXITED
        assert not any(isinstance(a, Schedule | Launch) for a in actions)
    assert "task_exited" in t.emitted()
    assert (t.state.last_exit_code, t.state.last_exit_signal) == (code, sig)


def test_backoff_grows_and_is_capped() -> None:
    t = Task("always", max_restarts=100, backoff=2.0)
    t.run()
    delays = []
    for _ in range(9):
        actions = t.feed(Ev.EXITED, 1)
        at = next(a.at for a in actions if isinstance(a, Schedule))
        delays.append(at - t.clock.now)
        t.clock.now = at
        assert t.feed(Ev.TIMER) == [Launch()]
        t.feed(Ev.LAUNCHED)
        t.clock.advance(0.001)
    assert delays == [1, 2, 4, 8, 16, 32, BACKOFF_CAP, BACKOFF_CAP, BACKOFF_CAP]


def test_jitter_adds_at_most_a_tenth() -> None:
    spec = PolicySpec(restart_backoff=3.0)
    assert backoff_delay(spec, 2, 0.0) == 9.0
    assert 9.0 < backoff_delay(spec, 2, 0.99) < 9.9 + 1e-9


def test_timer_that_fires_early_waits_the_rest() -> None:
    t = Task()
    t.run()
    t.feed(Ev.EXITED, 1)
    due = t.state.restart_at
    assert due is not None
    t.clock.advance(0.2)
    assert t.feed(Ev.TIMER) == [Schedule(due)]
    assert t.state.state == TaskState.BACKOFF


def test_attempts_reset_after_sixty_seconds_healthy() -> None:
    t = Task(max_restarts=3)
    t.run()
    for _ in range(2):
        t.feed(Ev.EXITED, 1)
        t.clock.now = t.state.restart_at or 0
        t.feed(Ev.TIMER)
        t.feed(Ev.LAUNCHED)
    assert t.state.attempt == 2
    t.clock.advance(60.5)  # this run stayed up and healthy long enough
    actions = t.feed(Ev.EXITED, 1)
    assert t.state.attempt == 1
    assert next(a.at for a in actions if isinstance(a, Schedule)) - t.clock.now == 1.0


def test_an_unhealthy_spell_restarts_the_healthy_clock() -> None:
    t = Task("no")  # "no" keeps it running while unhealthy: only the clock matters here
    t.run()
    t.clock.advance(50)
    t.feed(Ev.UNHEALTHY)
    assert t.state.state == TaskState.RUNNING and t.state.unhealthy_at == t.clock.now
    t.spec = PolicySpec("always", 5, 2.0)
    t.state = State(**{**vars(t.state), "attempt": 3})
    t.clock.advance(20)  # 70 s up, but only 20 s since it was unhealthy
    t.feed(Ev.EXITED, 1)
    assert t.state.attempt == 4


def test_max_restarts_ends_in_fatal_until_started() -> None:
    t = Task(max_restarts=2, retry_after=0)
    t.run()
    for _ in range(2):
        t.feed(Ev.EXITED, 1)
        t.clock.now = t.state.restart_at or 0
        t.feed(Ev.TIMER)
        t.feed(Ev.LAUNCHED)
    actions = t.feed(Ev.EXITED, 1)
    assert t.state.state == TaskState.FATAL
    assert "max_restarts_reached" in [a.event for a in actions if isinstance(a, Emit)]
    assert not any(isinstance(a, Schedule) for a in actions)
    assert t.feed(Ev.TIMER) == []  # nothing brings it back by itself
    assert t.feed(Ev.START) == [Launch()]
    assert (t.state.state, t.state.attempt, t.state.restarts) == (TaskState.STARTING, 0, 0)


def test_five_minutes_of_crash_loop_in_milliseconds() -> None:
    t = Task("always", max_restarts=1000, backoff=2.0)
    t.run()
    start = t.clock.now
    restarts = 0
    while t.clock.now - start < 300:
        t.clock.advance(0.5)  # each run lives half a second
        t.feed(Ev.EXITED, 1)
        t.clock.now = t.state.restart_at or 0
        t.feed(Ev.TIMER)
        t.feed(Ev.LAUNCHED)
        restarts += 1
    # 1+2+4+8+16+32 = 63 s, then 60 s apart: about 10 restarts in five minutes, not hundreds.
    assert 9 <= restarts <= 11
    assert t.state.restarts == restarts


def test_manual_stop_beats_always() -> None:
    t = Task("always")
    t.run()
    assert t.feed(Ev.STOP) == [Stop()]
    assert t.state.manual_stop and t.state.state == TaskState.STOPPING
    assert t.feed(Ev.EXITED, None, 2) == []
    assert t.state.state == TaskState.STOPPED
    assert t.feed(Ev.TIMER) == [] and t.feed(Ev.UNHEALTHY) == []
    assert t.state.state == TaskState.STOPPED


def test_stop_during_backoff_cancels_the_restart() -> None:
    t = Task("always")
    t.run()
    t.feed(Ev.EXITED, 1)
    assert t.feed(Ev.STOP) == [CancelSchedule()]
    assert t.state.state == TaskState.STOPPED and t.state.manual_stop
    t.clock.advance(100)
    assert t.feed(Ev.TIMER) == []


def test_kill_from_running_and_from_idle() -> None:
    t = Task("always")
    t.run()
    assert t.feed(Ev.KILL) == [Kill()]
    t.feed(Ev.EXITED, None, 9)
    assert t.state.state == TaskState.STOPPED and t.state.manual_stop
    idle = Task()
    assert idle.feed(Ev.KILL) == [Kill()] and idle.state.state == TaskState.STOPPED


def test_restart_clears_manual_stop_and_relaunches() -> None:
    t = Task()
    t.run()
    t.feed(Ev.STOP)
    t.feed(Ev.EXITED, 0)
    assert t.feed(Ev.RESTART) == [Launch()]
    assert not t.state.manual_stop
    t.feed(Ev.LAUNCHED)
    assert t.feed(Ev.RESTART) == [Stop()]
    assert t.feed(Ev.EXITED, None, 2) == [Launch()]
    assert t.state.state == TaskState.STARTING


def test_start_while_stopping_starts_again_after() -> None:
    t = Task()
    t.run()
    t.feed(Ev.STOP)
    assert t.feed(Ev.START) == []
    assert not t.state.manual_stop
    assert t.feed(Ev.EXITED, None, 2) == [Launch()]


@pytest.mark.parametrize("policy", ["on-failure", "always"])
def test_unhealthy_restarts_with_backoff(policy: str) -> None:
    t = Task(policy)
    t.run()
    assert t.feed(Ev.UNHEALTHY) == [Stop()]
    actions = t.feed(Ev.EXITED, 0)  # even a clean exit after an unhealthy stop is a failure
    assert t.state.state == TaskState.BACKOFF
    restart = [a for a in actions if isinstance(a, Emit) and a.event == "auto_restart"]
    assert restart[0].details["reason"] == "unhealthy"


def test_unhealthy_with_policy_no_keeps_running() -> None:
    t = Task("no")
    t.run()
    assert t.feed(Ev.UNHEALTHY) == []
    assert t.state.state == TaskState.RUNNING


def test_launch_failure_counts_as_a_failure() -> None:
    t = Task("on-failure")
    t.feed(Ev.START)
    t.feed(Ev.LAUNCH_FAILED)
    assert t.state.state == TaskState.BACKOFF and t.state.attempt == 1


def crash_until_fatal(t: Task) -> list[object]:
    t.run()
    while True:
        actions = t.feed(Ev.EXITED, 1)
        if t.state.state == TaskState.FATAL:
            return actions
        t.clock.now = t.state.restart_at or 0
        t.feed(Ev.TIMER)
        t.feed(Ev.LAUNCHED)


def test_fatal_is_tried_again_every_retry_after() -> None:
    t = Task(max_restarts=2, retry_after=300)
    actions = crash_until_fatal(t)
    fatal_at = t.clock.now
    assert Schedule(fatal_at + 300) in actions
    assert t.state.restart_at == fatal_at + 300
    t.clock.advance(100)
    assert t.feed(Ev.TIMER) == [Schedule(fatal_at + 300)]  # woke early: waits the rest
    t.clock.now = fatal_at + 300
    actions = t.feed(Ev.TIMER)
    assert Launch() in actions and "fatal_retry" in t.emitted()
    assert t.state.state == TaskState.STARTING
    t.feed(Ev.LAUNCHED)
    t.clock.advance(5)
    actions = t.feed(Ev.EXITED, 1)  # the try failed too: FATAL again, next try later
    assert t.state.state == TaskState.FATAL and Schedule(t.clock.now + 300) in actions
    # A try that stays healthy long enough ends the streak: its next crash is a plain backoff.
    t.clock.now = t.state.restart_at or 0
    t.feed(Ev.TIMER)
    t.feed(Ev.LAUNCHED)
    t.clock.advance(61)
    t.feed(Ev.EXITED, 1)
    assert (t.state.state, t.state.attempt) == (TaskState.BACKOFF, 1)


def test_retry_after_zero_stays_down_and_a_stop_cancels_the_next_try() -> None:
    t = Task(max_restarts=1, retry_after=0)
    actions = crash_until_fatal(t)
    assert not any(isinstance(a, Schedule) for a in actions) and t.state.restart_at is None
    t.clock.advance(10_000)
    assert t.feed(Ev.TIMER) == []
    t = Task(max_restarts=1, retry_after=60)
    crash_until_fatal(t)
    assert t.feed(Ev.STOP) == [CancelSchedule()]
    assert (t.state.state, t.state.restart_at, t.state.manual_stop) == (
        TaskState.STOPPED, None, True)
    t.clock.advance(60)
    assert t.feed(Ev.TIMER) == []  # a timer that fired anyway does nothing
    t2 = Task(max_restarts=1, retry_after=60)
    crash_until_fatal(t2)
    assert t2.feed(Ev.START) == [CancelSchedule(), Launch()]


def test_a_dependency_back_restarts_a_fatal_task_with_a_fresh_streak() -> None:
    t = Task(max_restarts=2, retry_after=0)
    crash_until_fatal(t)
    actions = t.feed(Ev.DEPENDENCY_READY)
    assert Launch() in actions and "dependency_recovered" in t.emitted()
    assert (t.state.state, t.state.attempt) == (TaskState.STARTING, 0)
    t.feed(Ev.LAUNCHED)
    t.feed(Ev.EXITED, 1)
    assert t.state.state == TaskState.BACKOFF  # a whole streak of restarts again
    for state in (TaskState.RUNNING, TaskState.BACKOFF, TaskState.STOPPED):
        assert decide(PolicySpec(), State(state=state), Event(Ev.DEPENDENCY_READY), 0.0)[1] == []
    stopped = State(state=TaskState.FATAL, manual_stop=True)
    assert decide(PolicySpec(), stopped, Event(Ev.DEPENDENCY_READY), 0.0) == (stopped, [])


def test_a_one_shot_is_done_after_a_success_code_and_retried_after_a_failure() -> None:
    spec = PolicySpec("on-failure", 2, 2.0, 0, oneshot=True,
                      success_exit_codes=frozenset({0, 3}))
    running = decide(spec, decide(spec, State(), Event(Ev.START), 0.0)[0], Event(Ev.LAUNCHED),
                     0.0)[0]
    done, actions = decide(spec, running, Event(Ev.EXITED, 3), 1.0)
    assert done.state == TaskState.EXITED and Emit("task_completed", {
        "exit_code": 3, "signal": None}) in actions
    assert not any(isinstance(a, Launch | Schedule) for a in actions)
    failed, actions = decide(spec, running, Event(Ev.EXITED, 1), 1.0)
    assert failed.state == TaskState.BACKOFF  # a failed one-shot is retried by its policy
    killed, _ = decide(spec, running, Event(Ev.EXITED, None, 9), 1.0)
    assert killed.state == TaskState.BACKOFF
    always = replace(spec, restart_policy="always")
    assert decide(always, running, Event(Ev.EXITED, 0), 1.0)[0].state == TaskState.EXITED


def test_success_exit_codes_decide_what_on_failure_restarts() -> None:
    spec = PolicySpec("on-failure", success_exit_codes=frozenset({0, 143}))
    running = State(state=TaskState.RUNNING, started_at=0.0)
    assert decide(spec, running, Event(Ev.EXITED, 143), 1.0)[0].state == TaskState.EXITED
    assert decide(spec, running, Event(Ev.EXITED, 0), 1.0)[0].state == TaskState.EXITED
    assert decide(spec, running, Event(Ev.EXITED, 1), 1.0)[0].state == TaskState.BACKOFF


def test_every_transition_lands_in_a_state_its_row_declares() -> None:
    # The table's targets draw the README's diagram: each handler must keep to them.
    from itertools import product

    from taskmuxd.policy import Cause, targets_of

    specs = [PolicySpec(p, n, 2.0, 300.0) for p, n in product(
        ("no", "on-failure", "always"), (0, 5))]
    specs += [PolicySpec("on-failure", 0, 2.0, 0.0), PolicySpec("always", 5, 2.0, 300.0, True)]
    states = [State(state=st, manual_stop=ms, cause=c, restart_at=ra, attempt=a,
                    started_at=0.0)
              for st, ms, c, ra, a in product(TaskState, (False, True), (None, *Cause),
                                              (None, 50.0), (0, 5))]
    events = [Event(k) for k in Ev if k != Ev.EXITED] + [
        Event(Ev.EXITED, c, sg) for c, sg in ((0, None), (1, None), (None, 9))]
    checked = 0
    for sp, s, e in product(specs, states, events):
        if (s.state, e.kind) not in TRANSITIONS:
            continue
        new, _ = decide(sp, s, e, 10.0)
        assert new.state in targets_of(s.state, e.kind), (s, e, sp, new.state)
        checked += 1
    assert checked > 5000
