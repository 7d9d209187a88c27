"""Name resolution as a daemon subsystem, per ``host_resolver``:

- ``dns_server``: serve ``*.{tld}`` on 127.0.0.1:``dns_server_port`` (UDP and TCP).
- ``etc_hosts``: keep the hosts file's managed block in step with the routes. The block can
  only be written with root, so the daemon records the names it routes in
  ``hostnames.json`` and a daemon started as root writes them before it drops privileges;
  while running unprivileged it reports which names the block lacks.
- ``noop``: nothing.

The server's codec (dnslib) is loaded only when ``dns_server`` is the resolver.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING, Any

from taskmuxctl.core.paths import Paths
from taskmuxctl.core.settings import Settings
from taskmuxctl.core.system import hostsfile
from taskmuxctl.core.system.hostsrecord import read_record, write_record
from taskmuxd import fdlimit, listeners
from taskmuxd.connlimits import ConnectionLimits
from taskmuxd.jobs import Jobs
from taskmuxd.listeners import Bound
from taskmuxd.routes import RouteTable

if TYPE_CHECKING:
    from taskmuxd.dns.sockets import DnsServer

log = logging.getLogger("taskmuxd.dns")

HOSTS_DEBOUNCE = 0.2


def hosts_writable(path: str) -> bool:
    """Whether this process can replace ``path`` (atomically: its folder must be writable)."""
    folder = os.path.dirname(os.path.abspath(path))
    return os.access(folder, os.W_OK) and (not os.path.exists(path) or os.access(path, os.W_OK))


class DnsSubsystem:
    name = "dns"

    def __init__(self, paths: Paths, settings: Settings, routes: RouteTable,
                 udp: Bound | None = None, tcp: Bound | None = None) -> None:
        self.paths = paths
        self.settings = settings
        self.routes = routes
        self.udp = udp
        self.tcp = tcp
        self.server: DnsServer | None = None  # made when first needed (``dns_server``)
        self.jobs = Jobs("dns")
        self.hosts_error: str | None = None
        self._hosts_timer: asyncio.TimerHandle | None = None
        routes.subscribe(self._routes_changed)

    # -- life -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.jobs.start(self._serve)

    async def _serve(self, jobs: Jobs) -> None:
        if self.settings.host_resolver != "dns_server":
            self._release()
            return
        if self.udp is None:
            self.udp, self.tcp = listeners.bind_dns(self.settings)
        if self.udp is not None and self.udp.ok and self.tcp is not None and self.tcp.ok:
            await self._dns_server().serve(self.udp.take(), self.tcp.take())
            log.info("DNS server answering *.%s on 127.0.0.1 port %d (UDP and TCP)",
                     self.routes.tld, self.udp.port)

    async def stop(self) -> None:
        if self._hosts_timer is not None:
            self._hosts_timer.cancel()
        await self.jobs.stop()
        if self.server is not None:
            await self.server.close()
        self._release()

    def _dns_server(self) -> DnsServer:
        """The DNS server and its answers, made the first time they are needed."""
        if self.server is None:
            from taskmuxd.dns.answers import Answerer
            from taskmuxd.dns.sockets import DnsServer

            self.server = DnsServer(Answerer(self.routes.tld),
                                    ConnectionLimits(*caps(self.settings)),
                                    self.settings.dns_tcp_idle_timeout)
        return self.server

    def _release(self) -> None:
        for bound in (self.udp, self.tcp):
            if bound is not None:
                bound.close()

    # -- the hosts file -------------------------------------------------------------------

    def _routes_changed(self) -> None:
        if self.settings.host_resolver != "etc_hosts":
            return
        if self._hosts_timer is None:
            loop = asyncio.get_running_loop()
            self._hosts_timer = loop.call_later(HOSTS_DEBOUNCE, self._sync_hosts)

    def _sync_hosts(self) -> None:
        self._hosts_timer = None
        names = self.routes.hostnames()
        try:
            if read_record(self.paths.home) != names:
                write_record(self.paths.home, self.routes.tld, names)
            if hosts_writable(self.settings.hosts_file) \
                    and hostsfile.write(self.settings.hosts_file, names, self.routes.tld):
                log.info("updated the taskmux block of %s (%d names)",
                             self.settings.hosts_file, len(names))
            self.hosts_error = None
        except OSError as exc:
            self.hosts_error = (f"cannot update {exc.filename or self.settings.hosts_file}: "
                                f"{exc.strerror or exc}")
            log.warning("%s", self.hosts_error)

    # -- settings -------------------------------------------------------------------------

    def settings_changed(self, old: Settings, new: Settings) -> None:
        self.settings = new
        if self.server is not None:
            self.server.limits.resize(*caps(new))
            self.server.idle_timeout = new.dns_tcp_idle_timeout
        if (old.host_resolver, old.dns_server_port) != (new.host_resolver, new.dns_server_port) \
                and self.jobs.running:
            self.jobs.spawn(self._restart(), "restart")
        if new.host_resolver == "etc_hosts":
            self._routes_changed()

    async def _restart(self) -> None:
        if self.server is not None:
            await self.server.close()
        self._release()
        self.udp = self.tcp = None
        if self.settings.host_resolver == "dns_server":
            self.udp, self.tcp = listeners.bind_dns(self.settings)
            if self.udp is not None and self.udp.ok and self.tcp is not None and self.tcp.ok:
                await self._dns_server().serve(self.udp.take(), self.tcp.take())
            else:
                log.warning("%s", self._bind_error())
        log.info("name resolution now: %s", self.status()["summary"])

    # -- status ---------------------------------------------------------------------------

    def _bind_error(self) -> str | None:
        for bound in (self.udp, self.tcp):
            if bound is not None and bound.error:
                return bound.error
        return None

    def status(self) -> dict[str, Any]:
        mode = self.settings.host_resolver
        out: dict[str, Any] = {"resolver": mode, "tld": self.routes.tld, "error": None}
        if mode == "dns_server":
            error = self._bind_error()
            bound = error is None and self.udp is not None and bool(self.udp.addresses)
            port = self.udp.port if bound and self.udp is not None else None
            server = self._dns_server()
            answerer = server.answerer
            out.update(bound=bound, address=listeners.DNS_ADDRESS, port=port, error=error,
                       queries=answerer.queries, refused=answerer.refused,
                       tcp_limits=server.limits.status(), cache_bytes=answerer.cached_bytes)
            out["summary"] = (f"DNS server on 127.0.0.1 port {port} (UDP and TCP), "
                              f"*.{self.routes.tld} -> loopback; "
                              f"{answerer.queries} queries" if bound
                              else f"DNS server not serving: {error or 'starting'}")
        elif mode == "etc_hosts":
            path = self.settings.hosts_file
            wanted = self.routes.hostnames()
            try:
                present = hostsfile.block_names(hostsfile.read(path))
            except OSError as exc:
                present = []
                out["error"] = f"cannot read {path}: {exc.strerror or exc}"
            missing = [n for n in wanted if n not in present]
            writable = hosts_writable(path)
            out.update(hosts_file=path, names=present, wanted=wanted, missing=missing,
                       writable=writable)
            out["error"] = self.hosts_error or out["error"]
            if missing and not writable:
                out["error"] = (f"{len(missing)} names are not in {path} yet and the daemon "
                                "cannot write it: run `sudo taskmux dns install`, restart "
                                "the daemon as root, or set host_resolver = \"dns_server\"")
            out["summary"] = (f"{path} block maps {len(present)} names"
                              + (f"; missing {', '.join(missing)}" if missing else ""))
        else:
            out["summary"] = "off (host_resolver = noop): names are left to the system"
        return out


def caps(settings: Settings) -> tuple[int, int]:
    """(TCP connections in total, per client address): the settings', lowered to what fits
    in the descriptor limit with the reserve kept free."""
    _, fits = fdlimit.shares(fdlimit.soft_limit())
    total = min(settings.dns_max_tcp_connections, fits)
    return total, min(settings.dns_max_tcp_connections_per_client, total)
