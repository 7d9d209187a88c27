"""A full disk, told apart from other write failures and said in one line (stdlib only).

Both programs use it: the daemon to report the state directory's file system in ``status`` and
to word the errors of writes it could not make, the client for ``doctor`` and for a command
that itself could not write.
"""

from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeGuard

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
FULL_BELOW = 64 * 1024  # bytes free under which the file system counts as full
LOW_FRACTION = 0.05  # doctor warns below 5% free...
LOW_BELOW = 100 * 1024 * 1024  # ...when that is also under 100 MB


def is_full(exc: BaseException) -> TypeGuard[OSError]:
    """Whether ``exc`` is a write failing for want of space (or of quota)."""
    return isinstance(exc, OSError) and exc.errno in FULL_ERRNOS


def _existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def mount_point(path: str) -> str:
    """The mount point of the file system holding ``path``."""
    path = _existing(path)
    while not os.path.ismount(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def space(path: str) -> dict[str, Any]:
    """Free and total bytes of the file system holding ``path`` (for this user), and whether
    it counts as full; ``free`` is None when it cannot be read."""
    folder = _existing(path)
    out: dict[str, Any] = {"path": path, "mount": mount_point(folder), "free": None,
                           "total": None, "full": False}
    try:
        st = os.statvfs(folder)
    except OSError:
        return out
    out["free"] = st.f_bavail * st.f_frsize
    out["total"] = st.f_blocks * st.f_frsize
    out["full"] = out["free"] < FULL_BELOW
    return out


def size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _what(err: int | None) -> str:
    return "disk quota exceeded" if err == errno.EDQUOT else "no space left on device"


CARRIES_ON = "taskmux carries on by itself once there is room"
AGAIN = "then run the command again"


def full_message(path: str, err: int | None = errno.ENOSPC, then: str = CARRIES_ON) -> str:
    """What is wrong and what to do, in one line: ``path`` cannot be written."""
    where = mount_point(path)
    return (f"cannot write {path}: {_what(err)}; free space on {where} (`df -h {where}`; "
            f"old task logs are under projects/*/logs), {then}")


def full_status(home: str) -> str:
    """``status``'s warning while the state directory's file system is full."""
    where = mount_point(home)
    return (f"the disk holding {home} is full (no space left on device): events, state and "
            f"task log lines are being dropped; free space on {where} (`df -h {where}`; old "
            f"task logs are under projects/*/logs), {CARRIES_ON}")


def describe(exc: OSError, fallback: str = "a file", then: str = CARRIES_ON) -> str:
    """One line for a failed write: the full-disk wording when it is one, else the error."""
    path = exc.filename if isinstance(exc.filename, str) else fallback
    if is_full(exc):
        return full_message(path, exc.errno, then)
    return f"cannot write {path}: {exc.strerror or exc}"


def summary(state: dict[str, Any]) -> str:
    """``status``'s line for the state directory's file system."""
    free, total = state.get("free"), state.get("total")
    text = f"{size(free)} free of {size(total)} on {state.get('mount')}"
    if state.get("full"):
        text = (f"FULL: {text}; writes of {state.get('path')} fail (events, state and task "
                f"log lines are dropped and counted); free space on {state.get('mount')}")
    return text
