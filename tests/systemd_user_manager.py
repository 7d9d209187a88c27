"""A private systemd *user* manager, for booting taskmux's units for real on a machine whose
PID 1 is not systemd (as in this sandbox), without touching the rest of the machine.

It runs in its own mount namespace (a tmpfs over /run/systemd makes it believe systemd is
the init system) and its own cgroup namespace rooted at a fresh sub-cgroup, so that the
control groups it creates and the processes it adopts are only its own. ``systemctl
--user`` reaches it through ``$XDG_RUNTIME_DIR/systemd/private``. Everything is removed
afterwards, processes and cgroups included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

from tests.helpers import pid_gone, wait_until

SYSTEMD = next((p for p in ("/usr/lib/systemd/systemd", "/lib/systemd/systemd")
                if os.path.exists(p)), None)
WANTED_V1 = ("name=systemd", "memory", "pids")


class Unavailable(Exception):
    pass


def _cgroup_mounts() -> list[tuple[str, str, str]]:
    """(mount point, key, path of this process) for the hierarchies the manager gets."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as fh:
        for line in fh:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for key in controllers.split(",") if controllers else [""]:
                own[key] = path
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            sep = fields.index("-")
            point, fstype, options = fields[4], fields[sep + 1], fields[sep + 3].split(",")
            if fstype == "cgroup2":
                found.append((point, "", own.get("", "/")))
            elif fstype == "cgroup":
                key = next((o for o in options if o in WANTED_V1), None)
                if key and key in own:
                    found.append((point, key, own[key]))
    return found


class UserManager:
    def __init__(self, base: str) -> None:
        if os.geteuid() != 0 or SYSTEMD is None or not shutil.which("unshare") or \
                not shutil.which("systemctl"):
            raise Unavailable("needs root, systemd's binary, unshare and systemctl")
        self.base = base
        self.runtime = os.path.join(base, "runtime")
        self.config = os.path.join(base, "config")
        self.log = os.path.join(base, "manager.log")
        os.makedirs(self.runtime, mode=0o700)
        os.makedirs(self.config)
        self.env = {**os.environ, "XDG_RUNTIME_DIR": self.runtime,
                    "XDG_CONFIG_HOME": self.config, "SYSTEMD_LOG_TARGET": "console",
                    "SYSTEMD_LOG_LEVEL": "info"}
        self.env.pop("DBUS_SESSION_BUS_ADDRESS", None)
        self.cgroups: list[str] = []
        self.tracking: list[str] = []  # the name=systemd and cgroup2 folders
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> UserManager:
        mounts = _cgroup_mounts()
        v2_only = [m for m in mounts if m[1] == ""] == mounts and len(mounts) == 1
        if not mounts or (not v2_only and not any(m[1] == "name=systemd" for m in mounts)):
            raise Unavailable(f"no usable cgroup hierarchy ({mounts})")
        name = "taskmux-test-" + uuid.uuid4().hex[:8]
        moves = []
        for point, key, path in mounts:
            folder = os.path.join(point + path.rstrip("/"), name)
            try:
                os.mkdir(folder)
            except OSError as exc:
                self.cleanup()
                raise Unavailable(f"cannot create the cgroup {folder}: {exc}") from None
            self.cgroups.append(folder)
            if key in ("", "name=systemd"):
                self.tracking.append(folder)
            moves.append(f"echo $$ > '{folder}/cgroup.procs'")
        if v2_only:
            remount = "mount -t cgroup2 cgroup2 /sys/fs/cgroup"
        else:
            parts = ["mount -t tmpfs tmpfs /sys/fs/cgroup"]
            for point, key, _ in mounts:
                sub = os.path.basename(point)
                if key == "":
                    how = "-t cgroup2 cgroup2"
                elif key == "name=systemd":
                    how = "-t cgroup -o none,name=systemd cgroup"
                else:
                    how = f"-t cgroup -o {key} cgroup"
                parts += [f"mkdir -p /sys/fs/cgroup/{sub}", f"mount {how} /sys/fs/cgroup/{sub}"]
            remount = " && ".join(parts)
        # What PID 1 would have made at boot: the flag that says systemd runs, and the
        # inaccessible nodes that InaccessiblePaths= (ProtectKernelLogs=...) mount over paths.
        inner = os.path.join(self.base, "inner.sh")
        with open(inner, "w") as fh:
            fh.write(f"""set -e
mount -t tmpfs tmpfs /run/systemd
mkdir -p /run/systemd/system
i=/run/systemd/inaccessible
mkdir -p $i/dir
touch $i/reg
mknod $i/chr c 0 0
mknod $i/blk b 0 0
mkfifo $i/fifo
{sys.executable} -c 'import socket; socket.socket(socket.AF_UNIX).bind("'$i/sock'")'
chmod 0000 $i/reg $i/dir $i/chr $i/blk $i/fifo $i/sock
{remount}
exec {SYSTEMD} --user
""")
        outer = (f"set -e; {'; '.join(moves)}; exec unshare --mount --cgroup "
                 f"--propagation private /bin/sh {inner}")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["/bin/sh", "-c", outer], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(self._running, 20, "the systemd user manager")
        except AssertionError:
            with open(self.log, errors="replace") as fh:
                tail = fh.read()[-2000:]
            self.stop()
            raise Unavailable(f"the user manager did not come up: {tail}") from None
        return self

    def _running(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the user manager exited {self.proc.returncode}")
        # (is-system-running would say "offline": systemctl checks PID 1 first.)
        state = self.systemctl("show", "--property=SystemState", "--value").stdout.strip()
        return state in ("running", "degraded")

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["systemctl", "--user", *args], env=self.env, text=True,
                              capture_output=True, timeout=60)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.systemctl("show", unit, "--property=" + ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def move_into(self, unit: str, pid: int) -> None:
        """Put process ``pid`` into ``unit``'s control group (as a task of it would be)."""
        group = self.show(unit, "ControlGroup")["ControlGroup"]
        for top in self.tracking:
            with open(top + group + "/cgroup.procs", "w") as fh:
                fh.write(str(pid))

    def stop(self) -> None:
        """Stop the manager and remove every trace; never raises."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.systemctl("exit")
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.cleanup()

    def cleanup(self) -> None:
        for top in self.cgroups:
            for folder in _depth_first(top):
                for pid in _procs(folder):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 10
                while any(not pid_gone(p) for p in _procs(folder)) and \
                        time.monotonic() < deadline:
                    time.sleep(0.02)
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        self.cgroups = []
        self.tracking = []


def _depth_first(top: str) -> Iterator[str]:
    if not os.path.isdir(top):
        return
    for entry in os.scandir(top):
        if entry.is_dir(follow_symlinks=False):
            yield from _depth_first(entry.path)
    yield top


def _procs(folder: str) -> list[int]:
    try:
        with open(os.path.join(folder, "cgroup.procs")) as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []
