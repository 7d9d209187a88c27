"""What every command handler gets: where the state lives, output mode, a daemon connection."""

from __future__ import annotations

import os

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code
from taskmuxctl.core.rpcclient import Client, DaemonUnavailable

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any


class Context:
    def __init__(self, paths: Paths, as_json: bool = False, no_daemon_start: bool = False,
                 prog: str = "taskmux") -> None:
        self.paths = paths
        self.as_json = as_json
        self.no_daemon_start = no_daemon_start
        self.prog = prog
        self._client: Client | None = None
        self.started_daemon: int | None = None

    def autostart_allowed(self) -> bool:
        if self.no_daemon_start or os.environ.get("TASKMUX_NO_DAEMON_START"):
            return False
        return bool(self.setting("auto_start_daemon", True))

    def setting(self, key: str, default: Any) -> Any:
        """One key of config.toml, read without the daemon's model (tomllib only)."""
        import tomllib

        try:
            with open(self.paths.config, "rb") as fh:
                return tomllib.load(fh).get(key, default)
        except (OSError, tomllib.TOMLDecodeError):
            return default

    def daemon(self, start: bool = True) -> Client:
        """A connection to the daemon, starting it first when allowed and needed."""
        if self._client is not None:
            return self._client
        try:
            self._client = Client(self.paths).connect()
        except DaemonUnavailable as exc:
            if not (start and exc.code == Code.DAEMON_NOT_RUNNING and self.autostart_allowed()):
                raise
            from taskmuxctl.core.daemonctl import start_daemon
            from taskmuxctl.service import control

            managed = control.start(self.paths)  # through the service manager, if any
            self.started_daemon = int(managed["pid"]) if managed else start_daemon(self.paths)
            self._client = Client(self.paths).connect()
        return self._client

    def call(self, method: str, params: Mapping[str, Any] | None = None,
             start: bool = True) -> Any:
        client = self.daemon(start)
        try:
            return client.call(method, params)
        except DaemonUnavailable:
            if not self.died_answering(client):
                raise  # alive and closing on us: a protocol problem, reported as it is
        # The daemon accepted the request and died before it said a word (killed while its
        # socket still accepted): it is not running. The request goes once more, to a daemon
        # started now by the usual rules, as a user would run the command again by hand. That
        # is safe even for start/stop/restart: whatever the dead daemon did of it before it
        # died, the new one adopts the tasks still running (tasks live in tmux), starting a
        # running task is a no-op, stopping a stopped one too, and a restart restarts once
        # more at worst. Never more than once, and never after any byte of a reply.
        self.close()
        if not (start and self.autostart_allowed()):
            raise DaemonUnavailable(
                Code.DAEMON_NOT_RUNNING, "stopped",
                "the daemon stopped while answering (it was killed or crashed; see "
                f"{self.paths.daemon_log}) and is not running now; start it with "
                f"`{self.prog} daemon start` and run the command again")
        return self.daemon(start).call(method, params)

    def died_answering(self, client: Client) -> bool:
        """Whether the daemon hung up on ``client`` before a byte of a reply and has exited
        since, or does within a short bounded wait (``core/hangup.py``): it was killed while
        its socket still accepted. A local daemon only."""
        if not client.hung_up or self.paths.host:
            return False
        from taskmuxctl.core.hangup import daemon_gone

        return daemon_gone(self.paths)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
