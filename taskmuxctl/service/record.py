"""``service.json`` in the state directory: which service manager runs this daemon.

``daemon install`` writes it and ``daemon uninstall`` removes it; ``daemon start|stop|
restart|status`` read it (one small file) to decide whether to go through systemctl or
launchctl. A record whose unit file has gone (removed by hand) counts as no service.
"""

from __future__ import annotations

import os

from taskmuxctl.core import jsonio
from taskmuxctl.core.paths import Paths

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from typing import Any

    from taskmuxctl.service.launchd import Launchd
    from taskmuxctl.service.systemd import Systemd
    from taskmuxctl.service.target import Target

FORMAT = 1


class Record:
    __slots__ = ("domain", "manager", "scope", "uid", "unit", "unit_file", "user")

    def __init__(self, manager: str, scope: str, unit: str, unit_file: str, user: str,
                 uid: int, domain: str) -> None:
        self.manager = manager
        self.scope = scope
        self.unit = unit
        self.unit_file = unit_file  # where it is on disk (TASKMUX_SERVICE_ROOT included)
        self.user = user
        self.uid = uid
        self.domain = domain

    @classmethod
    def for_target(cls, target: Target) -> Record:
        return cls(target.manager, target.scope, target.unit, target.on_disk(target.unit_file),
                   target.user, target.uid, target.domain)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT}
        out.update({key: getattr(self, key) for key in self.__slots__})
        return out

    def controller(self, env: dict[str, str] | None = None) -> Systemd | Launchd:
        if self.manager == "launchd":
            from taskmuxctl.service.launchd import Launchd

            return Launchd(self.unit, self.domain, self.unit_file, env)
        from taskmuxctl.service.systemd import Systemd

        return Systemd(self.unit, user=self.scope == "user", env=env)


def load(paths: Paths) -> Record | None:
    """The record, or None when there is none, it is unreadable, or its unit file is gone."""
    try:
        with open(paths.service_record, encoding="utf-8") as fh:
            data = jsonio.loads(fh.read())
        record = Record(str(data["manager"]), str(data["scope"]), str(data["unit"]),
                        str(data["unit_file"]), str(data["user"]), int(data["uid"]),
                        str(data["domain"]))
    except (OSError, ValueError, KeyError, TypeError, jsonio.JSONError):
        return None
    return record if os.path.exists(record.unit_file) else None


def text(record: Record) -> str:
    return jsonio.dumps(record.to_dict()) + "\n"
