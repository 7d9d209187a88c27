"""The health verdict of one run, from its probe results: pure, the clock passed in.

A run is in its *startup* until its first passing probe: failures then count only once
``grace`` seconds have passed since the run began (how long it may take to become ready).
After that it is in *liveness*: ``retries`` consecutive failures make it unhealthy. Until
the first verdict, probes come soon after the start and then less and less often (a quarter of
the run's age, from ``FIRST_PROBE`` up to ``FAST_PROBE`` seconds apart), so a task that is up in
100 ms is known to be in about as long; after it, every ``interval``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

FAST_PROBE = 0.5  # the longest wait between probes until a task is first judged
FIRST_PROBE = 0.05  # the shortest, right after the start


@dataclass(frozen=True)
class HealthSpec:
    # "probe": polled (HTTP, command, port); "process": alive is healthy; "self": the task
    # says (a log line, sd_notify): judged only on the results fed in, none polled.
    kind: Literal["probe", "process", "self"] = "process"
    interval: float = 10.0
    retries: int = 3
    grace: float = 10.0


@dataclass(frozen=True)
class Judgement:
    ok: bool | None = None  # None: not judged yet
    failures: int = 0  # consecutive failures that counted


HealthEvent = Literal["health_check_failed", "health_recovered"]


@dataclass(frozen=True)
class Outcome:
    """What a probe result changed: an event to record, and whether the run just turned
    unhealthy (the policy hears of it)."""

    event: HealthEvent | None = None
    attempt: int = 0
    turned_unhealthy: bool = False


def next_probe_in(ok: bool | None, interval: float, age: float | None = None) -> float:
    """Seconds to the next probe, whatever its kind. Until the task is first judged: a
    quarter of the run's ``age`` (seconds since it started; unknown counts as old), kept
    between ``FIRST_PROBE`` and ``FAST_PROBE``; then every ``interval``. Never slower than
    asked."""
    if ok is not None:
        return interval
    ramp = FAST_PROBE if age is None else max(FIRST_PROBE, age / 4)
    return min(FAST_PROBE, ramp, interval)


def judge(spec: HealthSpec, j: Judgement, ok: bool, now: float,
          run_started: float | None) -> tuple[Judgement, Outcome]:
    """Fold one probe result into the run's judgement."""
    if ok:
        event: HealthEvent | None = "health_recovered" if j.ok is False else None
        return Judgement(True, 0), Outcome(event)
    in_startup = j.ok is None and run_started is not None and now - run_started < spec.grace
    if in_startup:
        return j, Outcome()
    failures = j.failures + 1
    turned = failures >= spec.retries and j.ok is not False
    return replace(j, failures=failures, ok=False if turned else j.ok), Outcome(
        "health_check_failed", failures, turned)
