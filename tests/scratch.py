"""Where a test run keeps its temporary files: a folder of its own in RAM where the machine has one.

The suite creates and deletes tens of thousands of files (homes, logs, state, sockets, virtual
environments of installed versions), and a daemon syncs its state files to disk. On the disk's
file system that was about a quarter of the run's CPU, spent in the kernel. When ``/dev/shm`` is
a tmpfs that allows programs to run and has room, the run makes ``/dev/shm/tmxt-XXXXXXXX``
(sticky and writable by all, like ``/tmp``), points ``TMPDIR`` at it for itself and everything
it starts, and removes it at the end. Otherwise, or with ``TASKMUX_TEST_TMP=disk``, nothing
changes. A folder left by a run that was killed is removed by the next run once its owner is
gone.

Tests that need a path other users or a service manager can reach (throwaway users, systemd's
own namespaces, PostgreSQL's server user) keep choosing ``/tmp`` themselves.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from taskmuxctl.core.daemonctl import alive

RAM = "/dev/shm"
PREFIX = "tmxt-"
OWNER = ".owner"  # the pid of the run that made the folder
MIN_FREE = 4 * 1024**3  # bytes: the update tests' installed versions take a few hundred MB


def _is_tmpfs(path: str) -> bool:
    try:
        with open("/proc/self/mounts", encoding="utf-8") as fh:
            mounts = [line.split() for line in fh]
    except OSError:
        return False
    return any(len(m) > 2 and m[1] == path and m[2] == "tmpfs" for m in mounts)


def usable() -> bool:
    """Whether ``/dev/shm`` is a tmpfs with room on which programs may run."""
    if os.environ.get("TASKMUX_TEST_TMP") == "disk" or not _is_tmpfs(RAM):
        return False
    try:
        st = os.statvfs(RAM)
    except OSError:
        return False
    if st.f_flag & (os.ST_NOEXEC | os.ST_RDONLY):
        return False
    return st.f_bavail * st.f_frsize >= MIN_FREE and os.access(RAM, os.W_OK | os.X_OK)


def sweep() -> None:
    """Remove the folders of earlier runs whose run has ended (killed runs leave theirs)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(RAM):
            folder = os.path.join(RAM, name)
            if not name.startswith(PREFIX) or os.path.islink(folder):
                continue
            try:
                with open(os.path.join(folder, OWNER), encoding="ascii") as fh:
                    owner = int(fh.read().strip() or "0")
            except (OSError, ValueError):
                owner = 0
            if os.stat(folder).st_uid == os.getuid() and not (owner and alive(owner)):
                shutil.rmtree(folder, ignore_errors=True)


def enter() -> str | None:
    """Make this run's folder and point TMPDIR (and ``tempfile``) at it; None: left as is."""
    if not usable():
        return None
    sweep()
    folder = tempfile.mkdtemp(prefix=PREFIX, dir=RAM)
    with open(os.path.join(folder, OWNER), "w", encoding="ascii") as fh:
        fh.write(f"{os.getpid()}\n")
    os.chmod(folder, 0o1777)
    os.environ["TMPDIR"] = folder
    tempfile.tempdir = folder
    return folder


def leave(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def base() -> str:
    """The folder for a test's own short-lived folders (a home, a work tree): this run's RAM
    folder when there is one (TMPDIR, inherited by the xdist workers), else ``/tmp`` (short,
    whatever TMPDIR says: Unix socket paths in a home must stay under 104 bytes)."""
    folder = os.environ.get("TMPDIR", "")
    if folder.startswith(os.path.join(RAM, PREFIX)) and os.path.isdir(folder):
        return folder
    return "/tmp"
