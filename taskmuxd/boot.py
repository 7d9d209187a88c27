"""The daemon's start in two phases: answer on the control socket first, load the rest after.

Phase one (on the event loop, with only the standard library and a few small modules loaded):
take the signals, bind the control socket and answer ``daemon.ping``, ``daemon.version`` and
``daemon.status`` (with ``ready`` false) at once; every other request is held. Phase two (the
loading in a worker thread, so the loop keeps answering): check the settings against the
model (pydantic), import the method table and the subsystems, bind the proxy and DNS sockets
the settings ask for; then ``Daemon.run`` hands the held requests to the full table, starts
every subsystem (the projects restore theirs) and only then reports READY.

Settings that fail the full check end the start with EXIT_CONFIG, as they did before the
socket served: held requests get the reason as their error, the reason goes to stderr.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from taskmuxctl import __version__
from taskmuxctl.core.errors import SettingsError
from taskmuxctl.core.paths import Paths
from taskmuxctl.core.protocol import PROTOCOL_VERSION, Code, Method
from taskmuxd.daemonstatus import core_status
from taskmuxd.notify import Notifier
from taskmuxd.rpc.ctlsocket import RpcServer

if TYPE_CHECKING:
    from taskmuxctl.core.rpctypes import DaemonStatus
    from taskmuxctl.core.settings import Settings
    from taskmuxd.daemonlock import InstanceLock
    from taskmuxd.listeners import Listeners

log = logging.getLogger("taskmuxd")

EXIT_CONFIG = 78
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
FAILED_START_GRACE = 2.0  # seconds held calls get to receive their error at a failed start

# What Daemon() builds from, imported in phase two off the loop (Daemon imports each where it
# is used, so that a test building one pays only for what it touches).
SUBSYSTEM_MODULES = (
    "taskmuxd.daemon",
    "taskmuxd.eventstream",
    "taskmuxd.diskwatch",
    "taskmuxd.handlers.daemon",
    "taskmuxd.listeners",
    "taskmuxd.dns.subsystem",
    "taskmuxd.handlers.network",
    "taskmuxd.proxy.subsystem",
    "taskmuxd.dashboard.app",
    "taskmuxd.handlers.projects",
    "taskmuxd.projects.manager",
    "taskmuxd.sampler",
    "taskmuxd.updater",
)


class Early:
    """What phase one sets up and the Daemon takes over: the control socket's server (serving
    the early answers), the queue signals land in, the systemd channel and the start time."""

    def __init__(self, paths: Paths, notifier: Notifier) -> None:
        self.paths = paths
        self.notifier = notifier
        self.started_monotonic = time.monotonic()
        self.started_at = time.time()
        self.requests: asyncio.Queue[int] = asyncio.Queue()
        self.rpc = RpcServer(paths.socket, None, os.getuid(), early={
            Method.DAEMON_PING: lambda: {"pong": True},
            Method.DAEMON_VERSION: lambda: {"version": __version__,
                                            "protocol": PROTOCOL_VERSION},
            Method.DAEMON_STATUS: self.status,
        })

    def status(self) -> DaemonStatus:
        """``daemon.status`` while starting: the same keys as once started, ``ready`` false,
        and no subsystem sections yet."""
        return core_status(self.paths, self.started_monotonic, self.started_at,
                           stopping=False, ready=False, in_flight=self.rpc.in_flight,
                           calls_served=self.rpc.calls_served)


def load_rest(raw: dict[str, Any], settings: Settings | None, source: str) -> Settings:
    """Phase two's loading (run in a worker thread): the settings checked against the model,
    then every module the daemon is built from. Raises SettingsError for bad settings."""
    if settings is None:
        from taskmuxctl.core.settings import validate

        settings = validate(raw, source)
    for name in SUBSYSTEM_MODULES:
        importlib.import_module(name)
    return settings


async def run(paths: Paths, notifier: Notifier, raw: dict[str, Any],
              settings: Settings | None, bound: Listeners | None,
              lock: InstanceLock | None) -> int:
    """Serve, load, then run the daemon until it stops; its exit code. ``settings`` None:
    check ``raw`` in phase two; ``bound`` None: bind what the settings ask for then (and close
    it at the end); ``lock``: the instance lock, whose ``daemon.pid`` a start refused for its
    settings puts back as it found it."""
    early = Early(paths, notifier)
    loop = asyncio.get_running_loop()
    for sig in SIGNALS:
        loop.add_signal_handler(sig, early.requests.put_nowait, int(sig))
    own = bound is None
    try:
        await early.rpc.start()
        try:
            settings = await asyncio.to_thread(load_rest, raw, settings, paths.config)
        except SettingsError as exc:
            print(f"taskmuxd: {exc.message}", file=sys.stderr)
            await _give_up(early, exc.code, exc.message, exc.data)
            if lock is not None:
                lock.put_back()
            return EXIT_CONFIG
        except BaseException as exc:
            await _give_up(early, Code.INTERNAL_ERROR, f"the daemon failed to start: {exc}")
            raise
        from taskmuxd.daemon import Daemon
        from taskmuxd.listeners import bind_all

        if bound is None:
            bound = bind_all(settings)
        return await Daemon(paths, settings, notifier, bound, early=early).run()
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
        if own and bound is not None:
            bound.close()


async def _give_up(early: Early, code: int, message: str, data: Any = None) -> None:
    early.rpc.refuse(code, message, data)
    await early.rpc.close(FAILED_START_GRACE)
