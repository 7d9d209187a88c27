"""The state files' writer thread: the latest version of each file wins, removals keep their
order, a failed write says why (and a later one succeeds), and nothing waits on the loop."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
from pathlib import Path

import pytest

from taskmuxd.projects.statewriter import StateWriter


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_the_latest_version_of_each_file_is_written_and_every_waiter_hears(
        tmp_path: Path) -> None:
    async def main() -> None:
        w = StateWriter()
        futs = [w.submit(str(tmp_path / f"t{i % 3}.json"), f"v{i}") for i in range(30)]
        await asyncio.gather(*futs)
        assert {p.name: read(p) for p in tmp_path.iterdir()} == {
            "t0.json": "v27", "t1.json": "v28", "t2.json": "v29"}
        # Thirty submissions in one turn of the loop: far fewer batches than writes.
        assert w.batches < 30
        assert stat.S_IMODE(os.stat(tmp_path / "t0.json").st_mode) == 0o600
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    asyncio.run(main())


def test_durable_waits_for_what_was_submitted(tmp_path: Path) -> None:
    gate = threading.Event()

    class Slow(StateWriter):
        def _batch(self) -> None:
            gate.wait(10)
            super()._batch()

    async def main() -> None:
        w = Slow()
        path = str(tmp_path / "t.json")
        assert w.durable(path).done()  # nothing pending: at once
        w.submit(path, "one")
        durable = w.durable(path)
        await asyncio.sleep(0.01)
        assert not durable.done() and not os.path.exists(path)
        gate.set()
        await durable
        assert read(tmp_path / "t.json") == "one"

    asyncio.run(main())


def test_a_removal_after_a_write_leaves_no_file(tmp_path: Path) -> None:
    async def main() -> None:
        w = StateWriter()
        path = str(tmp_path / "t.json")
        await w.submit(path, "kept")
        w.submit(path, "written, then removed")
        await w.remove(path)
        assert not os.path.exists(path)
        await w.remove(path)  # already gone: fine

    asyncio.run(main())


def test_a_failed_write_says_why_and_a_later_one_succeeds(tmp_path: Path) -> None:
    folder = tmp_path / "gone"  # a write that cannot be done (a full disk behaves alike)

    async def main() -> None:
        w = StateWriter()
        path = str(folder / "t.json")
        with pytest.raises(FileNotFoundError) as info:
            await w.submit(path, "lost")
        assert info.value.filename == path  # the file meant, not the temporary one
        folder.mkdir()
        await w.submit(path, "kept")
        assert read(folder / "t.json") == "kept"
        assert os.listdir(folder) == ["t.json"]  # no temporary file left behind
        await w.drain()

    asyncio.run(main())


def test_a_file_written_without_sync_is_in_place_with_its_mode(tmp_path: Path) -> None:
    async def main() -> None:
        w = StateWriter()
        path = str(tmp_path / "spec.json")
        await w.submit(path, "{}", mode=0o600, sync=False)
        assert read(tmp_path / "spec.json") == "{}"
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    asyncio.run(main())


def test_in_place_comes_after_the_rename_and_before_the_folders_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a launch waits for: the new record is what any reader gets (a successor daemon
    after a kill -9), while the folder's fsync is still to come."""
    from taskmuxd.projects import statewriter

    gate = threading.Event()
    synced: list[str] = []

    def slow_fsync_dir(folder: str) -> None:
        gate.wait(10)
        synced.append(folder)

    monkeypatch.setattr(statewriter, "fsync_dir", slow_fsync_dir)

    async def main() -> None:
        w = StateWriter()
        path = str(tmp_path / "t.json")
        assert w.in_place(path).done()  # nothing pending: at once
        durable = w.submit(path, "new")
        placed = w.in_place(path)
        await asyncio.wait_for(placed, 10)
        assert read(tmp_path / "t.json") == "new"
        assert not durable.done() and synced == []
        gate.set()
        await durable
        assert synced == [str(tmp_path)]

    asyncio.run(main())


