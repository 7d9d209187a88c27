"""The runner's record writes: in place before the daemon is told; the exit record fsynced
after the message only when the daemon did not hear it (one that did writes what it decided
durably itself), the start record not at all (a killed daemon reads it from the page cache;
a power loss ends the run it describes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from taskmuxd import runner, runrecord
from taskmuxd.runrecord import RunRecord


@pytest.mark.parametrize("sync", [True, False])
def test_a_record_is_in_place_when_the_daemon_is_told_and_fsynced_only_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool) -> None:
    path = str(tmp_path / "t.json")
    steps: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        steps.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(runner.os, "fsync", fsync)  # the module the runner calls (posix)

    def told() -> None:
        got = runrecord.read_record(path)
        assert got is not None and got.run_id == 7  # the message's word is on file already
        steps.append("told")

    record = RunRecord(project="p", task="t", run_id=7, runner_pid=os.getpid(), status="running")
    runner.write_record(path, record, told, sync=sync)
    assert steps == (["told", "fsync"] if sync else ["told"])
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("heard", [True, False])
def test_the_fsync_is_left_to_a_daemon_that_heard_the_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, heard: bool) -> None:
    path = str(tmp_path / "t.json")
    steps: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        steps.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(runner.os, "fsync", fsync)

    def told() -> bool:
        got = runrecord.read_record(path)
        assert got is not None and got.status == "exited"  # on file before the report
        steps.append("told")
        return heard

    record = RunRecord(project="p", task="t", run_id=3, runner_pid=os.getpid(),
                       status="exited", exit_code=0)
    runner.write_record(path, record, told)
    assert steps == (["told"] if heard else ["told", "fsync"])
    assert runrecord.read_record(path) == record
