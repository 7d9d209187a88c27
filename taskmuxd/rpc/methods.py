"""Registering RPC methods: names, parameter validation, and error translation at one edge.

A method is an ``async def`` taking keyword parameters with type hints. Registration wraps it
with pydantic's ``validate_call`` so bad params become JSON-RPC ``Invalid params`` (-32602)
with the offending field named, and a ``TaskmuxError`` becomes a JSON-RPC error object with
its stable code; a write that failed for want of disk space becomes ``DISK_FULL`` saying
which file and what to do.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ConfigDict, ValidationError, validate_call

from taskmuxctl import diskspace
from taskmuxctl.protocol import Code, RpcError
from taskmuxd.rpc.jsonrpc import JsonRpcError, Success

Handler = Callable[..., Awaitable[Any]]

_VALIDATION = ConfigDict(arbitrary_types_allowed=True, extra="forbid")


def _params_error(exc: ValidationError) -> JsonRpcError:
    problems = [
        {"param": ".".join(str(p) for p in err["loc"]) or "(params)", "error": err["msg"]}
        for err in exc.errors()
    ]
    detail = "; ".join(f"{p['param']}: {p['error']}" for p in problems)
    return JsonRpcError(Code.INVALID_PARAMS, f"Invalid params: {detail}", problems)


def wrap(handler: Handler) -> Callable[..., Awaitable[Any]]:
    """Turn a plain async handler into a jsonrpcserver method."""
    checked = validate_call(config=_VALIDATION)(handler)

    @functools.wraps(handler)
    async def method(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await checked(*args, **kwargs)
        except ValidationError as exc:
            raise _params_error(exc) from None
        except RpcError as exc:
            raise JsonRpcError(exc.code, exc.message, exc.data) from exc
        except OSError as exc:
            if not diskspace.is_full(exc):
                raise
            raise JsonRpcError(Code.DISK_FULL, diskspace.describe(exc, then="then try again"),
                               {"path": exc.filename}) from exc
        return Success(result)

    return method


class MethodTable:
    """Method name → handler, filled by each subsystem with ``add``."""

    def __init__(self) -> None:
        self._methods: dict[str, Callable[..., Awaitable[Any]]] = {}

    def add(self, name: str, handler: Handler) -> None:
        if name in self._methods:
            raise ValueError(f"RPC method {name} registered twice")
        self._methods[name] = wrap(handler)

    def names(self) -> list[str]:
        return sorted(self._methods)

    def as_dict(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return self._methods
