"""The first phase of the daemon's start (taskmuxd.boot): the control socket answers ping,
version and status before the method table exists, holds every other request until it does,
and answers the held ones exactly as a started daemon would."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import Code
from tests import scratch
from tests.helpers import PYTHON

PING = b'{"jsonrpc":"2.0","method":"daemon.ping","id":7}\n'


async def _exchange(path: str, payload: bytes, replies: int) -> list[bytes]:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(payload)
        await writer.drain()
        return [await asyncio.wait_for(reader.readline(), 10) for _ in range(replies)]
    finally:
        writer.close()


async def _pending(path: str, payload: bytes) -> tuple[asyncio.Task[list[bytes]], Any]:
    """Send ``payload``; a task that reads its one reply, and proof nothing came yet."""
    task = asyncio.create_task(_exchange(path, payload, 1))
    done, _ = await asyncio.wait({task}, timeout=0.2)
    return task, done


def _with_early(scenario: Callable[[Any, str], Awaitable[None]]) -> None:
    from taskmuxd.boot import Early
    from taskmuxd.notify import Notifier

    home = tempfile.mkdtemp(prefix="tmxe-", dir=scratch.base())
    try:
        paths = Paths(home)

        async def main() -> None:
            early = Early(paths, Notifier({}))
            await early.rpc.start()
            try:
                await scenario(early, paths.socket)
            finally:
                await early.rpc.close(1.0)

        asyncio.run(main())
    finally:
        import shutil

        shutil.rmtree(home, ignore_errors=True)


def _full_table() -> Callable[[], dict[str, Callable[..., Awaitable[Any]]]]:
    import warnings

    with warnings.catch_warnings():  # jsonrpcserver uses a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        from taskmuxd.rpc.registration import MethodTable

    table = MethodTable()

    async def ping() -> dict[str, Any]:
        return {"pong": "full"}

    async def echo(text: str) -> dict[str, Any]:
        return {"text": text}

    table.add("daemon.ping", ping)
    table.add("test.echo", echo)
    return table.as_dict


def test_early_answers_and_held_requests() -> None:
    async def scenario(early: Any, path: str) -> None:
        [pong] = await _exchange(path, PING, 1)
        assert json.loads(pong) == {"jsonrpc": "2.0", "result": {"pong": True}, "id": 7}
        [status] = await _exchange(
            path, b'{"jsonrpc":"2.0","method":"daemon.status","id":"s","params":{}}\n', 1)
        info = json.loads(status)["result"]
        assert info["ready"] is False and info["stopping"] is False
        assert info["pid"] == os.getpid() and info["socket"] == path
        assert info["projects"] == 0 and info["calls_in_flight"] == 0
        # Another method, params, a batch: held until the table comes.
        echo, done = await _pending(
            path, b'{"jsonrpc":"2.0","method":"test.echo","id":1,"params":{"text":"hi"}}\n')
        delayed, done2 = await _pending(
            path, b'{"jsonrpc":"2.0","method":"daemon.ping","id":2,"params":{"x":1}}\n')
        batch, done3 = await _pending(path, b'[' + PING.strip() + b']\n')
        assert not (done or done2 or done3)
        early.rpc.attach(_full_table())
        assert json.loads((await echo)[0]) == {"jsonrpc": "2.0", "result": {"text": "hi"},
                                               "id": 1}
        assert json.loads((await delayed)[0])["error"]["code"] == Code.INVALID_PARAMS
        assert json.loads((await batch)[0]) == [
            {"jsonrpc": "2.0", "result": {"pong": "full"}, "id": 7}]
        # From now on the full table answers even what the early answers knew.
        [pong] = await _exchange(path, PING, 1)
        assert json.loads(pong)["result"] == {"pong": "full"}

    _with_early(scenario)


def test_malformed_requests_held_then_answered_as_a_started_daemon_would() -> None:
    junk = [b'{"jsonrpc": "2.0", "method": \n', b'{"method":"daemon.ping","id":1}\n',
            b'{"jsonrpc":"2.0","method":"daemon.ping","id":[1]}\n', b"[]\n",
            b'{"jsonrpc":"2.0","method":"nope","id":3}\n']

    async def started_replies() -> list[bytes]:
        from taskmuxd.rpc.dispatch import Dispatcher

        full = Dispatcher(_full_table())
        return [r or b"" for r in [await full.handle(line.rstrip(b"\n")) for line in junk]]

    async def scenario(early: Any, path: str) -> None:
        held = [await _pending(path, line) for line in junk]
        assert not any(done for _, done in held)
        early.rpc.attach(_full_table())
        got = [(await task)[0] for task, _ in held]
        assert got == await started_replies()

    _with_early(scenario)


def test_a_failed_start_answers_held_requests_with_its_reason() -> None:
    async def scenario(early: Any, path: str) -> None:
        call, done = await _pending(
            path, b'{"jsonrpc":"2.0","method":"project.list","id":"x"}\n')
        note = asyncio.create_task(_exchange(
            path, b'{"jsonrpc":"2.0","method":"project.list"}\n' + PING, 1))
        assert not done
        early.rpc.refuse(Code.SETTINGS_INVALID, "config.toml: log_level: bad")
        reply = json.loads((await call)[0])
        assert reply["id"] == "x"
        assert reply["error"] == {"code": Code.SETTINGS_INVALID,
                                  "message": "config.toml: log_level: bad"}
        # The notification got no reply: the first line back is the ping's, sent after it.
        assert json.loads((await note)[0])["id"] == 7

    _with_early(scenario)


def test_the_first_phase_loads_neither_pydantic_nor_the_method_table() -> None:
    code = ("import sys, taskmuxd.cli, taskmuxd.boot, taskmuxctl.core.settingsfile; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pydantic', 'pydantic_core', 'jsonrpcserver', 'oslash', 'watchdog', 'ctypes') "
            "or m in ('taskmuxctl.core.settings', 'taskmuxd.daemon', 'taskmuxd.rpc.registration', "
            "'taskmuxd.projects.manager')))")
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]", out.stdout
