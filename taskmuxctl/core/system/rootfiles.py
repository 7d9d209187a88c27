"""Files the privileged half touches, checked as if a hostile user had prepared them.

Two kinds:

- **Root's own files** (the system configuration, the hosts file): trusted only when no one
  but root can have changed them or can change them now. :func:`path_problem` walks the path
  from ``/``: every folder must belong to root and be writable by nobody else (a world-writable
  folder with the sticky bit, such as ``/tmp``, passes: there only root can rename or remove
  root's entries); a symbolic link on the way is followed only when it sits in such a folder
  (root put it there), and the file itself must be root's, not writable by group or others,
  and not a link.
- **The user's files** (``config.toml``, ``hostnames.json`` in the state directory), read
  while still root: :func:`read_user_file` opens them with ``O_NOFOLLOW | O_NONBLOCK`` (a
  link or a FIFO cannot redirect or stall the read), requires a regular file that belongs to
  the user (or root), and reads at most ``limit`` bytes. The caller reads them with the
  user's effective identity (:func:`taskmuxd.privileges.as_user`), so the kernel refuses
  whatever the user could not read themselves.
"""

from __future__ import annotations

import errno
import os
import stat

MAX_LINK_HOPS = 16


class UnsafeFile(OSError):
    """A file the privileged half refuses to read or write, with the reason."""


def _folder_problem(st: os.stat_result, folder: str) -> str | None:
    if not stat.S_ISDIR(st.st_mode):
        return f"{folder} is not a folder"
    if st.st_uid != 0:
        return f"{folder} belongs to uid {st.st_uid}, not root"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return f"{folder} is writable by group or others (mode {st.st_mode & 0o7777:o})"
    return None


def folder_problem(folder: str, _hops: int = 0) -> str | None:
    """Why ``folder`` (absolute) could be changed by someone other than root, or None;
    FileNotFoundError when part of it does not exist."""
    if not os.path.isabs(folder):
        return f"{folder} is not an absolute path"
    current = "/"
    problem = _folder_problem(os.lstat("/"), "/")
    if problem:
        return problem
    for part in [p for p in os.path.normpath(folder).split("/") if p]:
        nxt = os.path.join(current, part)
        st = os.lstat(nxt)  # FileNotFoundError: the caller says what is missing
        if stat.S_ISLNK(st.st_mode):
            # A link in a folder only root can change: root's own choice; check where it goes.
            if _hops >= MAX_LINK_HOPS:
                return f"too many symbolic links under {folder}"
            if st.st_uid != 0:
                return f"{nxt} is a symbolic link that belongs to uid {st.st_uid}"
            target = os.path.join(current, os.readlink(nxt))
            real = os.path.realpath(target)
            problem = folder_problem(os.path.normpath(target), _hops + 1) \
                or (folder_problem(real, _hops + 1) if real != os.path.normpath(target)
                    else None)
            if problem:
                return problem
            current = real
            continue
        problem = _folder_problem(st, nxt)
        if problem:
            return problem
        current = nxt
    return None


def path_problem(path: str) -> str | None:
    """Why root must not trust (read as its own, or write) ``path``, or None when only root
    can have written it. A missing file is fine when its folder is safe."""
    if not os.path.isabs(path):
        return f"{path} is not an absolute path"
    problem = folder_problem(os.path.dirname(os.path.normpath(path)))
    if problem:
        return problem
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    return _file_problem(st, path)


def _file_problem(st: os.stat_result, path: str) -> str | None:
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_uid != 0:
        return f"{path} belongs to uid {st.st_uid}, not root"
    if st.st_mode & 0o022:
        return f"{path} is writable by group or others (mode {st.st_mode & 0o7777:o})"
    return None


def _read_fd(fd: int, path: str, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, min(65536, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise UnsafeFile(f"{path} is larger than {limit} bytes: refused")


def _open_nofollow(path: str) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
    try:
        return os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):  # O_NOFOLLOW met a link
            raise UnsafeFile(f"{path} is a symbolic link: refused") from None
        raise


def read_root_file(path: str, limit: int) -> bytes:
    """``path``'s bytes when only root can have written it (see :func:`path_problem`)."""
    problem = folder_problem(os.path.dirname(os.path.normpath(path))) \
        if os.path.isabs(path) else f"{path} is not an absolute path"
    if problem:
        raise UnsafeFile(problem)
    fd = _open_nofollow(path)
    try:
        problem = _file_problem(os.fstat(fd), path)
        if problem:
            raise UnsafeFile(problem)
        return _read_fd(fd, path, limit)
    finally:
        os.close(fd)


def read_user_file(path: str, limit: int, owners: tuple[int, ...] | None) -> bytes:
    """``path``'s bytes when it is a regular file (not a link, FIFO or device) of one of
    ``owners`` (any owner: None) and at most ``limit`` bytes; FileNotFoundError when it is
    missing."""
    fd = _open_nofollow(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{path} is not a regular file: refused")
        if owners is not None and st.st_uid not in owners:
            raise UnsafeFile(f"{path} belongs to uid {st.st_uid}, not to the daemon's user: "
                             "refused")
        return _read_fd(fd, path, limit)
    finally:
        os.close(fd)


def code_problem(program: list[str], packages: list[str]) -> str | None:
    """Why running ``program`` as root would run code a user can change, or None.

    Every absolute path in ``program`` (the interpreter, a script) must be a file only root
    can change, reached through folders only root can change; so must every folder and file
    of ``packages`` (the Python packages the program imports). A link (a virtualenv's
    ``bin/python``) counts when it sits in such a folder and points at such a file.
    """
    for word in program:
        if not os.path.isabs(word) or not os.path.isfile(word):  # files: code it runs
            continue
        problem = folder_problem(os.path.dirname(os.path.normpath(word))) \
            or path_problem(os.path.realpath(word))
        if problem:
            return problem
    for package in packages:
        problem = folder_problem(package)
        if problem:
            return problem
        for folder, dirs, files in os.walk(package):
            for name in dirs:
                st = os.lstat(os.path.join(folder, name))
                problem = _folder_problem(st, os.path.join(folder, name)) \
                    if not stat.S_ISLNK(st.st_mode) else f"{folder}/{name} is a link"
                if problem:
                    return problem
            for name in files:
                problem = path_problem(os.path.join(folder, name))
                if problem:
                    return problem
    return None
