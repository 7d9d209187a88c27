"""Reporting to systemd through ``$NOTIFY_SOCKET`` (sd_notify), via sdnotify.

Without ``NOTIFY_SOCKET`` every call is a no-op, so the daemon runs the same in a terminal.
Reading the process environment also removes the variables from it (as sd_notify's
``unset_environment`` does): tmux and the tasks the daemon starts must not inherit a channel
that only the daemon may use.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("taskmuxd.notify")

INHERITED_ONLY_BY_US = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        self._notifier = None
        if self.address:
            from sdnotify import SystemdNotifier

            self._notifier = SystemdNotifier()
            if self._notifier.socket is None:
                log.warning("NOTIFY_SOCKET=%s cannot be reached; not reporting to systemd",
                            self.address)
        self.watchdog_interval = _watchdog_interval(env)
        if environ is None:
            for name in INHERITED_ONLY_BY_US:
                os.environ.pop(name, None)

    @property
    def enabled(self) -> bool:
        return self._notifier is not None

    def send(self, state: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(state)

    def ready(self, status: str) -> None:
        self.send(f"READY=1\nSTATUS={status}\nMAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def stopping(self, status: str = "stopping") -> None:
        self.send(f"STOPPING=1\nSTATUS={status}")

    def close(self) -> None:
        if self._notifier is not None and self._notifier.socket is not None:
            self._notifier.socket.close()
        self._notifier = None


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000 / 2
