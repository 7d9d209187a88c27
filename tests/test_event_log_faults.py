"""Files under ``kill -9``: every event record is whole or absent, a torn line is skipped and
reported, and the temporary files of writes cut short are removed when the daemon starts."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from taskmuxctl.core.eventlog import EventLog, read_events
from taskmuxd import tempfiles
from tests.helpers import REPO, DaemonProcess, read, run_cli, run_json, wait_until
from tests.projects import write_project

TORN = '{"time":"2026-01-01T00:00:00.000Z","project":"x","task":null,"ev'


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_writer_never_appends_onto_a_torn_last_line(tmp_path: str) -> None:
    path = os.path.join(str(tmp_path), "events.jsonl")
    with open(path, "w") as fh:
        fh.write('{"time":"t","project":null,"task":null,"event":"first"}\n' + TORN)
    log = EventLog(path)
    log.emit("second", "p", "t")
    lines = read(path).split("\n")
    assert lines[1] == TORN  # closed off on its own line, not glued to the next record
    assert json.loads(lines[2])["event"] == "second" and lines[3] == ""
    skipped = [0]
    assert [e["event"] for e in read_events(path, skipped)] == ["first", "second"]
    assert skipped == [1]


def test_a_short_write_is_taken_back(tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write the disk could take only part of leaves no partial line behind."""
    path = os.path.join(str(tmp_path), "events.jsonl")
    log = EventLog(path)
    log.emit("before")
    real_write = os.write

    def short(fd: int, data: bytes) -> int:  # what write(2) does on a nearly full disk
        return real_write(fd, data[: len(data) // 2])

    with monkeypatch.context() as patch:
        patch.setattr(os, "write", short)
        log.emit("cut", filler="x" * 100)
    assert log.dropped == 1
    log.emit("after")
    lines = read(path).splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["before", "events_dropped",
                                                             "after"]
    assert json.loads(lines[1])["details"]["count"] == 1


WRITER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {repo!r})
    from taskmuxctl.core.fsutil import atomic_write
    from taskmuxctl.core.eventlog import EventLog
    home = sys.argv[1]
    log = EventLog(os.path.join(home, "events.jsonl"))
    i = 0
    while True:
        log.emit("stress", "p", "t", n=i, pad="x" * 30000)
        atomic_write(os.path.join(home, "registry.json"), b"y" * 300000)
        if i == 0:
            print("go", flush=True)
        i += 1
""")


@pytest.mark.slow
def test_kill_9_during_writes_leaves_whole_records_and_no_temp_files(
        home: str, env: dict[str, str], tmp_path: str) -> None:
    script = os.path.join(str(tmp_path), "writer.py")
    with open(script, "w") as fh:
        fh.write(WRITER.format(repo=REPO))
    rng = random.Random(12)
    for _ in range(30):
        proc = subprocess.Popen([sys.executable, script, home], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"go\n"
        time.sleep(rng.uniform(0, 0.03))  # the point: a kill at a random moment of the writes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    path = os.path.join(home, "events.jsonl")
    with open(path, "rb") as fh:
        raw = fh.read()
    records = 0
    for line in raw.split(b"\n"):
        if not line:
            continue
        try:
            json.loads(line)
            records += 1
        except ValueError:
            # Only ever a cut-off record on its own line: never two records glued together.
            assert line.startswith(b'{"time"') and line.count(b'{"time"') == 1, line[:200]
    assert records >= 30
    # The killed writers' temporary files go when the daemon starts; the daemon's own
    # writes stay whole.
    assert [n for n in os.listdir(home) if n.endswith(".tmp")]  # killed mid-atomic_write
    daemon = DaemonProcess(home, env).wait_ready()
    try:
        assert not [n for n in os.listdir(home) if n.endswith(".tmp")]
        proj = write_project(os.path.join(str(tmp_path), "p"), """
            name = "afterkill"
            [tasks.app]
            command = "sleep 600"
        """)
        assert run_json(["start"], env, cwd=proj)[0] == 0
        code, out = run_json(["events", "--task", "app"], env, cwd=proj)
        assert code == 0 and "task_started" in [e["event"] for e in out["events"]]
        assert run_json(["stop"], env, cwd=proj)[0] == 0
    finally:
        daemon.stop()


def test_the_daemon_removes_leftover_temp_files_and_skips_a_torn_line(
        home: str, env: dict[str, str], tmp_path: str) -> None:
    gone = dead_pid()
    with open(os.path.join(home, "events.jsonl"), "w") as fh:
        fh.write('{"time":"2026-01-01T00:00:00.000Z","project":null,"task":null,'
                 '"event":"before_the_crash"}\n' + TORN)
    for folder in ("projects/p/run", "app", "app/versions/9.9.9", "ca"):
        os.makedirs(os.path.join(home, folder))
    leftovers = [  # a daemon (atomic_write), a runner's record, the boot-guard's record
        f".registry.json.{gone}.k3x_9q2a.tmp", f"projects/p/run/web.json.{gone}.tmp",
        f"app/.bootguard.json.{gone}.tmp", f"ca/.ca.pem.{gone}.abcdefgh.tmp"]
    kept = [  # a writer still at work, someone else's file, an installed version's file
        f".config.toml.{os.getpid()}.abcdefgh.tmp", "notes.tmp",
        f"app/versions/9.9.9/.x.{gone}.tmp"]
    for name in leftovers + kept:
        open(os.path.join(home, name), "w").close()
    daemon = DaemonProcess(home, env).wait_ready()
    try:
        for name in leftovers:
            assert not os.path.exists(os.path.join(home, name)), name
        for name in kept:
            assert os.path.exists(os.path.join(home, name)), name
        proj = write_project(os.path.join(str(tmp_path), "p"), """
            name = "torn"
            [tasks.app]
            command = "sleep 600"
        """)
        assert run_json(["start"], env, cwd=proj)[0] == 0
        lines = read(os.path.join(home, "events.jsonl")).split("\n")
        assert lines[1] == TORN and all(json.loads(x) for x in lines[2:] if x)
        code, out = run_json(["events", "--all-projects"], env, cwd=proj)
        assert code == 0 and out["skipped_lines"] == 1, out
        assert [e["event"] for e in out["events"]][:1] == ["before_the_crash"]
        proc = run_cli(["events", "--all-projects"], env, cwd=proj)
        assert proc.returncode == 0
        assert "skipped 1 damaged line(s)" in proc.stderr and "task_started" in proc.stdout
        assert run_json(["stop"], env, cwd=proj)[0] == 0
    finally:
        daemon.stop()


@pytest.mark.slow
def test_a_daemon_killed_mid_work_again_and_again_leaves_whole_files(
        home: str, env: dict[str, str], tmp_path: str) -> None:
    """The daemon itself, busy restarting a crash-looping task (events, state files), is
    killed with SIGKILL at random moments; each time the next one starts cleanly."""
    proj = write_project(os.path.join(str(tmp_path), "p"), """
        name = "churn"
        [tasks.crashy]
        command = "exit 1"
        restart_policy = "always"
        restart_backoff = 1.0
        max_restarts = 100000
    """)
    rng = random.Random(7)
    events = os.path.join(home, "events.jsonl")
    for round_ in range(6):
        daemon = DaemonProcess(home, env).wait_ready()
        try:
            if round_ == 0:
                # The task exits at once: `start` may see it running or already gone (then it
                # answers that the start failed); the restarts that follow are the work.
                run_json(["start"], env, cwd=proj)
            size = os.path.getsize(events)
            wait_until(lambda s=size: os.path.getsize(events) > s, 20,
                       "the daemon to write events")
            time.sleep(rng.uniform(0, 0.5))  # the point: a kill at a random moment
            daemon.proc.send_signal(signal.SIGKILL)
            daemon.wait()
        finally:
            daemon.stop()
        with open(events, "rb") as fh:
            for line in fh.read().split(b"\n"):
                if line:
                    try:
                        json.loads(line)
                    except ValueError:
                        assert line.count(b'{"time"') == 1, line[:200]
    daemon = DaemonProcess(home, env).wait_ready()
    try:
        # Only writes in progress of live processes (a runner) may have a temp file now.
        for folder, _, names in os.walk(home):
            for name in names:
                path = os.path.join(folder, name)
                assert not tempfiles.is_leftover(name, path, time.time()), path
        assert run_json(["stop"], env, cwd=proj)[0] == 0
    finally:
        daemon.stop()
