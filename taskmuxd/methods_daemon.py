"""``daemon.*`` and ``config.*`` RPC methods."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from taskmuxctl import __version__
from taskmuxctl.protocol import PROTOCOL_VERSION, Method
from taskmuxd.boot import registered_project_count

if TYPE_CHECKING:
    from taskmuxd.daemon import Daemon

MAX_PING_DELAY = 60.0


def register(daemon: Daemon) -> None:
    add = daemon.methods.add

    async def ping(delay: Annotated[float, Field(ge=0, le=MAX_PING_DELAY)] = 0.0
                   ) -> dict[str, Any]:
        """Answer ``pong``; ``delay`` (seconds, up to 60) holds the answer back, for tests of
        calls in flight and for measuring."""
        if delay:
            await asyncio.sleep(delay)
        return {"pong": True}

    async def version() -> dict[str, Any]:
        return {"version": __version__, "protocol": PROTOCOL_VERSION}

    async def status() -> dict[str, Any]:
        info: dict[str, Any] = {
            "pid": os.getpid(),
            "uid": os.getuid(),
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "uptime": round(daemon.uptime(), 3),
            "started_at": daemon.started_at,
            "socket": daemon.paths.socket,
            "home": daemon.paths.home,
            "projects": registered_project_count(daemon.paths.registry),
            "stopping": daemon.stopping,
            "ready": daemon.ready_at is not None and not daemon.stopping,
            "calls_in_flight": daemon.rpc.in_flight - 1,  # this call excluded
            "calls_served": daemon.rpc.calls_served,
        }
        for sub in daemon.subsystems:
            info[sub.name] = sub.status()
        return info

    async def shutdown() -> dict[str, Any]:
        daemon.request_shutdown()
        return {"stopping": True, "pid": os.getpid()}

    async def config_get() -> dict[str, Any]:
        return {"path": daemon.paths.config, "config": daemon.settings.model_dump(mode="json")}

    async def config_reload() -> dict[str, Any]:
        new = daemon.reload_settings()
        return {"path": daemon.paths.config, "config": new.model_dump(mode="json")}

    add(Method.DAEMON_PING, ping)
    add(Method.DAEMON_VERSION, version)
    add(Method.DAEMON_STATUS, status)
    add(Method.DAEMON_SHUTDOWN, shutdown)
    add(Method.CONFIG_GET, config_get)
    add(Method.CONFIG_RELOAD, config_reload)
