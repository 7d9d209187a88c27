"""``ready_log_line``: a task is ready once a line of its output matches a pattern.

The runner feeds each line it writes to the task's log (ANSI-stripped, as a terminal shows
it, without the time stamp) to a :class:`LineMatcher`. Only the first ``MAX_LINE``
characters of a line are searched, so a task that prints one huge line costs a bounded
search; once a line matched, nothing more is searched.
"""

from __future__ import annotations

import re

MAX_LINE = 4096  # characters of each line searched


class LineMatcher:
    def __init__(self, pattern: str) -> None:
        self.pattern = re.compile(pattern)
        self.matched: str | None = None  # the line that matched (cut to MAX_LINE)

    def feed(self, line: str) -> bool:
        """Whether ``line`` is the first to match."""
        if self.matched is not None:
            return False
        line = line[:MAX_LINE]
        if self.pattern.search(line):
            self.matched = line
            return True
        return False
