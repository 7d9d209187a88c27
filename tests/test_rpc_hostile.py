"""Hostile input on the control socket of a real daemon: every message gets a well-formed
JSON-RPC reply (strict JSON: no NaN, no Infinity), or none where the spec says so; params are
checked, in one place, before any method runs; batches are bounded. The whole table of shapes
(``SHAPES``) and the params messages run in process (tests/test_rpc_inprocess.py); a sample
goes over the socket here, with what only a real daemon shows (memory, concurrency)."""

from __future__ import annotations

import json
import socket
import warnings
from typing import Annotated, Any

import pytest
from pydantic import Field

from taskmuxctl.core.protocol import Code
from tests.helpers import DaemonProcess, call, wait_until

MAX_BATCH = 100  # taskmuxd.rpc.dispatch.MAX_BATCH (importing it here loads jsonrpcserver)


def _not_json(name: str) -> Any:
    raise AssertionError(f"the reply holds {name}, which is not JSON")


def strict(raw: bytes) -> Any:
    """Parse a reply line as strict JSON (NaN/Infinity are not JSON)."""
    return json.loads(raw, parse_constant=_not_json)


def assert_response(reply: Any) -> None:
    assert isinstance(reply, dict), reply
    assert reply.get("jsonrpc") == "2.0", reply
    assert "id" in reply, reply
    assert reply["id"] is None or isinstance(reply["id"], str | int | float), reply
    assert isinstance(reply["id"], bool) is False, reply
    if "error" in reply:
        assert set(reply) == {"jsonrpc", "error", "id"}, reply
        err = reply["error"]
        assert isinstance(err["code"], int) and not isinstance(err["code"], bool), reply
        assert isinstance(err["message"], str) and err["message"], reply
        assert set(err) <= {"code", "message", "data"}, reply
    else:
        assert set(reply) == {"jsonrpc", "result", "id"}, reply


