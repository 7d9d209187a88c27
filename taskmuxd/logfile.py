"""``daemon.log``, the log file of a detached daemon, rotated by size; stdout and stderr, when
they are that file, follow it to the new file. Apart from ``logs`` (which loads it only for a
log file), so that a daemon logging to stderr or the journal does not load logging.handlers."""

from __future__ import annotations

import logging.handlers
import os


def _same_file(fd: int, other_fd: int) -> bool:
    try:
        a, b = os.fstat(fd), os.fstat(other_fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class RotatingLog(logging.handlers.RotatingFileHandler):
    """``daemon.log`` rotated by size; stdout and stderr, when they are that file (a detached
    daemon), move to the new file with it."""

    def doRollover(self) -> None:
        old = self.stream.fileno() if self.stream else -1
        follow = [fd for fd in (1, 2) if old >= 0 and _same_file(old, fd)]
        super().doRollover()
        if self.stream:
            for fd in follow:
                os.dup2(self.stream.fileno(), fd)
