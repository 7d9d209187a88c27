"""Reading and following ``events.jsonl`` from the client (the daemon need not run).

A line that is not a whole event (a writer killed mid-line leaves a torn one; the next writer
closes it off with a newline) is skipped; ``read`` counts what it skipped for the caller to
report."""

from __future__ import annotations

import os
import time

from taskmuxctl.core.timefmt import parse_stamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

POLL = 0.1


def _parse(line: str) -> dict[str, Any] | None:
    import json

    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and "event" in obj else None


def matches(e: dict[str, Any], project: str | None, task: str | None, since: float | None,
            kinds: set[str] | None = None) -> bool:
    if project is not None and e.get("project") != project:
        return False
    if task is not None and e.get("task") != task:
        return False
    if kinds is not None and e.get("event") not in kinds:
        return False
    if since is not None:
        at = parse_stamp(str(e.get("time", "")))
        if at is None or at < since:
            return False
    return True


def read(path: str, project: str | None = None, task: str | None = None,
         since: float | None = None, limit: int | None = None,
         kinds: set[str] | None = None, skipped: list[int] | None = None
         ) -> list[dict[str, Any]]:
    """The matching events, oldest first (the last ``limit``). Torn or foreign lines are
    skipped and, when ``skipped`` is given, counted in ``skipped[0]``."""
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                e = _parse(line)
                if e is None:
                    if skipped is not None and line.strip():
                        skipped[0] += 1
                elif matches(e, project, task, since, kinds):
                    out.append(e)
    except FileNotFoundError:
        return []
    return out[-limit:] if limit else out


def follow(path: str, project: str | None, task: str | None, since: float | None,
           tail: int = 10, kinds: set[str] | None = None) -> Iterator[dict[str, Any]]:
    """The last ``tail`` matching events, then new ones as they are appended (also across the
    daemon trimming the file, which replaces it)."""
    yield from read(path, project, task, since, tail, kinds) if tail else []
    fh = None
    ino = None
    pos = 0
    try:
        while True:
            if fh is None:
                try:
                    fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115
                except FileNotFoundError:
                    time.sleep(POLL)
                    continue
                st = os.fstat(fh.fileno())
                ino = st.st_ino
                fh.seek(0 if pos == -1 else st.st_size)
                pos = fh.tell()
            line = fh.readline()
            if line.endswith("\n"):
                pos = fh.tell()
                e = _parse(line)
                if e is not None and matches(e, project, task, since, kinds):
                    yield e
                continue
            fh.seek(pos)
            time.sleep(POLL)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            if st.st_ino != ino or st.st_size < pos:  # trimmed: replaced by a new file
                fh.close()
                fh = None
                pos = -1
    finally:
        if fh is not None:
            fh.close()


def format_event(e: dict[str, Any]) -> str:
    where = e.get("project") or "-"
    if e.get("task"):
        where += f"/{e['task']}"
    details = e.get("details") or {}
    extra = " ".join(f"{k}={_detail(v)}" for k, v in details.items()
                     if v is not None and v != [])
    return f"{e.get('time')}  {where:<24} {e.get('event'):<22} {extra}".rstrip()


def _detail(value: Any) -> str:
    """A detail as a reader wants it on one line: lists as ``a,b``, not Python's repr, and a
    multi-line text (a config error) with its lines joined by `` | ``."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    text = str(value)
    if "\n" in text:
        text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return text
