"""Reading task logs straight from their files: across rotations, interleaved by time,
filtered by time and pattern, and followed through rotation. No daemon involved."""

from __future__ import annotations

import heapq
import os
import time

from taskmuxctl.core.timefmt import parse_stamp

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import TextIO

POLL = 0.1


def log_files(path: str) -> list[str]:
    """The rotated files oldest first, then the current one (those that exist)."""
    rotated = []
    n = 1
    while os.path.exists(f"{path}.{n}"):
        rotated.append(f"{path}.{n}")
        n += 1
    files = list(reversed(rotated))
    if os.path.exists(path):
        files.append(path)
    return files


def read_lines(path: str) -> list[str]:
    out: list[str] = []
    for name in log_files(path):
        try:
            with open(name, encoding="utf-8", errors="replace") as fh:
                out.extend(line.rstrip("\n") for line in fh)
        except FileNotFoundError:  # rotated away while reading
            continue
    return out


def stamp_of(line: str) -> str:
    return line.split(" ", 1)[0] if line[:4].isdigit() else ""


def merged(streams: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(task, line) from every task, in time order (each file is already in order)."""
    keyed = [[(stamp_of(line), i, task, line) for i, line in enumerate(lines)]
             for task, lines in streams.items()]
    return [(task, line) for _s, _i, task, line in heapq.merge(*keyed)]


def since_filter(rows: list[tuple[str, str]], since: float | None) -> list[tuple[str, str]]:
    if since is None:
        return rows
    out = []
    for task, line in rows:
        at = parse_stamp(stamp_of(line))
        if at is not None and at >= since:
            out.append((task, line))
    return out


def grep(rows: list[tuple[str, str]], pattern: str, context: int) -> list[tuple[str, str]]:
    import re

    rx = re.compile(pattern)
    keep: set[int] = set()
    for i, (_task, line) in enumerate(rows):
        if rx.search(line.split(" ", 1)[1] if " " in line else line):
            keep.update(range(max(i - context, 0), min(i + context + 1, len(rows))))
    return [rows[i] for i in sorted(keep)]


class Tail:
    """Follows one log path through rotation: when the file is renamed away, the rest of the
    old file is read before the new one is opened."""

    def __init__(self, path: str, from_end: bool = True) -> None:
        self.path = path
        self.fh: TextIO | None = None
        self.ino: int | None = None
        self.buf = ""
        self._open(from_end)

    def _open(self, at_end: bool) -> None:
        try:
            self.fh = open(self.path, encoding="utf-8", errors="replace")  # noqa: SIM115
        except FileNotFoundError:
            self.fh = None
            return
        st = os.fstat(self.fh.fileno())
        self.ino = st.st_ino
        if at_end:
            self.fh.seek(0, os.SEEK_END)

    def read(self) -> list[str]:
        lines: list[str] = []
        if self.fh is None:
            self._open(False)
            if self.fh is None:
                return lines
        lines += self._drain()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return lines
        if st.st_ino != self.ino:  # rotated: finish the old file, then any between, then new
            lines += self._drain()
            if self.buf:
                lines.append(self.buf)
                self.buf = ""
            if self.fh is not None:
                self.fh.close()
            lines += self._rotated_since(self.ino)
            self._open(False)
            lines += self._drain()
        elif self.fh is not None and st.st_size < self.fh.tell():  # truncated (logs-clean)
            self.fh.seek(0)
        return lines

    def _rotated_since(self, ino: int | None) -> list[str]:
        """Whole rotated files newer than the one we were reading (several rotations can
        happen between two polls)."""
        files = log_files(self.path)[:-1]
        inos = []
        for name in files:
            try:
                inos.append(os.stat(name).st_ino)
            except FileNotFoundError:
                inos.append(-1)
        newer = files[inos.index(ino) + 1:] if ino in inos else []
        out: list[str] = []
        for name in newer:
            try:
                with open(name, encoding="utf-8", errors="replace") as fh:
                    out.extend(line.rstrip("\n") for line in fh)
            except FileNotFoundError:
                continue
        return out

    def _drain(self) -> list[str]:
        if self.fh is None:
            return []
        self.buf += self.fh.read()
        *done, self.buf = self.buf.split("\n")
        return done

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()


def follow(paths: dict[str, str]) -> Iterator[tuple[str, str]]:
    tails = {task: Tail(path) for task, path in paths.items()}
    try:
        while True:
            got = False
            for task, tail in tails.items():
                for line in tail.read():
                    got = True
                    yield task, line
            if not got:
                time.sleep(POLL)
    finally:
        for tail in tails.values():
            tail.close()
