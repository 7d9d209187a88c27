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


def _fsyncs_into(steps: list[str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Count the runner's fsyncs as "fsync" in ``steps`` (which is returned)."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        steps.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(runner.os, "fsync", fsync)  # the module the runner calls (posix)
    return steps


@pytest.mark.parametrize("sync", [True, False])
def test_a_record_is_in_place_when_the_daemon_is_told_and_fsynced_only_when_asked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool) -> None:
    path = str(tmp_path / "t.json")
    steps = _fsyncs_into([], monkeypatch)

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
    steps = _fsyncs_into([], monkeypatch)

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


# -- records rewritten in place, sealed (``runrecord.sealed``) ---------------------------------


def _two() -> tuple[RunRecord, RunRecord]:
    running = RunRecord(project="p", task="t", run_id=4, runner_pid=4242, status="running",
                        pid=4243, pgid=4243, started_at=1.5, marker="m:p:t:4")
    exited = RunRecord(project="p", task="t", run_id=4, runner_pid=4242, status="exited",
                       pid=4243, pgid=4243, started_at=1.5, marker="m:p:t:4", exit_code=0,
                       exited_at=2.5, tree_clean=True, ended_by="exit",
                       relaunch="/somewhere/t.relaunch")
    return running, exited


def test_a_record_is_rewritten_in_place_over_the_same_file_sealed(tmp_path: Path) -> None:
    path = str(tmp_path / "t.json")
    running, exited = _two()
    runner.write_record(path, exited, sync=False, in_place=True)  # no file yet: renamed in
    inode = os.stat(path).st_ino
    size = os.path.getsize(path)
    assert size == runner.IN_PLACE_ROOM  # padded: room for the records to come
    runner.write_record(path, running, sync=False, in_place=True)  # shorter: padded
    assert os.stat(path).st_ino == inode and os.path.getsize(path) == size
    assert runrecord.read_record(path) == running
    runner.write_record(path, exited, sync=False, in_place=True)
    assert os.stat(path).st_ino == inode
    assert runrecord.read_record(path) == exited
    with open(path, "rb") as fh:
        assert fh.read().startswith(runrecord.SEAL_HEAD)
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
    # Without the daemon's word (an older daemon), each write is a new file renamed in.
    runner.write_record(path, running, sync=False)
    assert os.stat(path).st_ino != inode
    assert runrecord.read_record(path) == running


@pytest.mark.parametrize("error", [runner.IN_PLACE_ROOM, runner.IN_PLACE_MAX])
def test_a_record_that_outgrows_its_file_is_replaced_whole(tmp_path: Path, error: int) -> None:
    """Never grown in place (a full disk would cut it short, the old one lost)."""
    path = str(tmp_path / "t.json")
    running, exited = _two()
    runner.write_record(path, running, sync=False, in_place=True)
    inode = os.stat(path).st_ino
    exited.error = "x" * error
    runner.write_record(path, exited, sync=False, in_place=True)
    assert os.stat(path).st_ino != inode
    assert runrecord.read_record(path) == exited


def test_a_torn_sealed_record_reads_as_none_and_an_unsealed_one_as_it_is(
        tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    running, exited = _two()
    a, b = runrecord.sealed(running), runrecord.sealed(exited)
    mixes = 0
    for cut in range(len(runrecord.SEAL_HEAD), min(len(a), len(b))):
        mix = b[:cut] + a[cut:]  # a read that caught the rewrite halfway
        if mix in (a, b):
            continue
        mixes += 1
        path.write_bytes(mix + b"\n")
        assert runrecord.read_record(str(path)) is None, cut
    assert mixes > 100
    path.write_bytes(b"{" + b'"check":"0000000000000000",' + a[len(runrecord.SEAL_HEAD) + 18:])
    assert runrecord.read_record(str(path)) is None  # a seal that does not match
    path.write_bytes((runrecord.dumps(exited) + "\n").encode())  # an older runner's record
    assert runrecord.read_record(str(path)) == exited
    path.write_bytes(b + b"   \n")
    assert runrecord.read_record(str(path)) == exited


_WRITER = """
import os, sys
sys.path.insert(0, sys.argv[1])
from taskmuxd import runner
from taskmuxd.runrecord import RunRecord
a = RunRecord(project="p", task="t", run_id=4, status="running", pid=1, marker="m")
b = RunRecord(project="p", task="t", run_id=4, status="exited", pid=1, marker="m",
              exit_code=3, tree_clean=True, ended_by="exit", error="e" * 300)
runner.write_record(sys.argv[2], b, sync=False, in_place=True)
os.write(1, b"ready\\n")
while True:
    runner.write_record(sys.argv[2], a, sync=False, in_place=True)
    runner.write_record(sys.argv[2], b, sync=False, in_place=True)
"""


def test_a_record_rewritten_in_place_is_whole_after_a_kill_and_to_a_reader_meanwhile(
        tmp_path: Path) -> None:
    """A runner killed (SIGKILL) at any moment of its rewrites leaves one of its records
    whole, never a mix; a reader meanwhile takes either record or none, never a mix."""
    import signal
    import subprocess
    import sys

    root = str(Path(runner.__file__).resolve().parent.parent)
    path = str(tmp_path / "t.json")
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, root, path],
                                stdout=subprocess.PIPE)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
            seen: set[str] = set()
            for _ in range(300):
                got = runrecord.read_record(path)
                if got is not None:
                    assert got.status in ("running", "exited") and got.pid == 1
                    assert (got.exit_code, got.ended_by) == (
                        (None, None) if got.status == "running" else (3, "exit"))
                    seen.add(got.status)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        assert seen
        after = runrecord.read_record(path)
        assert after is not None and after.status in ("running", "exited")
