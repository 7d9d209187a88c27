"""The event history, ``events.jsonl``: one JSON object a line, appended by any process.

Each append is a single ``write`` on an ``O_APPEND`` descriptor under an flock, so lines from
several writers never interleave, and every record is whole or absent: a writer killed in the
middle of its write can leave a torn last line, so the next writer starts with a newline when
the file does not end with one (the torn line becomes a line of its own, which readers skip),
and a short write (a full disk) is cut off again. A record that cannot be written is dropped
and counted, never raised: the event history must not stop the daemon doing its work. Once
writing works again an ``events_dropped`` record says how many were lost. Past ``TRIM_AT``
lines the file is cut to the newest ``KEEP`` (rewritten atomically, under the same lock).

Every record gets an ``id``, one more than the last record's, found under the lock (cached
while this writer was the last one to write), so ids grow by one across writers, daemon
restarts and trims: a client that saw id N asks for what came after N (``events.subscribe``'s
cursor). Records this writer finds that another process appended since its own last write are
handed to the listeners too, before its own, so a live stream misses nothing the file has.
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

from taskmuxctl.core.fsutil import atomic_write

log = logging.getLogger("taskmuxctl.core.eventlog")

KEEP = 10_000
TRIM_AT = 15_000
TRIM_RETRY = 1_000  # appends between attempts at a trim that failed
TAIL = 64 * 1024  # bytes read back to find the last id
FOREIGN_LIMIT = 1024 * 1024  # bytes of other writers' records read to pass on to listeners


def utc_iso(ts: float | None = None) -> str:
    t = time.time() if ts is None else ts
    sec = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{int((t - sec) * 1000):03d}Z"


def make_record(event: str, project: str | None, task: str | None,
                details: dict[str, Any]) -> dict[str, Any]:
    """A record as ``emit`` appends it (its ``id`` is given when it is written)."""
    record: dict[str, Any] = {"time": utc_iso(), "project": project, "task": task,
                              "event": event}
    if details:
        record["details"] = details
    return record


class EventLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._lines: int | None = None
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self.dropped = 0  # records not written since the last one that was
        self.last_error: OSError | None = None
        self.last_id = 0  # the id of the last record written by anyone (as far as seen)
        self._end: int | None = None  # the file's size after this writer's last write
        self._foreign: list[dict[str, Any]] = []

    def subscribe(self, listener: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def emit(self, event: str, project: str | None = None, task: str | None = None,
             **details: Any) -> dict[str, Any]:
        record = make_record(event, project, task, details)
        self.deliver([record], self.append(record))
        return record

    def deliver(self, records: list[dict[str, Any]], written: bool) -> None:
        """Hand the records just appended (when ``written``) to the listeners, after what
        other writers appended before them."""
        seen, self._foreign = self._foreign, []
        for rec in [*seen, *records] if written else seen:
            for listener in list(self._listeners):
                try:
                    listener(rec)
                except Exception:
                    log.exception("an event listener failed")

    def flush(self) -> None:
        """Write what waits to be written: nothing here, where each ``emit`` writes at once
        (the daemon's log gathers a turn's events: ``taskmuxd.eventbatch``)."""

    def current_id(self) -> int:
        """The id of the newest record in the file (blocking: a read of its tail)."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return self.last_id
        try:
            size = os.fstat(fd).st_size
            return self.last_id if size == self._end else _last_id(fd, size)
        except OSError:
            return self.last_id
        finally:
            os.close(fd)

    def append(self, record: dict[str, Any]) -> bool:
        """Append ``record`` as one line; False (and counted in ``dropped``) when it could not
        be written."""
        return self.append_all([record])

    def append_all(self, records: list[dict[str, Any]]) -> bool:
        """Append ``records`` in order, one line each, in one write (all or none); False (and
        each counted in ``dropped``) when they could not be written."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            self._dropped(exc, len(records))
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._append_locked(fd, records)
        except OSError as exc:
            self._dropped(exc, len(records))
            return False
        finally:
            os.close(fd)  # releases the lock
        return True

    def _append_locked(self, fd: int, records: list[dict[str, Any]]) -> None:
        size = os.fstat(fd).st_size
        if self._end != size:  # another writer was here (or this is the first write)
            if self._end is not None and self._listeners and 0 < size - self._end \
                    <= FOREIGN_LIMIT:
                self._foreign = _records(os.pread(fd, size - self._end, self._end))
            self.last_id = _last_id(fd, size)
        first = self.last_id + 1
        data = b""
        if self.dropped:  # say what was lost, in the same write as the record that follows
            note = {"id": first, "time": utc_iso(), "project": None, "task": None,
                    "event": "events_dropped",
                    "details": {"count": self.dropped, "error": _reason(self.last_error)}}
            data = (json.dumps(note, separators=(",", ":")) + "\n").encode()
            first += 1
        for n, record in enumerate(records):
            record["id"] = first + n
            data += (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
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
        self.last_id = first + len(records) - 1
        self._end = size + len(data)
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

    def _dropped(self, exc: OSError, count: int = 1) -> None:
        if not self.dropped:
            log.warning("cannot write the event log %s: %s (dropping events until it works "
                        "again)", self.path, _reason(exc))
        self.dropped += count
        self.last_error = exc

    def _trim(self) -> None:
        with open(self.path, "rb") as fh:
            lines = fh.readlines()
        keep = lines[-KEEP:]
        atomic_write(self.path, b"".join(keep))
        self._lines = len(keep)
        self._end = sum(len(line) for line in keep)


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


def _records(data: bytes) -> list[dict[str, Any]]:
    out = []
    for line in data.splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and "event" in obj:
            out.append(obj)
    return out


def _last_id(fd: int, size: int) -> int:
    """The id of the last record that has one, from the file's last ``TAIL`` bytes (0: none;
    a history written before ids existed starts them at 1)."""
    start = max(size - TAIL, 0)
    for obj in reversed(_records(os.pread(fd, size - start, start))):
        value = obj.get("id")
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return 0


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


