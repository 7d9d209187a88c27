"""The auto-update loop: a Subsystem that checks the release channel and starts updates.

Every ``update_check_interval`` seconds (jittered by +-20%, the first check at a random point
of the first interval, so a fleet restarted together does not update together) it fetches and
verifies the manifest and asks the pure decision what to do (``auto`` rules: never downgrade,
skip versions marked bad, respect a rollback pin). When there is something to install it starts
``taskmuxctl update --auto`` as a separate process in its own session: that process takes the
update lock (so an update never runs twice, whoever started it), installs, and bounces this
daemon, so it has to outlive it. Its output goes to ``app/update.log``; its outcome is in
``app/update.json`` for the next daemon to report.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from taskmuxctl import __version__
from taskmuxctl.core.errors import ClientError, DaemonError
from taskmuxctl.core.protocol import Code, Method
from taskmuxctl.core.rpctypes import RestartResult, UpdateCheck, UpdateStatus
from taskmuxctl.core.update import bootguard
from taskmuxctl.core.update import lock as update_lock
from taskmuxctl.core.update import progress as update_events
from taskmuxctl.core.update.layout import AppLayout

if TYPE_CHECKING:
    from taskmuxctl.core.eventlog import EventLog
    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.settings import Settings
    from taskmuxctl.core.update import apply
    from taskmuxd.handlertype import Handler

log = logging.getLogger("taskmuxd.update")

JITTER = 0.2
SUPERVISED_ENV = "TASKMUX_SUPERVISED"


def check_delay(interval: float, rand: float, first: bool) -> float:
    """Seconds until the next check: anywhere in the first interval, then interval +-20%."""
    if first:
        return max(1.0, interval * rand)
    return interval * (1 - JITTER + 2 * JITTER * rand)


def supervised_by(environ: dict[str, str] | None = None) -> str | None:
    """The service manager that restarts this daemon when it exits with a failure status, as
    its environment shows: systemd sets INVOCATION_ID, launchd XPC_SERVICE_NAME; any other
    supervisor (runit, s6, supervisord...) says so with TASKMUX_SUPERVISED=name."""
    env = os.environ if environ is None else environ
    if env.get(SUPERVISED_ENV):
        return env[SUPERVISED_ENV]
    if env.get("INVOCATION_ID"):
        return "systemd"
    if env.get("XPC_SERVICE_NAME", "0") not in ("0", ""):
        return "launchd"
    return None


class AutoUpdater:
    """The ``update`` subsystem and the ``update.*`` RPC namespace. ``settings`` reads the
    daemon's current settings (they change on reload); ``stopping`` says whether the daemon is
    shutting down; ``request_restart`` asks it to exit for its service manager to restart it."""

    name = "update"

    def __init__(self, paths: Paths, settings: Callable[[], Settings], events: EventLog,
                 stopping: Callable[[], bool], request_restart: Callable[[], None],
                 rand: Callable[[], float] = random.random) -> None:
        self.paths = paths
        self._settings = settings
        self._events = events
        self._stopping = stopping
        self._request_restart = request_restart
        self.layout = AppLayout(paths)
        self._rand = rand
        self._task: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.child: asyncio.subprocess.Process | None = None
        self.last_check: float | None = None
        self.last_error: str | None = None
        self.offered: str | None = None
        self.available = False
        self.checks = 0
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    # -- Subsystem ------------------------------------------------------------------------

    def _to_event_log(self, event: str, details: dict[str, Any]) -> None:
        """The events sink. Checks run in a worker thread: hand their events to the loop."""
        def write() -> None:
            self._events.emit(event, None, None, **details)

        if self._event_loop is None or threading.get_ident() == self._loop_thread:
            write()
        else:
            self._event_loop.call_soon_threadsafe(write)

    async def start(self) -> None:
        self._event_loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        update_events.add_sink(self._to_event_log)
        if await asyncio.to_thread(os.path.isdir, self.layout.app):
            for event in await asyncio.to_thread(bootguard.take_events, self.layout.app):
                details = {k: v for k, v in event.items() if k not in ("event", "seq")}
                update_events.emit(event["event"], **details)
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="auto-update")

    async def stop(self) -> None:
        update_events.remove_sink(self._to_event_log)
        for task in (self._task, self._reaper):
            if task is None:
                continue
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    def settings_changed(self, old: Settings, new: Settings) -> None:
        keys = ("auto_update", "update_check_interval", "release_url", "trusted_keys",
                "update_wave_delay")
        if any(getattr(old, k) != getattr(new, k) for k in keys) and self._wake is not None:
            self._wake.set()

    def status(self) -> dict[str, Any]:
        """The updater's section of ``daemon.status``: what ``update.status`` answers."""
        return dict(self.update_status())

    def update_status(self) -> UpdateStatus:
        settings = self._settings()
        state = self.layout.load_state()
        bad = sorted(bootguard.bad_versions(self.layout.app))
        current = self.layout.current_version() or __version__
        last = state.get("last") or None
        error = self.last_error
        if error is None and last and last.get("outcome") == "rolled_back" and \
                (self.last_check is None or last.get("at", 0) > self.last_check):
            error = f"update to {last.get('to')} rolled back: {last.get('error')}"
        running = self.child.pid if self.child and self.child.returncode is None else \
            update_lock.holder(self.layout.lock_file)
        return {
            "auto_update": settings.auto_update,
            "wave_delay": settings.update_wave_delay if settings.auto_update == "wave" else None,
            "current": current,
            "previous": self.layout.previous_version(),
            "pinned": state.get("pinned"),
            "bad_versions": bad,
            "last_check": self.last_check,
            "last_error": error,
            "summary": self._summary(settings.auto_update, current, state.get("pinned"), error),
            "installed_layout": self.layout.installed(),
            "channel": settings.release_url,
            "available": self.offered if self.available else None,
            "update_running": running,
            "last_update": last,
            "checks": self.checks,
        }

    def _summary(self, auto: bool | str, current: str, pinned: str | None,
                 error: str | None) -> str:
        if auto == "wave":
            mode = f"auto-update in waves (after {self._settings().update_wave_delay:g}s)"
        else:
            mode = "auto-update on" if auto else "auto-update off"
        parts = [f"{current}", mode]
        if not self.layout.installed():
            parts.append("not installed with install.sh")
        if pinned:
            parts.append(f"pinned to {pinned}")
        if self.available and self.offered:
            parts.append(f"{self.offered} available")
        elif self.last_check is not None:
            parts.append(f"checked {int(time.time() - self.last_check)}s ago")
        if error:
            parts.append(f"last error: {error}")
        return ", ".join(parts)

    # -- the loop -------------------------------------------------------------------------

    async def _loop(self) -> None:
        first = True
        while True:
            interval = self._settings().update_check_interval
            if await self._sleep(check_delay(interval, self._rand(), first)):
                first = True  # the settings changed: start a fresh jittered cycle
                continue
            first = False
            if self._settings().auto_update and not self._stopping():
                await self.check_and_apply()

    async def _sleep(self, seconds: float) -> bool:
        """Sleep; True when woken early by a settings change."""
        assert self._wake is not None
        try:
            async with asyncio.timeout(seconds):
                await self._wake.wait()
        except TimeoutError:
            return False
        self._wake.clear()
        return True

    def _options(self, auto: bool = True) -> apply.Options:
        from taskmuxctl.core.update import apply
        from taskmuxctl.core.update.keys import trusted_keys

        settings = self._settings()
        wave = settings.update_wave_delay if settings.auto_update == "wave" else None
        return apply.Options(channel=settings.release_url,
                             keys=trusted_keys(settings.trusted_keys), auto=auto,
                             wave_delay=wave)

    async def check(self) -> UpdateCheck:
        """Fetch, verify and decide (auto rules); record the outcome for ``status``. The
        release code (HTTP client, manifest, signatures) is loaded at the first check."""
        from taskmuxctl.core.update import apply

        self.checks += 1
        try:
            result = await asyncio.to_thread(apply.check, self.paths, self._options())
        except apply.UpdateError as exc:
            self.last_check, self.last_error = time.time(), exc.message
            raise
        self.last_check, self.last_error = time.time(), None
        self.offered, self.available = result["offered"], bool(result["available"])
        return result

    async def check_and_apply(self) -> None:
        from taskmuxctl.core.update import apply

        if self._updating():
            log.info("an update is already running; not checking now")
            return
        try:
            result = await self.check()
        except apply.UpdateError:
            return  # logged and emitted by apply
        if not result["available"]:
            return
        if not self.layout.installed():
            self.last_error = (f"{result['offered']} is available, but taskmux is not installed "
                               "with install.sh, so it cannot update itself")
            log.warning("%s", self.last_error)
            return
        await self._spawn(result["offered"])

    def _updating(self) -> bool:
        if self.child is not None and self.child.returncode is None:
            return True
        return update_lock.holder(self.layout.lock_file) is not None

    async def _spawn(self, version: str) -> None:
        from taskmuxctl.core.update.install import clean_env

        argv = [sys.executable, "-m", "taskmuxctl", "--json", "update", "--auto",
                "--channel", self._settings().release_url]
        self.layout.ensure()
        out = os.open(self.layout.update_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            self.child = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True, env=clean_env(self.paths))
        finally:
            os.close(out)
        update_events.emit("update_started", version=version, pid=self.child.pid,
                           log=self.layout.update_log)
        self._reaper = asyncio.create_task(self._reap(self.child, version))

    async def _reap(self, child: asyncio.subprocess.Process, version: str) -> None:
        code = await child.wait()
        if code != 0:
            self.last_error = (f"the update to {version} failed (exit status {code}); see "
                               f"{self.layout.update_log}")
            log.warning("%s", self.last_error)

    # -- RPC ------------------------------------------------------------------------------

    def handlers(self) -> Mapping[str, Handler]:
        return {Method.UPDATE_STATUS: self.rpc_status, Method.UPDATE_CHECK: self.rpc_check,
                Method.UPDATE_RESTART: self.rpc_restart}

    async def rpc_status(self) -> UpdateStatus:
        return self.update_status()

    async def rpc_check(self) -> UpdateCheck:
        """Check the channel now (auto-update rules); installs nothing."""
        from taskmuxctl.core.update import apply

        try:
            return await self.check()
        except apply.UpdateError as exc:
            raise DaemonError(exc.message, exc.data, code=exc.code) from None

    async def rpc_restart(self) -> RestartResult:
        """Stop in order and exit 75 so that the service manager starts ``current``."""
        manager = supervised_by()
        if manager is None:
            raise ClientError("the daemon is not run by a service manager that would "
                              "restart it; stop it and start it again instead",
                              code=Code.UPDATE_NOT_SUPERVISED)
        self._request_restart()
        return {"restarting": True, "pid": os.getpid(), "manager": manager}
