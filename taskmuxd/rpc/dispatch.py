"""One request line in, one response line (or nothing) out, through jsonrpcserver.

jsonrpcserver validates a batch as a whole, so one bad member would fail them all; the JSON-RPC
2.0 spec wants a response per member. So this module parses the line and splits a batch, and
hands each member to jsonrpcserver on its own, with a validator equal to the spec's request
schema but cheaper than running jsonschema on every call.

Whatever arrives, the answer is strict JSON: ``NaN``, ``Infinity`` and numbers that overflow a
float are refused by the parser, so nothing that is not JSON can be echoed back; nesting too
deep for the parser is a parse error, not a crash. A batch holds at most ``MAX_BATCH``
requests: its members are parsed one at a time and a longer batch is refused, as one error,
as soon as member ``MAX_BATCH + 1`` is seen, without parsing the rest or building any reply
for it. Each member's params are then bounded by ``taskmuxd.rpc.params``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from taskmuxctl.core.protocol import Code

log = logging.getLogger("taskmuxd.rpc")

_KEYS = frozenset(("jsonrpc", "method", "id", "params"))
MAX_BATCH = 100
MAX_ID_LENGTH = 256
MAX_METHOD_LENGTH = 256
INT64 = (-(2**63), 2**63 - 1)


class Refused(Exception):
    """A message answered with one error and no call: (code, message, data)."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON: numbers must be finite")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:32]} is too large for a double")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)
_WS = re.compile(r"[ \t\n\r]*")


def _skip(text: str, i: int) -> int:
    match = _WS.match(text, i)
    return match.end() if match else i


def parse(line: bytes) -> Any:
    """The message in ``line``: one request object (or any value), or a batch as a list of at
    most ``MAX_BATCH`` members. Raises Refused for anything that gets one error reply."""
    try:
        text = line.decode("utf-8")
        start = _skip(text, 0)
        if not text.startswith("[", start):
            return _DECODER.decode(text)
        return _parse_batch(text, _skip(text, start + 1))
    except RecursionError:
        raise Refused(Code.PARSE_ERROR, "Parse error",
                      "nested too deeply for the parser; requests are shallow objects") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(Code.PARSE_ERROR, "Parse error", str(exc)[:200]) from None


def _parse_batch(text: str, i: int) -> list[Any]:
    members: list[Any] = []
    if text.startswith("]", i):
        if _skip(text, i + 1) != len(text):
            raise ValueError(f"extra data after the batch at character {i + 1}")
        return members
    while True:
        if len(members) == MAX_BATCH:
            raise Refused(Code.INVALID_REQUEST, "Invalid Request",
                          f"a batch may hold at most {MAX_BATCH} requests; send the rest in "
                          "further messages")
        member, i = _DECODER.raw_decode(text, i)
        members.append(member)
        i = _skip(text, i)
        if text.startswith(",", i):
            i = _skip(text, i + 1)
            continue
        if text.startswith("]", i):
            if _skip(text, i + 1) != len(text):
                raise ValueError(f"extra data after the batch at character {i + 1}")
            return members
        raise ValueError(f"expected ',' or ']' at character {i}")


def validate_request(obj: Any) -> Any:
    """Raise ValueError unless ``obj`` is a JSON-RPC 2.0 request object."""
    if not isinstance(obj, dict):
        raise ValueError("a request must be an object")
    if obj.get("jsonrpc") != "2.0":
        raise ValueError('"jsonrpc" must be exactly "2.0"')
    if not isinstance(obj.get("method"), str):
        raise ValueError('"method" must be a string')
    if len(obj["method"]) > MAX_METHOD_LENGTH:
        raise ValueError(f'"method" is longer than {MAX_METHOD_LENGTH} characters')
    if "id" in obj:
        rid = obj["id"]
        if isinstance(rid, bool) or not (rid is None or isinstance(rid, str | int | float)):
            raise ValueError('"id" must be a string, a number or null')
        if isinstance(rid, str) and len(rid) > MAX_ID_LENGTH:
            raise ValueError(f'"id" is longer than {MAX_ID_LENGTH} characters')
        if isinstance(rid, int) and not INT64[0] <= rid <= INT64[1]:
            raise ValueError('"id" is outside the 64-bit integer range')
    if "params" in obj and not isinstance(obj["params"], list | dict):
        raise ValueError('"params" must be an array or an object')
    if obj.keys() - _KEYS:
        raise ValueError(f"unexpected members: {sorted(obj.keys() - _KEYS)}")
    return obj


