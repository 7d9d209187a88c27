"""Small text-rendering helpers for people (tables, durations)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [indent + "  ".join(h.ljust(widths[i]) for i, h in enumerate(headers)).rstrip()]
    for row in rows:
        lines.append(indent + "  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
    return "\n".join(lines)


def plural(n: int, word: str, words: str | None = None) -> str:
    """``1 project``, ``2 projects``."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def fix_plurals(text: str) -> str:
    """``1 projects`` → ``1 project`` in a summary another part wrote with a fixed plural."""
    import re

    return re.sub(r"(?<![\d.])1 (project|connection|task|request)s\b", r"1 \1", text)


def dash(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def last_exit(info: dict[str, Any] | None) -> str:
    if not info:
        return ""
    if info.get("signal"):
        return f"killed by signal {info['signal']}"
    return f"exit {info.get('code')}"


def size(n: int | None) -> str:
    """Bytes as people read them: ``512K``, ``12.3M``, ``1.2G``; ``-`` for unknown."""
    if n is None:
        return "-"
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return f"{n // 1024}K"


def cpu(percent: float | None) -> str:
    """A CPU figure in percent of one core (``-`` before the first interval)."""
    return "-" if percent is None else f"{percent:.0f}%" if percent >= 10 else f"{percent:.1f}%"
