"""Answers the daemon gives while it is still starting, before its method table exists.

The control socket serves from the first phase of the start (``taskmuxd.boot``), before
pydantic, jsonrpcserver and the subsystems are loaded. In that phase a request is answered
here only when it is a well-formed JSON-RPC 2.0 request with an id, for one of the few methods
that need nothing loaded (``daemon.ping``, ``daemon.version``, ``daemon.status``), without
params. Anything else (a notification, a batch, params, a malformed message, any other
method) waits for the full dispatcher, so every reply it gets is the one it would get from a
started daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from taskmuxd.rpc.dispatch import Refused, _dump, parse, validate_request

Answers = dict[str, Callable[[], Any]]


def answerer(answers: Answers) -> Callable[[bytes], bytes | None]:
    """What a ``Dispatcher`` without a method table answers with: ``answer`` from
    ``answers``."""
    return lambda line: answer(line, answers)


def answer(line: bytes, answers: Answers) -> bytes | None:
    """The reply line to ``line`` from ``answers`` (method -> result maker), or None when the
    request must wait for the full dispatcher."""
    if not answers:
        return None
    try:
        obj = validate_request(parse(line))
    except (Refused, ValueError):
        return None
    make = answers.get(obj["method"])
    if make is None or "id" not in obj or obj.get("params") not in (None, {}, []):
        return None
    return _dump({"jsonrpc": "2.0", "result": make(), "id": obj["id"]})
