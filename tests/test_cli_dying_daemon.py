"""The CLI against a daemon that dies while answering (killed while its socket still accepted):
the user sees the command answered by a new daemon, or, where none may be started, that the
daemon stopped and how to start it. A daemon that stays alive and hangs up, or one that sent
part of a reply, is still an error, and the request is not sent again."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator

import pytest

from taskmuxctl.context import Context
from taskmuxctl.core.fsutil import read_pid
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code, Method
from tests.helpers import PYTHON, REPO, DaemonProcess, pid_gone, read, run_json, wait_until

STANDIN = os.path.join(REPO, "tests", "standin_daemon.py")


@contextlib.contextmanager
def standin(home: str, env: dict[str, str], mode: str) -> Iterator[subprocess.Popen[bytes]]:
    """``tests/standin_daemon.py`` in ``mode`` on ``home``, listening once this returns."""
    proc = subprocess.Popen([PYTHON, STANDIN, mode, home], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def listening() -> bool:
            assert proc.poll() is None, f"the stand-in exited {proc.returncode}"
            return read_pid(os.path.join(home, "daemon.pid")) == proc.pid

        wait_until(listening, what="the stand-in daemon to listen")
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def accepted(home: str) -> int:
    return int(read(os.path.join(home, "standin.accepted")))


def refuses(home: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(os.path.join(home, "ctl.sock"))
        except ConnectionRefusedError:
            return True
    return False


def test_a_daemon_that_dies_while_answering_is_replaced_and_asked_again(
        env: dict[str, str], home: str) -> None:
    with standin(home, env, "reset") as dying:
        code, out = run_json(["daemon", "list"], env)
        assert code == 0 and out["ok"] is True, out
        assert out["projects"] == []
        dying.wait(10)
    assert accepted(home) == 1
    new = read_pid(os.path.join(home, "daemon.pid"))
    assert new is not None and new != dying.pid
    with open(f"/proc/{new}/cmdline", "rb") as fh:
        assert b"taskmuxd" in fh.read()


def test_without_auto_start_it_says_the_daemon_stopped_and_how_to_start_it(
        env: dict[str, str], home: str) -> None:
    no_start = {**env, "TASKMUX_NO_DAEMON_START": "1"}
    not_running_code, not_running = run_json(["daemon", "list"], no_start)
    assert not_running["code"] == Code.DAEMON_NOT_RUNNING
    with standin(home, env, "reset") as dying:
        code, out = run_json(["daemon", "list"], no_start)
        dying.wait(10)
    assert code == not_running_code and out["ok"] is False, out
    assert out["code"] == Code.DAEMON_NOT_RUNNING
    assert "stopped while answering" in out["error"], out
    assert "`taskmuxctl daemon start`" in out["error"], out
    assert accepted(home) == 1
    assert refuses(home)  # nothing was started
    assert read_pid(os.path.join(home, "daemon.pid")) == dying.pid


def test_daemon_status_of_a_daemon_that_died_while_answering_says_it_died(
        env: dict[str, str], home: str) -> None:
    with standin(home, env, "reset") as dying:
        code, out = run_json(["daemon", "status"], env)
        dying.wait(10)
    assert code == 1 and out["running"] is False, out  # LSB: dead, with a pid file left
    assert out["reason"] == "stopped" and out["stale_pid"] == dying.pid, out
    assert accepted(home) == 1
    assert refuses(home)  # status starts nothing


def test_a_live_daemon_that_hangs_up_unanswered_stays_a_protocol_error(
        env: dict[str, str], home: str) -> None:
    with standin(home, env, "close") as live:
        code, out = run_json(["daemon", "list"], env)
        assert live.poll() is None
        assert accepted(home) == 1  # asked once: no retry, and no daemon start (it connects)
    assert code != 0 and out["code"] == Code.DAEMON_PROTOCOL, out
    assert "closed the connection before answering" in out["error"], out


def test_a_daemon_that_dies_after_part_of_a_reply_is_not_asked_again(
        env: dict[str, str], home: str) -> None:
    with standin(home, env, "partial") as dying:
        code, out = run_json(["daemon", "list"], env)
        dying.wait(10)
    assert code != 0 and out["code"] == Code.DAEMON_PROTOCOL, out
    assert accepted(home) == 1
    assert refuses(home)  # nothing was started
    assert read_pid(os.path.join(home, "daemon.pid")) == dying.pid


def test_a_call_right_after_a_kill_9_is_answered_by_a_new_daemon(
        env: dict[str, str], home: str, start_daemon: object,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, so that the call comes microseconds after the kill, inside the window where
    the dying daemon's socket still accepts (a new CLI process starts too late to hit it
    every time); ``Context.call`` is what every CLI command calls."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("TASKMUX_NO_DAEMON_START", raising=False)
    daemon: DaemonProcess = start_daemon()  # type: ignore[operator]
    pid = daemon.pid
    for _ in range(3):
        os.kill(pid, signal.SIGKILL)
        ctx = Context(Paths(home))
        try:
            assert ctx.call(Method.PROJECT_LIST) == {"projects": []}
        finally:
            ctx.close()
        assert ctx.started_daemon is not None and ctx.started_daemon != pid
        assert pid_gone(pid)
        pid = ctx.started_daemon
