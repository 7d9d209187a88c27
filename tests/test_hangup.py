"""``core/hangup.py``: when the daemon that hung up on a request counts as gone (its recorded
pid exited with every thread; without a pid, its instance lock free), and not while it lives."""

from __future__ import annotations

import os
import subprocess

from taskmuxctl.core.hangup import daemon_gone, process_gone
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.pidlock import PidLock
from tests.helpers import PYTHON, wait_until, write_whole


def test_an_exited_process_is_gone_and_a_live_one_is_not(tmp_path: str) -> None:
    assert not process_gone(os.getpid())
    child = subprocess.Popen([PYTHON, "-c", "pass"])
    try:
        # Not reaped yet: a zombie of one thread, which counts as gone.
        wait_until(lambda: process_gone(child.pid), what="the child to exit")
    finally:
        child.wait(10)
    assert process_gone(child.pid)


def test_the_recorded_pid_decides(home: str) -> None:
    paths = Paths(home)
    write_whole(paths.pid_file, f"{os.getpid()}\n")
    assert not daemon_gone(paths, wait=0.05)  # alive: not gone, after the bounded wait
    child = subprocess.Popen([PYTHON, "-c", "pass"])
    child.wait(10)
    write_whole(paths.pid_file, f"{child.pid}\n")
    with PidLock(paths.lock_file):  # a new daemon's lock does not keep the dead one alive
        assert daemon_gone(paths, wait=0.05)


def test_without_a_pid_the_instance_lock_decides(home: str) -> None:
    paths = Paths(home)
    assert not os.path.exists(paths.pid_file)
    with PidLock(paths.lock_file):
        assert not daemon_gone(paths, wait=0.05)
    assert daemon_gone(paths, wait=0.05)
