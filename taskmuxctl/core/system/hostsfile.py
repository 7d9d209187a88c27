"""The managed block in the hosts file (``/etc/hosts``).

Only the lines between ``# BEGIN taskmux managed`` and ``# END taskmux managed`` are ever
changed; the user's lines stay exactly as they were. Every name is checked where it is
written (a name with a newline would otherwise add lines of its own). The file is replaced
atomically (a temporary file in the same folder, fsynced, then renamed) keeping its mode and
owner; where the file is a bind mount (containers), which cannot be renamed over, it is
rewritten in place. As root, the file is never reached through a link and must sit in folders
only root can change.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from taskmuxctl.core.fsutil import fsync_dir
from taskmuxctl.core.system import rootfiles
from taskmuxctl.core.system.hostnames import valid as valid_names

BEGIN = "# BEGIN taskmux managed"
END = "# END taskmux managed"
NOTE = "# Written by taskmux for task URLs; edit outside this block."


def render_block(names: list[str]) -> list[str]:
    if not names:
        return []
    lines = [BEGIN, NOTE]
    lines += [f"127.0.0.1\t{name}" for name in names]
    lines += [f"::1\t{name}" for name in names]
    lines.append(END)
    return lines


def block_names(text: str) -> list[str]:
    """The names the managed block of ``text`` maps (empty when there is no block)."""
    names: list[str] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == BEGIN:
            inside = True
        elif stripped == END:
            inside = False
        elif inside and stripped and not stripped.startswith("#"):
            for name in stripped.split()[1:]:
                if name not in names:
                    names.append(name)
    return names


def replace_block(text: str, names: list[str]) -> str:
    """``text`` with its managed block holding ``names`` (removed when there are none).

    The block stays where it was; a new one goes at the end. A BEGIN without an END (a
    hand-edited file) keeps every line after it, rather than swallowing the user's entries.
    """
    lines = text.splitlines()
    out: list[str] = []
    at: int | None = None
    i = 0
    while i < len(lines):
        if lines[i].strip() == BEGIN:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == END), None)
            if end is not None:
                if at is None:
                    at = len(out)
                i = end + 1
                continue
        out.append(lines[i])
        i += 1
    if at is None:
        at = len(out)
    out[at:at] = render_block(names)
    return "\n".join(out) + "\n" if out else ""


MAX_HOSTS_BYTES = 16 * 1024 * 1024


def read(path: str) -> str:
    """The hosts file's text ("" when missing); a FIFO or device is refused, not waited on."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return ""
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise rootfiles.UnsafeFile(f"{path} is not a regular file")
        raw = fh.read(MAX_HOSTS_BYTES + 1)
    if len(raw) > MAX_HOSTS_BYTES:  # never rewrite a file only partly read
        raise rootfiles.UnsafeFile(f"{path} is larger than {MAX_HOSTS_BYTES} bytes")
    return raw.decode("utf-8", errors="surrogateescape")


def _read_as_root(path: str) -> tuple[str, os.stat_result | None]:
    """The hosts file's text and status, as root: never through a link, only a regular file
    in folders only root can change (else :class:`~taskmuxctl.core.system.rootfiles.UnsafeFile`)."""
    problem = rootfiles.path_problem(path)
    if problem:
        raise rootfiles.UnsafeFile(f"refusing to write {path} as root: {problem}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return "", None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise rootfiles.UnsafeFile(f"refusing to write {path} as root: not a regular file")
        raw = fh.read(MAX_HOSTS_BYTES + 1)
    if len(raw) > MAX_HOSTS_BYTES:
        raise rootfiles.UnsafeFile(f"{path} is larger than {MAX_HOSTS_BYTES} bytes")
    return raw.decode("utf-8", errors="surrogateescape"), st


def write(path: str, names: list[str], tld: str = "localhost") -> bool:
    """Make the block of ``path`` hold ``names``; True when the file changed.

    Every name is checked here (:mod:`taskmuxctl.core.system.hostnames`): one that is not a
    host name under ``.{tld}`` is left out and logged. The new file replaces the old atomically,
    keeping its mode and owner. As root the file must be a regular file (never a link) in folders
    only root can change (:func:`taskmuxctl.core.system.rootfiles.path_problem`).
    """
    names = valid_names(names, tld, path)
    as_root = os.geteuid() == 0
    if as_root:
        old, st = _read_as_root(path)
    else:
        old = read(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
    new = replace_block(old, names)
    if new == old:
        return False
    raw = new.encode("utf-8", errors="surrogateescape")
    mode = st.st_mode & 0o7777 if st is not None else 0o644
    owner = (st.st_uid, st.st_gid) if st is not None and as_root else None
    try:
        _replace(path, raw, mode, owner)
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.EXDEV):
            raise
        _rewrite_in_place(path, raw)  # a bind mount (containers) cannot be renamed over
    return True


def _replace(path: str, raw: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    """A temporary file in the same folder with ``mode`` and ``owner`` set before it is
    fsynced and renamed over ``path`` (which, a link included, is replaced, not followed)."""
    import tempfile

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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def _rewrite_in_place(path: str, raw: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "wb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise rootfiles.UnsafeFile(f"refusing to write {path}: not a regular file")
        fh.truncate(0)
        fh.write(raw)
        fh.flush()
        os.fsync(fh.fileno())
