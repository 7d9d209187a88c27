"""An exclusive flock held for a process's life, whose holder is named by its pid.

The kernel drops an flock when its process dies, however it dies, so a crash never leaves a
stale lock; the pid is informational, for messages ("already running, pid 123"). The
daemon's instance lock (``taskmuxd.daemonlock``) and the update lock
(``taskmuxctl.core.update.lock``) are both this one class: they differ only in where the pid
is written and which error says "held".
Stdlib only: the client uses it.
"""

from __future__ import annotations

import fcntl
import os

from taskmuxctl.core.fsutil import read_pid

TYPE_CHECKING = False  # typing costs start-up time; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Self


class LockHeld(Exception):
    """Another process holds the lock; ``pid`` names it when known."""

    def __init__(self, pid: int | None) -> None:
        super().__init__(f"held by pid {pid}" if pid else "held by another process")
        self.pid = pid


class PidLock:
    """An flock on ``path`` taken without waiting. By default the holder writes its pid into
    the lock file itself and clears it on release; a subclass may keep the pid elsewhere
    (``record_pid``/``held_by``)."""

    def __init__(self, path: str, make_dir: bool = False) -> None:
        self.path = path
        self.make_dir = make_dir
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> Self:
        """Take the lock, or raise LockHeld naming the holder."""
        if self.make_dir:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(self.held_by()) from None
        self._fd = fd
        self.record_pid()
        return self

    def record_pid(self) -> None:
        """Say who holds the lock: this process's pid, in the lock file."""
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def held_by(self) -> int | None:
        """The pid the holder recorded (None when unknown)."""
        return read_pid(self.path)

    def release(self) -> None:
        if self._fd is None:
            return
        self.forget_pid()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def forget_pid(self) -> None:
        """Before the lock is let go: the pid is no longer the holder's."""
        assert self._fd is not None
        os.ftruncate(self._fd, 0)


def holder(path: str) -> int | None:
    """The pid holding the lock at ``path``, 0 when held by an unknown process, None when
    free."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_pid(path) or 0
    finally:
        os.close(fd)
    return None
