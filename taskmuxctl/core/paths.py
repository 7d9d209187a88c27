"""The state directory's layout: one object that knows where everything lives.

Stdlib only; both programs use it. Pass a ``Paths`` around instead of reading module globals,
so a test (or a second user) gets its own tree by constructing another one.
"""

from __future__ import annotations

import os

STATE_DIR_MODE = 0o700
# AF_UNIX paths are limited to 108 bytes on Linux (104 on macOS), terminator included.
MAX_SOCKET_PATH = 103


class Paths:
    """Every path under the state directory (``~/.taskmux`` or ``$TASKMUX_HOME``)."""

    __slots__ = ("home", "host")

    def __init__(self, home: str, host: str | None = None) -> None:
        self.home = os.path.abspath(home)
        # ``--host ssh://...``: the daemon to talk to is that machine's (see ``sshchannel``);
        # the files here still are this machine's.
        self.host = host

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        home = env.get("TASKMUX_HOME")
        if not home:
            home = os.path.join(os.path.expanduser("~"), ".taskmux")
        return cls(home)

    def __repr__(self) -> str:
        return f"Paths({self.home!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Paths) and other.home == self.home

    def __hash__(self) -> int:
        return hash(self.home)

    def _join(self, *parts: str) -> str:
        return os.path.join(self.home, *parts)

    @property
    def socket(self) -> str:
        return self._join("ctl.sock")

    @property
    def pid_file(self) -> str:
        return self._join("daemon.pid")

    @property
    def lock_file(self) -> str:
        return self._join("daemon.lock")

    @property
    def daemon_log(self) -> str:
        return self._join("daemon.log")

    @property
    def service_record(self) -> str:
        """Which service manager runs the daemon, written by ``daemon install``."""
        return self._join("service.json")

    @property
    def config(self) -> str:
        return self._join("config.toml")

    @property
    def registry(self) -> str:
        return self._join("registry.json")

    @property
    def events(self) -> str:
        return self._join("events.jsonl")

    @property
    def ca_dir(self) -> str:
        return self._join("ca")

    @property
    def app_dir(self) -> str:
        return self._join("app")

    @property
    def projects_dir(self) -> str:
        return self._join("projects")

    def project_dir(self, project: str) -> str:
        return self._join("projects", project)

    def logs_dir(self, project: str) -> str:
        return self._join("projects", project, "logs")

    def task_log(self, project: str, task: str) -> str:
        return self._join("projects", project, "logs", f"{task}.log")

    def ensure(self) -> None:
        """Create the state directory 0700, tightening it if it is looser."""
        os.makedirs(self.home, mode=STATE_DIR_MODE, exist_ok=True)
        st = os.stat(self.home)
        if st.st_mode & 0o777 != STATE_DIR_MODE:
            os.chmod(self.home, STATE_DIR_MODE)

    def socket_path_problem(self) -> str | None:
        """Why ``socket`` cannot be used as an AF_UNIX address, or None when it can."""
        size = len(os.fsencode(self.socket))
        if size > MAX_SOCKET_PATH:
            return (
                f"the control socket path {self.socket} is {size} bytes, longer than the "
                f"{MAX_SOCKET_PATH} a Unix socket allows; set TASKMUX_HOME to a shorter directory"
            )
        return None
