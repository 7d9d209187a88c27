"""``daemon.*`` and ``config.*`` RPC methods, built from the narrow ``DaemonControl``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import Field

from taskmuxctl import __version__
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import PROTOCOL_VERSION, Method
from taskmuxctl.core.rpctypes import ConfigResult, PingResult, ShutdownResult, VersionResult
from taskmuxctl.core.settings import Settings
from taskmuxd.daemonstatus import core_status

if TYPE_CHECKING:
    from taskmuxd.handlertype import Handler

MAX_PING_DELAY = 60.0


class CallCounts(Protocol):
    """The control socket's counters."""

    @property
    def in_flight(self) -> int: ...

    @property
    def calls_served(self) -> int: ...


class DaemonControl(Protocol):
    """What the ``daemon.*`` and ``config.*`` methods use of the daemon (``Daemon`` is one)."""

    @property
    def paths(self) -> Paths: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def started_monotonic(self) -> float: ...

    @property
    def started_at(self) -> float: ...

    @property
    def stopping(self) -> bool: ...

    @property
    def ready_at(self) -> float | None: ...

    @property
    def rpc(self) -> CallCounts: ...

    def subsystem_statuses(self) -> dict[str, dict[str, Any]]:
        """Each subsystem's section of ``daemon.status``, by name."""

    def request_shutdown(self) -> None: ...

    def reload_settings(self) -> Settings: ...


class DaemonMethods:
    """The ``daemon.*`` and ``config.*`` namespace."""

    def __init__(self, control: DaemonControl) -> None:
        self.control = control

    def handlers(self) -> Mapping[str, Handler]:
        return {Method.DAEMON_PING: self.ping, Method.DAEMON_VERSION: self.version,
                Method.DAEMON_STATUS: self.status, Method.DAEMON_SHUTDOWN: self.shutdown,
                Method.CONFIG_GET: self.config_get, Method.CONFIG_RELOAD: self.config_reload}

    async def ping(self, delay: Annotated[float, Field(ge=0, le=MAX_PING_DELAY)] = 0.0
                   ) -> PingResult:
        """Answer ``pong``; ``delay`` (seconds, up to 60) holds the answer back, for tests of
        calls in flight and for measuring."""
        if delay:
            await asyncio.sleep(delay)
        return {"pong": True}

    async def version(self) -> VersionResult:
        return {"version": __version__, "protocol": PROTOCOL_VERSION}

    async def status(self) -> dict[str, Any]:
        c = self.control
        info: dict[str, Any] = dict(core_status(
            c.paths, c.started_monotonic, c.started_at, stopping=c.stopping,
            ready=c.ready_at is not None and not c.stopping, in_flight=c.rpc.in_flight,
            calls_served=c.rpc.calls_served))
        info.update(c.subsystem_statuses())
        return info

    async def shutdown(self) -> ShutdownResult:
        self.control.request_shutdown()
        return {"stopping": True, "pid": os.getpid()}

    async def config_get(self) -> ConfigResult:
        return {"path": self.control.paths.config,
                "config": self.control.settings.model_dump(mode="json")}

    async def config_reload(self) -> ConfigResult:
        new = self.control.reload_settings()
        return {"path": self.control.paths.config, "config": new.model_dump(mode="json")}
