"""The event history, ``events.jsonl``: one JSON object a line, appended by any process.

Each append is a single ``write`` on an ``O_APPEND`` descriptor under an flock, so lines from
several writers never interleave, and every record is whole or absent: a writer killed in the
middle of its write can leave a torn last line, so the next writer starts with a newline when
the file does not end with one (the torn line becomes a line of its own, which readers skip),
and a short write (a full disk) is cut off again. A record that cannot be written is dropped
and counted, never raised: the event history must not stop the daemon doing its work. Once
writing works again an ``events_dropped`` record says how many were lost. Past ``TRIM_AT``
lines the file is cut to the newest ``KEEP`` (rewritten atomically, under the same lock).
"""

from __future__ import annotations

import contextlib
import errno
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
TRIM_RETRY = 1_000  # appends between attempts at a trim that failed


def utc_iso(ts: float | None = None) -> str:
    t = time.time() if ts is None else ts
    sec = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{int((t - sec) * 1000):03d}Z"


class EventLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lines: int | None = None
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self.dropped = 0  # records not written since the last one that was
        self.last_error: OSError | None = None

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

    def append(self, record: dict[str, Any]) -> bool:
        """Append ``record`` as one line; False (and counted in ``dropped``) when it could not
        be written."""
        line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._dropped(exc)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._append_locked(fd, line)
        except OSError as exc:
            self._dropped(exc)
            return False
        finally:
            os.close(fd)  # releases the lock
        return True

    def _append_locked(self, fd: int, line: bytes) -> None:
        size = os.fstat(fd).st_size
        data = line
        if self.dropped:  # say what was lost, in the same write as the record that follows
            note = {"time": utc_iso(), "project": None, "task": None, "event": "events_dropped",
                    "details": {"count": self.dropped, "error": _reason(self.last_error)}}
            data = (json.dumps(note, separators=(",", ":")) + "\n").encode() + data
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # a writer died mid-line: close that line off
        try:
            written = os.write(fd, data)
        except OSError:
            _cut(fd, size)
            raise
        if written != len(data):
            _cut(fd, size)  # a short write (the disk filled up): take the partial line back
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
        if self.dropped:
            log.warning("the event log %s is writable again; %d event(s) were dropped",
                        self.path, self.dropped)
            self.dropped, self.last_error = 0, None
        try:
            if self._lines is None:
                self._lines = _count_lines(self.path)
            else:
                self._lines += data.count(b"\n")
            if self._lines > TRIM_AT:
                self._trim()
        except OSError as exc:  # the record is written; the trim waits a while (a full disk)
            log.warning("cannot trim the event log %s: %s", self.path, exc)
            if self._lines is not None:
                self._lines = min(self._lines, TRIM_AT - TRIM_RETRY)

    def _dropped(self, exc: OSError) -> None:
        if not self.dropped:
            log.warning("cannot write the event log %s: %s (dropping events until it works "
                        "again)", self.path, _reason(exc))
        self.dropped += 1
        self.last_error = exc

    def _trim(self) -> None:
        with open(self.path, "rb") as fh:
            lines = fh.readlines()
        keep = lines[-KEEP:]
        atomic_write(self.path, b"".join(keep))
        self._lines = len(keep)


def _reason(exc: OSError | None) -> str:
    if exc is None:
        return "unknown"
    return exc.strerror or str(exc)


def _cut(fd: int, size: int) -> None:
    """Take back whatever a failed write left after ``size`` bytes (appends happen under the
    lock, so nothing else was added meanwhile)."""
    with contextlib.suppress(OSError):
        if os.fstat(fd).st_size > size:
            os.ftruncate(fd, size)


def _count_lines(path: str) -> int:
    with open(path, "rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))


def read_events(path: str, skipped: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """Every well-formed event in the file, oldest first. A torn or foreign line is skipped
    and, when ``skipped`` is given, counted in ``skipped[0]``."""
    with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8",
                                                      errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and "event" in obj:
                yield obj
            elif skipped is not None:
                skipped[0] += 1


