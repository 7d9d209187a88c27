"""One control group per task, where (and only where) the service manager delegated a cgroup v2
subtree to the daemon (systemd ``Delegate=yes``). The only code that touches cgroupfs.

A delegated subtree is recognised by systemd's mark on it (the ``trusted.delegate`` or
``user.delegate`` extended attribute, set by newer systemd), or by ``TASKMUX_CGROUP_DELEGATED=1``
which taskmux's own units set beside ``Delegate=yes`` (systemd 252 and older mark nothing);
then only for a unit's group (``*.service``), never the root. Never by being writable: root
can write the machine's whole hierarchy, and taskmux must not touch a hierarchy it was not
given. Without delegation
every function here is a no-op and containment rests on process groups, the runner as child
subreaper and the run markers (see ``projects/ownership.py``).

Layout under the daemon's own group ``G``: ``G/tasks/{project}.{task}``. The daemon stays in
``G`` and no controllers are enabled below it: enabling them would forbid processes in ``G``
(cgroup v2's no-internal-process rule), and systemd puts a restarted daemon there. So the
groups give exact membership, ``cgroup.kill`` and CPU time (``cpu.stat`` is always there), not
memory limits. The runner moves itself into its task's group before it starts the task, so
everything the task ever forks is born inside.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal

log = logging.getLogger("taskmuxd.cgroups")

DELEGATE_XATTRS = ("trusted.delegate", "user.delegate")
DELEGATED_ENV = "TASKMUX_CGROUP_DELEGATED"
TASKS = "tasks"


def _own_path() -> str | None:
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("0::"):
                    return line[3:].strip()
    except OSError:
        pass
    return None


def _v2_mount() -> str | None:
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup2":
                    return fields[4]
    except (OSError, ValueError, IndexError):
        pass
    return None


def is_delegated(folder: str) -> bool:
    for name in DELEGATE_XATTRS:
        try:
            if os.getxattr(folder, name).strip(b"\0") == b"1":
                return True
        except OSError:
            continue
    return False


def delegated_root() -> str | None:
    """The daemon's own cgroup v2 folder when it was delegated to it, else None."""
    path, mount = _own_path(), _v2_mount()
    if path is None or mount is None or path in ("", "/"):
        return None
    folder = os.path.join(mount, path.lstrip("/"))
    said = os.environ.get(DELEGATED_ENV) == "1" and path.endswith(".service")
    if not os.path.isdir(folder) or not (said or is_delegated(folder)):
        return None
    if not os.access(folder, os.W_OK):
        log.warning("the cgroup %s is marked delegated but is not writable; not using it",
                    folder)
        return None
    return folder


def hand_over(uid: int, gid: int) -> str | None:
    """Root, before it drops to the user: give the delegated group to the user, as systemd
    does for a unit with ``User=``, so the user's daemon can make its tasks' groups. The path
    comes from the kernel (/proc/self/cgroup, mountinfo), not from anything the user wrote."""
    root = delegated_root()
    if root is None:
        return None
    try:
        os.chown(root, uid, gid, follow_symlinks=False)
        for name in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)
    except OSError as exc:
        log.warning("cannot hand the cgroup %s to uid %d: %s", root, uid, exc)
        return None
    return root


class TaskGroups:
    """The per-task groups below a delegated root (``root`` None: all no-ops)."""

    def __init__(self, root: str | None) -> None:
        self.root = root

    @classmethod
    def detect(cls) -> TaskGroups:
        root = delegated_root()
        if root is not None:
            log.info("cgroup v2 subtree %s is delegated: one cgroup per task", root)
        return cls(root)

    def describe(self) -> str | None:
        return self.root

    def path(self, project: str, task: str) -> str | None:
        if self.root is None:
            return None
        return os.path.join(self.root, TASKS, f"{project}.{task}")

    def ensure(self, project: str, task: str) -> str | None:
        """Create the task's group (and its parent); None when that is not possible."""
        path = self.path(project, task)
        if path is None:
            return None
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            log.warning("cannot create the cgroup %s: %s", path, exc)
            return None
        return path

    def members(self, project: str, task: str) -> list[int]:
        path = self.path(project, task)
        if path is None:
            return []
        try:
            with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as fh:
                return [int(x) for x in fh.read().split()]
        except (OSError, ValueError):
            return []

    def kill(self, project: str, task: str) -> bool:
        """SIGKILL everything in the task's group at once (``cgroup.kill``, Linux 5.14+;
        older kernels: each member, which membership proves to be the task's)."""
        path = self.path(project, task)
        if path is None:
            return False
        try:
            with open(os.path.join(path, "cgroup.kill"), "w", encoding="ascii") as fh:
                fh.write("1")
            return True
        except FileNotFoundError:
            for pid in self.members(project, task):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return True
        except OSError as exc:
            log.warning("cannot kill the cgroup %s: %s", path, exc)
            return False

    def cpu_usec(self, project: str, task: str) -> int | None:
        path = self.path(project, task)
        if path is None:
            return None
        try:
            with open(os.path.join(path, "cpu.stat"), encoding="ascii") as fh:
                for line in fh:
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value)
        except (OSError, ValueError):
            pass
        return None

    def remove(self, project: str, task: str) -> None:
        path = self.path(project, task)
        if path is not None:
            with contextlib.suppress(OSError):
                os.rmdir(path)
