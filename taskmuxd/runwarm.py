"""The runner's side of a warm runner: a stopped task's runner that stays in its pane, idle.

When a task is stopped by the user, its runner ends the task's whole tree and records and
reports the exit exactly as always; it then waits for the daemon's word like any runner whose
run ended by itself (``runrelaunch``). The daemon may answer ``{"warm": S}``: the task stays
stopped, but the runner stays in its pane, idle, for up to S seconds (at most
``WARM_LIMIT``), so that the next ``start`` of the task is an order to it (``{"run": N,
"spec": PATH}``, written ahead as any launch) instead of a new pane process: no tmux command,
no interpreter start-up. While it waits no task process runs, and the pane says so.

The runner still decides nothing: without an order it ends when the wait is over, on a
signal (the daemon's SIGTERM, sent by its recorded identity), or when its pane closes. It
refuses (and the daemon then launches through tmux, which ends it) an order whose spec
needs what only a fresh runner has: another control group, daemon socket or order socket.

Standard library only and cheap to import (the runner imports it).
"""

from __future__ import annotations

import posix as os  # not os: the runner imports this (see runpath)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from taskmuxd.runrecord import RunSpec

WARM_LIMIT = 86400.0  # the longest a runner agrees to wait warm (the setting's maximum)


def warm_seconds(order: dict[str, object]) -> float | None:
    """The seconds a warm order asks for (bounded), or None when it is no warm order."""
    warm = order.get("warm")
    if isinstance(warm, bool) or not isinstance(warm, int | float):
        return None
    return min(max(float(warm), 0.0), WARM_LIMIT)


def same_runner(old: RunSpec, new: RunSpec) -> bool:
    """Whether a run ordered in place can be run by this runner: what a runner takes up only
    at its start (its control group, where it reports, where it waits) is unchanged."""
    return (old.cgroup == new.cgroup and old.socket == new.socket
            and old.relaunch_socket == new.relaunch_socket)


def notice(task: str, seconds: float) -> bytes:
    """What the pane shows while its runner waits warm."""
    span = f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"
    return (f"\r\n[taskmux] {task} is stopped: no task process runs. This is its idle runner, "
            f"waiting up to {span} for `taskmux start {task}`.\r\n").encode()


def show(pane_ok: bool, task: str, seconds: float) -> None:
    """Say in the pane (when it still takes output) that this runner now waits warm."""
    if not pane_ok:
        return
    try:
        os.write(1, notice(task, seconds))
    except OSError:
        pass
