"""One daemon per state directory: an flock on ``daemon.lock`` held for the daemon's life.

A ``taskmuxctl.core.pidlock.PidLock`` (the kernel drops it when the process dies however it dies,
so a crash never leaves a stale lock) whose holder's pid goes to ``daemon.pid`` rather than
into the lock file: informational, rewritten by each new holder.
"""

from __future__ import annotations

import contextlib
import os

from taskmuxctl.core import diskspace
from taskmuxctl.core.fsutil import atomic_write, read_pid
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.pidlock import LockHeld, PidLock


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None, paths: Paths) -> None:
        who = f"pid {pid}" if pid else "pid unknown"
        super().__init__(
            f"taskmuxd is already running ({who}) for {paths.home}; stop it with "
            "`taskmuxctl daemon stop`, or set TASKMUX_HOME to run another one elsewhere"
        )
        self.pid = pid


class InstanceLock(PidLock):
    def __init__(self, paths: Paths) -> None:
        super().__init__(paths.lock_file)
        self.paths = paths
        self.pid_problem: str | None = None  # why daemon.pid could not be written
        self.previous_pid: int | None = None  # what daemon.pid said before acquire

    def acquire(self) -> InstanceLock:
        """Take the lock (AlreadyRunning names the holder) and write ``daemon.pid``; what it
        said before is kept (``put_back``)."""
        try:
            return super().acquire()
        except LockHeld as exc:
            raise AlreadyRunning(exc.pid, self.paths) from None

    def held_by(self) -> int | None:
        return read_pid(self.paths.pid_file)

    def record_pid(self) -> None:
        self.previous_pid = read_pid(self.paths.pid_file)
        self.write_pid()

    def write_pid(self) -> str | None:
        """Record this process in ``daemon.pid``. When that cannot be written (a full disk)
        a stale file is removed instead, so that nobody acts on a dead daemon's pid, and the
        reason is returned (and kept in ``pid_problem``): the daemon runs without the file,
        which is informational, and writes it once there is room (``diskwatch``)."""
        try:
            write_pid_file(self.paths)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(self.paths.pid_file)
            self.pid_problem = diskspace.describe(exc, self.paths.pid_file)
        else:
            self.pid_problem = None
        return self.pid_problem

    def put_back(self) -> None:
        """A start that failed (invalid settings) leaves ``daemon.pid`` as it found it: a dead
        predecessor's pid stays for ``daemon status`` to report."""
        with contextlib.suppress(OSError):
            if self.previous_pid is None:
                os.unlink(self.paths.pid_file)
            else:
                atomic_write(self.paths.pid_file, f"{self.previous_pid}\n", mode=0o600)

    def forget_pid(self) -> None:
        if read_pid(self.paths.pid_file) == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.paths.pid_file)


def write_pid_file(paths: Paths) -> None:
    atomic_write(paths.pid_file, f"{os.getpid()}\n", mode=0o600)
