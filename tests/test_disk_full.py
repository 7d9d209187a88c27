"""A full disk under a real daemon: the state directory on a 2 MB tmpfs, filled by a chatty task.

Nothing stops: the chatty task keeps running with its log lines dropped and counted, a
crash-looping task keeps being retried, the daemon starts again after a ``kill -9``, every
command says in one line what is wrong and what to do, ``status`` and ``doctor`` say the disk
is full; once space is freed everything resumes by itself.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

from taskmuxctl.core import diskspace
from taskmuxctl.core.fsutil import read_pid
from tests.helpers import (
    DaemonProcess,
    call,
    daemon_env,
    kill_processes_of_home,
    kill_task_leftovers,
    pid_gone,
    read,
    run_cli,
    run_json,
    wait_until,
    write_config,
)
from tests.projects import task, write_project

pytestmark = pytest.mark.timeout(240)


@contextlib.contextmanager
def tmpfs(size: str, *options: str) -> Iterator[str]:
    """A folder in /tmp with a tmpfs of ``size`` mounted on it (skipped where mounting is not
    allowed); unmounted and removed afterwards."""
    path = tempfile.mkdtemp(prefix="tmx-full-", dir="/tmp")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", "mode=0700",
                                                                   *options]), "tmpfs", path],
                          capture_output=True, text=True)
    if done.returncode != 0:
        os.rmdir(path)
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", path], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)
        with contextlib.suppress(OSError):
            os.rmdir(path)


@pytest.fixture
def small_home(request: pytest.FixtureRequest, tmux_socket: str) -> Iterator[str]:
    """A TASKMUX_HOME on its own 2 MB tmpfs; a test may add mount options (``nr_inodes=8``)
    through indirect parametrisation."""
    with tmpfs("2m", *([request.param] if hasattr(request, "param") else [])) as path:
        try:
            write_config(path)
            yield path
        finally:
            kill_task_leftovers(path)
            kill_processes_of_home(path)


def free(home: str) -> int:
    return int(diskspace.space(home)["free"])


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and "running as root" not in line]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def fill_up(path: str) -> None:
    """Take every byte left on the file system."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


def pending_grants(home: str) -> list[str]:
    """The restart grants on file (``taskmuxd.rungrant``), their temporary files and claimed
    ones not yet unlinked included."""
    found = []
    for project in os.listdir(os.path.join(home, "projects")):
        with contextlib.suppress(FileNotFoundError):
            run = os.path.join(home, "projects", project, "run")
            found += [os.path.join(run, n) for n in os.listdir(run) if ".grant" in n]
    return found


def fill_for_good(home: str) -> None:
    """Fill the disk so that it stays full, for a command that must find no room.

    A crash-looping task's pending restart holds a page: the daemon writes the grant of the
    next run (``run/{task}.grant``) when a run ends, and the runner unlinks it when it claims
    it at the end of the backoff (or the daemon, revoking it). A grant pending at the fill
    gives its page back a moment later, and a command then finds room (``config set``
    succeeded so in two CI runs; inotify on the tmpfs showed the grant claimed while it ran).
    So the disk is filled again until no grant is pending and then not a byte is free: from
    there on the next grant cannot be written, and every other writer here (records, state,
    events) needs a new page before it frees an old one (a temporary file renamed over it;
    a log line cut short is taken back within its last page), so no page comes back."""
    def full_for_good() -> bool:
        fill_up(os.path.join(home, "filler"))
        return not pending_grants(home) and free(home) == 0

    wait_until(full_for_good, 30, "the disk to be full with no restart grant pending")


def disk_section(home: str) -> dict[str, Any]:
    return dict(call(os.path.join(home, "ctl.sock"), "daemon.status", timeout=5)["disk"])


def daemon_pid(home: str) -> int:
    return int(call(os.path.join(home, "ctl.sock"), "daemon.status", timeout=5)["pid"])


