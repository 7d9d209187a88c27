"""Who a service is for and where its files live: a ``Target``, resolved once from the
command line, the environment and the user database.

Paths outside the state directory (``/etc/systemd/system``, ``/Library/LaunchDaemons``, a
user's ``~/.config/systemd/user``) are joined under ``TASKMUX_SERVICE_ROOT`` when it is set,
the way packagers use DESTDIR; tests point it at a temporary folder. The paths written
*inside* the files are always the real ones.
"""

from __future__ import annotations

import os
import sys

from taskmuxctl.core.paths import Paths

TYPE_CHECKING = False  # typing costs ~5 ms to import; the client never needs it at run time
if TYPE_CHECKING:
    from collections.abc import Mapping

SYSTEMD = "systemd"
LAUNCHD = "launchd"
SYSTEM = "system"
USER = "user"

UNIT_TEMPLATE = "taskmuxd@.service"
USER_UNIT = "taskmuxd.service"
DROP_IN = "taskmux.conf"
LABEL = "dev.taskmux.taskmuxd"
_INSTANCE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


class TargetError(ValueError):
    """The service cannot be installed as asked; the message says what to do instead."""


def default_manager(environ: Mapping[str, str]) -> str:
    forced = environ.get("TASKMUX_SERVICE_MANAGER", "")
    if forced in (SYSTEMD, LAUNCHD):
        return forced
    if forced:
        raise TargetError(f"TASKMUX_SERVICE_MANAGER={forced!r}: use 'systemd' or 'launchd'")
    return LAUNCHD if sys.platform == "darwin" else SYSTEMD


class Target:
    """One installation of the service: manager, scope, user, state directory, file paths."""

    __slots__ = ("environ", "gid", "home", "manager", "root", "scope", "state_dir", "uid",
                 "user")

    def __init__(self, manager: str, scope: str, user: str, uid: int, gid: int, home: str,
                 state_dir: str, root: str = "", environ: Mapping[str, str] | None = None
                 ) -> None:
        self.manager = manager
        self.scope = scope
        self.user = user
        self.uid = uid
        self.gid = gid
        self.home = home
        self.state_dir = os.path.abspath(state_dir)
        self.root = root.rstrip("/")
        self.environ = dict(environ or {})

    @property
    def paths(self) -> Paths:
        return Paths(self.state_dir)

    def on_disk(self, path: str) -> str:
        """Where the file for ``path`` is written (under TASKMUX_SERVICE_ROOT if set)."""
        return self.root + path if self.root else path

    # -- systemd ------------------------------------------------------------------------

    @property
    def unit(self) -> str:
        """The unit name (systemd) or the job label (launchd)."""
        if self.manager == LAUNCHD:
            return f"{LABEL}.{self.user}" if self.scope == SYSTEM else LABEL
        return f"taskmuxd@{self.user}.service" if self.scope == SYSTEM else USER_UNIT

    @property
    def unit_dir(self) -> str:
        if self.scope == SYSTEM:
            return "/etc/systemd/system"
        config = self.environ.get("XDG_CONFIG_HOME") or os.path.join(self.home, ".config")
        return os.path.join(config, "systemd", "user")

    @property
    def unit_file(self) -> str:
        """The unit (systemd) or property list (launchd) file, real path."""
        if self.manager == LAUNCHD:
            if self.scope == SYSTEM:
                return f"/Library/LaunchDaemons/{self.unit}.plist"
            return os.path.join(self.home, "Library", "LaunchAgents", f"{self.unit}.plist")
        name = UNIT_TEMPLATE if self.scope == SYSTEM else USER_UNIT
        return os.path.join(self.unit_dir, name)

    @property
    def drop_in(self) -> str | None:
        """The per-instance drop-in of the system template (systemd system scope only)."""
        if self.manager != SYSTEMD or self.scope != SYSTEM:
            return None
        return os.path.join(self.unit_dir, f"{self.unit}.d", DROP_IN)

    # -- launchd ------------------------------------------------------------------------

    @property
    def log_file(self) -> str | None:
        """Where launchd sends the daemon's stdout and stderr (systemd: the journal)."""
        if self.manager != LAUNCHD:
            return None
        if self.scope == SYSTEM:
            return f"/Library/Logs/taskmux/taskmuxd.{self.user}.log"
        return os.path.join(self.home, "Library", "Logs", "taskmux", "taskmuxd.log")

    @property
    def domain(self) -> str:
        return "system" if self.scope == SYSTEM else f"gui/{self.uid}"

    def describe(self) -> str:
        if self.manager == LAUNCHD:
            kind = "LaunchDaemon" if self.scope == SYSTEM else "LaunchAgent"
            return f"{kind} {self.unit}"
        return f"systemd {'system' if self.scope == SYSTEM else 'user'} unit {self.unit}"


def default_scope(euid: int) -> str:
    """The system service for root, a per-user service for anyone else."""
    return SYSTEM if euid == 0 else USER


def _passwd_by_name(name: str) -> tuple[str, int, int, str]:
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise TargetError(f"no user named {name!r} on this machine") from None
    return entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir


def _passwd_by_uid(uid: int) -> tuple[str, int, int, str]:
    import pwd

    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        raise TargetError(f"uid {uid} has no entry in the user database") from None
    return entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir


def resolve(user: str | None = None, scope: str | None = None,
            environ: Mapping[str, str] | None = None, euid: int | None = None) -> Target:
    """The target for ``daemon install``/``uninstall``.

    The user: ``user``, else the one who ran sudo, else whoever runs this. The scope: as
    asked, else the system service when running as root and the per-user service otherwise
    (as ``brew services`` does). The state directory: ``$TASKMUX_HOME`` when set, else the
    user's ``~/.taskmux``.
    """
    env = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    manager = default_manager(env)
    if user:
        name, uid, gid, home = _passwd_by_name(user)
    elif euid == 0 and env.get("SUDO_USER"):
        name, uid, gid, home = _passwd_by_name(env["SUDO_USER"])
    else:
        name, uid, gid, home = _passwd_by_uid(os.getuid())
    if scope is None:
        scope = default_scope(euid)
    if scope == SYSTEM and manager == SYSTEMD and not set(name) <= _INSTANCE_CHARS:
        raise TargetError(f"the user name {name!r} cannot name a systemd unit instance")
    if scope == USER and euid not in (uid, 0):
        raise TargetError(f"a per-user service for {name} must be installed by {name}")
    if scope == USER and euid == 0 and uid != 0 and manager == SYSTEMD:
        from taskmuxctl.core.daemonprogram import ctl_command

        raise TargetError(
            f"install {name}'s user unit as {name} (run taskmuxctl without sudo), or install "
            f"the system service: sudo {ctl_command()} daemon install --user {name}")
    state = env.get("TASKMUX_HOME") or os.path.join(home, ".taskmux")
    return Target(manager, scope, name, uid, gid, home, state,
                  root=env.get("TASKMUX_SERVICE_ROOT", ""), environ=env)
