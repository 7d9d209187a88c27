"""The shape of an RPC handler and of a namespace of them, apart from their registration.

Subsystems below the RPC layer (projects, the updater, the dashboard) offer their methods as a
namespace; they need only these two types, not ``taskmuxd.rpc``, which sits above them in the
daemon's layers (ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

Handler = Callable[..., Awaitable[Any]]


class Namespace(Protocol):
    """A set of RPC methods with what they need, registered together."""

    def handlers(self) -> Mapping[str, Handler]:
        """Method name -> plain async handler (params checked by ``wrap`` before it runs)."""
