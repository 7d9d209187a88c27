"""What HTTP/2's parts see of each other: ``H2ProxyView`` (the proxy, with its pool of task
connections) and ``StreamSide`` (what one stream's ``Exchange`` uses of its ``H2Side``).

``h2side`` creates the exchanges and imports ``h2exchange``; an ``Exchange`` typed against
``H2Side`` would import it back. It types against ``StreamSide`` instead, generic in the
exchange type so that this module need not import ``h2exchange`` (``StreamSide[Exchange]``).
This module imports of the proxy only ``pool`` and ``proxyview``, for type checking.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

from taskmuxd.proxy.proxyview import ProxyView

if TYPE_CHECKING:
    from h2.connection import H2Connection

    from taskmuxd.proxy.pool import BackendPool

E_contra = TypeVar("E_contra", contravariant=True)


class H2ProxyView(ProxyView, Protocol):
    """The proxy as an HTTP/2 client side uses it: with the pool its streams share (made by
    the first HTTP/2 client)."""

    pool: BackendPool | None


class StreamSide(Protocol[E_contra]):
    """What an exchange (one stream) uses of the HTTP/2 client connection it belongs to."""

    client_ip: str
    sni_project: str | None
    sni_host: str | None
    closing: bool
    out_paused: bool

    @property
    def proxy(self) -> ProxyView: ...
    @property
    def pool(self) -> BackendPool: ...
    @property
    def conn(self) -> H2Connection: ...

    def take_slot(self) -> bool: ...
    def acknowledge(self, stream_id: int, size: int) -> None: ...
    def flush(self) -> None: ...
    def finished(self, exchange: E_contra) -> None: ...
