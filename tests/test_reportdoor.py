"""The report door: runners' reports as one message per connection on ``reports.sock``, read
without the RPC layer. A real door on a real socket with a recording table of handlers (the
seam), hostile reports refused one by one without stopping the door, a connection whose report
comes late (taken) or never (let go), reports held until the daemon has adopted its tasks, a
sender of another uid refused; the runner's fallback to ``ctl.sock``; and a real daemon whose
runners' reports come through the door."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
from collections.abc import Callable
from typing import Any

import pytest

from taskmuxd import reportdoor, reportwire, runner
from tests.helpers import WAIT_FLOOR, call, run_json, wait_until
from tests.projects import wait_state, write_project

pytestmark = pytest.mark.skipif(not reportdoor.AVAILABLE, reason="no SO_PASSCRED here")

Seen = list[tuple[str, str, str, int, dict[str, Any]]]


def _table(seen: Seen) -> dict[str, reportdoor.Report]:
    def take(method: str) -> reportdoor.Report:
        def report(project: str, task: str, run_id: int, record: dict[str, Any]) -> None:
            if record.get("bad"):
                raise ValueError("a record the reader refuses")
            seen.append((method, project, task, run_id, record))
        return report
    return {m: take(m) for m in ("runner.started", "runner.exited", "runner.notify")}


def _report(method: str = "runner.started", **params: Any) -> bytes:
    base: dict[str, Any] = {"project": "p", "task": "t", "run_id": 3, "record": {"pid": 9}}
    base.update(params)
    return json.dumps({"jsonrpc": "2.0", "method": method, "params": base}).encode()


def _send(path: str, payload: bytes) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * reportwire.MAX_REPORT)
        s.connect(path)
        s.send(payload)
    finally:
        s.close()


async def _with_door(folder: str, ready: bool,
                     body: Callable[[reportdoor.ReportDoor, Seen, asyncio.Event], Any]) -> None:
    seen: Seen = []
    event = asyncio.Event()
    if ready:
        event.set()
    door = reportdoor.ReportDoor(os.path.join(folder, "ctl.sock"), _table(seen), os.getuid(),
                                 event)
    await door.start()
    try:
        await body(door, seen, event)
    finally:
        await door.stop()
    assert not os.path.exists(door.path)


async def _until(cond: Callable[[], bool]) -> None:
    """The door has no hook to await: its counters are looked at between turns of the loop."""
    async with asyncio.timeout(WAIT_FLOOR):
        while not cond():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def test_a_report_reaches_its_handler(tmp_path: str) -> None:
    async def body(door: reportdoor.ReportDoor, seen: Seen, _e: asyncio.Event) -> None:
        assert os.stat(door.path).st_mode & 0o777 == 0o600
        assert await asyncio.to_thread(reportwire.send, door.path, _report(
            "runner.exited", run_id=7, record={"exit_code": 0}))
        await _until(lambda: door.taken == 1)
        assert seen == [("runner.exited", "p", "t", 7, {"exit_code": 0})]
        assert door.status() == {"open": True, "taken": 1, "refused": 0, "wakes": door.wakes}
        assert 1 <= door.wakes <= 2

    asyncio.run(_with_door(str(tmp_path), True, body))


def test_hostile_reports_are_refused_and_the_door_stays_open(tmp_path: str) -> None:
    hostile = [
        b"not json", b"[1, 2]", b'{"method": "runner.started"}', b"[" * 60_000,
        _report("daemon.shutdown"), _report(run_id=True), _report(run_id=-1),
        _report(run_id=2**64), _report(run_id="3"), _report(project=""),
        _report(task="x" * (reportdoor.MAX_NAME + 1)), _report(project=5),
        _report(record=[1]), _report(record={f"k{i}": i for i in range(65)}),
        _report(record={"bad": True}),  # the handler's reader refuses it
        _report(record={"pad": "x" * reportwire.MAX_REPORT}),  # cut by the kernel: dropped
    ]

    async def body(door: reportdoor.ReportDoor, seen: Seen, _e: asyncio.Event) -> None:
        for payload in hostile:  # from a thread: a full backlog blocks the sender, not the loop
            await asyncio.to_thread(_send, door.path, payload)
        await asyncio.to_thread(_send, door.path, _report(task="after"))
        await _until(lambda: door.taken + door.refused == len(hostile) + 1)
        assert door.refused == len(hostile)
        assert [s[2] for s in seen] == ["after"]
        assert not reportwire.send(door.path, b"x" * (reportwire.MAX_REPORT + 1))

    asyncio.run(_with_door(str(tmp_path), True, body))


def test_a_late_report_is_waited_for_and_a_silent_connection_let_go(
        tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reportdoor, "PENDING_SECONDS", 0.2)

    async def body(door: reportdoor.ReportDoor, seen: Seen, _e: asyncio.Event) -> None:
        late = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        silent = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            late.connect(door.path)
            silent.connect(door.path)
            await _until(lambda: len(door.pending) == 2)  # accepted, waiting for a report
            late.send(_report(task="late"))
            await _until(lambda: door.taken == 1)
            assert [s[2] for s in seen] == ["late"]
            await _until(lambda: door.refused == 1)  # the silent one, after its time
            assert door.pending == {}
            assert silent.recv(10) == b""  # closed by the door
        finally:
            late.close()
            silent.close()

    asyncio.run(_with_door(str(tmp_path), True, body))


def test_reports_wait_for_the_adoption_and_keep_their_order(tmp_path: str) -> None:
    async def body(door: reportdoor.ReportDoor, seen: Seen, ready: asyncio.Event) -> None:
        for i in range(5):
            assert await asyncio.to_thread(reportwire.send, door.path, _report(run_id=i))
        await _until(lambda: len(door.held) == 5)
        assert seen == []
        ready.set()
        await _until(lambda: door.taken == 5)
        assert [s[3] for s in seen] == [0, 1, 2, 3, 4]
        assert await asyncio.to_thread(reportwire.send, door.path, _report(run_id=5))
        await _until(lambda: door.taken == 6)

    asyncio.run(_with_door(str(tmp_path), False, body))


@pytest.mark.skipif(os.getuid() != 0, reason="sending as another uid needs root")
def test_a_sender_of_another_uid_is_refused() -> None:
    folder = tempfile.mkdtemp(prefix="tmxdoor-")
    os.chmod(folder, 0o711)

    async def body(door: reportdoor.ReportDoor, seen: Seen, _e: asyncio.Event) -> None:
        os.chmod(door.path, 0o666)  # so that only the uid check can stop it
        pid = os.fork()
        if pid == 0:
            try:
                os.setuid(65534)
                try:
                    _send(door.path, _report(task="stranger"))
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the door closed the connection first: refused at the accept
                os._exit(0)
            except BaseException as exc:
                os.write(2, f"child: {exc!r}\n".encode())
                os._exit(1)
        assert (await asyncio.to_thread(os.waitpid, pid, 0))[1] == 0
        await _until(lambda: door.refused == 1)
        await asyncio.to_thread(_send, door.path, _report(task="own"))
        await _until(lambda: door.taken == 1)
        assert [s[2] for s in seen] == ["own"]

    try:
        asyncio.run(_with_door(folder, True, body))
    finally:
        os.rmdir(folder)


def test_the_runner_uses_ctl_sock_when_there_is_no_door(tmp_path: str) -> None:
    ctl = os.path.join(str(tmp_path), "ctl.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(ctl)
    listener.listen(1)
    listener.settimeout(5)
    try:
        assert runner.tell_daemon(ctl, "runner.exited", {"project": "p", "run_id": 1})
        conn, _ = listener.accept()
        with conn:
            line = conn.makefile("rb").readline()
        assert json.loads(line)["params"] == {"project": "p", "run_id": 1}
    finally:
        listener.close()
    os.unlink(ctl)
    assert not runner.tell_daemon(ctl, "runner.exited", {})  # neither: the record speaks


def test_a_daemons_runners_report_through_the_door(env: dict[str, str], tmp_path: str) -> None:
    proj = write_project(os.path.join(str(tmp_path), "p"), """
        name = "door"
        [tasks.app]
        command = "exec sleep 600"
    """)
    run_json(["start"], env, cwd=proj)
    wait_state(env, proj, "app", "running")
    sock = os.path.join(env["TASKMUX_HOME"], "ctl.sock")
    assert call(sock, "daemon.status")["reports"]["taken"] >= 1  # runner.started
    code, out = run_json(["stop"], env, cwd=proj)
    assert code == 0, out
    wait_until(lambda: call(sock, "daemon.status")["reports"]["taken"] >= 2, 10,
               "the runner's exit report at the door")
    assert call(sock, "daemon.status")["reports"]["refused"] == 0
