"""The list of runs the daemon is ending: how a runner learns, when its task ends, that the
daemon stopped it and looks for the run's strangers itself (``projects.strangers``).

One file per project, ``run/ending.runs``: a line ``{task} {run_id}`` for each run the daemon
has asked to end and not yet heard end. The daemon writes it (whole, renamed into place) before
it sends the stop's first signals, so a runner whose task ends on that signal finds its line
there; a stop of a hundred tasks is one file, not a hundred tokens. A line for a run the daemon
no longer ends (ended, or a later run) is harmless: the run id is the run's own, never reused,
and a runner that finds no line looks for its strangers itself, as without the daemon.

Standard library only and cheap to import (the runner imports it).
"""

from __future__ import annotations

NAME = "ending.runs"
MAX_BYTES = 1 << 20  # a runner reads at most this much of the list


def text(runs: dict[str, int]) -> str:
    """The list's contents: one line per task and the run of it being ended."""
    return "".join(f"{task} {run}\n" for task, run in sorted(runs.items()))


def listed(path: str | None, task: str, run_id: int) -> bool:
    """Whether the list at ``path`` names run ``run_id`` of ``task`` (False when there is no
    list or it cannot be read: the runner then looks for its strangers itself)."""
    if not path:
        return False
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES)
    except OSError:
        return False
    return f"\n{task} {run_id}\n".encode() in b"\n" + data
