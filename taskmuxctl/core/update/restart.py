"""Bouncing the daemon onto the version ``current`` points at, and waiting for it to answer.

Under a service manager (systemd, launchd, or anything that restarts a daemon exiting with a
failure status) the daemon is asked, through ``update.restart``, to stop in order and exit
with status 75; the manager starts the boot-guard again, which starts ``current``. No
privileges are needed, and the manager stays the one owner of the process. Without a manager
the daemon is stopped and the new one started directly (through the boot-guard too).
Tasks run in tmux either way and are not touched.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code, Method, RpcError
from taskmuxctl.core.rpcclient import Client, DaemonUnavailable
from taskmuxctl.core.update.layout import AppLayout

SERVICE = "service"
DIRECT = "direct"
NOT_RUNNING = "not_running"

MANAGER_GRACE = 3.0

OK = "ok"
REVERTED = "reverted"
TIMEOUT = "timeout"
DIED = "died"

DEFAULT_PROBATION = 10.0  # seconds a directly started daemon must stay up after an update
SILENCE = 10.0  # seconds without an answer (its process still there) that count as dead


def daemon_version(paths: Paths, timeout: float = 2.0) -> str | None:
    try:
        with Client(paths, timeout=timeout) as client:
            result = client.call(Method.DAEMON_VERSION)
    except (DaemonUnavailable, RpcError):
        return None
    version = result.get("version") if isinstance(result, dict) else None
    return version if isinstance(version, str) else None


def bounce(paths: Paths) -> str:
    """Restart the running daemon so that it runs ``current``; say how (or that none ran)."""
    try:
        with Client(paths, timeout=10.0) as client:
            client.call(Method.UPDATE_RESTART)
        return SERVICE
    except DaemonUnavailable as exc:
        if exc.code == Code.DAEMON_NOT_RUNNING:
            return NOT_RUNNING
        # There, but not answering: replace it all the same. A service manager may start the
        # new version by itself once this one is gone; start it directly only if none does.
        stop_running(paths)
        if answers(paths, MANAGER_GRACE):
            return SERVICE
    except RpcError as exc:
        if exc.code not in (Code.UPDATE_NOT_SUPERVISED, Code.METHOD_NOT_FOUND):
            raise
        from taskmuxctl.core.daemonctl import stop_daemon

        stop_daemon(paths)
    start_direct(paths)
    return DIRECT


def answers(paths: Paths, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if daemon_version(paths, timeout=1.0) is not None:
            return True
        time.sleep(0.1)
    return False


def start_direct(paths: Paths) -> None:
    from taskmuxctl.core.daemonctl import start_daemon

    start_daemon(paths)


def stop_running(paths: Paths, grace: float = 10.0) -> int | None:
    """Make sure no daemon runs: SIGTERM whatever ``daemon.pid`` names, SIGKILL after
    ``grace``. Returns the pid it stopped."""
    from taskmuxctl.core.daemonctl import alive
    from taskmuxctl.core.rpcclient import daemon_pid

    pid = daemon_pid(paths)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return None
    deadline = time.monotonic() + grace
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pid


def wait_for(paths: Paths, layout: AppLayout, version: str, timeout: float) -> str:
    """Wait until the daemon answers as ``version``. REVERTED as soon as ``current`` no longer
    points at it (the boot-guard gave up on it), TIMEOUT after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if daemon_version(paths, timeout=2.0) == version:
            return OK
        if layout.current_version() != version:
            return REVERTED
        if time.monotonic() >= deadline:
            return TIMEOUT
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def daemon_identity(paths: Paths, timeout: float = 2.0) -> tuple[str, int] | None:
    """The running daemon's version and pid, if it answers now."""
    try:
        with Client(paths, timeout=timeout) as client:
            result = client.call(Method.DAEMON_STATUS)
    except (DaemonUnavailable, RpcError):
        return None
    if not isinstance(result, dict):
        return None
    version, pid = result.get("version"), result.get("pid")
    if isinstance(version, str) and isinstance(pid, int):
        return version, pid
    return None


def hold(paths: Paths, layout: AppLayout, version: str, seconds: float,
         clock: Callable[[], float] = time.monotonic) -> str:
    """The probation of a daemon started directly (no service manager restarts it): it must
    stay up, answering as ``version``, for ``seconds``. OK when it did; DIED as soon as its
    process is gone (or it has not answered for ``SILENCE`` seconds); REVERTED when
    ``current`` no longer points at ``version``."""
    from taskmuxctl.core.daemonctl import alive

    deadline = clock() + seconds
    found = daemon_identity(paths)
    if found is None or found[0] != version:
        return DIED
    pid = found[1]
    last_answer = clock()
    while clock() < deadline:
        if layout.current_version() != version:
            return REVERTED
        if not alive(pid):
            return DIED
        now = daemon_identity(paths)
        if now is not None and now != (version, pid):
            return DIED  # another daemon answers: this one is gone
        if now is not None:
            last_answer = clock()
        elif clock() - last_answer > SILENCE:
            return DIED
        time.sleep(min(0.25, max(deadline - clock(), 0)))
    return OK if alive(pid) else DIED