def error_response(code: int, message: str, data: Any = None, req_id: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "error": err, "id": req_id}


def _identity(obj: Any) -> Any:
    return obj


class Dispatcher:
    """Request lines to replies. Made without a method table (``methods`` None), it answers
    only what ``early`` can (a line in, its reply or None: ``taskmuxd.rpc.early``) and holds
    every other request until ``attach`` gives it the table, or ``refuse`` says the daemon
    will not get that far."""

    def __init__(self, methods: Callable[[], dict[str, Callable[..., Awaitable[Any]]]] | None,
                 early: Callable[[bytes], bytes | None] | None = None) -> None:
        self._methods = methods
        self._early = early
        self._gate = asyncio.Event()
        self._refusal: tuple[int, str, Any] | None = None
        if methods is not None:
            self._gate.set()

    @property
    def attached(self) -> bool:
        return self._methods is not None

    def attach(self, methods: Callable[[], dict[str, Callable[..., Awaitable[Any]]]]) -> None:
        """Serve every method of ``methods`` from now on; held requests go through it."""
        self._methods = methods
        self._early = None
        self._gate.set()

    def refuse(self, code: int, message: str, data: Any = None) -> None:
        """The table will never come: held and later requests get this error."""
        self._refusal = (code, message, data)
        self._gate.set()

    async def handle(self, line: bytes) -> bytes | None:
        """The response to one request line, or None when nothing must be sent back."""
        if self._methods is None:
            quick = self._early(line) if self._early is not None else None
            if quick is not None:
                return quick
            await self._gate.wait()
            if self._methods is None:
                return self._refused(line)
        try:
            parsed = parse(line)
        except Refused as exc:
            return _dump(error_response(exc.code, exc.message, exc.data))
        if isinstance(parsed, list):
            if not parsed:
                return _dump(error_response(Code.INVALID_REQUEST, "Invalid Request",
                                            "an empty batch"))
            replies = await asyncio.gather(*(self._member(m) for m in parsed))
            kept = [_encode(r) for r in replies if r is not None]
            return b"[" + b",".join(kept) + b"]\n" if kept else None
        reply = await self._member(parsed)
        return None if reply is None else _dump(reply)

    def _refused(self, line: bytes) -> bytes | None:
        assert self._refusal is not None
        code, message, data = self._refusal
        try:
            parsed = parse(line)
        except Refused:
            parsed = None
        if isinstance(parsed, dict) and "id" not in parsed:
            return None  # a notification gets no reply, not even this one
        rid = parsed.get("id") if isinstance(parsed, dict) else None
        if not (rid is None or isinstance(rid, str | int)) or isinstance(rid, bool):
            rid = None
        return _dump(error_response(code, message, data, rid))

    async def _member(self, obj: Any) -> Any:
        # jsonrpcserver loads with the method table (taskmuxd.rpc.registration), after the
        # daemon's first answers (taskmuxd.boot): never on the way to them.
        from taskmuxd.rpc.jsonrpc import dispatch_to_serializable

        assert self._methods is not None
        try:
            return await dispatch_to_serializable(obj, self._methods(), deserializer=_identity,
                                  validator=validate_request)
        except Exception as exc:  # jsonrpcserver already maps method errors; this is a bug
            log.exception("dispatch failed")
            rid = obj.get("id") if isinstance(obj, dict) else None
            return error_response(Code.INTERNAL_ERROR, "Internal error", str(exc), rid)


def _dump(obj: Any) -> bytes:
    """One reply line of strict JSON."""
    return _encode(obj) + b"\n"


def _encode(obj: Any) -> bytes:
    """A reply as strict JSON; one that cannot be becomes an Internal error with its id."""
    try:
        return json.dumps(obj, separators=(",", ":"), default=str, allow_nan=False).encode()
    except (ValueError, TypeError, RecursionError) as exc:
        log.error("a reply could not be written as JSON: %s", exc)
        rid = obj.get("id") if isinstance(obj, dict) else None
        if not (rid is None or isinstance(rid, str | int)):
            rid = None
        return json.dumps(error_response(Code.INTERNAL_ERROR, "Internal error",
                                         "the reply was not representable as JSON", rid),
                          separators=(",", ":")).encode()
