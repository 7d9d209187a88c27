"""The list of runs the daemon ends (``taskmuxd.runending``): written by the daemon before a
stop's signals, read by each runner when its task ends. Pure: files in a temporary folder."""

from __future__ import annotations

import os

from taskmuxd import runending


def _write(folder: str, runs: dict[str, int]) -> str:
    path = os.path.join(folder, runending.NAME)
    with open(path, "w") as fh:
        fh.write(runending.text(runs))
    return path


def test_a_listed_run_is_found_and_only_that_run(tmp_path: str) -> None:
    path = _write(str(tmp_path), {"web": 7, "api": 12, "db-2": 1})
    assert runending.listed(path, "web", 7)
    assert runending.listed(path, "api", 12)
    assert runending.listed(path, "db-2", 1)
    assert not runending.listed(path, "web", 70), "run 70 is not run 7"
    assert not runending.listed(path, "web", 8), "a later run of the task is not listed"
    assert not runending.listed(path, "eb", 7), "a task whose name ends another's"
    assert not runending.listed(path, "db", 1)
    assert not runending.listed(path, "api", 2)


def test_no_list_means_the_runner_looks_itself(tmp_path: str) -> None:
    assert not runending.listed(None, "web", 7)
    assert not runending.listed("", "web", 7)
    assert not runending.listed(os.path.join(str(tmp_path), runending.NAME), "web", 7)
    assert not runending.listed(str(tmp_path), "web", 7), "a folder is no list"


def test_an_empty_list_names_no_run(tmp_path: str) -> None:
    path = _write(str(tmp_path), {})
    assert runending.text({}) == ""
    assert not runending.listed(path, "web", 7)


def test_the_list_is_one_line_per_task_in_order() -> None:
    assert runending.text({"b": 2, "a": 10}) == "a 10\nb 2\n"
