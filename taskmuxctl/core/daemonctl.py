"""Starting and stopping a daemon that no service manager owns."""

from __future__ import annotations

import contextlib
import os
import time

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code, Method
from taskmuxctl.core.result import CommandError
from taskmuxctl.core.rpcclient import Client, DaemonUnavailable, daemon_pid

START_TIMEOUT = 15.0
STOP_TIMEOUT = 20.0


def ping(paths: Paths, timeout: float = 2.0) -> dict[str, object] | None:
    """The daemon's status if it answers now, else None."""
    try:
        with Client(paths, timeout=timeout) as client:
            result = client.call(Method.DAEMON_STATUS)
    except DaemonUnavailable:
        return None
    return result if isinstance(result, dict) else None


def _wait(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    return bool(condition())  # type: ignore[operator]


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])
    except OSError:
        return ""


def daemon_command(paths: Paths | None = None) -> list[str]:
    from taskmuxctl.core.daemonprogram import daemon_program

    return [*daemon_program(paths), "run"]


ROOT_WARNING = (
    "taskmux: warning: running as root, so the daemon runs every task as root (and, with the "
    "default settings, serves ports 443 and 80 and edits /etc/hosts). To run as a user: run "
    "taskmux as that user, or `sudo taskmux daemon install --user NAME` (root then only "
    "binds the ports and drops to NAME).")


def warn_if_root() -> None:
    """Say once, on the terminal, that a daemon started by root runs tasks as root."""
    if os.geteuid() == 0:
        import sys

        sys.stderr.write(ROOT_WARNING + "\n")


def start_daemon(paths: Paths) -> int:
    """Start a detached daemon and wait until it answers; return its pid. As root, say first
    (on stderr) what that means and how to run as a user instead."""
    import subprocess

    warn_if_root()
    paths.ensure()
    fd = os.open(paths.daemon_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    # Private from its first byte (the daemon keeps it so); unbuffered, so that a full disk
    # cannot fail the close after the suppressed write below.
    with os.fdopen(fd, "ab", buffering=0) as log:
        proc = subprocess.Popen(
            [*daemon_command(paths), "--detach", "--log-file", paths.daemon_log],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            close_fds=True, env={**os.environ, "TASKMUX_HOME": paths.home},
        )
        try:
            out, err = proc.communicate(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        with contextlib.suppress(OSError):  # a full disk: the message below says so
            log.write(err)
    text = out.decode(errors="replace").strip()
    if proc.returncode != 0 or not text.isdigit():
        detail = err.decode(errors="replace").strip() or _log_tail(paths.daemon_log)
        raise CommandError(
            f"could not start the daemon: it exited with status {proc.returncode}: {detail}",
            Code.DAEMON_START_FAILED,
            {"log": paths.daemon_log, "exit_status": proc.returncode})
    pid = int(text)
    status: dict[str, object] = {}

    def answering() -> bool:
        found = ping(paths, timeout=1.0)
        if found:
            status.update(found)
            return True
        return not alive(pid)

    _wait(answering, START_TIMEOUT)
    if status:
        return int(str(status["pid"]))
    reason = "it exited" if not alive(pid) else f"it did not answer within {START_TIMEOUT:.0f}s"
    raise CommandError(
        f"could not start the daemon (pid {pid}): {reason}. Last lines of {paths.daemon_log}:"
        f"\n{_log_tail(paths.daemon_log)}",
        Code.DAEMON_START_FAILED, {"log": paths.daemon_log, "pid": pid})


def stop_daemon(paths: Paths) -> int | None:
    """Ask the daemon to shut down and wait until it is gone; return its pid (None if it was
    not running)."""
    try:
        with Client(paths, timeout=5.0) as client:
            pid = int(client.call(Method.DAEMON_SHUTDOWN)["pid"])
    except DaemonUnavailable as exc:
        pid_alive = daemon_pid(paths)
        if exc.code == Code.DAEMON_NOT_RUNNING and pid_alive is None:
            return None
        if pid_alive is None:
            raise
        import signal

        os.kill(pid_alive, signal.SIGTERM)
        pid = pid_alive
    if not _wait(lambda: not alive(pid), STOP_TIMEOUT):
        raise CommandError(
            f"the daemon (pid {pid}) is still running {STOP_TIMEOUT:.0f}s after being asked to "
            f"stop; see {paths.daemon_log}, or `kill -9 {pid}` (tasks keep running)",
            Code.DAEMON_TIMEOUT, {"pid": pid})
    return pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (when we spawned it) counts as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(") ", 1)[1][:1] not in ("Z", "X")
    except (OSError, IndexError):
        return True
