"""Everything the daemon creates is its user's alone: files 0600, folders 0700.

:func:`make_private` sets the umask to 0o077 when the daemon starts (after any privilege
drop), so every file and folder it creates (``daemon.log`` and its rotations, ``projects/``
and each project's folders, records, temporary files) is private without each call site
having to say so. The user's commands are not the daemon's files: tmux (and so every task),
hooks and health-check commands get back the umask the daemon was started with
(:func:`child_umask`), as they would have in the user's terminal. :func:`tighten` brings
what an older version left looser (``daemon.log`` 0644, ``projects/`` 0755) into line.
"""

from __future__ import annotations

import contextlib
import os
import stat

from taskmuxctl.core.paths import Paths

PRIVATE_UMASK = 0o077
_started_with: int | None = None


def make_private() -> None:
    global _started_with
    old = os.umask(PRIVATE_UMASK)
    if _started_with is None:
        _started_with = old


def child_umask() -> int:
    """The umask for the user's own commands: the one the daemon was started with (-1,
    "leave it as it is", when the daemon never changed it)."""
    return -1 if _started_with is None else _started_with


def _tighten_one(path: str, uid: int) -> None:
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if st.st_uid != uid or stat.S_ISLNK(st.st_mode) or not st.st_mode & 0o077:
            return
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700, follow_symlinks=False)


def tighten(paths: Paths) -> None:
    """Take group and other bits off the daemon's own files: the state directory's top
    level (not ``app/``, the installed releases), the ``projects/`` and ``ca/`` trees; never
    through a link, only what belongs to the daemon's user."""
    uid = os.geteuid()
    try:
        top = os.listdir(paths.home)
    except OSError:
        return
    for name in top:
        if name != "app":
            _tighten_one(os.path.join(paths.home, name), uid)
    for tree in (paths.projects_dir, paths.ca_dir):
        if os.path.islink(tree):
            continue
        for folder, dirs, files in os.walk(tree):
            for name in dirs + files:
                _tighten_one(os.path.join(folder, name), uid)
