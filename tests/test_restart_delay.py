"""``restart_delay``: the first restart in a row waits that long (0: at once), later ones back
off as before. The policy on a fake clock, then a real daemon answering a crash at once."""

from __future__ import annotations

import os

from taskmuxd.policy import (
    BACKOFF_CAP,
    Emit,
    Ev,
    Event,
    Launch,
    PolicySpec,
    Schedule,
    State,
    TaskState,
    backoff_delay,
    decide,
)
from tests.helpers import run_json, wait_until
from tests.projects import task, write_project
from tests.test_supervision import events


def test_a_zero_first_wait_then_the_backoff() -> None:
    spec = PolicySpec(restart_policy="always", max_restarts=100, restart_backoff=2.0,
                      restart_delay=0.0)
    now = 1000.0
    s, _ = decide(spec, State(), Event(Ev.START), now)
    s, _ = decide(spec, s, Event(Ev.LAUNCHED), now)
    delays = []
    for _ in range(8):
        now += 0.5  # each run crashes half a second in: a loop
        s, actions = decide(spec, s, Event(Ev.EXITED, 1), now)
        at = next(a.at for a in actions if isinstance(a, Schedule))
        delays.append(at - now)
        emitted = next(a for a in actions if isinstance(a, Emit) and a.event == "auto_restart")
        assert emitted.details["delay"] == round(at - now, 3)
        now = at
        s, actions = decide(spec, s, Event(Ev.TIMER), now)
        assert actions == [Launch()] and s.state == TaskState.STARTING
        s, _ = decide(spec, s, Event(Ev.LAUNCHED), now)
    assert delays == [0, 2, 4, 8, 16, 32, BACKOFF_CAP, BACKOFF_CAP]


def test_the_default_first_wait_is_one_second_and_jitter_never_delays_zero() -> None:
    assert backoff_delay(PolicySpec(), 0) == 1.0
    assert backoff_delay(PolicySpec(restart_delay=0.0), 0, 0.99) == 0.0
    assert backoff_delay(PolicySpec(restart_delay=0.25), 0) == 0.25
    assert backoff_delay(PolicySpec(restart_delay=0.0, restart_backoff=3.0), 2) == 9.0


def test_a_crash_is_replaced_at_once_with_restart_delay_zero(env: dict[str, str],
                                                             tmp_path: str) -> None:
    flag = os.path.join(str(tmp_path), "crashed-once")
    proj = write_project(str(tmp_path / "p"), f"""
        name = "quick"
        [tasks.app]
        command = "if [ -f {flag} ]; then sleep 600; else touch {flag}; sleep 0.2; exit 3; fi"
        restart_delay = 0
    """)
    run_json(["start"], env, cwd=proj)
    wait_until(lambda: (t := task(env, proj, "app"))["state"] == "running"
               and t["restarts"] == 1, 20, "the restart")
    restart = next(e for e in events(env, proj, "--task", "app")
                   if e["event"] == "auto_restart")
    assert restart["details"]["delay"] == 0 and restart["details"]["attempt"] == 1


def test_restart_delay_is_bounded(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "bounded"
        [tasks.app]
        command = "sleep 600"
        restart_delay = -1
    """)
    code, out = run_json(["check"], env, cwd=proj)
    assert code != 0 and "restart_delay" in str(out), out
