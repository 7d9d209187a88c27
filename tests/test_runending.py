"""The list of runs the daemon ends (``taskmuxd.runending``): written by the daemon before a
stop's signals, read by each runner when its task ends. Pure: files in a temporary folder;
and the tokens it replaced (``run/{task}.ending``), removed by a daemon restoring the project,
with a real daemon."""

from __future__ import annotations

import os
from collections.abc import Callable

from taskmuxctl.core.paths import Paths
from taskmuxd import runending
from taskmuxd.projects import state as st
from taskmuxd.projects.registry import Registry
from tests.helpers import DaemonProcess, call, read
from tests.projects import write_project


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


def test_a_booting_daemon_removes_old_ending_tokens_and_nothing_else(
        home: str, tmp_path: str, start_daemon: Callable[..., DaemonProcess]) -> None:
    proj = write_project(os.path.join(str(tmp_path), "p"), """
        name = "tidy"
        [tasks.web]
        command = "sleep 600"
        auto_start = false
    """)
    paths = Paths(home)
    Registry(paths.registry).register("tidy", os.path.join(proj, "taskmux.toml"))
    files = st.ProjectFiles(paths, "tidy")
    files.ensure()
    run = files.run_dir
    old = [os.path.join(run, n) for n in ("web.ending", "api.ending", ".ending")]
    for i, path in enumerate(old):
        with open(path, "w") as fh:
            fh.write(f"{i}\n" if i else "")
    outside = os.path.join(str(tmp_path), "outside.ending")  # a link's target: left alone
    with open(outside, "w") as fh:
        fh.write("keep me\n")
    os.symlink(outside, os.path.join(run, "link.ending"))
    os.symlink(str(tmp_path), os.path.join(run, "folderlink.ending"))
    os.mkdir(os.path.join(run, "folder.ending"))
    kept = {runending.NAME: "web 3\n", "web.ending.tmp": "x", "web.endings": "y",
            "web.json": "{}"}
    for name, text in kept.items():
        with open(os.path.join(run, name), "w") as fh:
            fh.write(text)
    daemon = start_daemon()
    # The project is restored before the daemon answers this; its tokens went with it.
    assert call(daemon.socket, "project.status", {"project": "tidy"})["state"] == "ok"
    assert [p for p in old if os.path.lexists(p)] == []
    assert os.path.islink(os.path.join(run, "link.ending"))
    assert os.readlink(os.path.join(run, "link.ending")) == outside
    assert read(outside) == "keep me\n"
    assert os.path.islink(os.path.join(run, "folderlink.ending"))
    assert os.path.isdir(os.path.join(run, "folder.ending"))
    assert {n: read(os.path.join(run, n)) for n in kept} == kept


def test_old_tokens_are_removed_only_from_a_run_folder_that_is_a_folder(tmp_path: str) -> None:
    # A run folder that is itself a symlink is not followed: the tokens it names stay.
    paths = Paths(str(tmp_path / "home"))
    files = st.ProjectFiles(paths, "p")
    elsewhere = str(tmp_path / "elsewhere")
    os.makedirs(elsewhere)
    os.makedirs(files.dir)
    os.symlink(elsewhere, files.run_dir)
    token = os.path.join(elsewhere, "web.ending")
    with open(token, "w") as fh:
        fh.write("1\n")
    assert st.drop_old_endings(files) == 0
    assert read(token) == "1\n"
    os.unlink(files.run_dir)
    assert st.drop_old_endings(files) == 0  # no run folder at all
    os.makedirs(files.run_dir)
    os.replace(token, os.path.join(files.run_dir, "web.ending"))
    assert st.drop_old_endings(files) == 1
    assert os.listdir(files.run_dir) == []
