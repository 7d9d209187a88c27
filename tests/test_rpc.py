"""JSON-RPC 2.0 over the control socket of a real daemon: what needs the socket (framing,
connections, concurrency) and a batch end to end. Every error case the spec names is checked
in process, against the same dispatcher, in tests/test_rpc_inprocess.py."""

from __future__ import annotations

import json
import socket
import threading

from taskmuxctl.core.protocol import MAX_MESSAGE_BYTES, Code
from tests.helpers import DaemonProcess, call, rpc_lines, wait_until


def line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def test_methods_answer(daemon: DaemonProcess) -> None:
    assert call(daemon.socket, "daemon.ping") == {"pong": True}
    version = call(daemon.socket, "daemon.version")
    assert version["version"] and version["protocol"] == 1
    status = call(daemon.socket, "daemon.status")
    assert status["pid"] == daemon.pid
    assert status["socket"] == daemon.socket
    assert status["projects"] == 0
    assert status["uptime"] >= 0
    # READY once every subsystem has started (what `fleet update` waits for).
    wait_until(lambda: call(daemon.socket, "daemon.status")["ready"] is True, 20, "READY")


def test_batches(daemon: DaemonProcess) -> None:
    batch = [
        {"jsonrpc": "2.0", "method": "daemon.ping", "id": 1},
        {"jsonrpc": "2.0", "method": "daemon.ping"},  # notification: no reply
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "nope", "id": "5"},
        1,
    ]
    [replies] = rpc_lines(daemon.socket, line(batch), 1)
    assert isinstance(replies, list) and len(replies) == 4
    by_id = {r["id"]: r for r in replies if r["id"] is not None}
    assert by_id[1]["result"] == {"pong": True}
    assert by_id["5"]["error"]["code"] == Code.METHOD_NOT_FOUND
    invalid = [r for r in replies if r["id"] is None]
    assert [r["error"]["code"] for r in invalid] == [Code.INVALID_REQUEST] * 2
    # An empty batch is one Invalid Request, not an empty array.
    [reply] = rpc_lines(daemon.socket, b"[]\n", 1)
    assert reply["error"]["code"] == Code.INVALID_REQUEST


def test_message_too_large_is_answered_and_the_daemon_survives(daemon: DaemonProcess) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(daemon.socket)
        chunk = b"x" * 65536
        sent = 0
        try:
            while sent <= MAX_MESSAGE_BYTES + len(chunk):
                s.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while True:
            try:
                part = s.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
    reply = json.loads(data.splitlines()[0])
    assert reply["error"]["code"] == Code.MESSAGE_TOO_LARGE
    assert reply["error"]["data"]["limit"] == MAX_MESSAGE_BYTES
    assert call(daemon.socket, "daemon.ping") == {"pong": True}


def test_persistent_connection_and_concurrent_calls(daemon: DaemonProcess) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(daemon.socket)
        slow = {"jsonrpc": "2.0", "method": "daemon.ping", "params": {"delay": 1.0}, "id": "slow"}
        s.sendall(line(slow) + b"".join(
            line({"jsonrpc": "2.0", "method": "daemon.ping", "id": i}) for i in range(20)))
        buf = b""
        while buf.count(b"\n") < 21:
            buf += s.recv(65536)
        ids = [json.loads(x)["id"] for x in buf.splitlines()]
    # The slow call did not hold the others back on the same connection.
    assert ids[-1] == "slow"
    assert sorted(ids[:-1]) == list(range(20))


def test_many_clients_at_once(daemon: DaemonProcess) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(50):
                assert call(daemon.socket, "daemon.ping") == {"pong": True}
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_client_that_disconnects_mid_call_does_not_hurt(daemon: DaemonProcess) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(daemon.socket)
        s.sendall(line({"jsonrpc": "2.0", "method": "daemon.ping", "params": {"delay": 0.3},
                        "id": 1}))
    # The connection is gone before the answer is written; the daemon shrugs it off.
    wait_until(lambda: call(daemon.socket, "daemon.status")["calls_in_flight"] == 0,
               what="the abandoned call to finish")
    assert call(daemon.socket, "daemon.ping") == {"pong": True}


def test_jsonrpcserver_is_loaded_without_jsonschema_and_http_server() -> None:
    import subprocess
    import sys

    code = ("import sys; import taskmuxd.rpc.jsonrpc, taskmuxd.rpc.dispatch; "
            "assert 'jsonschema' not in sys.modules, 'jsonschema was loaded'; "
            "assert 'http.server' not in sys.modules, 'http.server was loaded'; "
            "import jsonschema; assert hasattr(jsonschema, 'Draft7Validator'), 'stand-in leaked'; "
            "import http.server; assert hasattr(http.server, 'SimpleHTTPRequestHandler'), "
            "'stand-in leaked'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
