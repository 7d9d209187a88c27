"""The one flock pid-lock class and its two users: the daemon's instance lock (pid in
``daemon.pid``) and the update lock (pid in the lock file). In process: flocks taken through
two descriptors conflict even within one process."""

from __future__ import annotations

import os

import pytest

from taskmuxctl.core.fsutil import read_pid
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.pidlock import LockHeld, PidLock, holder
from taskmuxctl.core.update.lock import UpdateBusy, UpdateLock
from taskmuxd.daemonlock import AlreadyRunning, InstanceLock


def test_a_pid_lock_names_its_holder_and_lets_go(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "sub", "x.lock")
    assert holder(path) is None  # no file: free
    with PidLock(path, make_dir=True) as first:
        assert first.held
        assert read_pid(path) == os.getpid()
        assert holder(path) == os.getpid()
        with pytest.raises(LockHeld) as caught:
            PidLock(path).acquire()
        assert caught.value.pid == os.getpid()
    assert not first.held
    assert holder(path) is None
    assert read_pid(path) is None  # cleared on release
    PidLock(path).acquire().release()  # free again


def test_the_update_lock_is_a_pid_lock(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "app", "update.lock")
    with UpdateLock(path) as lock:
        assert isinstance(lock, PidLock)
        with pytest.raises(UpdateBusy, match=f"pid {os.getpid()}"):
            UpdateLock(path).acquire()
    assert holder(path) is None


def test_the_instance_lock_keeps_its_pid_in_daemon_pid(tmp_path: os.PathLike[str]) -> None:
    paths = Paths(str(tmp_path))
    with open(paths.pid_file, "w") as fh:
        fh.write("4242\n")  # a dead predecessor's
    lock = InstanceLock(paths)
    lock.acquire()
    assert lock.previous_pid == 4242
    assert read_pid(paths.pid_file) == os.getpid()
    assert read_pid(paths.lock_file) is None  # the lock file holds no pid
    with pytest.raises(AlreadyRunning) as caught:
        InstanceLock(paths).acquire()
    assert caught.value.pid == os.getpid()
    lock.put_back()  # a refused start: the predecessor's pid stays
    assert read_pid(paths.pid_file) == 4242
    lock.write_pid()
    lock.release()
    assert not os.path.exists(paths.pid_file)
    InstanceLock(paths).acquire().release()
