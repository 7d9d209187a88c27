"""One request line in, one response line (or nothing) out, through jsonrpcserver.

jsonrpcserver validates a batch as a whole, so one bad member would fail them all; the JSON-RPC
2.0 spec wants a response per member. So this module parses the line and splits a batch, and
hands each member to jsonrpcserver on its own, with a validator equal to the spec's request
schema but cheaper than running jsonschema on every call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from taskmuxctl.protocol import Code
from taskmuxd.rpc.jsonrpc import dispatch_to_serializable

log = logging.getLogger("taskmuxd.rpc")

_KEYS = frozenset(("jsonrpc", "method", "id", "params"))


def validate_request(obj: Any) -> Any:
    """Raise ValueError unless ``obj`` is a JSON-RPC 2.0 request object."""
    if not isinstance(obj, dict):
        raise ValueError("a request must be an object")
    if obj.get("jsonrpc") != "2.0":
        raise ValueError('"jsonrpc" must be exactly "2.0"')
    if not isinstance(obj.get("method"), str):
        raise ValueError('"method" must be a string')
    if "id" in obj:
        rid = obj["id"]
        if isinstance(rid, bool) or not (rid is None or isinstance(rid, str | int | float)):
            raise ValueError('"id" must be a string, a number or null')
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
    def __init__(self, methods: Callable[[], dict[str, Callable[..., Awaitable[Any]]]]) -> None:
        self._methods = methods

    async def handle(self, line: bytes) -> bytes | None:
        """The response to one request line, or None when nothing must be sent back."""
        try:
            parsed = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            return _dump(error_response(Code.PARSE_ERROR, "Parse error", str(exc)))
        if isinstance(parsed, list):
            if not parsed:
                return _dump(error_response(Code.INVALID_REQUEST, "Invalid Request",
                                            "an empty batch"))
            replies = await asyncio.gather(*(self._member(m) for m in parsed))
            kept = [r for r in replies if r is not None]
            return _dump(kept) if kept else None
        reply = await self._member(parsed)
        return None if reply is None else _dump(reply)

    async def _member(self, obj: Any) -> Any:
        try:
            return await dispatch_to_serializable(obj, self._methods(), deserializer=_identity,
                                  validator=validate_request)
        except Exception as exc:  # jsonrpcserver already maps method errors; this is a bug
            log.exception("dispatch failed")
            rid = obj.get("id") if isinstance(obj, dict) else None
            return error_response(Code.INTERNAL_ERROR, "Internal error", str(exc), rid)


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"
