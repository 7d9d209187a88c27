"""The daemon's life: start the subsystems, report READY, react to signals, stop in order.

Signal handlers only record the signal in a queue; this loop decides what it means:
SIGTERM/SIGINT start an ordered shutdown (exit 128+signal), ``daemon.shutdown`` does the same
with exit 0, SIGHUP reloads the settings, and a SIGINT during shutdown forces the exit.
Tasks live in tmux, so stopping the daemon never stops a task.

This module is the one place that knows every subsystem: it builds each from the narrow
things it uses (paths, the event log, the route table, a reader of the current settings...)
and adds each RPC namespace to the method table. No subsystem imports this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import time
from typing import Any, Protocol

from taskmuxctl import __version__
from taskmuxctl.core import settings as settings_mod
from taskmuxctl.core.errors import SettingsError
from taskmuxctl.core.paths import Paths
from taskmuxd import bootmark
from taskmuxd.eventbatch import TurnEventLog
from taskmuxd.listeners import Listeners
from taskmuxd.logs import set_level
from taskmuxd.notify import Notifier
from taskmuxd.routes import RouteTable
from taskmuxd.rpc.ctlsocket import RpcServer
from taskmuxd.rpc.registration import MethodTable
from taskmuxd.tempfiles import remove_leftovers

log = logging.getLogger("taskmuxd")

SHUTDOWN_REQUEST = 0  # queued by daemon.shutdown; signals queue their number
RESTART_REQUEST = -1  # queued by update.restart: exit so that the service manager restarts us
EXIT_RESTART = 75  # EX_TEMPFAIL: a failure status, so Restart=on-failure / KeepAlive restart


class Subsystem(Protocol):
    """A part of the daemon with a life of its own (projects, proxy, DNS, updater)."""

    name: str

    async def start(self) -> None:
        """Return once serving; the daemon reports READY only after every start returned."""

    async def stop(self) -> None:
        """Stop, releasing what it holds. Never stops tasks."""

    def status(self) -> dict[str, Any]:
        """A section for ``daemon.status``."""

    def settings_changed(self, old: settings_mod.Settings, new: settings_mod.Settings) -> None:
        """Apply new settings after a reload."""


class EarlyStart(Protocol):
    """What the first phase of the start hands over (``taskmuxd.boot.Early``)."""

    started_monotonic: float
    started_at: float
    requests: asyncio.Queue[int]
    rpc: RpcServer


class Daemon:
    def __init__(self, paths: Paths, settings: settings_mod.Settings,
                 notifier: Notifier | None = None, listeners: Listeners | None = None,
                 early: EarlyStart | None = None) -> None:
        """``early``: the first phase of the start (``taskmuxd.boot``), whose control socket
        already serves its early answers and whose queue already holds the signals."""
        self.paths = paths
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.methods = MethodTable()
        self.subsystems: list[Subsystem] = []
        self.started_monotonic = early.started_monotonic if early else time.monotonic()
        self.started_at = early.started_at if early else time.time()
        self.stopping = False
        self.ready_at: float | None = None  # when every subsystem had started (READY)
        self._requests: asyncio.Queue[int] = early.requests if early else asyncio.Queue()
        self.rpc = early.rpc if early else RpcServer(paths.socket, self.methods.as_dict,
                                                     owner_uid=os.getuid())
        self.events = TurnEventLog(paths.events)  # a turn's events in one write
        self.rpc.before_reply.append(self.events.flush)  # ... before any answer
        from taskmuxd import eventstream

        self.event_hub = eventstream.EventHub(self.events)
        self.methods.include(eventstream.EventMethods(self.event_hub))
        self.subsystems.append(self.event_hub)
        from taskmuxd.diskwatch import DiskWatch

        disk = DiskWatch(paths, self.events)
        self.subsystems.append(disk)
        from taskmuxd.handlers.daemon import DaemonMethods

        self.methods.include(DaemonMethods(self))
        # Host name -> task; the projects code fills it, the proxy and DNS read it.
        self.routes = RouteTable(settings.dns_managed_tld)
        self._add_front_door(listeners or Listeners())
        from taskmuxd import sampler
        from taskmuxd.handlers.projects import ProjectMethods
        from taskmuxd.projects.manager import Projects

        self.projects = Projects(paths, self.current_settings, self.events, self.routes,
                                 self.proxy.url_for)
        self.subsystems.append(self.projects)
        self.resources = sampler.Sampler(lambda: sampler.targets_of(self.projects),
                                         sampler.known_in(self.projects),
                                         settings.resource_sample_interval)
        self.subsystems.append(self.resources)
        project_methods = ProjectMethods(self.projects, self.resources, disk.status)
        self.methods.include(project_methods)
        from taskmuxd.reportdoor import ReportDoor

        # Runners' reports, one datagram each, beside the RPC layer (held until adoption).
        self.subsystems.append(ReportDoor(paths.socket, project_methods.reports(), os.getuid(),
                                          self.projects.started))
        from taskmuxd.updater import AutoUpdater

        updater = AutoUpdater(paths, self.current_settings, self.events,
                              stopping=lambda: self.stopping,
                              request_restart=self.request_restart)
        self.subsystems.append(updater)
        self.methods.include(updater)

    def _add_front_door(self, bound: Listeners) -> None:
        """The proxy (with its CA), name resolution and the dashboard, on sockets bound
        before the drop."""
        from taskmuxd.dashboard.app import Dashboard, DashboardMethods, enabled
        from taskmuxd.dns.subsystem import DnsSubsystem
        from taskmuxd.handlers.network import HookMethods, ProxyMethods, hooks_enabled
        from taskmuxd.proxy.subsystem import ProxySubsystem

        self.proxy = ProxySubsystem(self.paths, self.settings, self.routes, bound.https,
                                    bound.redirect)
        self.dns = DnsSubsystem(self.paths, self.settings, self.routes, bound.dns_udp,
                                bound.dns_tcp)
        self.subsystems += [self.proxy, self.dns]
        self.methods.include(ProxyMethods(self.proxy, self.routes, self.dns.status,
                                          self.current_settings))
        if hooks_enabled():
            self.methods.include(HookMethods(self.routes))
        self.dashboard: Dashboard | None = None
        if enabled(self.settings):
            self.dashboard = Dashboard(self.paths, self.routes, self.proxy, self.rpc,
                                       self.events, lambda: self.event_hub.ring,
                                       self._task_known)
            self.dashboard.attach()
            self.subsystems.append(self.dashboard)
        self.methods.include(DashboardMethods(self.dashboard))

    def _task_known(self, project: str, task: str) -> bool:
        found = self.projects.projects.get(project)
        return found is not None and task in found.tasks

    # -- called by RPC methods -------------------------------------------------------------

    def request_shutdown(self) -> None:
        self._requests.put_nowait(SHUTDOWN_REQUEST)

    def request_restart(self) -> None:
        """Stop in order and exit with EXIT_RESTART, for a service manager to start the
        version ``app/current`` now points at."""
        self._requests.put_nowait(RESTART_REQUEST)

    def reload_settings(self) -> settings_mod.Settings:
        """Re-read ``config.toml``; on error keep the current settings and raise."""
        new = settings_mod.load(self.paths.config)
        old, self.settings = self.settings, new
        set_level(new.log_level)
        for sub in self.subsystems:
            sub.settings_changed(old, new)
        log.info("settings reloaded from %s", self.paths.config)
        return new

    def current_settings(self) -> settings_mod.Settings:
        """The settings now (a reload replaces them): what subsystems read them through."""
        return self.settings

    def subsystem_statuses(self) -> dict[str, dict[str, Any]]:
        """Each subsystem's section of ``daemon.status``, by name."""
        return {sub.name: sub.status() for sub in self.subsystems}

    # -- the main loop --------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self._requests.put_nowait, int(sig))
        remove_leftovers(self.paths)
        try:
            if self.rpc.serving:  # since the first phase: the held calls go through now
                self.rpc.attach(self.methods.as_dict)
            else:
                await self.rpc.start()
            for sub in self.subsystems:
                await sub.start()
                log.info("%s started", sub.name)
        except BaseException:
            await self._stop_all()
            raise
        log.info("taskmuxd %s serving on %s (pid %d)", __version__, self.paths.socket,
                 os.getpid())
        self.notifier.ready(f"serving on {self.paths.socket}")
        bootmark.ready(self.paths, __version__)
        self.ready_at = time.time()
        # What the daemon built to get here (modules, models, the registry) lives as long as
        # it does: out of the collector's way, so that a full collection does not walk it all
        # again (a start of 100 tasks spent a seventh of its loop's time in them).
        gc.freeze()
        gc.enable()  # off since `taskmuxd run` began (taskmuxd.cli.main)
        async with asyncio.TaskGroup() as tg:
            watchdog = tg.create_task(self._watchdog()) if self.notifier.watchdog_interval else None
            code = await self._wait_for_stop()
            self.stopping = True
            reason = {0: "daemon.shutdown", EXIT_RESTART: "update.restart"}.get(code) or \
                signal.Signals(code - 128).name
            log.info("stopping (%s)", reason)
            self.notifier.stopping(f"stopping ({reason})")
            forcer = tg.create_task(self._force_on_sigint())
            await self._stop_all()
            forcer.cancel()
            if watchdog is not None:
                watchdog.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        self.events.flush()  # the last turn's events
        bootmark.stopped(self.paths, code)
        log.info("stopped")
        return code

    async def _wait_for_stop(self) -> int:
        while True:
            req = await self._requests.get()
            if req == SHUTDOWN_REQUEST:
                return 0
            if req == RESTART_REQUEST:
                return EXIT_RESTART
            if req == signal.SIGHUP:
                self.notifier.reloading()
                try:
                    self.reload_settings()
                except SettingsError as exc:
                    log.error("reload refused, keeping the current settings: %s", exc.message)
                self.notifier.ready("serving (settings reloaded)")
                continue
            return 128 + req

    async def _force_on_sigint(self) -> None:
        while True:
            req = await self._requests.get()
            if req == signal.SIGINT:
                log.warning("second interrupt: exiting now without waiting")
                self.events.flush()
                for path in (self.paths.socket, self.paths.pid_file):
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                logging.shutdown()
                os._exit(128 + signal.SIGINT)

    async def _stop_all(self) -> None:
        await self.rpc.close(self.settings.shutdown_timeout)
        for sub in reversed(self.subsystems):
            try:
                await sub.stop()
            except Exception:
                log.exception("stopping %s failed", sub.name)

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        assert interval is not None
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)
