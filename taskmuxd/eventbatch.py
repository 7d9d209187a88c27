"""The daemon's event history: the events of one turn of the loop appended in one write.

A start or stop of a hundred tasks emits a hundred events or more, each an open, a lock, a
look at the file's end, a write and a close on the event loop. Here ``emit`` queues the
record (its time taken then) and the turn's records go out together at its end (or once
``MAX_QUEUED`` wait): one append, ids in order, then the listeners (the event streams) in
the same order. Nothing the daemon answers can overtake its events: the control socket
calls ``flush`` before it writes a reply (``RpcServer.before_reply``), so a client that
reads the history after an answer finds what the call emitted. Without a running loop an
event is written at once, as by ``EventLog``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from taskmuxctl.core.eventlog import EventLog, make_record

MAX_QUEUED = 256  # records waiting for the end of the turn at most: more are written now


class TurnEventLog(EventLog):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._queued: list[dict[str, Any]] = []

    def emit(self, event: str, project: str | None = None, task: str | None = None,
             **details: Any) -> dict[str, Any]:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return super().emit(event, project, task, **details)
        record = make_record(event, project, task, details)
        if not self._queued:
            loop.call_soon(self.flush)
        self._queued.append(record)
        if len(self._queued) >= MAX_QUEUED:
            self.flush()
        return record

    def flush(self) -> None:
        """Append what was queued, then tell the listeners."""
        queued, self._queued = self._queued, []
        if queued:
            self.deliver(queued, self.append_all(queued))
