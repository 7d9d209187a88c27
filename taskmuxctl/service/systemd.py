"""The door to systemd: ``systemctl`` (``--user`` for a per-user unit)."""

from __future__ import annotations

import os

from taskmuxctl.core.protocol import Code
from taskmuxctl.service.manager import ServiceError, ServiceState, Tool, describe_exit

SHOW_PROPERTIES = ("LoadState", "ActiveState", "SubState", "UnitFileState", "MainPID",
                   "NRestarts", "ExecMainCode", "ExecMainStatus", "ExecMainExitTimestamp")
_EXIT_KINDS = {"1": "exited", "2": "killed", "3": "dumped core"}


def parse_show(text: str) -> ServiceState:
    """A ServiceState from ``systemctl show -p ...`` output (``Key=Value`` lines)."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    loaded = props.get("LoadState", "") == "loaded"
    active_state = props.get("ActiveState", "") or "unknown"
    pid = props.get("MainPID", "0")
    restarts = props.get("NRestarts", "")
    last_exit = None
    if props.get("ExecMainExitTimestamp"):
        status = props.get("ExecMainStatus", "")
        last_exit = describe_exit(_EXIT_KINDS.get(props.get("ExecMainCode", "")),
                                  int(status) if status.lstrip("-").isdigit() else None)
    return ServiceState(
        loaded=loaded,
        active=active_state in ("active", "activating", "reloading"),
        state=active_state,
        sub=props.get("SubState", ""),
        enabled=props.get("UnitFileState", "") in ("enabled", "enabled-runtime", "linked",
                                                   "alias"),
        main_pid=int(pid) if pid.isdigit() and int(pid) else None,
        restarts=int(restarts) if restarts.isdigit() else None,
        last_exit=last_exit,
    )


def booted(root: str = "") -> bool:
    """sd_booted(): is systemd the init system here?"""
    return os.path.isdir(root + "/run/systemd/system")


class Systemd:
    name = "systemd"

    def __init__(self, unit: str, user: bool = False, env: dict[str, str] | None = None
                 ) -> None:
        self.unit = unit
        self.user = user
        self.tool = Tool(["systemctl", "--user"] if user else ["systemctl"], env)

    @property
    def actions(self) -> list[str]:
        return self.tool.actions

    def state(self) -> ServiceState:
        done = self.tool.query("show", self.unit, "--property=" + ",".join(SHOW_PROPERTIES))
        if done.returncode != 0:
            raise ServiceError(f"`systemctl show {self.unit}` failed: "
                               f"{(done.stderr or done.stdout).strip()}",
                               Code.SERVICE_UNAVAILABLE)
        return parse_show(done.stdout)

    def reload(self) -> None:
        """Make the manager read the changed unit files."""
        self.tool.change("daemon-reload")

    def enable(self) -> None:
        self.tool.change("enable", self.unit)

    def start(self) -> None:
        self._reset_if_failed()
        self.tool.change("start", self.unit)

    def stop(self) -> None:
        self.tool.change("stop", self.unit)

    def restart(self) -> None:
        self._reset_if_failed()
        self.tool.change("restart", self.unit)

    def remove(self) -> None:
        """Stop it and stop it starting at boot (before its files go)."""
        self.tool.change("disable", "--now", self.unit)

    def forget(self) -> None:
        """After the files are gone."""
        self.tool.change("daemon-reload")
        self.tool.change("reset-failed", self.unit, ok=(0, 1))

    def _reset_if_failed(self) -> None:
        # A unit that hit its start limit refuses to start until this is cleared.
        if self.state().failed:
            self.tool.change("reset-failed", self.unit)

    def logs_hint(self) -> str:
        flag = "--user " if self.user else ""
        return f"journalctl {flag}-u {self.unit} -n 50"
