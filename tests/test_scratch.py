"""The run's temporary folder in RAM (tests/scratch.py): chosen only where usable, shared with the
xdist workers and pytest's tmp_path, and left-overs of killed runs swept without touching a live
run's folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from taskmuxctl.core.daemonctl import alive
from tests import scratch


def _folder(root: Path, name: str, owner: int | None) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "left.txt").write_text("x")
    if owner is not None:
        (folder / scratch.OWNER).write_text(f"{owner}\n")
    return folder


def test_sweep_removes_the_folders_of_ended_runs_only(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead_pid = int(ended.stdout)
    monkeypatch.setattr(scratch, "RAM", str(tmp_path))
    dead = _folder(tmp_path, f"{scratch.PREFIX}dead", dead_pid)
    unowned = _folder(tmp_path, f"{scratch.PREFIX}none", None)
    live = _folder(tmp_path, f"{scratch.PREFIX}live", os.getpid())
    other = _folder(tmp_path, "PostgreSQL.123", dead_pid)  # not ours: never touched
    target = _folder(tmp_path, "elsewhere", dead_pid)
    link = tmp_path / f"{scratch.PREFIX}link"
    link.symlink_to(target)

    scratch.sweep()

    assert not dead.exists() and not unowned.exists()
    assert (live / "left.txt").exists() and (other / "left.txt").exists()
    assert link.is_symlink() and (target / "left.txt").exists()


def test_disk_is_chosen_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKMUX_TEST_TMP", "disk")
    assert not scratch.usable()


def test_this_run_keeps_its_files_where_it_chose(tmp_path: Path) -> None:
    """Where /dev/shm was usable when the run started, this worker's TMPDIR, tmp_path and the
    homes tests make are in the run's RAM folder; else they are where they always were."""
    folder = os.environ.get("TMPDIR", "")
    if not folder.startswith(os.path.join(scratch.RAM, scratch.PREFIX)):
        assert scratch.base() == "/tmp"
        pytest.skip("this run keeps its temporary files on disk (no usable /dev/shm)")
    assert os.path.isdir(folder) and os.stat(folder).st_mode & 0o1777 == 0o1777
    assert str(tmp_path).startswith(folder + os.sep)
    assert scratch.base() == folder
    with open(os.path.join(folder, scratch.OWNER), encoding="ascii") as fh:
        owner = int(fh.read())
    assert alive(owner)  # the run (its controller) that made it
