"""The pid window (``pidwindow``): which pids can be new since a mark, proven or not at all;
and ``proctree.find_marked`` kept to it."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable

import pytest

from taskmuxd import pidwindow, proctree
from tests.helpers import wait_until

pytestmark = pytest.mark.skipif(pidwindow.mark() is None,
                                reason="no /proc/sys/kernel/ns_last_pid or /proc/stat")


def test_inside_a_plain_and_a_wrapped_window() -> None:
    plain = (101, 200, 32768)
    assert pidwindow.inside(101, plain) and pidwindow.inside(200, plain)
    assert not pidwindow.inside(100, plain) and not pidwindow.inside(201, plain)
    wrapped = (32000, 400, 32768)  # from 31999 round past pid_max to 400
    assert pidwindow.inside(32000, wrapped) and pidwindow.inside(32767, wrapped)
    assert pidwindow.inside(300, wrapped) and pidwindow.inside(400, wrapped)
    assert not pidwindow.inside(401, wrapped) and not pidwindow.inside(31999, wrapped)
    empty = (201, 200, 32768)  # nothing handed out since
    assert not any(pidwindow.inside(p, empty) for p in (1, 200, 201, 32767))


def test_no_window_once_the_cycle_may_have_come_round(monkeypatch: pytest.MonkeyPatch) -> None:
    since = pidwindow.mark()
    assert since is not None and pidwindow.window(since) is not None
    forks = since[1]
    pid_max = pidwindow._read_int("/proc/sys/kernel/pid_max")
    assert pid_max is not None
    monkeypatch.setattr(pidwindow, "_forks", lambda: forks + pid_max)
    assert pidwindow.window(since) is None  # any pid may be new: look at every one
    assert pidwindow.window(None) is None


def test_find_marked_since_a_mark_sees_only_what_was_born_after(
        spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    marker = f"{uuid.uuid4().hex}:p:t:1"
    env = {**os.environ, proctree.MARKER_VAR: marker}
    before = spawn(["sleep", "300"], env=env)
    since = pidwindow.mark()
    after = spawn(["sleep", "300"], env=env)
    wait_until(lambda: {before.pid, after.pid} <= {
        p.pid for p in proctree.find_marked(marker, exact=True)})
    assert {p.pid for p in proctree.find_marked(marker, exact=True, since=since)} \
        == {after.pid}
