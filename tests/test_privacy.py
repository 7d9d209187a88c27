"""Everything the daemon writes in its state directory is its user's alone (issue 12): files
0600, folders 0700, also what an older version left looser; the user's own tasks keep the
umask they were started with."""

from __future__ import annotations

import os
import stat

from tests.helpers import read, run_json, wait_until
from tests.projects import task, write_project


def _loose(home: str) -> list[str]:
    out = []
    for folder, dirs, files in os.walk(home):
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if not stat.S_ISLNK(st.st_mode) and not stat.S_ISSOCK(st.st_mode) \
                    and st.st_mode & 0o077:
                out.append(f"{os.path.relpath(path, home)} {st.st_mode & 0o777:o}")
    return out


def test_daemon_files_are_private_and_tasks_keep_the_users_umask(
        env: dict[str, str], home: str, tmp_path: str) -> None:
    # What an older daemon left: a readable log and open project folders.
    old = os.path.join(home, "projects", "old", "logs")
    os.makedirs(old)
    for folder in (os.path.join(home, "projects"), os.path.dirname(old), old):
        os.chmod(folder, 0o755)
    for path in (os.path.join(home, "daemon.log"), os.path.join(old, "t.log")):
        with open(path, "w") as fh:
            fh.write("old\n")
        os.chmod(path, 0o644)
    proj = write_project(str(tmp_path / "p"), """
        name = "private"
        [tasks.web]
        command = "mkdir -p made.d; echo made > made.txt; sleep 600"
    """)
    prev = os.umask(0o022)
    try:  # the client starts the daemon (detached, logging to daemon.log) with this umask
        assert run_json(["start"], env, cwd=proj)[0] == 0
    finally:
        os.umask(prev)
    made = os.path.join(proj, "made.txt")
    wait_until(lambda: os.path.exists(made) and read(made) == "made\n", what="the task's file")
    assert task(env, proj, "web")["state"] == "running"
    # The daemon's own files: private, the old ones tightened too.
    assert os.path.getsize(os.path.join(home, "daemon.log")) > 0
    for path in ("daemon.log", "projects", "projects/private", "projects/private/logs",
                 "projects/private/logs/web.log", "projects/old", "projects/old/logs/t.log"):
        assert os.path.exists(os.path.join(home, path)), path
    assert _loose(home) == []
    # The user's task made its files with the user's umask (022), not the daemon's.
    assert os.stat(made).st_mode & 0o777 == 0o644
    assert os.stat(os.path.join(proj, "made.d")).st_mode & 0o777 == 0o755
