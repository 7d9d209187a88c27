"""Chaos, bounded: ``kill -9`` of the daemon at each kind of moment, with a project of 16
lively tasks, leaves no duplicate, no lost task, no task reported dead while it runs and no
corrupt state file. The long run is ``bench/chaos.py``; both use ``tests/chaos.py``."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.chaos import KINDS, TASK_SCRIPT, Chaos
from tests.chaos_look import (
    Findings,
    TaskSpec,
    copies,
    judge,
    kill_marked,
    marked_processes,
    marker,
)
from tests.helpers import wait_until

# Every moment, the start and restart ones (where launches are in flight) most often:
# 12 rounds, about 25 s here (2 shared cores).
PLAN = ("start", "restart", "stop", "crashloop", "idle", "restart", "start", "stop",
        "crashloop", "start", "restart", "idle")


@pytest.mark.slow(30)
def test_kill_9_of_the_daemon_at_any_moment_breaks_nothing(
        home: str, tmux_socket: str, tmp_path: Path) -> None:
    assert set(PLAN) == set(KINDS)
    chaos = Chaos(home, tmux_socket, str(tmp_path), settle_timeout=60)
    rng = random.Random(11)
    try:
        chaos.start_daemon()
        chaos.start_project()
        assert chaos.wait_all_up(90), chaos.look().describe()
        for n, kind in enumerate(PLAN, 1):
            r = chaos.round(n, kind, rng)
            assert r.settled is not None, r.line()
            assert not r.findings.total, r.line()
    finally:
        chaos.close()


GRANT_PLAN = ("restart", "restart", "crashloop", "start", "restart", "stop", "restart",
              "crashloop")


@pytest.mark.slow
def test_kill_9_of_the_daemon_around_granted_restarts_breaks_nothing(
        home: str, tmux_socket: str, tmp_path: Path) -> None:
    # Crash loops whose first restart in a row is granted ahead (``restart_delay = 0``), and
    # whose later ones are granted with their wait, as are all of the ``held`` tasks':
    # each restart or start of a round begins a new streak, so its first crash is answered
    # by the runner on its grant while the daemon is killed around it.
    tasks = [TaskSpec(f"grant{i}", "crash", policy="always", restart_delay=0) for i in range(6)]
    # Restarts that wait a backoff, granted with their wait (``delayedgrant``): the daemon is
    # killed while runners hold, claim or start on their grants.
    tasks += [TaskSpec(f"held{i}", "crash", policy="always", restart_delay=0.3)
              for i in range(2)]
    tasks += [TaskSpec("steady1", "sleeper"), TaskSpec("steady2", "sleeper", policy="always"),
              TaskSpec("pg1", "forker"), TaskSpec("pg2", "forker", policy="always")]
    chaos = Chaos(home, tmux_socket, str(tmp_path), tasks=tasks, project="grants",
                  settle_timeout=60)
    rng = random.Random(19)
    try:
        chaos.start_daemon()
        chaos.start_project()
        assert chaos.wait_all_up(90), chaos.look().describe()
        for n, kind in enumerate(GRANT_PLAN, 1):
            r = chaos.round(n, kind, rng)
            assert r.settled is not None, r.line()
            assert not r.findings.total, r.line()
        with open(os.path.join(home, "events.jsonl"), encoding="utf-8") as fh:
            events = [json.loads(line) for line in fh]
        granted = [e for e in events if e["event"] == "auto_restart"
                   and e["details"].get("delay") == 0]
        assert len(granted) >= len(GRANT_PLAN), "too few zero-wait restarts to prove anything"
        held = [e for e in events if e["event"] == "auto_restart"
                and e["task"].startswith("held") and e["details"].get("delay", 0) > 0]
        assert len(held) >= len(GRANT_PLAN), "too few restarts after a wait to prove anything"
    finally:
        chaos.close()


def test_the_harness_counts_copies_of_a_forking_task_by_marker(tmp_path: Path) -> None:
    run = "selftest" + str(os.getpid())
    procs = []
    try:
        for i in range(2):  # two copies of one PostgreSQL-shaped task: four processes
            procs.append(subprocess.Popen(
                [sys.executable, "-S", TASK_SCRIPT, marker(run, "pg"), "forker",
                 str(tmp_path / f"alive{i}")]))
        wait_until(lambda: len(marked_processes(run)) == 4, 10, "both forked children")
        found = copies(marked_processes(run))
        assert sorted(found["pg"]) == sorted(p.pid for p in procs)
    finally:
        assert kill_marked(run) >= 2
        for p in procs:
            p.wait(10)
    wait_until(lambda: not marked_processes(run), 10, "the children gone")


def _info(name: str, state: str, pid: int | None, stopped: bool = False) -> dict[str, Any]:
    return {"name": name, "state": state, "pid": pid, "restarts": 0,
            "manually_stopped": stopped}


def test_the_harness_judges_from_status_and_processes() -> None:
    tasks = [TaskSpec(n, "sleeper") for n in ("ok", "twice", "ghost", "gone", "zombie",
                                               "parked", "waiting", "moving")]
    status: dict[str, Any] = {"wanted_up": True, "tasks": [
        _info("ok", "running", 10), _info("twice", "running", 20),
        _info("ghost", "exited", None), _info("gone", "exited", None),
        _info("zombie", "running", 50), _info("parked", "stopped", None, stopped=True),
        _info("waiting", "backoff", None), _info("moving", "starting", 70)]}
    later = {**status, "tasks": [*status["tasks"][:-1], _info("moving", "running", 71)]}
    found = {"ok": [11], "twice": [21, 22], "ghost": [31]}
    f = judge(status, later, found, tasks)
    assert f.duplicates == {"twice": 1}
    assert f.dead == {"ghost": "exited"}
    assert f.lost == {"gone": "exited", "zombie": "running, no process"}
    assert f.total == 4
    assert f.both(Findings(lost={"gone": "exited"})).total == 1
    assert not judge({**status, "wanted_up": False}, {**later, "wanted_up": False},
                     {}, tasks[2:4]).total
