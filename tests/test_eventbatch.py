"""``eventbatch.TurnEventLog``: the events of one turn of the loop are appended together at
its end (ids in order, listeners in the same order), at once when too many wait or when no
loop runs, and before the control socket writes an answer."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import warnings
from pathlib import Path
from typing import Any

from taskmuxd import eventbatch
from taskmuxd.eventbatch import TurnEventLog

with warnings.catch_warnings():  # jsonrpcserver uses a deprecated importlib.resources call
    warnings.simplefilter("ignore", DeprecationWarning)
    from taskmuxd.rpc.ctlsocket import RpcServer


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_a_turns_events_are_written_together_at_its_end(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = TurnEventLog(str(path))
    heard: list[tuple[int, str]] = []
    log.subscribe(lambda rec: heard.append((rec["id"], rec["event"])))
    writes = []
    real = log.append_all
    log.append_all = lambda recs: writes.append(len(recs)) or real(recs)  # type: ignore[method-assign]

    async def main() -> None:
        for name in ("a", "b", "c"):
            log.emit(name, "p", "t", n=1)
        assert _lines(path) == [] and heard == []  # not yet: the turn is not over
        await asyncio.sleep(0)
        assert [(r["id"], r["event"]) for r in _lines(path)] == [(1, "a"), (2, "b"), (3, "c")]
        assert heard == [(1, "a"), (2, "b"), (3, "c")]
        log.emit("d")
        await asyncio.sleep(0)

    asyncio.run(main())
    assert writes == [3, 1]
    assert log.last_id == 4
    log.emit("e")  # no loop: at once
    assert _lines(path)[-1]["event"] == "e" and log.last_id == 5


def test_too_many_waiting_are_written_at_once(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = TurnEventLog(str(path))

    async def main() -> None:
        for i in range(eventbatch.MAX_QUEUED + 3):
            log.emit("x", n=i)
        assert len(_lines(path)) == eventbatch.MAX_QUEUED
        await asyncio.sleep(0)
        assert [r["details"]["n"] for r in _lines(path)] == list(range(eventbatch.MAX_QUEUED + 3))

    asyncio.run(main())


def test_the_control_socket_flushes_before_each_answer(tmp_path: Path) -> None:
    """``before_reply`` runs before an answer is written, so an answer never overtakes the
    events of its call (in the loop's order the turn's flush comes first anyway)."""
    path = tmp_path / "events.jsonl"
    log = TurnEventLog(str(path))
    sock = os.path.join(str(tmp_path), "ctl.sock")
    at_reply: list[list[str]] = []
    seen: list[Any] = []

    async def emitting() -> None:
        log.emit("did_it")

    def hook() -> None:
        log.flush()
        at_reply.append([r["event"] for r in _lines(path)])

    def client() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.settimeout(10)
            c.connect(sock)
            c.sendall(b'{"jsonrpc":"2.0","method":"x.do","id":1}\n')
            reply = c.makefile("rb").readline()
            seen.append((json.loads(reply)["id"], [r["event"] for r in _lines(path)]))

    async def main() -> None:
        server = RpcServer(sock, lambda: {"x.do": emitting}, os.getuid())
        server.before_reply.append(hook)
        await server.start()
        try:
            await asyncio.to_thread(client)
        finally:
            await server.close(1.0)

    with warnings.catch_warnings():  # jsonrpcserver's first dispatch reads its schema so
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.run(main())
    assert at_reply == [["did_it"]]
    assert seen == [(1, ["did_it"])]
