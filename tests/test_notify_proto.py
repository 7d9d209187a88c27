"""The sd_notify protocol and ready_log_line matching without I/O, and the task's notify
socket against hostile senders (oversized datagrams, garbage, a process not of the task)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from taskmuxd import notifysocket, proctree
from taskmuxd.notifyproto import MAX_DATAGRAM, MAX_STATUS, NotifyState, parse
from taskmuxd.readyline import MAX_LINE, LineMatcher


def test_parse_takes_known_assignments_and_refuses_garbage() -> None:
    assert parse(b"READY=1\nSTATUS=serving\n") == {"READY": "1", "STATUS": "serving"}
    assert parse(b"STATUS=a=b") == {"STATUS": "a=b"}
    assert parse(b"READY=1\nFOO=bar\nnot an assignment") == {"READY": "1"}
    assert parse(b"") == {} and parse(b"\xff\xfe\x00") == {} and parse(b"READY=1\0") == {}
    assert parse(b"\xc3(READY=1") == {}  # not UTF-8
    assert parse(b"X" * (MAX_DATAGRAM + 1)) == {}
    many = b"\n".join(b"STATUS=%d" % i for i in range(1000)) + b"\nREADY=1"
    assert "READY" not in parse(many)  # only the first lines are read


def test_ready_status_and_the_watchdog_on_a_fake_clock() -> None:
    s = NotifyState(watchdog_sec=2.0, wait_ready=True, now=0.0)
    assert s.deadline() is None  # the watchdog starts once the task is ready
    assert not s.check(100.0)
    assert s.feed({"STATUS": "loading\x1b[31m data"}, 1.0) and s.status == "loading [31m data"
    assert not s.feed({"STATUS": "loading\x1b[31m data"}, 1.5)  # no news
    assert s.feed({"READY": "1"}, 10.0) and s.ready and s.deadline() == 12.0
    assert not s.feed({"READY": "1"}, 10.5)
    s.feed({"WATCHDOG": "1"}, 11.5)
    assert not s.check(13.0) and s.deadline() == 13.5
    assert s.check(13.5) and s.missed and "watchdog_sec (2s)" in s.missed_reason
    assert not s.check(20.0) and s.deadline() is None  # reported once
    long = NotifyState(None, wait_ready=False, now=0.0)
    assert long.feed({"STATUS": "x" * 10_000}, 0.0) and len(long.status or "") == MAX_STATUS
    assert long.deadline() is None and not long.check(1e9)


def test_the_watchdog_runs_from_the_start_without_readiness_and_can_be_triggered() -> None:
    s = NotifyState(watchdog_sec=1.0, wait_ready=False, now=5.0)
    assert s.deadline() == 6.0
    assert s.feed({"WATCHDOG": "trigger"}, 5.1) and s.missed and "trigger" in s.missed_reason
    assert not s.check(7.0)


def test_a_log_line_matches_once_and_only_its_first_characters_are_searched() -> None:
    m = LineMatcher(r"listening on :\d+")
    assert not m.feed("starting")
    assert not m.feed("x" * MAX_LINE + "listening on :80")  # beyond the searched part
    assert m.feed("INFO listening on :8080") and m.matched == "INFO listening on :8080"
    assert not m.feed("listening on :9090")


# -- the socket, with real datagrams -----------------------------------------------------------


@pytest.fixture
def receiver(tmp_path: object) -> Iterator[tuple[str, notifysocket.Receiver]]:
    if not notifysocket.CREDS or not proctree.AVAILABLE:
        pytest.skip("sender credentials (SO_PASSCRED) and /proc are Linux-only")
    path = os.path.join(str(tmp_path), "n.sock")
    sock = notifysocket.bind(path)
    recv = notifysocket.Receiver(sock, lambda pid: notifysocket.in_task_tree(pid, os.getpid()))
    try:
        yield path, recv
    finally:
        recv.close(path)


def send(path: str, data: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(data, path)


def send_from_child(path: str, data: bytes, recv: notifysocket.Receiver
                    ) -> list[dict[str, str]]:
    """Send from a child process that waits (alive) until the datagram was read."""
    code = f"import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); " \
        f"s.sendto({data!r}, {path!r}); print('sent', flush=True); sys.stdin.read()"
    with subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None and child.stdout.readline() == "sent\n"
        try:
            return recv.receive()
        finally:
            child.communicate("")


def test_the_socket_is_private_and_takes_what_the_tasks_tree_sends(
        receiver: tuple[str, notifysocket.Receiver]) -> None:
    path, recv = receiver
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert send_from_child(path, b"READY=1\nSTATUS=up", recv) == [
        {"READY": "1", "STATUS": "up"}]
    assert recv.refused == 0
    # A sender already gone when its datagram is read cannot be proven to be the task's.
    subprocess.run([sys.executable, "-c", "import socket; socket.socket(socket.AF_UNIX, "
                    f"socket.SOCK_DGRAM).sendto(b'READY=1', {path!r})"], check=True)
    assert recv.receive() == [] and recv.refused == 1


def test_a_sender_outside_the_tree_is_refused(
        receiver: tuple[str, notifysocket.Receiver]) -> None:
    path, recv = receiver
    send(path, b"READY=1")  # this process is the tree's root, not one of the task's
    assert recv.receive() == [] and recv.refused == 1
    assert f"pid {os.getpid()}" in recv.last_refusal


def test_oversized_and_garbage_datagrams_are_dropped_and_a_flood_is_read_in_turns(
        receiver: tuple[str, notifysocket.Receiver], monkeypatch: pytest.MonkeyPatch) -> None:
    path, _ = receiver
    recv = notifysocket.Receiver(_.sock, lambda pid: True)
    send(path, b"STATUS=" + b"x" * MAX_DATAGRAM)
    send(path, b"\x00\xff garbage")
    send(path, b"READY=1")
    assert recv.receive() == [{"READY": "1"}]
    assert recv.refused == 2 and "KEY=VALUE" in recv.last_refusal
    # A flood is read a bounded number at a time (the kernel's queue is short, often 10
    # datagrams: a smaller turn shows it).
    monkeypatch.setattr(notifysocket, "MAX_PER_TURN", 3)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        sent = 0
        for i in range(5):
            try:
                s.sendto(b"STATUS=%d" % i, path)
            except BlockingIOError:
                break
            sent += 1
    assert sent == 5, "the kernel queued fewer than 5 datagrams"
    assert [f["STATUS"] for f in recv.receive()] == ["0", "1", "2"]
    assert [f["STATUS"] for f in recv.receive()] == ["3", "4"]


def test_what_the_runner_records_of_a_log_line_and_the_watchdog(tmp_path: object) -> None:
    from taskmuxd.runready import RunReadiness
    from taskmuxd.runrecord import RunRecord, RunSpec

    def spec(**kw: object) -> RunSpec:
        return RunSpec("p", "t", 1, "c", "/bin/sh", "/", {}, "/l", 1, 1, "/r", "/s",
                       **kw)  # type: ignore[arg-type]

    notes: list[str] = []
    record = RunRecord()
    r = RunReadiness(spec(ready_log_line=r"^ready on \d+", watchdog_sec=5.0), record,
                     notes.append)
    env: dict[str, str] = {}
    r.open(env)  # no socket path given: no NOTIFY_SOCKET, so no watchdog it could not feed
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env
    r.on_line("starting")
    assert not r.tick(0.0) and record.ready_at is None
    r.on_line("ready on 8080")
    assert r.timeout(0.0) == 0.0 and r.tick(0.0)
    assert record.ready_by == "log" and "ready on 8080" in str(record.ready_detail)
    assert not r.tick(1e9)  # nothing new, and no watchdog to miss
    path = os.path.join(str(tmp_path), "w.sock")
    r2 = RunReadiness(spec(notify_socket=path, watchdog_sec=0.5), RunRecord(), notes.append)
    env = {}
    r2.open(env)
    try:
        assert env == {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "500000"}
        assert r2.timeout(time.monotonic()) is not None  # the watchdog runs from the start
        assert r2.tick(time.monotonic() + 1.0) and r2.record.watchdog_reason
        assert any("watchdog" in n for n in notes)
    finally:
        r2.close()
    assert not os.path.exists(path)
