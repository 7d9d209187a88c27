"""A throwaway system user for tests that need another uid (the test machines run as root)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def throwaway_user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a throwaway user")
    if shutil.which("useradd") is None or shutil.which("userdel") is None:
        pytest.skip("useradd/userdel are not available")
    name = "tmx" + uuid.uuid4().hex[:8]
    proc = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot create a user: {proc.stderr.strip()}")
    user = pwd.getpwnam(name)
    try:
        yield user
    finally:
        remove_user(user)


def remove_user(user: pwd.struct_passwd) -> None:
    """End every process of ``user`` (all the test's: it made the user), then delete the user,
    its home and its tmux socket folder. userdel refuses while any process of the uid exists,
    a killed one still exiting or a zombie not yet reaped included: so it waits for them
    (bounded) and asks again."""
    for _ in range(5):
        kill_processes_of_uid(user.pw_uid)
        if subprocess.run(["userdel", "--remove", user.pw_name],
                          capture_output=True).returncode in (0, 6):  # 6: no such user
            break
    folder = os.path.join(os.environ.get("TMUX_TMPDIR", "/tmp"), f"tmux-{user.pw_uid}")
    with contextlib.suppress(OSError):
        if os.lstat(folder).st_uid == user.pw_uid:
            shutil.rmtree(folder)


def _processes_of_uid(uid: int) -> list[tuple[int, bool]]:
    """(pid, ended) for every process whose real uid is ``uid``; ended: a zombie."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="ascii", errors="replace") as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
            owner, state = int(fields["Uid"].split()[0]), fields["State"].split()[0]
        except (OSError, KeyError, ValueError, IndexError):
            continue
        if owner == uid:
            found.append((int(entry), state in ("Z", "X")))
    return found


def kill_processes_of_uid(uid: int, timeout: float = 2.0) -> None:
    """SIGKILL, by pid, every process whose real uid is ``uid`` (a user the test made, so
    all of them are the test's), again for any forked meanwhile, until none is left, zombies
    included (their parents reap them), or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while (found := _processes_of_uid(uid)) and time.monotonic() < deadline:
        for pid, ended in found:
            if not ended:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