def test_what_comes_during_a_round_is_placed_before_the_folders_fsync(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A version submitted while a batch writes its files is written in a second round of the
    same batch, and its ``in_place`` resolves before the batch's folder fsync; asked for
    once placed, ``in_place`` is true at once."""
    from taskmuxd.projects import statewriter

    writing, go_on, sync_gate = threading.Event(), threading.Event(), threading.Event()
    real_replace = statewriter._replace
    synced: list[str] = []

    def slow_replace(path: str, data: bytes, mode: int, sync: bool) -> None:
        if path.endswith("a.json"):
            writing.set()
            go_on.wait(10)
        real_replace(path, data, mode, sync)

    def slow_fsync_dir(folder: str) -> None:
        sync_gate.wait(10)
        synced.append(folder)

    monkeypatch.setattr(statewriter, "_replace", slow_replace)
    monkeypatch.setattr(statewriter, "fsync_dir", slow_fsync_dir)

    async def main() -> None:
        w = StateWriter()
        a, b = str(tmp_path / "a.json"), str(tmp_path / "b.json")
        first = w.submit(a, "one")
        await asyncio.to_thread(writing.wait, 10)  # the first round is writing a.json
        second = w.submit(b, "two")
        go_on.set()
        await asyncio.wait_for(w.in_place(b), 10)
        assert read(tmp_path / "b.json") == "two" and synced == []
        assert w.in_place(a).done() and w.in_place(b).done()
        assert not (first.done() or second.done())
        sync_gate.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)
        assert synced == [str(tmp_path)]  # one fsync of the folder for both rounds

    asyncio.run(main())


def test_a_late_write_is_in_place_before_its_fsync_and_durable_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch's record: renamed into place first (what a successor daemon reads), its data
    and its folder fsynced after, before its durable waiters hear."""
    from taskmuxd.projects import statewriter

    gate = threading.Event()
    fsynced: list[str] = []
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        gate.wait(10)
        fsynced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(statewriter.os, "fsync", slow_fsync)

    async def main() -> None:
        w = StateWriter()
        path = str(tmp_path / "t.json")
        durable = w.submit(path, "launch", late=True)
        await asyncio.wait_for(w.in_place(path), 10)
        assert read(tmp_path / "t.json") == "launch" and fsynced == []
        assert not durable.done()
        gate.set()
        await asyncio.wait_for(durable, 10)
        assert fsynced[0] == path  # the file itself, after its rename
        assert str(tmp_path) in fsynced[1:]  # then its folder
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]

    asyncio.run(main())


