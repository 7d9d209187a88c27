"""Whether the daemon that hung up on a request without a word has stopped (or is stopping).

A daemon killed with SIGKILL keeps its listening socket open until its last thread has
exited, and the kernel still queues connections on it meanwhile: a client then connects,
sends its request and reads a reset or an end of file instead of a refusal. The client asks
here, on that rare path only, whether the daemon of the state directory is gone: the pid in
``daemon.pid`` exited with all its threads (so its socket is closed too, and the next
connection is refused or reaches a new daemon); without a pid there, its ``daemon.lock`` free
(the kernel drops the flock with the process's last descriptor). Within a short bounded wait;
a daemon still alive after it hung up is another matter (a protocol problem), which the
caller reports as before.
Stdlib only; imported lazily by the client.
"""

from __future__ import annotations

import os
import time

from taskmuxctl.core.fsutil import read_pid
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.pidlock import holder

GONE_WAIT = 2.0  # seconds a hung-up daemon is given to finish exiting


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited with every thread. A zombie nobody reaped counts as
    exited, but only once no other thread of it remains: a killed process of several threads
    is a zombie leader before the others end, and its descriptors close only with the last."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    if not os.path.isdir("/proc/self/task"):
        return False  # no /proc: a zombie cannot be told from a live process
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            if fh.read().rsplit(") ", 1)[1][:1] not in ("Z", "X"):
                return False
        return len(os.listdir(f"/proc/{pid}/task")) <= 1
    except (FileNotFoundError, ProcessLookupError):  # it ended while we looked
        return True
    except (OSError, IndexError):
        return False


def daemon_gone(paths: Paths, wait: float = GONE_WAIT) -> bool:
    """True when the daemon recorded for ``paths`` has exited, or does within ``wait``
    seconds; without a recorded pid, when its instance lock is free. (The pid is read once:
    a new daemon that another command starts meanwhile is not the one that hung up.)"""
    try:
        pid = read_pid(paths.pid_file)
    except OSError:
        pid = None

    def gone() -> bool:
        if pid is not None:
            return process_gone(pid)
        try:  # (the probe takes the lock for an instant, so it is the fallback only)
            return holder(paths.lock_file) is None
        except OSError:
            return False

    deadline = time.monotonic() + wait
    delay = 0.005
    while not gone():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        time.sleep(min(delay, left))
        delay = min(delay * 2, 0.1)
    return True
