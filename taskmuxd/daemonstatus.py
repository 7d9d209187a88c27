"""What ``daemon.status`` says of the daemon itself, built in one place.

Both the first phase of the start (``taskmuxd.boot``, before any subsystem exists) and the
started daemon (``taskmuxd.handlers.daemon``) answer ``daemon.status``; they share this builder
so the two answers always have the same keys. Stdlib only: phase one imports it.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

from taskmuxctl import __version__
from taskmuxctl.core.protocol import PROTOCOL_VERSION

if TYPE_CHECKING:
    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.rpctypes import DaemonStatus


def registered_project_count(registry_path: str) -> int:
    try:
        with open(registry_path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (FileNotFoundError, ValueError):
        return 0
    projects = data.get("projects", {}) if isinstance(data, dict) else {}
    return len(projects)


def core_status(paths: Paths, started_monotonic: float, started_at: float, *, stopping: bool,
                ready: bool, in_flight: int, calls_served: int) -> DaemonStatus:
    """The daemon's own section; ``in_flight`` counts the status call itself, left out here."""
    return {
        "pid": os.getpid(),
        "uid": os.getuid(),
        "version": __version__,
        "protocol": PROTOCOL_VERSION,
        "uptime": round(time.monotonic() - started_monotonic, 3),
        "started_at": started_at,
        "socket": paths.socket,
        "home": paths.home,
        "projects": registered_project_count(paths.registry),
        "stopping": stopping,
        "ready": ready,
        "calls_in_flight": in_flight - 1,
        "calls_served": calls_served,
    }
