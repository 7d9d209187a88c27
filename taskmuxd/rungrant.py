"""A restart decided in advance: the daemon's grant of the next run, and its claim or revocation.

When the daemon launches run N of a task whose policy would restart it at once (no wait) on
its next exit, it writes a **grant** next to the run's spec (``run/{task}.grant``, 0600 in the
project's 0700 ``run/`` folder): ``{"run": N+1, "marker": ..., "always": bool, "success":
[codes]}``, read as "if run N ends by itself (its first process exited, its whole tree is
gone, the pane is there) with a status the policy restarts, you may start run N+1 at once".

The file is the single point where the daemon's and the runner's views meet:

- the runner **claims** it by renaming it away (one atomic step), then reads what it
  claimed; only a grant for exactly the next run, covering the status seen, is used. It then
  records run N+1 write-ahead (status ``starting``, with run N's exit in ``after_*``) before
  forking, starts it, and reports both in one message (``runner.started``);
- the daemon **revokes** it by unlinking it, before any signal of a stop, kill or restart:
  the unlink succeeds (revoked: no run N+1 can come from it) or finds the file gone (the
  runner claimed it: run N+1 is on its way, and is taken and handled as the stop says).

A **delayed grant** answers a restart that waits a backoff: when run N's exit comes and the
machine schedules the restart S seconds later, the daemon writes the grant of run N+1 then
(``always``: the exit is known and restarts) and tells the runner waiting in the pane to
hold with it until run N's exit + the wait (``{"hold": S, "until": T, "grant": true}``,
``runrelaunch``). The runner waits in place (a signal, the pane closing or any other order
of the daemon ends the wait early), making run N+1 ready meanwhile (its spec from the grant,
read, not claimed; its log, environment and write-ahead record, staged beside), then claims
the grant as above, puts the record in place and forks it: one report. At
its timer the daemon revokes: the unlink succeeds (the runner has not claimed: the daemon
launches as usual, its order meeting the runner still waiting) or finds the file gone (the
runner claimed: its report comes).

So the decision stays the daemon's, taken ahead with what it knows at the launch (or at the
exit, for a delayed grant); the runner, the tree's only parent, carries it out exactly once.
Standard library only and cheap to import (the runner imports it).
"""

from __future__ import annotations

import posix as os  # not os: the runner imports this (see runpath)

from taskmuxctl.core import jsonio

SUFFIX = ".grant"
LIMIT = 4096  # bytes of a grant read at most


def text(run_id: int, marker: str, always: bool, success: list[int]) -> str:
    """The grant of run ``run_id`` (the next one), as the daemon writes it."""
    return jsonio.dumps({"run": run_id, "marker": marker, "always": always,
                         "success": sorted(success)})


def covers(grant: dict[str, object], code: int | None, sig: int | None) -> bool:
    """Whether the grant restarts a run that ended with ``code`` or signal ``sig``."""
    if grant.get("always") is True:
        return True
    success = grant.get("success")
    if sig is not None:
        return True
    return isinstance(success, list) and code is not None and code not in success


def claim(path: str, run_id: int, code: int | None, sig: int | None) -> str | None:
    """Claim the grant at ``path`` for run ``run_id`` after an exit with ``code``/``sig``:
    the marker of the run to start, or None (no grant, another run's, or not this status).
    A grant claimed is gone whatever it said: the daemon cannot revoke it any more."""
    taken = f"{path}.taken"
    try:
        os.rename(path, taken)
    except OSError:
        return None
    try:
        grant = _read(taken)
    finally:
        try:
            os.unlink(taken)
        except OSError:
            pass
    if grant is None or grant.get("run") != run_id:
        return None
    marker = grant.get("marker")
    if not isinstance(marker, str) or not covers(grant, code, sig):
        return None
    return marker


def _read(path: str) -> dict[str, object] | None:
    try:
        with open(path, "rb") as fh:
            data = fh.read(LIMIT + 1)
        grant = jsonio.loads(data) if len(data) <= LIMIT else None
    except (OSError, ValueError):
        return None
    return grant if isinstance(grant, dict) else None


def peek(path: str, run_id: int) -> str | None:
    """The marker of the grant at ``path`` for run ``run_id``, read without claiming it (to
    make the run ready while a hold lasts); None when there is none. Only a claim decides."""
    grant = _read(path)
    if grant is None or grant.get("run") != run_id:
        return None
    marker = grant.get("marker")
    return marker if isinstance(marker, str) else None


def held(order: dict[str, object]) -> bool:
    """Whether a hold order carries a delayed grant (claimed once the hold is over)."""
    return order.get("grant") is True


def beside(relaunch_socket: str) -> str:
    """The grant's path next to the runner's relaunch socket (``run/{task}.grant``): the
    runner never takes a path from an order."""
    stem = relaunch_socket.rsplit(".", 1)[0] if relaunch_socket.endswith(".relaunch") \
        else relaunch_socket
    return stem + SUFFIX


def revoke(path: str) -> bool:
    """Take the grant back: True when it was there (now no run can come from it), False when
    it was not (claimed by the runner, or never written)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
