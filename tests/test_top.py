"""``taskmux top``: the model on made-up statuses, and the Textual app driven by its pilot
against a real daemon (a restart from the view really restarts)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from taskmuxctl.core.paths import Paths
from taskmuxctl.top import model
from tests.helpers import run_json
from tests.projects import task, write_project

pytest.importorskip("textual", reason="top needs textual")


def _status(project: str, **tasks: dict[str, Any]) -> dict[str, Any]:
    return {"project": project, "config_error": None,
            "tasks": [{"name": n, **t} for n, t in tasks.items()]}


def test_rows_filter_and_project_cycle() -> None:
    statuses = [
        _status("shop", web={"state": "running", "healthy": True, "restarts": 2,
                             "uptime": 75, "url": "https://web.shop.localhost",
                             "resources": {"cpu": 12.5, "rss": 50 << 20}}),
        _status("blog", db={"state": "fatal", "healthy": None, "restarts": 5,
                            "last_exit": {"code": 3, "signal": None},
                            "resources": {"cpu": None, "rss": None}},
                api={"state": "running", "healthy": False,
                     "last_health_failure": "GET / -> 502\nbad gateway"}),
    ]
    rows = model.rows_of(statuses)
    web = rows[0]
    assert web.cells() == ("shop", "web", "running", "healthy", "12%", "50.0M", "2", "1m",
                           "https://web.shop.localhost", "")
    assert rows[1].error == "exit 3" and rows[1].cpu == "-"
    assert rows[2].error == "health: GET / -> 502 bad gateway"
    assert [r.key for r in model.visible(rows, "blog", "")] == ["blog/db", "blog/api"]
    assert [r.key for r in model.visible(rows, None, "unhealthy")] == ["blog/api"]
    assert [r.key for r in model.visible(rows, None, "blog fatal")] == ["blog/db"]
    assert model.next_project(["a", "b"], None) == "a"
    assert model.next_project(["a", "b"], "a") == "b"
    assert model.next_project(["a", "b"], "b") is None


async def _until(pilot: Any, condition: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_top_lists_tasks_follows_the_log_and_restarts(env: dict[str, str],
                                                      tmp_path: Any) -> None:
    from textual.widgets import DataTable, Log

    from taskmuxctl.top.app import TopApp

    proj = write_project(str(tmp_path / "p"), """
        name = "topdemo"
        [tasks.web]
        command = "echo hello-from-web; sleep 600"
        [tasks.worker]
        command = "sleep 600"
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    before = task(env, proj, "web")["pid"]
    paths = Paths(env["TASKMUX_HOME"])

    async def drive() -> None:
        app = TopApp(paths, refresh=0.5)
        async with app.run_test(size=(160, 40)) as pilot:
            await _until(pilot, lambda: len(app.shown) == 2, "both tasks listed")
            table = app.query_one("#tasks", DataTable)
            assert [r.task for r in app.shown] == ["web", "worker"]
            assert all(r.state == "running" for r in app.shown)
            table.move_cursor(row=table.get_row_index("topdemo/web"))
            await _until(pilot, lambda: app.selected == "topdemo/web", "web selected")
            log = app.query_one("#log", Log)
            await _until(pilot, lambda: any("hello-from-web" in line for line in log.lines),
                         "the web log in the pane")
            await pilot.press("r")
            now = await _until(pilot, lambda: (p := _pid(env, proj)) and p != before and p,
                               "web restarted")
            assert now != before
            await _until(pilot, lambda: "restart" in app.message or "restarted" in app.message,
                         "the restart acknowledged")
            # filter, then clear it
            await pilot.press("slash", "w", "o", "r", "k", "enter")
            await _until(pilot, lambda: [r.task for r in app.shown] == ["worker"],
                         "the filter applied")
            await pilot.press("escape")
            await _until(pilot, lambda: len(app.shown) == 2, "the filter cleared")
            assert _pid(env, proj) == now  # the letters typed into the filter acted on nothing
            await pilot.press("q")

    asyncio.run(drive())


def _pid(env: dict[str, str], proj: str) -> int | None:
    t = task(env, proj, "web")
    return t["pid"] if t["state"] == "running" else None
