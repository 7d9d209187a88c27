"""One daemon per state directory: an flock on ``daemon.lock`` held for the daemon's life.

The kernel drops the lock when the process dies however it dies, so a crash never leaves a
stale lock; ``daemon.pid`` is informational and rewritten by each new holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from taskmuxctl.fsutil import atomic_write, read_pid
from taskmuxctl.paths import Paths


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None, paths: Paths) -> None:
        who = f"pid {pid}" if pid else "pid unknown"
        super().__init__(
            f"taskmuxd is already running ({who}) for {paths.home}; stop it with "
            "`taskmuxctl daemon stop`, or set TASKMUX_HOME to run another one elsewhere"
        )
        self.pid = pid


class InstanceLock:
    def __init__(self, paths: Paths) -> None:
        self.paths = paths
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.paths.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(read_pid(self.paths.pid_file), self.paths) from None
        self._fd = fd
        self.write_pid()

    def write_pid(self) -> None:
        atomic_write(self.paths.pid_file, f"{os.getpid()}\n", mode=0o600)

    def release(self) -> None:
        if self._fd is None:
            return
        if read_pid(self.paths.pid_file) == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.pid_file)
        os.close(self._fd)
        self._fd = None
