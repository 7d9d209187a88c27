"""Removing the temporary files of writes that never finished (a process killed mid-write).

Every writer of the state directory names its temporary file after the file it replaces and
its own pid: ``.{name}.{pid}.{random}.tmp`` (``atomic_write``), ``.{name}.{pid}.tmp`` (the
boot-guard) and ``{name}.{pid}.tmp`` (a runner's record). At start the daemon removes those
whose writer is gone; a write still in progress (a runner of a task that outlived the last
daemon, a client) is left alone. Nothing else is touched.
"""

from __future__ import annotations

import logging
import os
import re
import time

from taskmuxctl.core.fsutil import TEMP_SUFFIX
from taskmuxctl.core.paths import Paths

log = logging.getLogger("taskmuxd.tempfiles")

_WITH_PID = re.compile(r"^.+\.(?P<pid>[0-9]+)(?:\.[a-z0-9_]{8})?" + re.escape(TEMP_SUFFIX) + "$")
# What atomic_write named its temporary files before they carried a pid: removed once old.
_WITHOUT_PID = re.compile(r"^\..+\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")
OLD_ENOUGH = 600.0
SKIP_IN_APP = {"versions", "tmp"}  # installed programs; downloads (the update lock's)
MAX_DEPTH = 3  # home, projects/{p}, projects/{p}/logs; ca/...; app/


def _writer_gone(pid: int) -> bool:
    if pid == os.getpid():
        return True  # this daemon has written nothing through a temp file yet: a reused pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def is_leftover(name: str, path: str, now: float) -> bool:
    found = _WITH_PID.match(name)
    if found:
        return _writer_gone(int(found["pid"]))
    if _WITHOUT_PID.match(name):
        try:
            return now - os.lstat(path).st_mtime > OLD_ENOUGH
        except OSError:
            return False
    return False


def remove_leftovers(paths: Paths) -> list[str]:
    """Remove leftover temporary files under the state directory; the paths removed."""
    removed: list[str] = []
    now = time.time()
    top = paths.home.rstrip(os.sep).count(os.sep)
    for folder, dirs, files in os.walk(paths.home):
        depth = folder.rstrip(os.sep).count(os.sep) - top
        if depth >= MAX_DEPTH:
            dirs[:] = []
        elif folder == paths.app_dir:
            dirs[:] = [d for d in dirs if d not in SKIP_IN_APP]
        for name in files:
            if not name.endswith(TEMP_SUFFIX):
                continue
            path = os.path.join(folder, name)
            if not is_leftover(name, path, now):
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot remove the leftover temporary file %s: %s", path, exc)
                continue
            removed.append(path)
    if removed:
        log.info("removed %d leftover temporary file(s) of unfinished writes: %s",
                 len(removed), ", ".join(removed))
    return removed
