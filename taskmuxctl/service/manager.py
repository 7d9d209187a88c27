"""What systemd and launchd have in common: the state of a service, and the door through
which their command-line tools are run (every changing command is recorded, so install can
say what it did and tests can check the order)."""

from __future__ import annotations

from taskmuxctl.core.protocol import Code
from taskmuxctl.core.result import CommandError
from taskmuxctl.service import spawn

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any

_SIGNALS = {1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 6: "SIGABRT", 7: "SIGBUS",
            8: "SIGFPE", 9: "SIGKILL", 11: "SIGSEGV", 13: "SIGPIPE", 14: "SIGALRM",
            15: "SIGTERM"}
EXIT_MEANINGS = {78: "invalid settings: fix config.toml, then start it again",
                 1: "failed at start (another daemon running?)",
                 143: "stopped by SIGTERM"}


def signal_name(number: int) -> str:
    return _SIGNALS.get(number, f"signal {number}")


def describe_exit(kind: str | None, status: int | None) -> str | None:
    """``exited 78 (invalid settings...)`` / ``killed by SIGKILL``; None when it never
    exited."""
    if kind is None or status is None:
        return None
    if kind == "exited":
        meaning = EXIT_MEANINGS.get(status)
        return f"exited {status}" + (f" ({meaning})" if meaning and status else "")
    return f"{kind} by {signal_name(status)}"


class ServiceState:
    """The service manager's view of the service."""

    __slots__ = ("active", "enabled", "last_exit", "loaded", "main_pid", "restarts", "state",
                 "sub")

    def __init__(self, loaded: bool = False, active: bool = False, state: str = "inactive",
                 sub: str = "", enabled: bool = False, main_pid: int | None = None,
                 restarts: int | None = None, last_exit: str | None = None) -> None:
        self.loaded = loaded  # the manager knows the unit/job
        self.active = active  # running (or starting)
        self.state = state  # the manager's word: active, inactive, failed, running...
        self.sub = sub
        self.enabled = enabled  # starts at boot
        self.main_pid = main_pid
        self.restarts = restarts  # automatic restarts since it was started by hand
        self.last_exit = last_exit

    @property
    def failed(self) -> bool:
        return self.state == "failed"

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.__slots__}

    def summary(self) -> str:
        state = f"{self.state} ({self.sub})" if self.sub else self.state
        parts = [state, "enabled" if self.enabled else "not enabled"]
        if self.main_pid:
            parts.append(f"pid {self.main_pid}")
        if self.restarts is not None:
            parts.append(f"{self.restarts} restart{'s' if self.restarts != 1 else ''}")
        parts.append(f"last exit: {self.last_exit or 'none'}")
        return ", ".join(parts)


class ServiceError(CommandError):
    def __init__(self, message: str, code: int = Code.SERVICE_FAILED, data: Any = None) -> None:
        super().__init__(message, code, data)


def needs_root_hint(stderr: str) -> bool:
    text = stderr.lower()
    return any(s in text for s in ("access denied", "interactive authentication required",
                                   "permission denied", "operation not permitted",
                                   "not privileged"))


class Tool:
    """One service manager's command-line tool. ``actions`` lists the changing commands run
    (queries are not recorded)."""

    def __init__(self, argv0: list[str], env: dict[str, str] | None = None,
                 timeout: float = 90.0) -> None:
        self.argv0 = argv0
        self.env = env
        self.timeout = timeout
        self.actions: list[str] = []

    def query(self, *args: str) -> spawn.Completed:
        return self._run(list(args))

    def change(self, *args: str, ok: tuple[int, ...] = (0,)) -> spawn.Completed:
        argv = [*self.argv0, *args]
        self.actions.append(" ".join(argv))
        done = self._run(list(args))
        if done.returncode not in ok:
            detail = (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"
            hint = ""
            if needs_root_hint(done.stderr):
                hint = f"; this needs root: sudo {' '.join(argv)}"
            raise ServiceError(f"`{' '.join(argv)}` failed: {detail}{hint}",
                               data={"argv": argv, "exit_status": done.returncode,
                                     "stderr": done.stderr})
        return done

    def _run(self, args: list[str]) -> spawn.Completed:
        argv = [*self.argv0, *args]
        try:
            return spawn.run(argv, self.timeout, self.env)
        except FileNotFoundError:
            raise ServiceError(f"{argv[0]} is not installed or not on PATH",
                               Code.SERVICE_UNAVAILABLE) from None
        except TimeoutError as exc:
            raise ServiceError(str(exc)) from None
