"""Running as root only as long as needed: learn the target user, then drop for good.

``taskmuxd run`` started as root (``sudo taskmuxd run``, or a system service with
``--user NAME``) reads the target user's settings, binds the privileged sockets, writes what
only root may write (the hosts block, resolver files), and then calls :func:`drop`:
supplementary groups, then gid, then uid (real, effective and saved), checked by trying to
regain root. Only then is the state directory created, tmux started or a task run; everything
from there on runs as the user and the state directory is the user's own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass

from taskmuxctl.core.paths import Paths

log = logging.getLogger("taskmuxd.privileges")


class PrivilegeError(Exception):
    """The privilege drop cannot be done (or was not complete): the daemon must not run."""


@dataclass(frozen=True)
class Target:
    name: str
    uid: int
    gid: int
    home: str
    shell: str

    @classmethod
    def from_pw(cls, pw: pwd.struct_passwd) -> Target:
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell or "/bin/sh")


def _lookup(user: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"there is no user {user!r} on this machine") from None


def target_user(user: str | None, environ: MutableMapping[str, str] | None = None,
                euid: int | None = None) -> Target | None:
    """Who the daemon should run as after the drop; None when it keeps its own identity.

    As root: ``--user`` NAME (or uid), else the user who ran sudo (``SUDO_UID``), else
    nobody (root runs its own daemon). Not as root: ``--user`` may only name oneself.
    """
    env = os.environ if environ is None else environ
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        if user is not None and _lookup(user).pw_uid != euid:
            raise PrivilegeError(
                f"--user {user} needs root: start the daemon with `sudo taskmuxd run --user "
                f"{user}`, or run it as {user} without --user")
        return None
    if user is not None:
        pw = _lookup(user)
    elif env.get("SUDO_UID", "").isdigit() and env["SUDO_UID"] != "0":
        pw = _lookup(env["SUDO_UID"])
    else:
        return None
    return None if pw.pw_uid == 0 else Target.from_pw(pw)


def state_paths(target: Target, environ: MutableMapping[str, str] | None = None) -> Paths:
    """The target user's state directory: ``$TASKMUX_HOME`` if set, else ``~user/.taskmux``."""
    env = os.environ if environ is None else environ
    home = env.get("TASKMUX_HOME")
    return Paths(home) if home else Paths(os.path.join(target.home, ".taskmux"))


def drop(target: Target, environ: MutableMapping[str, str] | None = None) -> None:
    """Become ``target`` for good, or raise PrivilegeError (the caller must then exit)."""
    env = os.environ if environ is None else environ
    try:
        os.setgroups(os.getgrouplist(target.name, target.gid))
        os.setresgid(target.gid, target.gid, target.gid)
        os.setresuid(target.uid, target.uid, target.uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot switch to user {target.name}: {exc}") from exc
    verify(target)
    env["HOME"] = target.home
    env["USER"] = env["LOGNAME"] = target.name
    env["SHELL"] = target.shell
    for key in ("SUDO_UID", "SUDO_GID", "SUDO_USER", "SUDO_COMMAND", "MAIL",
                "TASKMUX_SYSTEM_CONFIG"):
        env.pop(key, None)
    runtime = f"/run/user/{target.uid}"
    if os.path.isdir(runtime):
        env["XDG_RUNTIME_DIR"] = runtime
    else:
        env.pop("XDG_RUNTIME_DIR", None)
    try:
        os.chdir(target.home)
    except OSError:
        os.chdir("/")
    log.info("dropped privileges: now running as %s (uid %d, gid %d)", target.name,
             target.uid, target.gid)


@contextlib.contextmanager
def as_user(target: Target) -> Iterator[None]:
    """Act with ``target``'s effective identity for a while (reading the user's files), so
    the kernel refuses whatever the user could not read; root again afterwards. Only the
    effective ids change: the real and saved ids stay root's, so the user cannot signal or
    trace the process meanwhile."""
    groups = os.getgroups()
    egid = os.getegid()
    try:
        os.setgroups(os.getgrouplist(target.name, target.gid))
        os.setegid(target.gid)
        os.seteuid(target.uid)
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)
        os.setgroups(groups)


def verify(target: Target) -> None:
    """Check that the drop is complete and cannot be undone."""
    if os.getresuid() != (target.uid,) * 3 or os.getresgid() != (target.gid,) * 3:
        raise PrivilegeError(f"the switch to {target.name} is incomplete: uids "
                             f"{os.getresuid()}, gids {os.getresgid()}")
    for regain, ident in ((os.setuid, 0), (os.seteuid, 0), (os.setgid, 0)):
        try:
            regain(ident)
        except PermissionError:
            continue
        raise PrivilegeError(f"after switching to {target.name} the process could become root "
                             "again; refusing to run")


def regain_root_attempt() -> str | None:
    """Try to become root again; the error when that is refused, None if it worked."""
    try:
        os.setuid(0)
    except PermissionError as exc:
        return str(exc)
    return None
