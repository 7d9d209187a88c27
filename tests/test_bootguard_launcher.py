"""The boot-guard as a program: a bare interpreter (standard library only, no taskmux on the
path) runs it; it execs ``current``'s daemon in its own process, and switches back on its own
after repeated failed starts. Versions here are tiny shell scripts standing in for taskmuxd."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Any

from taskmuxctl.core.update import bootguard
from tests.helpers import REPO, read
from tests.users import throwaway_user

GUARD = os.path.join(REPO, "taskmuxctl", "core", "update", "bootguard.py")
BARE = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

DAEMON = """#!/bin/sh
echo "$$ $TASKMUX_HOME $TASKMUX_GUARD_ATTEMPT ${PYTHONPATH:-none} $*" >> "$TASKMUX_HOME/{name}.log"
exit {code}
"""


def make_app(home: str, versions: dict[str, int]) -> str:
    app = os.path.join(home, "app")
    os.makedirs(app, exist_ok=True)
    for version, code in versions.items():
        folder = os.path.join(app, "versions", version, "bin")
        os.makedirs(folder)
        path = os.path.join(folder, "taskmuxd")
        with open(path, "w") as fh:
            fh.write(DAEMON.replace("{name}", version).replace("{code}", str(code)))
        os.chmod(path, 0o755)
    shutil.copy(GUARD, os.path.join(app, "bootguard.py"))
    return app


def guard(home: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": REPO}  # -I must ignore this
    return subprocess.run([BARE, "-I", os.path.join(home, "app", "bootguard.py"), "--home", home,
                           *args], env=env, capture_output=True, text=True, timeout=30)


def test_it_execs_current_with_its_arguments(tmp_path: Any) -> None:
    home = str(tmp_path)
    app = make_app(home, {"1.0.0": 0})
    bootguard.set_link(app, "current", "1.0.0")
    proc = subprocess.Popen([BARE, "-I", os.path.join(app, "bootguard.py"), "--home", home,
                             "run", "--log-file", "x"], env={"PATH": os.environ["PATH"],
                                                             "PYTHONPATH": REPO})
    assert proc.wait(30) == 0
    pid, seen_home, attempt, pythonpath, *args = read(os.path.join(home, "1.0.0.log")).split()
    assert int(pid) == proc.pid  # exec: the service manager watches the daemon itself
    assert seen_home == home and len(attempt) == 12 and pythonpath == "none"
    assert args == ["run", "--log-file", "x"]


def test_it_switches_back_after_three_failed_starts(tmp_path: Any) -> None:
    home = str(tmp_path)
    app = make_app(home, {"1.0.0": 0, "1.3.0": 1})
    bootguard.set_link(app, "previous", "1.0.0")
    bootguard.set_link(app, "current", "1.3.0")
    bootguard.arm(app, "1.3.0", "1.0.0", None, time.time())
    for _ in range(3):
        assert guard(home).returncode == 1  # 1.3.0 dies before READY
    fourth = guard(home)
    assert fourth.returncode == 0
    assert "switched back to 1.0.0 and marked 1.3.0 bad" in fourth.stderr
    assert bootguard.link_version(app, "current") == "1.0.0"
    assert bootguard.link_version(app, "previous") is None
    assert len(read(os.path.join(home, "1.3.0.log")).splitlines()) == 3
    assert len(read(os.path.join(home, "1.0.0.log")).splitlines()) == 1
    rec = bootguard.load_record(app)
    assert rec["armed"] is None and "1.3.0" in rec["bad"]
    assert [e["event"] for e in bootguard.take_events(app)] == ["update_guard_reverted"]
    assert bootguard.take_events(app) == []  # reported once
    # From now on it is a plain launcher for the good version.
    for _ in range(3):
        assert guard(home).returncode == 0
    assert bootguard.link_version(app, "current") == "1.0.0"


def test_not_installed(tmp_path: Any) -> None:
    make_app(str(tmp_path), {})  # the guard is there, no version is current
    proc = guard(str(tmp_path))
    assert proc.returncode == bootguard.EXIT_NOT_INSTALLED
    assert "not installed" in proc.stderr and "install.sh" in proc.stderr


def test_started_as_root_it_keeps_the_users_files_theirs(tmp_path: Any) -> None:
    with throwaway_user() as user:
        home = str(tmp_path / "state")
        os.makedirs(home)
        app = make_app(home, {"1.0.0": 0, "1.3.0": 1})
        bootguard.set_link(app, "previous", "1.0.0")
        bootguard.set_link(app, "current", "1.3.0")
        for root, dirs, files in os.walk(home):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)
        os.chown(home, user.pw_uid, user.pw_gid)
        bootguard.arm(app, "1.3.0", "1.0.0", None, time.time())  # as root, too
        for _ in range(4):
            guard(home)
        assert bootguard.link_version(app, "current") == "1.0.0"
        for name in (bootguard.RECORD, bootguard.LOCK, "current"):
            assert os.lstat(os.path.join(app, name)).st_uid == user.pw_uid, name