def test_a_launch_record_superseded_before_its_write_is_still_written_late(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A launch's record and the task's next record (the machine's Save) handed over in one
    turn: the latter takes its place, renamed before its fsync as the launch's would have
    been, so that the launch waits for no fsync; and a spec (no fsync) written in the same
    batch is done once in place, not after the batch's fsyncs."""
    from taskmuxd.projects import statewriter

    writing, go_on, gate = threading.Event(), threading.Event(), threading.Event()
    real_replace, real_fsync = statewriter._replace, os.fsync

    def slow_replace(path: str, data: bytes, mode: int, sync: bool, keep: bool = False) -> int:
        if path.endswith("busy.json"):
            writing.set()
            go_on.wait(10)
        return real_replace(path, data, mode, sync, keep)

    def slow_fsync(fd: int) -> None:
        gate.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(statewriter, "_replace", slow_replace)
    monkeypatch.setattr(statewriter.os, "fsync", slow_fsync)
    monkeypatch.setattr(statewriter, "fsync_dir", lambda folder: gate.wait(10))

    async def main() -> None:
        w = StateWriter()
        busy = w.submit(str(tmp_path / "busy.json"), "x", sync=False)
        await asyncio.to_thread(writing.wait, 10)  # the writer is held in its first round
        path = str(tmp_path / "t.json")
        launch = w.submit(path, "launch", late=True)
        saved = w.submit(path, "saved")  # supersedes the launch's record, unwritten
        spec = w.submit(str(tmp_path / "t.spec.json"), "spec", sync=False)
        go_on.set()
        await asyncio.wait_for(asyncio.gather(busy, spec, w.in_place(path)), 10)
        assert read(tmp_path / "t.json") == "saved" and read(tmp_path / "t.spec.json") == "spec"
        assert not (launch.done() or saved.done())  # their fsyncs are still held
        gate.set()
        await asyncio.wait_for(asyncio.gather(launch, saved), 10)

    asyncio.run(main())


def _gate_fsyncs(monkeypatch: pytest.MonkeyPatch
                 ) -> tuple[threading.Event, threading.Event, threading.Event]:
    """The writer's fsyncs of a.json and b.json held: (a's fsync begun, a's released, b's
    released)."""
    from taskmuxd.projects import statewriter

    in_a, go_on, b_gate = threading.Event(), threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        name = os.readlink(f"/proc/self/fd/{fd}")
        if ".a.json." in name:
            in_a.set()
            go_on.wait(10)
        elif ".b.json." in name:
            b_gate.wait(30)
        real_fsync(fd)

    monkeypatch.setattr(statewriter.os, "fsync", slow_fsync)
    return in_a, go_on, b_gate


def test_a_write_awaited_in_place_is_hurried_past_the_fsyncs_of_a_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A start right after a stop: the stop's records are being fsynced one by one when the
    launches' write-ahead comes. It is renamed into place before the next of those fsyncs,
    not after all of them."""
    in_a, go_on, b_gate = _gate_fsyncs(monkeypatch)

    async def main() -> None:
        w = StateWriter()
        a = w.submit(str(tmp_path / "a.json"), "a")
        b = w.submit(str(tmp_path / "b.json"), "b")
        await asyncio.to_thread(in_a.wait, 10)  # the batch is fsyncing a.json
        ahead = str(tmp_path / "ahead.json")
        launched = w.submit(ahead, "launches", late=True)
        go_on.set()
        await asyncio.wait_for(w.in_place(ahead), 10)
        assert read(tmp_path / "ahead.json") == "launches"
        assert not (tmp_path / "b.json").exists()  # still held in its fsync
        b_gate.set()
        await asyncio.wait_for(asyncio.gather(a, b, launched), 10)
        assert read(tmp_path / "b.json") == "b"

    asyncio.run(main())


def test_a_round_places_its_hasty_writes_before_fsyncing_the_others(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Handed over together while the writer is busy (a stop's record, then the launches'
    write-ahead): the next round renames the write-ahead into place and releases its waiters
    before it fsyncs the record, whichever was handed over first."""
    in_a, go_on, b_gate = _gate_fsyncs(monkeypatch)

    async def main() -> None:
        w = StateWriter()
        a = w.submit(str(tmp_path / "a.json"), "a")
        await asyncio.to_thread(in_a.wait, 10)  # a round of a alone is fsyncing it
        b = w.submit(str(tmp_path / "b.json"), "b")
        ahead = str(tmp_path / "ahead.json")
        launched = w.submit(ahead, "launches", late=True)
        w._hurry = False  # the hurry within a round is another test's: only the order here
        go_on.set()
        await asyncio.wait_for(w.in_place(ahead), 10)
        assert read(tmp_path / "ahead.json") == "launches"
        assert not (tmp_path / "b.json").exists()  # held in its fsync, after the write-ahead
        b_gate.set()
        await asyncio.wait_for(asyncio.gather(a, b, launched), 10)

    asyncio.run(main())


def test_files_submitted_together_go_in_one_batch_and_supersede_what_waits(
        tmp_path: Path) -> None:
    """``submit_many``: handed over at once (one batch for all of them), each file's future
    resolved once it is durable, and a version still waiting is superseded by the new one
    (its waiters hear with the new one's)."""
    async def main() -> None:
        w = StateWriter()
        first = tmp_path / "t00.json"
        older = w.submit(str(first), "old")  # may be taken at once, or superseded
        futs = w.submit_many([(str(tmp_path / f"t{i:02d}.json"), f"v{i}") for i in range(40)])
        assert len(futs) == 40
        await asyncio.gather(older, *futs)
        assert {p.name: read(p) for p in tmp_path.iterdir()} == {
            f"t{i:02d}.json": f"v{i}" for i in range(40)}
        assert w.batches <= 2, "forty files handed over together: one batch (after the one)"
        assert stat.S_IMODE(os.stat(first).st_mode) == 0o600

    asyncio.run(main())
