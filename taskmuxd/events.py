"""The event history, ``events.jsonl``: one JSON object a line, appended by any process.

Each append is a single ``write`` on an ``O_APPEND`` descriptor under an flock, so lines from
several writers never interleave. Past ``TRIM_AT`` lines the file is cut to the newest
``KEEP`` (rewritten atomically, under the same lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from taskmuxctl.fsutil import atomic_write

log = logging.getLogger("taskmuxd.events")

KEEP = 10_000
TRIM_AT = 15_000


def utc_iso(ts: float | None = None) -> str:
    t = time.time() if ts is None else ts
    sec = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{int((t - sec) * 1000):03d}Z"


class EventLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lines: int | None = None
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, event: str, project: str | None = None, task: str | None = None,
             **details: Any) -> dict[str, Any]:
        record: dict[str, Any] = {"time": utc_iso(), "project": project, "task": task,
                                  "event": event}
        if details:
            record["details"] = details
        self.append(record)
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:
                log.exception("an event listener failed")
        return record

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("cannot write the event log %s: %s", self.path, exc)
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.write(fd, line)
            if self._lines is None:
                self._lines = _count_lines(self.path)
            else:
                self._lines += 1
            if self._lines > TRIM_AT:
                self._trim()
        finally:
            os.close(fd)  # releases the lock

    def _trim(self) -> None:
        with open(self.path, "rb") as fh:
            lines = fh.readlines()
        keep = lines[-KEEP:]
        atomic_write(self.path, b"".join(keep))
        self._lines = len(keep)


def _count_lines(path: str) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))


def read_events(path: str) -> Iterator[dict[str, Any]]:
    """Every well-formed event in the file, oldest first (a torn or foreign line is skipped)."""
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8",
                                                      errors="replace") as fh:
        for line in fh:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "event" in obj:
                yield obj


