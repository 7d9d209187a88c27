"""``project.status`` over the socket of a real daemon has the shapes ``taskmuxctl.core.rpctypes``
declares: a task row has the same keys whether its project is supervised or only known by its
taskmux.toml (the task-info dict is built in one place)."""

from __future__ import annotations

import os
from typing import Any

from taskmuxctl.core.rpctypes import (
    HealthResult,
    HealthRow,
    ProjectEntry,
    ProjectList,
    ProjectStatus,
    StatusTask,
    TaskInfo,
)
from tests.helpers import DaemonProcess, call
from tests.projects import write_project

TOML = """
    name = "shapes"
    [tasks.web]
    command = "sleep 600"
    host = "web"
    port = "auto"
    [tasks.worker]
    command = "sleep 600"
    depends_on = ["web"]
    auto_start = false
"""


def keys(shape: Any) -> set[str]:
    return set(shape.__required_keys__ | shape.__optional_keys__)


def test_a_task_row_has_one_shape_before_and_after_registering(daemon: DaemonProcess,
                                                                tmp_path: Any) -> None:
    folder = write_project(str(tmp_path / "p"), TOML)
    config = os.path.join(folder, "taskmux.toml")
    known = call(daemon.socket, "project.status", {"config": config, "cwd": folder})
    assert known["state"] == "not_registered" and known["running"] is False
    assert set(known) <= keys(ProjectStatus)
    assert [t["name"] for t in known["tasks"]] == ["web", "worker"]
    for row in known["tasks"]:
        assert set(row) == keys(TaskInfo), row
        assert row["state"] == "stopped" and row["pid"] is None and row["restarts"] == 0
    web, worker = known["tasks"]
    assert web["host"] == "web" and web["url"] and worker["url"] is None
    assert worker["auto_start"] is False and worker["depends_on"] == ["web"]

    call(daemon.socket, "project.register", {"config": config})
    supervised = call(daemon.socket, "project.status", {"project": "shapes"})
    assert supervised["state"] == "ok" and set(supervised) <= keys(ProjectStatus)
    for before, row in zip(known["tasks"], supervised["tasks"], strict=True):
        assert set(row) == keys(StatusTask), row
        # The same facts of a stopped task, from the one builder.
        assert {k: row[k] for k in keys(TaskInfo)} == before

    listed = call(daemon.socket, "project.list")
    assert set(listed) == keys(ProjectList)
    [entry] = listed["projects"]
    assert set(entry) == keys(ProjectEntry) and entry["state"] == "ok"
    health = call(daemon.socket, "health.check", {"project": "shapes"})
    assert set(health) == keys(HealthResult)
    assert [set(r) for r in health["tasks"]] == [keys(HealthRow)] * 2
    assert health["not_counted"] == 1  # the worker: stopped, not auto_start
