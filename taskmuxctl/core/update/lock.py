"""The update lock: one update at a time per state directory (CLI and daemon alike).

A ``PidLock`` on ``app/update.lock`` whose holder's pid is written into the lock file.
"""

from __future__ import annotations

from taskmuxctl.core.pidlock import LockHeld, PidLock, holder

TYPE_CHECKING = False  # typing costs start-up time; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Self

__all__ = ["UpdateBusy", "UpdateLock", "holder"]


class UpdateBusy(Exception):
    def __init__(self, pid: int | None) -> None:
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"another update is running ({who}); wait for it to finish")
        self.pid = pid


class UpdateLock(PidLock):
    """An flock on ``app/update.lock``; the holder's pid is written into the file."""

    def __init__(self, path: str) -> None:
        super().__init__(path, make_dir=True)

    def acquire(self) -> Self:
        try:
            return super().acquire()
        except LockHeld as exc:
            raise UpdateBusy(exc.pid) from None
