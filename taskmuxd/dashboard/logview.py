"""A task's log for the dashboard: the last lines, or the last lines that match a search.
Blocking (the caller runs it in a thread); reads at most ``READ_LIMIT`` bytes of the log's
end, so a huge log costs no more than a small one."""

from __future__ import annotations

READ_LIMIT = 1024 * 1024
DEFAULT_LINES = 300
MAX_LINES = 2000
MAX_QUERY = 200
MAX_LINE = 4000  # characters of one line sent


def clamp(text: str | None) -> int:
    try:
        n = int(text) if text else DEFAULT_LINES
    except ValueError:
        n = DEFAULT_LINES
    return max(1, min(n, MAX_LINES))


def tail(path: str, query: str, lines: int) -> list[str]:
    """The last ``lines`` lines of ``path`` containing ``query`` (case-insensitive; all
    lines when it is empty), oldest first."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(size - READ_LIMIT, 0))
            data = fh.read(READ_LIMIT)
    except OSError:
        return []
    text = data.decode("utf-8", "replace").splitlines()
    if size > READ_LIMIT and text:
        text = text[1:]  # the first one is cut
    needle = query[:MAX_QUERY].lower()
    if needle:
        text = [line for line in text if needle in line.lower()]
    return [line[:MAX_LINE] for line in text[-lines:]]
