"""Small file-system helpers shared by the daemon and the client (stdlib only)."""

from __future__ import annotations

import os

TEMP_SUFFIX = ".tmp"


def atomic_write(path: str, data: bytes | str, mode: int = 0o600,
                 owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new, never half.

    The temporary file lives in the same folder (rename is atomic only within a file system),
    is fsynced before the rename, and the folder is fsynced after it. ``owner`` (uid, gid),
    for root writing a user's file, is set on the temporary file before the rename: a
    ``chown`` of the path afterwards could be sent elsewhere by a link the user put there.
    The temporary name, ``.{name}.{pid}.{random}.tmp``, carries the writer's pid so that the
    daemon can tell, at start, a leftover of a process killed mid-write from a write in
    progress.
    """
    import tempfile  # not at the top: it costs the client's start-up ~4 ms

    raw = data.encode() if isinstance(data, str) else data
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.",
                               suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if owner is not None:
                os.fchown(fh.fileno(), *owner)
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            # Name the file being written, not the temporary one the caller never saw.
            raise OSError(exc.errno, exc.strerror, path) from exc
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


class UnreadableFile(OSError):
    """A file that is not read: not a regular file, or larger than allowed. ``str()`` says
    why in words."""


_KINDS = (("S_ISFIFO", "a FIFO (named pipe)"), ("S_ISCHR", "a character device"),
          ("S_ISBLK", "a block device"), ("S_ISSOCK", "a socket"), ("S_ISDIR", "a folder"))


def read_regular_file(path: str, limit: int) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them; never blocks.

    Opened with O_NONBLOCK, so a FIFO or a device cannot hold the caller; anything that is not
    a regular file, or is larger than ``limit``, raises UnreadableFile saying which. A
    symlink loop raises OSError with errno ELOOP; a missing file FileNotFoundError.
    """
    import stat

    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((words for test, words in _KINDS if getattr(stat, test)(mode)),
                        "not a regular file")
            raise UnreadableFile(f"{path} is {kind}, not a regular file")
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UnreadableFile(f"{path} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
