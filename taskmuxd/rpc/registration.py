"""Registering RPC methods: names, parameter validation, and error translation at one edge.

Handlers come in namespaces (``daemon.*`` and ``config.*``, ``ca.*``/``dns.*``/``routes.*``,
``project.*``/``task.*``...): each is a small class built from the narrow things it uses, whose
``handlers()`` names its methods; the daemon adds each namespace to one ``MethodTable``. A test
builds a namespace from fakes and drives it through ``Dispatcher`` without a daemon.

A method is an ``async def`` taking keyword parameters with type hints, numbers and collections
with declared bounds. Registration builds its ``params.ParamChecker``, so bad params become
JSON-RPC ``Invalid params`` (-32602) naming the parameter and what it allows before the method
runs, and a ``TaskmuxError`` becomes a JSON-RPC error object with its stable code. A write
that failed for want of disk space becomes ``DISK_FULL`` saying which file and what to do.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from taskmuxctl.core import diskspace
from taskmuxctl.core.protocol import Code, RpcError
from taskmuxd.handlertype import Handler, Namespace
from taskmuxd.rpc.jsonrpc import JsonRpcError, Success
from taskmuxd.rpc.params import ParamChecker

__all__ = ["Handler", "MethodTable", "Namespace", "wrap"]


def wrap(name: str, handler: Handler) -> Callable[..., Awaitable[Any]]:
    """Turn a plain async handler into a jsonrpcserver method whose params are checked
    (``params.ParamChecker``) before the handler runs."""
    checker = ParamChecker(name, handler)

    @functools.wraps(handler)
    async def method(*args: Any, **kwargs: Any) -> Any:
        checked = checker.check(args, kwargs)
        try:
            result = await handler(**checked)
        except RpcError as exc:
            raise JsonRpcError(exc.code, exc.message, exc.data) from exc
        except OSError as exc:
            if not diskspace.is_full(exc):
                raise
            raise JsonRpcError(Code.DISK_FULL, diskspace.describe(exc, then="then try again"),
                               {"path": exc.filename}) from exc
        return Success(result)

    # jsonrpcserver binds the params to the method's signature first; let every call reach
    # the checker, whose messages say what each parameter allows.
    method.__signature__ = _ANY_ARGS  # type: ignore[attr-defined]
    return method


_ANY_ARGS = inspect.Signature([
    inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
    inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)])


class MethodTable:
    """Method name → handler, filled by each subsystem with ``add``."""

    def __init__(self) -> None:
        self._methods: dict[str, Callable[..., Awaitable[Any]]] = {}

    def add(self, name: str, handler: Handler) -> None:
        if name in self._methods:
            raise ValueError(f"RPC method {name} registered twice")
        self._methods[name] = wrap(name, handler)

    def include(self, namespace: Namespace) -> None:
        """Add every method of ``namespace``."""
        for name, handler in namespace.handlers().items():
            self.add(name, handler)

    def names(self) -> list[str]:
        return sorted(self._methods)

    def as_dict(self) -> dict[str, Callable[..., Awaitable[Any]]]:
        return self._methods