@pytest.mark.slow(21)
def test_a_full_disk_stops_nothing_and_everything_resumes(small_home: str, tmux_socket: str,
                                                           tmp_path: Any) -> None:
    home = small_home
    env = {**daemon_env(home), "TASKMUX_TMUX_SOCKET": tmux_socket}
    flag = os.path.join(str(tmp_path), "chatty")  # outside the tmpfs
    open(flag, "w").close()
    proj = write_project(os.path.join(str(tmp_path), "p"), f"""
        name = "full"
        [tasks.chatty]
        command = "while [ -e {flag} ]; do echo chatter chatter chatter chatter chatter; done; while true; do echo tick; sleep 0.2; done"
        log_max_size = "256KB"
        log_max_files = 20
        [tasks.crashy]
        command = "echo crashing; sleep 0.2; exit 1"
        restart_policy = "always"
        restart_backoff = 1.0
        max_restarts = 100000
    """)  # noqa: E501
    daemons: list[DaemonProcess] = []
    extra: list[int] = []
    try:
        daemons.append(DaemonProcess(home, env).wait_ready())
        code, out = run_json(["start"], env, cwd=proj)
        assert code == 0, out
        chatty_pid = task(env, proj, "chatty")["pid"]
        wait_until(lambda: free(home) < diskspace.FULL_BELOW, 60, "the disk to fill up")
        os.unlink(flag)  # from now on: a tick every 0.2 s, every one of them dropped
        fill_up(os.path.join(home, "filler"))  # not a page left, not even for events.jsonl

        # The crash-looping task is retried all along (a failed write never leaves it
        # stuck in backoff), and the chatty one keeps running.
        seen = task(env, proj, "crashy")["restarts"]
        wait_until(lambda: task(env, proj, "crashy")["restarts"] >= seen + 3, 30,
                   "crashy to be retried while the disk is full")
        assert task(env, proj, "chatty")["pid"] == chatty_pid
        assert task(env, proj, "chatty")["state"] == "running"

        # status and doctor say the disk is full, and what to do.
        code, out = run_json(["status"], env, cwd=proj)
        assert code == 0 and "no space left on device" in out["disk_full"], out
        text = run_cli(["status"], env, cwd=proj).stdout
        assert f"! the disk holding {home} is full (no space left on device)" in text
        assert f"free space on {home}" in text
        code, out = run_json(["doctor"], env, cwd=proj)
        disk = next(c for c in out["checks"] if c["name"] == "disk")
        assert code == 1 and disk["status"] == "fail" and "is full" in disk["summary"], disk
        assert f"free space on {home}" in disk["hint"]
        assert "FULL" in run_cli(["daemon", "status"], env).stdout

        # Registering a new project needs a write: one line, what and what to do.
        other = write_project(os.path.join(str(tmp_path), "other"), """
            name = "other"
            [tasks.app]
            command = "sleep 600"
        """)
        fill_for_good(home)
        proc = run_cli(["start"], env, cwd=other)
        line = one_line(proc.stderr)
        assert proc.returncode == 1 and "no space left on device" in line, line
        assert f"free space on {home}" in line

        # A command that itself cannot write says so in one line.
        fill_for_good(home)
        proc = run_cli(["config", "set", "log_level", "debug"], env, cwd=proj)
        line = one_line(proc.stderr)
        assert proc.returncode == 1 and "config.toml: no space left on device" in line, line
        assert f"free space on {home}" in line

        # kill -9, then start it again, directly and through `taskmux daemon start`.
        daemons[0].proc.send_signal(signal.SIGKILL)
        daemons[0].wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(home, "ctl.sock"))
        daemons.append(DaemonProcess(home, env).wait_ready())
        started = daemons[-1].output()
        assert "Traceback" not in started
        if read_pid(os.path.join(home, "daemon.pid")) != daemons[-1].pid:
            assert "daemon.pid: no space left on device" in started, started
        daemons[-1].proc.send_signal(signal.SIGKILL)
        daemons[-1].wait()
        proc = run_cli(["daemon", "start"], env)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        extra.append(daemon_pid(home))
        assert task(env, proj, "chatty")["pid"] == chatty_pid  # adopted, still running

        # This daemon, too, cannot write its events (and counts them).
        fill_up(os.path.join(home, "filler"))
        wait_until(lambda: disk_section(home)["events_dropped"] > 0, 30, "an event dropped")
        assert disk_section(home)["full"]
        # Failed event writes leave no transition half done: crashy is still being retried.
        seen = task(env, proj, "crashy")["restarts"]
        wait_until(lambda: task(env, proj, "crashy")["restarts"] >= seen + 2, 30,
                   "crashy to be retried while its events are dropped")

        # Free space: remove the filler and the older rotated logs. Everything resumes by
        # itself; the chatty task's log says how many lines were lost.
        os.unlink(os.path.join(home, "filler"))
        logs = os.path.join(home, "projects", "full", "logs")
        for name in os.listdir(logs):
            if name.startswith("chatty.log.") and int(name.rsplit(".", 1)[1]) >= 3:
                os.unlink(os.path.join(logs, name))
        assert free(home) > 1_000_000

        def chatty_log() -> str:
            names = ["chatty.log", "chatty.log.1", "chatty.log.2"]
            return "".join(read(os.path.join(logs, n)) for n in names
                           if os.path.exists(os.path.join(logs, n)))

        wait_until(lambda: "log line(s) were dropped: No space left on device"
                   in chatty_log(), 20, "the chatty task's log to note what was dropped")
        note = next(x for x in chatty_log().splitlines() if "were dropped" in x)
        assert int(note.split("[taskmux] ")[1].split()[0]) > 0
        assert task(env, proj, "chatty")["pid"] == chatty_pid
        after = task(env, proj, "crashy")["restarts"]
        wait_until(lambda: task(env, proj, "crashy")["restarts"] >= after + 2, 30,
                   "crashy to relaunch once there is room")
        crashy_log = read(os.path.join(logs, "crashy.log"))
        assert crashy_log.count("crashing") >= 2
        wait_until(lambda: read_pid(os.path.join(home, "daemon.pid")) == extra[0], 20,
                   "daemon.pid to be written once there is room")
        wait_until(lambda: "disk_full" not in run_json(["status"], env, cwd=proj)[1], 20,
                   "status to stop saying the disk is full")
        code, out = run_json(["doctor"], env, cwd=proj)
        assert next(c for c in out["checks"] if c["name"] == "disk")["status"] == "ok"
        raw = read(os.path.join(home, "events.jsonl")).splitlines()
        evs = [json.loads(line) for line in raw]  # every line whole
        names = [e["event"] for e in evs]
        assert "disk_space_back" in names
        dropped = [e for e in evs if e["event"] == "events_dropped"]
        assert dropped and all(e["details"]["count"] > 0 for e in dropped)
        assert run_json(["stop"], env, cwd=proj)[0] == 0
    finally:
        for pid in extra:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            wait_until(lambda p=pid: pid_gone(p), 15, "the daemon to stop")
        for daemon in daemons:
            daemon.stop()
        with contextlib.suppress(OSError):
            os.unlink(flag)


