"""Following events pushed by the daemon (``events.subscribe``) rather than polling the file.

:func:`follow` yields events as they happen. It remembers the id of the last one it yielded
and, when the connection ends (the daemon restarts, is updated) or the daemon drops the
subscription for falling behind, subscribes again with that id as the cursor, so nothing is
missed and nothing repeats. Events the history no longer holds are reported by ``on_gap``.
Standard library only.
"""

from __future__ import annotations

import time

from taskmuxctl.core.protocol import Method, RpcError
from taskmuxctl.core.rpcclient import Client, DaemonUnavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any

    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.rpctypes import SubscribeResult

RETRY = 0.5  # seconds between attempts to reach the daemon again
POLL = 0.5  # seconds a read waits before checking ``stopped``


def last_id(path: str) -> int | None:
    """The id of the newest record in ``events.jsonl`` (read from its tail); None when there
    is none."""
    import json
    import os

    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(size - 65536, 0))
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("id"), int):
            return int(obj["id"])
    return None


class Subscription:
    """One ``events.subscribe`` on its own connection."""

    def __init__(self, paths: Paths, params: dict[str, Any]) -> None:
        self.client = Client(paths)
        self.client.connect()
        self.reply: SubscribeResult = self.client.call(Method.EVENTS_SUBSCRIBE, params)
        self.client.set_timeout(POLL)

    def messages(self, stopped: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        """Notifications as they arrive, until ``stopped()`` or the connection ends
        (DaemonUnavailable)."""
        while not stopped():
            msg = self.client.receive()
            if msg is not None:
                yield msg

    def close(self) -> None:
        self.client.close()


def follow(paths: Paths, project: str | None = None, task: str | None = None,
           kinds: set[str] | None = None, cursor: int | None = None,
           stopped: Callable[[], bool] = lambda: False,
           on_gap: Callable[[int], object] | None = None,
           ) -> Iterator[dict[str, Any]]:
    """Every matching event after ``cursor`` (None: from now on), across reconnections,
    until ``stopped()``. Subscribes at once: raises DaemonUnavailable when the daemon cannot
    be reached now; later losses of the connection are retried."""
    params: dict[str, Any] = {}
    if project is not None:
        params["project"] = project
    if task is not None:
        params["task"] = task
    if kinds:
        params["kinds"] = sorted(kinds)
    if cursor is not None:
        params["cursor"] = cursor
    return _events(paths, params, Subscription(paths, params), stopped, on_gap)


def _events(paths: Paths, params: dict[str, Any], sub: Subscription | None,
            stopped: Callable[[], bool], on_gap: Callable[[int], object] | None
            ) -> Iterator[dict[str, Any]]:
    cursor: int | None = params.get("cursor")
    while not stopped():
        if sub is None:
            if cursor is not None:
                params["cursor"] = cursor
            try:
                sub = Subscription(paths, params)
            except (DaemonUnavailable, RpcError):
                time.sleep(RETRY)
                continue
        try:
            if cursor is None:
                cursor = int(sub.reply["cursor"])
            if sub.reply.get("missed") and on_gap is not None:
                on_gap(int(sub.reply["missed"]))
            for msg in sub.messages(stopped):
                method, body = msg.get("method"), msg.get("params") or {}
                if method == Method.EVENT_NOTICE and isinstance(body.get("event"), dict):
                    event = body["event"]
                    ident = event.get("id")
                    if isinstance(ident, int):
                        if ident <= cursor:
                            continue
                        cursor = ident
                    yield event
                elif method == Method.EVENTS_DROPPED_NOTICE:
                    break  # subscribe again from where we got to
        except (DaemonUnavailable, RpcError):
            time.sleep(RETRY)
        finally:
            sub.close()
            sub = None
