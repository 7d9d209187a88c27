"""The walk down a tree's children files (``proctree.tree``) and the runner's cheap exit path.

The walk must find what the scan of every process finds (``descendants``): an orphan that
came back to a subreaper after a double fork, and a process that left the session and the
process group; and never a process outside the tree. The runner, which walks its tree rather
than scanning the machine, must still end a process outside its tree that carries the run's
marker, also when the task's own tree is already gone when the run ends.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from taskmuxd import proctree
from tests.helpers import PYTHON, REPO, wait_until
from tests.test_containment import RunnerUnderTest

pytestmark = pytest.mark.skipif(
    not proctree.AVAILABLE or proctree.tree(os.getpid()) is None,
    reason="the walk needs /proc with children files (Linux, CONFIG_PROC_CHILDREN)")

# A subreaper whose task double-forks an orphan (it comes back to the subreaper) and starts a
# process in a session (and process group) of its own; it prints what the walk and the scan
# of every process find below it, then ends them all.
SUBREAPER = r"""
import json, os, signal, sys, time
sys.path.insert(0, REPO)
from taskmuxd import proctree
assert proctree.set_child_subreaper()
sh = os.fork()
if sh == 0:
    os.execv("/bin/sh", ["sh", "-c",
             "(sleep 301 &); setsid sleep 302 & exec sleep 303"])
def args(p):
    with open(f"/proc/{p.pid}/cmdline", "rb") as fh:
        return fh.read().split(b"\0")[1].decode()
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    walked = proctree.tree(os.getpid())
    if sorted(args(p) for p in walked if proctree.is_alive(p)) == ["301", "302", "303"]:
        break
    time.sleep(0.02)
walked = proctree.tree(os.getpid())
scanned = proctree.descendants(os.getpid())
out = {"walked": [list(p) for p in walked], "scanned": [list(p) for p in scanned],
       "args": {str(p.pid): args(p) for p in walked},
       "sids": {str(p.pid): os.getsid(p.pid) for p in walked}, "sh": sh}
# End what either look found (one the walk missed would keep the wait below from ending).
proctree.signal_ids(list({*walked, *scanned}), signal.SIGKILL)
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
print(json.dumps(out))
""".replace("REPO", repr(REPO))



def test_the_walk_finds_orphans_and_processes_that_left_the_group() -> None:
    done = subprocess.run([PYTHON, "-c", SUBREAPER], capture_output=True, text=True,
                          timeout=60, check=True)
    out = json.loads(done.stdout)
    walked = {tuple(p) for p in out["walked"]}
    assert walked == {tuple(p) for p in out["scanned"]}  # the same as the scan of all
    assert sorted(out["args"].values()) == ["301", "302", "303"]
    by_arg = {arg: int(pid) for pid, arg in out["args"].items()}
    assert by_arg["303"] == out["sh"]  # the shell exec'd into it
    # The double-forked one is the subreaper's child now; the setsid one has its own session.
    assert out["sids"][str(by_arg["302"])] == by_arg["302"] != out["sids"][str(by_arg["303"])]


def test_the_walk_takes_nothing_outside_the_tree(
        spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    parent = spawn(["/bin/sh", "-c", "sleep 300 & exec sleep 300"])
    other = spawn(["sleep", "300"])
    wait_until(lambda: len(proctree.tree(parent.pid) or []) == 1, what="the child")
    found = proctree.tree(parent.pid)
    assert found is not None and [p.pid for p in found] != [other.pid]
    assert set(found) == set(proctree.descendants(parent.pid))
    assert proctree.tree(other.pid) == []  # no children
    assert proctree.tree(2 ** 22 + 1) == []  # no such process


def test_the_runner_ends_a_marked_process_outside_its_tree_after_the_task_exits(
        home: str, tmux_socket: str, tmp_path: Any,
        spawn: Callable[..., subprocess.Popen[bytes]]) -> None:
    """The task's tree is gone when its run ends (it exited by itself); a process started
    elsewhere on its behalf still carries the run's marker: the runner's one look for the
    marker finds it and ends it before it records the exit."""
    go = os.path.join(str(tmp_path), "go")
    r = RunnerUnderTest(home, f"while [ ! -f {go} ]; do sleep 0.02; done; exit 3", grace=0.5)
    r.in_tmux(tmux_socket)
    stranger = spawn(["sleep", "300"], env={**os.environ, proctree.MARKER_VAR: r.marker})
    wait_until(lambda: stranger.pid in {p.pid for p in proctree.find_marked(r.marker,
                                                                             exact=True)})
    with open(go, "w"):
        pass
    rec = r.exited()
    assert stranger.wait(5) == -signal.SIGINT
    assert (rec["ended_by"], rec["exit_code"], rec["tree_clean"]) == ("exit", 3, True)
    assert "sent SIGINT to 1 of the task's processes" in r.log()
