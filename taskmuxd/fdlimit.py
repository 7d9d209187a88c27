"""The daemon's file descriptors: raise the soft limit at start, and share out what it has.

Every proxied request holds two descriptors (the client's and the task's connection), a DNS
query over TCP one; the control socket, tmux, task logs and health checks need some of their
own at all times. So at start the soft ``RLIMIT_NOFILE`` goes up to the hard limit (capped at
``CEILING``: processes the daemon starts, such as a tmux server and the tasks in it, inherit
the soft limit, and a few programs still walk every possible descriptor), and the proxy and
the DNS server get connection caps that leave ``RESERVED`` descriptors free whatever clients
do. Two system calls, once.
"""

from __future__ import annotations

import logging
import resource

log = logging.getLogger("taskmuxd")

CEILING = 65536
RESERVED = 256  # kept for the control socket, files, tmux and subprocesses
MACOS_OPEN_MAX = 10240  # macOS refuses a soft limit above kern.maxfilesperproc


def soft_limit() -> int:
    """The soft descriptor limit in force (RLIM_INFINITY read as ``CEILING``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return CEILING if soft == resource.RLIM_INFINITY else soft


def raise_soft_limit(ceiling: int = CEILING) -> int:
    """Raise the soft descriptor limit to the hard one (at most ``ceiling``); the soft
    limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = ceiling if hard == resource.RLIM_INFINITY else min(hard, ceiling)
    if soft != resource.RLIM_INFINITY and soft < want:
        for value in (want, min(want, MACOS_OPEN_MAX)):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (value, hard))
                break
            except (ValueError, OSError) as exc:
                log.debug("cannot raise the descriptor limit to %d: %s", value, exc)
    return soft_limit()


def shares(limit: int) -> tuple[int, int]:
    """(the most proxy connections, the most DNS TCP connections) that fit in ``limit``
    descriptors with the reserve left free."""
    usable = limit - min(RESERVED, limit // 2)
    dns = max(usable // 8, 1)
    proxy = max((usable - dns) // 2, 1)
    return proxy, dns