@pytest.mark.parametrize("small_home", ["nr_inodes=8"], indirect=True)
def test_with_no_room_at_all_every_start_says_so_in_one_line(small_home: str,
                                                              env: dict[str, str]) -> None:
    """The worst case: not one inode left, so not even daemon.lock or daemon.log can be
    created. One line, saying what and what to do; no traceback."""
    home = small_home
    env = {**env, "TASKMUX_HOME": home}
    made = 0
    with contextlib.suppress(OSError):
        for i in range(64):
            open(os.path.join(home, f"filler{i}"), "w").close()
            made += 1
    assert 0 < made < 64
    proc = run_cli(["daemon", "start"], env)
    line = one_line(proc.stderr)
    assert proc.returncode == 1 and "no space left on device" in line, line
    assert f"free space on {home}" in line and line.endswith("then run the command again")
    direct = subprocess.run([sys.executable, "-m", "taskmuxd", "run"], env=env, text=True,
                            capture_output=True, timeout=60)
    line = one_line(direct.stderr)
    assert direct.returncode == 73, direct.stderr
    assert f"cannot write {home}/daemon.lock: no space left on device" in line, line
    assert f"free space on {home}" in line


def test_the_wording_of_a_failed_write(tmp_path: Any) -> None:
    folder = str(tmp_path)
    mount = diskspace.mount_point(folder)
    full = diskspace.describe(OSError(errno.ENOSPC, "No space left on device",
                                      f"{folder}/registry.json"), then=diskspace.AGAIN)
    assert full == (f"cannot write {folder}/registry.json: no space left on device; free space "
                    f"on {mount} (`df -h {mount}`; old task logs are under projects/*/logs), "
                    "then run the command again")
    quota = diskspace.describe(OSError(errno.EDQUOT, "Disk quota exceeded", f"{folder}/x"))
    assert "disk quota exceeded" in quota and quota.endswith(diskspace.CARRIES_ON)
    other = diskspace.describe(OSError(errno.EACCES, "Permission denied"), f"{folder}/y")
    assert other == f"cannot write {folder}/y: Permission denied"
    assert not diskspace.is_full(OSError(errno.EACCES, "x")) and not diskspace.is_full(
        ValueError())


def test_a_record_write_that_finds_no_room_keeps_the_old_record_and_leaves_no_temporary_file(
        ) -> None:
    """A runner's record replaced whole (or staged) on a full disk: the write fails, the record
    in place is still the old one, whole, and the temporary file it was being written to is
    gone (runs of the test above left an empty ``{task}.json.{pid}.tmp`` in ``run/``)."""
    from taskmuxd import runner, runrecord
    from taskmuxd.runrecord import RunRecord

    with tmpfs("64k") as folder:
        path = os.path.join(folder, "t.json")
        old = RunRecord(project="p", task="t", run_id=1, runner_pid=os.getpid(),
                        status="running", pid=4243, pgid=4243, started_at=1.5)
        runner.write_record(path, old, sync=False)
        fill_up(os.path.join(folder, "filler"))
        new = RunRecord(project="p", task="t", run_id=2, runner_pid=os.getpid(),
                        status="starting", after_run=1, after_code=1)
        with pytest.raises(OSError, match="No space left on device") as failed:
            runner.write_record(path, new, sync=False)
        assert failed.value.errno == errno.ENOSPC
        with pytest.raises(OSError, match="No space left on device") as failed:
            runner.stage_record(path, new)
        assert failed.value.errno == errno.ENOSPC
        assert runrecord.read_record(path) == old
        assert sorted(os.listdir(folder)) == ["filler", "t.json"]
