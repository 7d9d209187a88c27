"""A stop of many tasks, grouped (``Project.hold_saves``, ``strangers``, ``runending``): each
task's own state file is written once for the whole stop (not once per change: stopping,
stopped, clean), and a daemon killed (``kill -9``) in the middle of such a stop leaves what
a new daemon finishes: every task stopped, no process of theirs left, no state file torn.
Real tmux, real daemon."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import select
import struct
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from taskmuxd import proctree
from tests.chaos import Chaos, plain_tasks
from tests.chaos_look import marked_processes
from tests.helpers import run_json, wait_until
from tests.projects import status, write_project

pytestmark = pytest.mark.skipif(not proctree.AVAILABLE, reason="needs /proc")

IN_MOVED_TO = 0x80
_EVENT = struct.Struct("iIII")


@contextmanager
def renames_into(folder: str) -> Iterator[Counter[str]]:
    """Count the files renamed into ``folder`` (an atomic write is one) while the block runs,
    and after it until read: the counter is filled by ``drain`` (inotify, Linux)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        pytest.skip("inotify is not available")
    try:
        if libc.inotify_add_watch(fd, folder.encode(), IN_MOVED_TO) < 0:
            pytest.skip("cannot watch the tasks' folder")
        seen: Counter[str] = Counter()
        yield seen
        _drain(fd, seen)
    finally:
        os.close(fd)


def _drain(fd: int, seen: Counter[str]) -> None:
    while select.select([fd], [], [], 0)[0]:
        data = os.read(fd, 65536)
        at = 0
        while at < len(data):
            _wd, _mask, _cookie, size = _EVENT.unpack_from(data, at)
            name = data[at + _EVENT.size:at + _EVENT.size + size].rstrip(b"\0").decode()
            seen[name] += 1
            at += _EVENT.size + size


def _own_file(home: str, project: str, name: str) -> dict[str, Any]:
    path = os.path.join(home, "projects", project, "tasks", f"{name}.json")
    try:
        with open(path, encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
            return data
    except (OSError, ValueError):
        return {}


def test_a_stop_of_many_tasks_writes_each_task_file_once(
        env: dict[str, str], tmp_path: str, home: str) -> None:
    count = 10
    # Each task takes a moment to end after its signal (its shell's trap), so that the
    # stop's changes of each record come apart in time: stopping, stopped, clean.
    body = "".join(f'[tasks.t{i:02d}]\ncommand = "trap \'sleep 0.3; exit 0\' INT; '
                   f'while :; do sleep 0.05; done"\n' for i in range(count))
    proj = write_project(os.path.join(str(tmp_path), "p"), f'name = "grouped"\n{body}')
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    wait_until(lambda: all(t["state"] == "running" for t in status(env, proj)["tasks"]), 30,
               "every task running")
    names = [f"t{i:02d}" for i in range(count)]
    tasks_dir = os.path.join(home, "projects", "grouped", "tasks")

    def settled() -> bool:
        recs = [_own_file(home, "grouped", n) for n in names]
        return all(r.get("policy", {}).get("state") == "stopped" and r.get("clean") is True
                   and r["policy"].get("manual_stop") is True for r in recs)

    wait_until(lambda: all(_own_file(home, "grouped", n).get("policy", {}).get("state")
                           == "running" for n in names), 10, "every record written running")
    with renames_into(tasks_dir) as seen:
        code, out = run_json(["stop"], env, cwd=proj)
        assert code == 0, out
        wait_until(settled, 20, "every task's own file saying stopped and clean")
    written = {n: seen[f"{n}.json"] for n in names}
    assert written == dict.fromkeys(names, 1), written


@pytest.mark.slow(20)
def test_kill_9_in_the_middle_of_a_stop_of_many_tasks_is_finished_by_the_next_daemon(
        home: str, tmux_socket: str, tmp_path: Path) -> None:
    chaos = Chaos(home, tmux_socket, str(tmp_path), tasks=plain_tasks(16), project="many")
    try:
        chaos.start_daemon()
        chaos.start_project()
        assert chaos.wait_all_up(40), chaos.look().describe()
        # Once the stop is taken (its records perhaps not yet written ahead, its signals
        # perhaps not yet sent), once the first task is
        # heard stopped (the others' exits still to come; its record held), once every one
        # is (the look for strangers and the held writes perhaps still to come).
        moments = {"stop taken": lambda ts: any(t["state"] != "running" for t in ts),
                   "first stopped": lambda ts: any(t["state"] == "stopped" for t in ts),
                   "all stopped": lambda ts: all(t["state"] == "stopped" for t in ts)}
        for moment, reached in moments.items():
            chaos.prepare()
            pending = chaos.send("project.stop", {"project": "many", "tasks": None})
            wait_until(lambda r=reached: r(chaos.status()["tasks"]),  # type: ignore[misc]
                       20, moment, interval=0.002)
            chaos.kill_daemon()
            pending.close()
            chaos.start_daemon()
            assert chaos.settle(), chaos.look().describe()
            tasks = chaos.status()["tasks"]
            stopped = [t["state"] == "stopped" and t["manually_stopped"] for t in tasks]
            found = chaos.check()
            assert not found.total, (moment, found.describe())
            if moment == "stop taken" and not any(stopped):
                # Killed before the stop's records were written ahead (one file for all
                # sixteen): nothing was signalled, and every task still runs, as the next
                # daemon finds. Never some of them: the stop is recorded whole or not at all.
                assert all(t["state"] == "running" for t in tasks), (moment, tasks)
                continue
            assert all(stopped), (moment, tasks)
            wait_until(lambda: not marked_processes(chaos.run), 10,
                       f"no process of a stopped task left ({moment})")
    finally:
        chaos.close()