def exchange(sock_path: str, payload: bytes, timeout: float = 20.0) -> list[Any]:
    """Send ``payload``, say we are done, and read every reply line until the daemon closes
    (it answers every call in flight first)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            buf += chunk
    return [strict(line) for line in buf.split(b"\n") if line.strip()]


def req(params: Any = None, method: str = "daemon.ping", rid: Any = 1) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": rid}
    if params is not None:
        msg["params"] = params
    return msg


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


PING = b'{"jsonrpc":"2.0","method":"daemon.ping","id":1'
NOTE = {"jsonrpc": "2.0", "method": "daemon.ping"}

# (label, the message line, replies expected: "one" = one response object, "none", or an int:
# a batch reply of that many responses; the error code expected, if one)
SHAPES: list[tuple[str, bytes, Any, int | None]] = [
    ("NaN id", b'{"jsonrpc":"2.0","method":"daemon.ping","id":NaN}', "one", Code.PARSE_ERROR),
    ("Infinity id", b'{"jsonrpc":"2.0","method":"daemon.ping","id":Infinity}', "one",
     Code.PARSE_ERROR),
    ("-Infinity id", b'{"jsonrpc":"2.0","method":"daemon.ping","id":-Infinity}', "one",
     Code.PARSE_ERROR),
    ("NaN delay", PING + b',"params":{"delay":NaN}}', "one", Code.PARSE_ERROR),
    ("Infinity delay", PING + b',"params":{"delay":Infinity}}', "one", Code.PARSE_ERROR),
    ("1e400 delay", PING + b',"params":{"delay":1e400}}', "one", Code.PARSE_ERROR),
    ("-1e400 delay", PING + b',"params":{"delay":-1e400}}', "one", Code.PARSE_ERROR),
    ("1e400 id", b'{"jsonrpc":"2.0","method":"daemon.ping","id":1e400}', "one",
     Code.PARSE_ERROR),
    ("1e308 delay", PING + b',"params":{"delay":1e308}}', "one", Code.INVALID_PARAMS),
    ("negative delay", PING + b',"params":{"delay":-1}}', "one", Code.INVALID_PARAMS),
    ("delay 61", PING + b',"params":{"delay":61}}', "one", Code.INVALID_PARAMS),
    ("bool delay", PING + b',"params":{"delay":true}}', "one", Code.INVALID_PARAMS),
    ("string delay", PING + b',"params":{"delay":"1"}}', "one", Code.INVALID_PARAMS),
    ("null delay", PING + b',"params":{"delay":null}}', "one", Code.INVALID_PARAMS),
    ("deep delay", PING + b',"params":{"delay":' + b"[" * 40 + b"]" * 40 + b"}}", "one",
     Code.INVALID_PARAMS),
    ("long list delay", PING + b',"params":{"delay":[' + b",".join([b"1"] * 20_001) + b"]}}",
     "one", Code.INVALID_PARAMS),
    ("NaN inside a batch", b'[{"jsonrpc":"2.0","method":"daemon.ping","id":NaN}]', "one",
     Code.PARSE_ERROR),
    ("999 levels of arrays", b"[" * 999 + b"]" * 999, "any", None),
    ("5000 levels of arrays", b"[" * 5000 + b"]" * 5000, "one", Code.PARSE_ERROR),
    ("5000 levels of objects", b'{"a":' * 5000 + b"1" + b"}" * 5000, "one", Code.PARSE_ERROR),
    ("999 levels in params", PING + b',"params":{"delay":' + b"[" * 999 + b"]" * 999 + b"}}",
     "one", None),
    ("unterminated", b'{"jsonrpc":"2.0","method":', "one", Code.PARSE_ERROR),
    ("trailing garbage", PING + b"} xyz", "one", Code.PARSE_ERROR),
    ("garbage after a batch", b"[" + PING + b"}] xyz", "one", Code.PARSE_ERROR),
    ("unterminated batch", b"[" + PING + b"},", "one", Code.PARSE_ERROR),
    ("batch without commas", b"[" + PING + b"} " + PING + b"}]", "one", Code.PARSE_ERROR),
    ("not UTF-8", b"\xff\xfe\xfd", "one", Code.PARSE_ERROR),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + PING + b"}", "one", Code.PARSE_ERROR),
    ("bare string", b'"hello"', "one", Code.INVALID_REQUEST),
    ("null", b"null", "one", Code.INVALID_REQUEST),
    ("true", b"true", "one", Code.INVALID_REQUEST),
    ("number", b"12", "one", Code.INVALID_REQUEST),
    ("empty object", b"{}", "one", Code.INVALID_REQUEST),
    ("empty batch", b"[]", "one", Code.INVALID_REQUEST),
    ("batch of an empty batch", b"[[]]", 1, Code.INVALID_REQUEST),
    ("batch of numbers", b"[1,2,3]", 3, Code.INVALID_REQUEST),
    ("id an array", enc(req(rid=[1])), "one", Code.INVALID_REQUEST),
    ("id true", enc(req(rid=True)), "one", Code.INVALID_REQUEST),
    ("id beyond 64 bits", enc(req(rid=10**30)), "one", Code.INVALID_REQUEST),
    ("id of 5000 digits", PING[:-1] + b"9" * 5000 + b"}", "one", Code.PARSE_ERROR),
    ("id too long", enc(req(rid="x" * 300)), "one", Code.INVALID_REQUEST),
    ("method too long", enc(req(method="m" * 300)), "one", Code.INVALID_REQUEST),
    ("method a number", enc({"jsonrpc": "2.0", "method": 1, "id": 1}), "one",
     Code.INVALID_REQUEST),
    ("params a string", enc(req("x")), "one", Code.INVALID_REQUEST),
    ("unknown param", enc(req({"bogus": 1})), "one", Code.INVALID_PARAMS),
    ("too many positional", enc(req([1, 2])), "one", Code.INVALID_PARAMS),
    ("unknown method", enc(req(method="no.such")), "one", Code.METHOD_NOT_FOUND),
    ("run_id a bool", enc(req({"project": "p", "task": "t", "run_id": True, "record": {}},
                              "runner.exited")), "one", Code.INVALID_PARAMS),
    ("run_id negative", enc(req({"project": "p", "task": "t", "run_id": -1, "record": {}},
                                "runner.exited")), "one", Code.INVALID_PARAMS),
    ("run_id 2**64", enc(req({"project": "p", "task": "t", "run_id": 2**64, "record": {}},
                             "runner.exited")), "one", Code.INVALID_PARAMS),
    ("tasks not strings", enc(req({"project": "p", "tasks": [1]}, "project.stop")), "one",
     Code.INVALID_PARAMS),
    ("notification", enc(NOTE), "none", None),
    ("notification with bad params", enc({**NOTE, "params": {"delay": "x"}}), "none", None),
    ("notification of no method", enc({"jsonrpc": "2.0", "method": "no.such"}), "none", None),
    ("batch of notifications", enc([NOTE, NOTE, NOTE]), "none", None),
    ("mixed batch", enc([req(rid="a"), NOTE, {"x": 1}, req({"delay": -5}, rid="b")]), 3, None),
    (f"batch of {MAX_BATCH}", enc([req(rid=i) for i in range(MAX_BATCH)]), MAX_BATCH, None),
    (f"batch of {MAX_BATCH + 1}", enc([req(rid=i) for i in range(MAX_BATCH + 1)]), "one",
     Code.INVALID_REQUEST),
]


# Every shape runs in process (tests/test_rpc_inprocess.py); these few also go over the real
# socket, through the server's framing and the daemon's own method table.
END_TO_END = ("NaN id", "1e308 delay", "5000 levels of arrays", "not UTF-8", "empty batch",
              "run_id a bool", "notification", "mixed batch", f"batch of {MAX_BATCH + 1}")


def check_replies(label: str, replies: list[Any], expect: Any, code: int | None) -> None:
    """What a hostile shape of SHAPES must get back: nothing ("none"), any well-formed reply
    ("any"), a batch of ``expect`` replies, or one error ("one"); with ``code``, its code."""
    if expect == "none":
        assert replies == [], (label, replies)
        return
    assert len(replies) == 1, (label, replies)
    [reply] = replies
    if expect == "any":
        for r in reply if isinstance(reply, list) else [reply]:
            assert_response(r)
        return
    if isinstance(expect, int):
        assert isinstance(reply, list) and len(reply) == expect, (label, reply)
        for r in reply:
            assert_response(r)
        if code is not None:
            assert {r["error"]["code"] for r in reply} == {code}, (label, reply)
        return
    assert_response(reply)
    assert "error" in reply, (label, reply)
    if code is not None:
        assert reply["error"]["code"] == code, (label, reply)


def test_malformed_shapes_over_the_socket_get_a_well_formed_reply(daemon: DaemonProcess
                                                                  ) -> None:
    shapes = [shape for shape in SHAPES if shape[0] in END_TO_END]
    assert len(shapes) == len(END_TO_END)
    for label, payload, expect, code in shapes:
        assert code is not None or expect != "one", label  # the socket sample names its code
        check_replies(label, exchange(daemon.socket, payload + b"\n"), expect, code)
    assert call(daemon.socket, "daemon.ping") == {"pong": True}


def test_a_huge_batch_is_one_error_and_the_daemon_carries_on(daemon: DaemonProcess) -> None:
    notes = b"[" + b",".join([json.dumps(NOTE).encode()] * 80_000) + b"]\n"
    ints = b"[" + b",".join([b"1"] * 1_500_000) + b"]\n"
    for payload in (notes, ints):
        replies = exchange(daemon.socket, payload)
        assert len(replies) == 1, replies[:3]
        [reply] = replies
        assert_response(reply)
        assert reply["error"]["code"] == Code.INVALID_REQUEST
        assert f"at most {MAX_BATCH}" in reply["error"]["data"]
    status = call(daemon.socket, "daemon.status")
    assert status["calls_in_flight"] == 0
    assert call(daemon.socket, "daemon.ping") == {"pong": True}


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def test_memory_goes_back_after_a_flood_of_large_messages(daemon: DaemonProcess) -> None:
    # Many requests of every malformed shape, large ones among them (the hostile bench's).
    from concurrent.futures import ThreadPoolExecutor

    from bench.hostile_rpc import messages

    lines = [shape.make(i) + b"\n" for i, shape in messages(6000)
             if not (shape.solo or shape.slow or not shape.newline)]
    chunks = [b"".join(lines[k::16]) for k in range(16)]  # 16 clients at once, pipelined
    # The baseline is the daemon fully up, with what it loads at a method's first call (the
    # parameter models, the RPC library) loaded: one small round of the same shapes first.
    wait_until(lambda: call(daemon.socket, "daemon.status").get("ready"), 30,
               "the daemon to be ready")
    exchange(daemon.socket, b"".join(lines[:400]), timeout=60)
    baseline = _rss_kib(daemon.pid)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda c: exchange(daemon.socket, c, timeout=60), chunks))
    assert _rss_kib(daemon.pid) > baseline  # the flood did grow the heap
    # The heap grew with the messages; a quiet moment later it is handed back.
    wait_until(lambda: _rss_kib(daemon.pid) < baseline + 8 * 1024, 15,
               "the daemon's RSS to come back near its baseline")


def test_a_ping_still_answers_while_a_slow_one_waits(daemon: DaemonProcess) -> None:
    """A delay in range is still a delay, and does not hold up another client."""
    with socket.socket(socket.AF_UNIX) as slow:
        slow.settimeout(30)
        slow.connect(daemon.socket)
        # 3 s: time enough for the status polls to see it in flight on a busy machine.
        slow.sendall(enc(req({"delay": 3.0}, rid="slow")) + b"\n")
        wait_until(lambda: call(daemon.socket, "daemon.status")["calls_in_flight"] == 1,
                   what="the slow call to be in flight")
        assert call(daemon.socket, "daemon.ping") == {"pong": True}
        assert strict(slow.recv(1 << 16).split(b"\n")[0]) == {
            "jsonrpc": "2.0", "result": {"pong": True}, "id": "slow"}


def test_a_method_without_bounds_on_a_number_cannot_be_registered() -> None:
    with warnings.catch_warnings():  # jsonrpcserver uses a deprecated importlib call
        warnings.simplefilter("ignore", DeprecationWarning)
        from taskmuxd.rpc.dispatch import MAX_BATCH as batch_limit
        from taskmuxd.rpc.registration import MethodTable
    assert batch_limit == MAX_BATCH
    table = MethodTable()

    async def unbounded(delay: float) -> None:
        del delay

    async def listed(names: list[str]) -> None:
        del names

    async def bounded(delay: Annotated[float, Field(ge=0, le=5)],
                      names: Annotated[list[str], Field(max_length=3)] | None = None) -> None:
        del delay, names

    with pytest.raises(TypeError, match="delay is a number without declared bounds"):
        table.add("x.unbounded", unbounded)
    with pytest.raises(TypeError, match="names is a collection without a declared max_length"):
        table.add("x.listed", listed)
    table.add("x.bounded", bounded)
    assert table.names() == ["x.bounded"]
