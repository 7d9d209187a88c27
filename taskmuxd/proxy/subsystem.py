"""The proxy as a daemon subsystem: its sockets, certificates, status and settings."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.settings import Settings
from taskmuxd import fdlimit, listeners
from taskmuxd.certstore import CertStore
from taskmuxd.connlimits import ConnectionLimits
from taskmuxd.jobs import Jobs
from taskmuxd.listeners import Bound
from taskmuxd.proxy.frontend import Proxy
from taskmuxd.routes import Backend, RouteTable, url
from taskmuxd.tls import SniContexts

log = logging.getLogger("taskmuxd.proxy")

RENEW_CHECK_INTERVAL = 6 * 3600.0
SWEEP_INTERVAL = 10.0
_KEYS = ("proxy_enabled", "proxy_https_port", "proxy_http_redirect_port", "proxy_bind")


class ProxySubsystem:
    name = "proxy"

    def __init__(self, paths: Paths, settings: Settings, routes: RouteTable,
                 https: Bound | None = None, redirect: Bound | None = None) -> None:
        self.settings = settings
        self.routes = routes
        self.store = CertStore(paths.ca_dir, routes.tld)
        self.sni = SniContexts(self.store, routes)
        self.proxy = Proxy(routes, self.sni, ConnectionLimits(*caps(settings)),
                           settings.proxy_handshake_timeout)
        self.https = https
        self.redirect = redirect
        self.jobs = Jobs("proxy")
        self._prepare_pending = False
        routes.subscribe(self._routes_changed)

    # -- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.jobs.start(self._serve)

    async def _serve(self, jobs: Jobs) -> None:
        if not self.settings.proxy_enabled:
            self._release()
            return
        if self.https is None:
            self.https, self.redirect = listeners.bind_proxy(self.settings)
        self.sni.prepare()  # creates the CA when there are projects (else on first need)
        if self.https is not None and self.https.ok:
            self.proxy.https_port = self.https.port
            await self.proxy.serve_https(self.https.take())
            log.info("proxy serving https on %s port %d", ", ".join(self.https.addresses),
                     self.https.port)
        if self.redirect is not None and self.redirect.ok:
            await self.proxy.serve_redirect(self.redirect.take())
        jobs.spawn(self._renew_loop(), "certificate renewal")
        jobs.spawn(self._sweep_loop(), "idle connections")

    async def stop(self) -> None:
        await self.jobs.stop()
        await self.proxy.close()
        self._release()

    def _release(self) -> None:
        for bound in (self.https, self.redirect):
            if bound is not None:
                bound.close()

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(RENEW_CHECK_INTERVAL)
            self.sni.prepare()  # re-mints leaves that entered their renewal window

    async def _sweep_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.proxy.sweep(loop.time())

    def _routes_changed(self) -> None:
        if self._prepare_pending:
            return
        self._prepare_pending = True
        asyncio.get_running_loop().call_soon(self._prepare)

    def _prepare(self) -> None:
        self._prepare_pending = False
        if self.settings.proxy_enabled:
            self.sni.prepare()

    # -- settings -------------------------------------------------------------------------

    def settings_changed(self, old: Settings, new: Settings) -> None:
        self.settings = new
        self.proxy.limits.resize(*caps(new))
        self.proxy.handshake_timeout = new.proxy_handshake_timeout
        if new.dns_managed_tld != old.dns_managed_tld:
            log.warning("dns_managed_tld changed to %r: restart the daemon to use it "
                        "(`taskmux daemon restart`)", new.dns_managed_tld)
        if any(getattr(old, k) != getattr(new, k) for k in _KEYS) and self.jobs.running:
            self.jobs.spawn(self._rebind(), "rebind")

    async def _rebind(self) -> None:
        """Serve on the sockets the new settings ask for (without root: unprivileged ports)."""
        await self.proxy.close()
        self._release()
        self.https, self.redirect = listeners.bind_proxy(self.settings)
        if self.https is not None:
            if self.https.ok:
                self.proxy.https_port = self.https.port
                await self.proxy.serve_https(self.https.take())
            else:
                log.warning("%s", self.https.error)
        if self.redirect is not None:
            if self.redirect.ok:
                await self.proxy.serve_redirect(self.redirect.take())
            else:
                log.warning("%s", self.redirect.error)
        log.info("proxy settings applied: %s", self.status()["summary"])

    # -- URLs -----------------------------------------------------------------------------

    def url_for(self, backend: Backend) -> str | None:
        """The task's https URL (None for the catch-all, which has no single name), with the
        port the proxy is bound to, else the configured one."""
        name = backend.hostname(self.routes.tld)
        if name is None:
            return None
        https = self.https
        port = https.port if https is not None and https.error is None and https.addresses \
            else self.settings.proxy_https_port
        return url(name, port)

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        enabled = self.settings.proxy_enabled
        https, redirect = self.https, self.redirect
        bound = bool(enabled and https is not None and https.error is None and https.addresses)
        error = None
        if not enabled:
            summary = "off (proxy_enabled = false)"
        elif https is None:
            summary = "starting"
        elif not bound:
            error = https.error
            summary = f"not serving: {error}"
        else:
            summary = f"https on {_where(https)}"
            if redirect is not None and redirect.error is None:
                summary += f", http redirect on port {redirect.port}"
            summary += f"; {len(self.routes.projects())} projects, " \
                       f"{len(self.proxy.clients)} connections"
        redirect_error = redirect.error if enabled and redirect is not None else None
        if redirect_error:
            summary += f"; no http redirect: {redirect_error}"
        return {
            "enabled": enabled,
            "bound": bound,
            "https_port": https.port if bound and https is not None else None,
            "redirect_port": (redirect.port if enabled and redirect is not None
                              and redirect.error is None else None),
            "bind": https.addresses if bound and https is not None
            else list(self.settings.proxy_bind),
            "error": error,
            "redirect_error": redirect_error,
            "notes": https.notes if https is not None else [],
            "connections": len(self.proxy.clients),
            "requests": self.proxy.requests,
            "redirects": self.proxy.redirects,
            "unreachable": self.proxy.unreachable,
            "task_connections": self.proxy.task_connects,
            "tls_refused": self.sni.handshakes_refused,
            "limits": self.proxy.limits.status(),
            "ca": self.store.ca_cert_path,
            "summary": summary,
        }


def caps(settings: Settings) -> tuple[int, int]:
    """(connections in total, per client address): the settings', lowered to what fits in
    the descriptor limit with the reserve kept free."""
    fits, _ = fdlimit.shares(fdlimit.soft_limit())
    total = min(settings.proxy_max_connections, fits)
    return total, min(settings.proxy_max_connections_per_client, total)


def _where(bound: Bound) -> str:
    return f"{', '.join(bound.addresses)} port {bound.port}"
