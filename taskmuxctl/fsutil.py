"""Small file-system helpers shared by the daemon and the client (stdlib only)."""

from __future__ import annotations

import os


def atomic_write(path: str, data: bytes | str, mode: int = 0o600,
                 owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new, never half.

    The temporary file lives in the same folder (rename is atomic only within a file system),
    is fsynced before the rename, and the folder is fsynced after it. ``owner`` (uid, gid),
    for root writing a user's file, is set on the temporary file before the rename: a
    ``chown`` of the path afterwards could be sent elsewhere by a link the user put there.
    """
    import tempfile  # not at the top: it costs the client's start-up ~4 ms

    raw = data.encode() if isinstance(data, str) else data
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if owner is not None:
                os.fchown(fh.fileno(), *owner)
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(folder)


def chown_nofollow(path: str, uid: int, gid: int) -> None:
    """``chown`` a folder or file root just made in a folder a user can write: through a
    descriptor opened without following a link, so a link swapped in meanwhile is refused."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_pid(path: str) -> int | None:
    """The pid recorded in ``path``, or None when the file is missing or not a pid."""
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
