"""The daemon's report to the boot-guard (stdlib only): READY, stable, clean exit.

The boot-guard starts each daemon with ``TASKMUX_GUARD_ATTEMPT`` set; the daemon writes
``app/run.json`` for that attempt right after READY, again once it has stayed up
``TASKMUX_GUARD_STABLE`` seconds (from then on the guard never reverts this version), and when
it stops in order (a manual restart is not a crash). A daemon not started by the guard writes
nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.update import bootguard

log = logging.getLogger("taskmuxd.bootmark")


def _attempt() -> str | None:
    return os.environ.get(bootguard.ATTEMPT_ENV) or None


def _write(paths: Paths, **fields: object) -> None:
    try:
        bootguard.write_run(paths.app_dir, **fields)
    except OSError as exc:
        log.warning("cannot write %s for the boot-guard: %s", bootguard.RUN_MARKER, exc)


def ready(paths: Paths, version: str) -> None:
    attempt = _attempt()
    if attempt is None or not os.path.isdir(paths.app_dir):
        return
    _write(paths, attempt=attempt, version=version, pid=os.getpid(),
           boot=bootguard.boot_id(), ready_at=time.time(), stable_at=None, exit=None)
    try:
        stable_after = float(os.environ.get(bootguard.STABLE_ENV, bootguard.DEFAULT_STABLE))
    except ValueError:
        stable_after = bootguard.DEFAULT_STABLE

    def mark_stable() -> None:
        _write(paths, attempt=attempt, stable_at=time.time())

    timer = threading.Timer(stable_after, mark_stable)
    timer.daemon = True
    timer.start()


def stopped(paths: Paths, code: int) -> None:
    attempt = _attempt()
    if attempt is None or not os.path.isdir(paths.app_dir):
        return
    _write(paths, attempt=attempt, exit={"code": code, "at": time.time()})
