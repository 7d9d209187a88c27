"""Readiness: how soon a task is judged, end to end with a real daemon, and the pure parts."""

from __future__ import annotations

import sys

from taskmuxd.projects.healthwatch import FAST_PROBE, next_probe_in
from tests.helpers import run_json, wait_until
from tests.projects import task, write_project


def test_probes_are_fast_until_the_first_verdict_then_at_the_interval() -> None:
    assert next_probe_in(None, 60.0) == FAST_PROBE
    assert next_probe_in(None, 0.2) == 0.2  # never slower than asked
    assert next_probe_in(True, 60.0) == 60.0
    assert next_probe_in(False, 60.0) == 60.0


def test_a_task_probed_only_through_its_port_is_healthy_soon(env: dict[str, str],
                                                             tmp_path: str) -> None:
    # health_interval is a minute: a verdict within seconds proves the fast first probes.
    proj = write_project(str(tmp_path / "p"), f"""
        name = "porty"
        [tasks.web]
        command = "sleep 1; exec {sys.executable} -m http.server $PORT --bind 127.0.0.1"
        port = "auto"
        health_interval = 60
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    t = wait_until(lambda: (t := task(env, proj, "web"))["healthy"] is not None and t, 10,
                   "a first verdict")
    assert t["healthy"] is True and t["health_method"] == "tcp"
