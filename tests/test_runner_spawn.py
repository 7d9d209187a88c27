"""The runner starts a run through ``posix_spawn`` (``runner.spawn_on_pty``): the task leads a
new session whose controlling terminal is its pty (C-c interrupts it), in its folder, with
the signals Python ignores back to their defaults and nothing of the runner's open; where it
cannot (a folder or program missing), ``forkpty`` says why, as before."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from taskmuxd import runner, runrecord
from taskmuxd.runrecord import RunSpec

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="posix_spawn's new session takes its pty on Linux")

PROBE = ("echo $(cut -d' ' -f5-8 /proc/$$/stat) $$; tty; pwd; grep SigIgn /proc/$$/status; "
         "for f in /proc/$$/fd/*; do readlink $f; done | tr '\\n' ' '; echo; "
         "trap 'echo interrupted; exit 7' INT; echo ready; while :; do sleep 0.05; done")


def _read_until(fd: int, token: bytes) -> bytes:
    got = b""
    while token not in got:
        chunk = os.read(fd, 4096)
        assert chunk, got
        got += chunk
    return got


def _drain(fd: int) -> bytes:
    got = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the task's side is closed
            return got
        if not chunk:
            return got
        got += chunk


def test_the_task_leads_a_session_on_its_pty_in_its_folder(tmp_path: str) -> None:
    here = os.getcwd()
    folder = os.path.realpath(str(tmp_path))
    got = runner.spawn_on_pty("/bin/sh", ["/bin/sh", "-c", PROBE], {"PATH": os.defpath},
                              folder)
    assert got is not None
    pid, master = got
    try:
        assert os.getcwd() == here  # the runner's own folder is given back
        out = _read_until(master, b"ready").decode()
        os.write(master, b"\x03")  # C-c: the line discipline signals the foreground group
        out += _drain(master).decode()
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    lines = [x.strip() for x in out.splitlines()]
    pgid, sid, tty_nr, tpgid, shell = lines[0].split()
    assert int(shell) == pid and int(pgid) == pid and int(sid) == pid  # a session leader
    assert int(tty_nr) != 0 and int(tpgid) == pid  # its pty controls it, it in the foreground
    assert lines[1].startswith("/dev/pts/") and lines[2] == folder
    ignored = int(lines[3].split()[1], 16)
    assert not ignored & (1 << (13 - 1)) and not ignored & (1 << (25 - 1))  # SIGPIPE, SIGXFSZ
    links = lines[4].split()  # no master: the task's end closes the pty
    assert "/dev/ptmx" not in links and links.count(lines[1]) >= 3, links
    assert "interrupted" in out and os.waitstatus_to_exitcode(status) == 7


def test_a_missing_folder_or_program_is_left_to_forkpty(tmp_path: str) -> None:
    here = os.getcwd()
    assert runner.spawn_on_pty("/bin/sh", ["/bin/sh", "-c", "true"], {},
                               os.path.join(str(tmp_path), "gone")) is None
    assert runner.spawn_on_pty(os.path.join(str(tmp_path), "nosh"), ["nosh"], {},
                               str(tmp_path)) is None
    assert os.getcwd() == here
    with pytest.raises(ChildProcessError):  # nothing left to reap
        os.waitpid(-1, os.WNOHANG)


def test_a_run_whose_folder_is_missing_says_why_and_exits_127(tmp_path: str) -> None:
    d = str(tmp_path)
    spec = RunSpec("p", "t", 1, "echo never", "/bin/sh", os.path.join(d, "gone"), {},
                   os.path.join(d, "t.log"), 1 << 20, 2, os.path.join(d, "t.json"),
                   os.path.join(d, "ctl.sock"), marker="m:1", stop_grace_period=1.0)
    path = os.path.join(d, "t.spec.json")
    with open(path, "w") as fh:
        fh.write(runrecord.dumps(spec))
    subprocess.run([sys.executable, "-I", "-S", runner.__file__, path], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
    rec = runrecord.read_record(os.path.join(d, "t.json"))
    assert rec is not None and rec.status == "exited" and rec.exit_code == 127
    with open(os.path.join(d, "t.log")) as fh:
        assert "cannot run" in fh.read()
