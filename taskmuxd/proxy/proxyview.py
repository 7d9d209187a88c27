"""What a connection sees of the ``Proxy`` that accepted it: ``ProxyView``, a Protocol.

The client sides (``forward.ClientSide``, ``h2side.H2Side``) and the pool of task connections
(``pool.BackendPool``) count into the proxy's figures, register with it and open task
connections through it; ``frontend.Proxy`` creates them. Typed against ``Proxy`` itself they
import ``frontend`` back, an import circle even when only the type checker follows it. They
type against these Protocols instead, which list what they use; ``Proxy`` satisfies them
structurally, and this module imports nothing of the proxy. (HTTP/2's own views, which name
the pool, are in ``h2view``.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from taskmuxd.connlimits import ConnectionLimits
    from taskmuxd.routes import RouteTable

P = TypeVar("P", bound="asyncio.Protocol")


class Client(Protocol):
    """A client connection, HTTP/1.1 (``forward.ClientSide``) or HTTP/2 (``h2side``)."""

    idle_since: float | None

    def close(self) -> None: ...


class BackendOpener(Protocol):
    """What the pool of task connections uses: the connection limits, and the door to a
    task's port."""

    @property
    def limits(self) -> ConnectionLimits: ...

    async def connect_backend(self, port: int, factory: Callable[[], P]
                              ) -> tuple[asyncio.Transport, P]: ...


class ProxyView(BackendOpener, Protocol):
    """What a client connection uses of the proxy: the routes, the set of open clients, the
    figures it counts (``status`` shows them)."""

    requests: int
    unreachable: int
    backend_failures: int

    @property
    def routes(self) -> RouteTable: ...
    @property
    def clients(self) -> set[Client]: ...
