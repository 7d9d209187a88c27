"""The runner's spec and record: one typed, versioned reader and writer (``runrecord``)."""

from __future__ import annotations

import json
import os

import pytest

from taskmuxd import runrecord
from taskmuxd.runrecord import FormatError, RunRecord, RunSpec

SPEC = {"project": "p", "task": "t", "run_id": 4, "command": "sleep 1", "shell": "/bin/sh",
        "cwd": "/", "env": {"A": "1"}, "log": "/l", "log_max_size": 1000, "log_max_files": 2,
        "record": "/r", "socket": "/s"}


def test_a_spec_round_trips_and_one_from_before_formats_reads_as_the_first() -> None:
    spec = runrecord.spec_from_json(SPEC)  # no "format": written before formats were
    assert spec.format == runrecord.SPEC_FORMAT and spec.env == {"A": "1"}
    assert spec.stop_grace_period == 10.0 and spec.relaunch_socket is None
    again = runrecord.spec_from_json(json.loads(runrecord.dumps(spec)))
    assert again == spec


def test_another_format_is_refused_with_a_clear_error(tmp_path: str) -> None:
    with pytest.raises(FormatError, match=r"format 2; this taskmux reads format 1"):
        runrecord.spec_from_json({**SPEC, "format": 2})
    path = os.path.join(str(tmp_path), "r.json")
    with open(path, "w") as fh:
        json.dump({"format": 99, "run_id": 1, "status": "running"}, fh)
    with pytest.raises(FormatError, match="run record has format 99"):
        runrecord.read_record(path)


def test_a_spec_missing_what_a_run_needs_is_refused() -> None:
    with pytest.raises(FormatError, match="lacks command"):
        runrecord.spec_from_json({k: v for k, v in SPEC.items() if k != "command"})
    with pytest.raises(FormatError, match="not a JSON object"):
        runrecord.spec_from_json([SPEC])


def test_a_record_reads_wrong_types_as_absent_and_ignores_unknown_keys() -> None:
    rec = runrecord.record_from_json({
        "format": 1, "run_id": 3, "pid": "12", "runner_pid": True, "started_at": 5,
        "status": "dancing", "tree_clean": True, "future_key": [1], "ready_by": "log"})
    assert rec == RunRecord(run_id=3, started_at=5.0, tree_clean=True, ready_by="log")
    assert rec.pid is None and rec.runner_pid is None and rec.status == "starting"


def test_records_on_disk_none_torn_and_current(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "r.json")
    assert runrecord.read_record(path) is None
    with open(path, "w") as fh:
        fh.write('{"run_id": 1, "sta')
    assert runrecord.read_record(path) is None
    rec = RunRecord(project="p", task="t", run_id=2, status="exited", exit_code=3,
                    relaunch="/x.relaunch")
    with open(path, "w") as fh:
        fh.write(runrecord.dumps(rec))
    assert runrecord.read_record(path) == rec


def test_the_stand_in_for_dataclasses_behaves_like_one() -> None:
    a = RunSpec("p", "t", 1, "c", "/bin/sh", "/", {}, "/l", 1, 1, "/r", "/s")
    assert a == RunSpec(**{**runrecord.to_json(a)})
    assert "RunSpec(project='p'" in repr(a)
    with pytest.raises(TypeError):
        RunSpec(project="p")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        RunRecord(nonsense=1)  # type: ignore[call-arg]
