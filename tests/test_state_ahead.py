"""A batch of signals is written ahead as one file (``ahead.json``) before the tasks' own
records: what a daemon killed at any moment finds is the later word of the two, task by task,
by the project's write counter (``seq``), never an older one."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from taskmuxctl.core.paths import Paths
from taskmuxd.policy import Cause, State, TaskState
from taskmuxd.projects import state as st
from tests.helpers import DaemonProcess, run_json, wait_until
from tests.projects import write_project


def running(run_id: int) -> st.TaskRecord:
    return st.TaskRecord(policy=State(state=TaskState.RUNNING), run_id=run_id, pid=100 + run_id)


def stopping(rec: st.TaskRecord) -> None:
    rec.policy = State(state=TaskState.STOPPING, manual_stop=True, cause=Cause.USER_STOP)


def test_the_batch_is_the_later_word_until_a_tasks_own_file_follows(tmp_path: Path) -> None:
    async def main() -> None:
        files = st.ProjectFiles(Paths(str(tmp_path)), "p")
        files.ensure()
        rec = st.ProjectRecord(running=True, tasks={"a": running(3), "b": running(5),
                                                    "c": running(7)})
        await asyncio.gather(st.save(files, rec),
                             *(st.save_task(files, n, r) for n, r in rec.tasks.items()))
        # A stop of a and b: the project no longer wanted up, their records written ahead
        # together; then the daemon is killed before their own files are written.
        rec.running = False
        stopping(rec.tasks["a"])
        stopping(rec.tasks["b"])
        await st.save_ahead(files, rec, ["a", "b"])
        await st.drain()
        assert sorted(json.loads(Path(files.ahead).read_text())["tasks"]) == ["a", "b"]

        fresh = st.ProjectFiles(Paths(str(tmp_path)), "p")
        found, note = st.load(fresh)
        assert note is None and found.running is False
        assert {n: t.policy.state for n, t in found.tasks.items()} == {
            "a": TaskState.STOPPING, "b": TaskState.STOPPING, "c": TaskState.RUNNING}
        assert found.tasks["a"].policy.manual_stop and found.tasks["a"].run_id == 3
        assert fresh.seq == files.seq  # the counter goes on from the highest on disk

        # a's own file follows (its exit): it is later than the batch, and wins.
        found.tasks["a"].policy = State(state=TaskState.STOPPED, manual_stop=True)
        await st.save_task(fresh, "a", found.tasks["a"])
        again, _ = st.load(st.ProjectFiles(Paths(str(tmp_path)), "p"))
        assert again.tasks["a"].policy.state == TaskState.STOPPED
        assert again.tasks["b"].policy.state == TaskState.STOPPING  # still the batch's word
        # Wanted up again later: state.json is the later word now.
        again.running = True
        await st.save(fresh, again)
        assert st.load(st.ProjectFiles(Paths(str(tmp_path)), "p"))[0].running is True

    asyncio.run(main())


def test_a_torn_batch_is_moved_aside_and_the_tasks_files_stand(tmp_path: Path) -> None:
    async def main() -> None:
        files = st.ProjectFiles(Paths(str(tmp_path)), "p")
        files.ensure()
        await st.save_task(files, "a", running(2))
        Path(files.ahead).write_text('{"format": 1, "seq": 99, "tasks": {"a": {"seq": 9')
        found, note = st.load(st.ProjectFiles(Paths(str(tmp_path)), "p"))
        assert note is not None and not os.path.exists(files.ahead)
        assert found.tasks["a"].policy.state == TaskState.RUNNING and found.tasks["a"].run_id == 2

    asyncio.run(main())


def test_a_stop_of_several_tasks_writes_them_ahead_as_one_file(
        daemon: DaemonProcess, env: dict[str, str], home: str, tmp_path: Path) -> None:
    proj = write_project(str(tmp_path / "p"), """
        name = "batch"
        [tasks.a]
        command = "sleep 600"
        [tasks.b]
        command = "sleep 600"
        [tasks.c]
        command = "sleep 600"
    """)
    assert run_json(["start"], env, cwd=proj)[0] == 0
    code, out = run_json(["stop"], env, cwd=proj)
    assert code == 0, out
    with open(os.path.join(home, "projects", "batch", "ahead.json"), encoding="utf-8") as fh:
        ahead = json.load(fh)
    assert ahead["running"] is False
    assert sorted(ahead["tasks"]) == ["a", "b", "c"]
    assert {t["policy"]["state"] for t in ahead["tasks"].values()} == {"stopping"}
    assert all(t["policy"]["manual_stop"] for t in ahead["tasks"].values())
    # The tasks' own files are written after it, with the exit: the later word.
    wait_until(lambda: {t.policy.state for t in st.load(st.ProjectFiles(Paths(home), "batch"))[
        0].tasks.values()} == {TaskState.STOPPED}, 10, "the tasks' own records")


def test_a_start_of_several_tasks_writes_their_launches_ahead_as_one_file(
        daemon: DaemonProcess, env: dict[str, str], home: str, tmp_path: Path) -> None:
    """The launches of one turn go ahead together, before any runner is asked for: one file
    holding each task's new run, starting; the tasks' own files follow with the runners'
    reports (the later word)."""
    proj = write_project(str(tmp_path / "p"), """
        name = "launches"
        [tasks.a]
        command = "sleep 600"
        [tasks.b]
        command = "sleep 600"
        [tasks.c]
        command = "sleep 600"
    """)
    code, out = run_json(["start"], env, cwd=proj)
    assert code == 0, out
    with open(os.path.join(home, "projects", "launches", "ahead.json"), encoding="utf-8") as fh:
        ahead = json.load(fh)
    assert sorted(ahead["tasks"]) == ["a", "b", "c"]
    assert {t["policy"]["state"] for t in ahead["tasks"].values()} == {"starting"}
    assert {t["run_id"] for t in ahead["tasks"].values()} == {1}
    wait_until(lambda: {t.policy.state for t in st.load(st.ProjectFiles(Paths(home), "launches"))[
        0].tasks.values()} == {TaskState.RUNNING}, 10, "the tasks' own records")
    assert run_json(["stop"], env, cwd=proj)[0] == 0
