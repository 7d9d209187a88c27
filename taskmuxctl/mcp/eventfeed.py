"""Task state changes for the MCP server: events pushed by the daemon (``events.subscribe``)
and received in a thread, each turned into a log level and a sentence, and handed to whoever
listens.

The thread subscribes with the id of the newest event in ``events.jsonl`` as its cursor and
resubscribes from the last id it saw whenever the connection ends (a daemon restart or
update), so no event is missed or repeated. While no daemon runs it tries again every
``eventstream.RETRY`` seconds; nothing polls the file.
"""

from __future__ import annotations

import threading
import time

from taskmuxctl.core import eventread

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from taskmuxctl.core.paths import Paths

LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
WARNING_EVENTS = {"auto_restart", "health_check_failed"}
ERROR_EVENTS = {"max_restarts_reached", "config_invalid", "hook_failed", "state_corrupt"}
NOTICE_EVENTS = {"port_reassigned", "leftover_killed", "health_recovered", "task_killed"}
GATHER = 0.3  # after the first awaited event, how long to collect the ones that come with it


def rank(level: str) -> int:
    return LEVELS.index(level) if level in LEVELS else 0


def level_of(e: dict[str, Any]) -> str:
    kind = e.get("event")
    details = e.get("details") or {}
    if kind == "task_exited":
        failed = details.get("reason") == "launch_failed" or details.get("signal") or (
            details.get("exit_code") not in (0, None))
        return "warning" if failed else "info"
    if kind in ERROR_EVENTS:
        return "error"
    if kind in WARNING_EVENTS:
        return "warning"
    if kind in NOTICE_EVENTS:
        return "notice"
    return "info"


def sentence(e: dict[str, Any]) -> str:
    """One line a person (or a model) reads: "myapp/web: task_exited (exit_code=1)"."""
    where = str(e.get("project") or "taskmux")
    if e.get("task"):
        where += f"/{e['task']}"
    details = e.get("details") or {}
    extra = ", ".join(f"{k}={v}" for k, v in details.items() if v is not None)
    return f"{where}: {e.get('event')}" + (f" ({extra})" if extra else "")


def message_params(e: dict[str, Any]) -> dict[str, Any]:
    """The params of a ``notifications/message`` for event ``e``."""
    return {"level": level_of(e), "logger": "taskmux",
            "data": {"message": sentence(e), **e}}


class Waiter:
    """Collects the events matching a filter that arrive while someone waits for them."""

    def __init__(self, project: str | None, task: str | None) -> None:
        self.project = project
        self.task = task
        self.got: list[dict[str, Any]] = []
        self.cond = threading.Condition()

    def offer(self, e: dict[str, Any]) -> None:
        if eventread.matches(e, self.project, self.task, None):
            with self.cond:
                self.got.append(e)
                self.cond.notify_all()

    def wait(self, timeout: float, cancelled: threading.Event) -> list[dict[str, Any]]:
        """Until something arrives (then a moment more), the timeout, or cancellation."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while not self.got and not cancelled.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, 0.1))
            if self.got and not cancelled.is_set():
                end = min(time.monotonic() + GATHER, deadline)
                while time.monotonic() < end:
                    self.cond.wait(end - time.monotonic())
            return list(self.got)


class Hub:
    """Fans events out: to ``deliver`` (the server's notifications) and to waiters."""

    def __init__(self, paths: Paths, deliver: Callable[[dict[str, Any]], None]) -> None:
        self.paths = paths
        self.deliver = deliver
        self.waiters: list[Waiter] = []
        self.lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._follow, name="taskmux-events", daemon=True).start()

    def _follow(self) -> None:
        from taskmuxctl import eventfollow
        from taskmuxctl.core.rpcclient import DaemonUnavailable

        cursor = eventfollow.last_id(self.paths.events) or 0
        while True:
            try:
                for e in eventfollow.follow(self.paths, cursor=cursor):
                    if isinstance(e.get("id"), int):
                        cursor = e["id"]
                    self.publish(e)
            except DaemonUnavailable:
                time.sleep(eventfollow.RETRY)

    def publish(self, e: dict[str, Any]) -> None:
        with self.lock:
            waiters = list(self.waiters)
        for w in waiters:
            w.offer(e)
        self.deliver(e)

    def wait(self, project: str | None, task: str | None, timeout: float,
             cancelled: threading.Event) -> list[dict[str, Any]]:
        w = Waiter(project, task)
        with self.lock:
            self.waiters.append(w)
        try:
            return w.wait(timeout, cancelled)
        finally:
            with self.lock:
                self.waiters.remove(w)
