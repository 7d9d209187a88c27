"""Binding the proxy's and the DNS server's sockets.

``taskmuxd run`` binds them before anything else, so that a daemon started as root can bind
ports below 1024 and then drop its privileges for good; the subsystems serve on the bound
sockets and re-bind (unprivileged) only when the settings change. A port of 0 means "any free
port": the first address picks it and the others share it, so one port is reported. A socket
that cannot be bound is not fatal: the error says why and what to do, and the daemon runs on
without that part.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from taskmuxctl.core.settings import Settings

log = logging.getLogger("taskmuxd.listeners")

BACKLOG = 1024
PRIVILEGED_BELOW = 1024
_EPHEMERAL_RETRIES = 8

# Why an address and port must not be bound (None: they may). A daemon started as root
# passes the root configuration's rule (taskmuxd.rootconfig.RootConfig.bind_problem), so
# that the user's settings cannot make root bind any port below 1024 on any address.
Refuse = Callable[[str, int], str | None]
Role = Literal["https", "redirect", "dns"]


@dataclass
class Bound:
    """The sockets of one service: the same port on one or more addresses."""

    role: Role
    port: int  # the port asked for, then the port actually bound
    addresses: list[str] = field(default_factory=list)
    sockets: list[socket.socket] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.sockets) and self.error is None

    def close(self) -> None:
        for s in self.sockets:
            s.close()
        self.sockets.clear()

    def take(self) -> list[socket.socket]:
        """Hand the sockets over to a server, which closes them."""
        out, self.sockets = self.sockets, []
        return out


@dataclass
class Listeners:
    https: Bound | None = None
    redirect: Bound | None = None
    dns_udp: Bound | None = None
    dns_tcp: Bound | None = None

    def close(self) -> None:
        for b in (self.https, self.redirect, self.dns_udp, self.dns_tcp):
            if b is not None:
                b.close()


def advice(port: int, key: str, exc: OSError, address: str) -> str:
    """Why ``port`` could not be bound on ``address`` and what to do about it."""
    where = f"{address}:{port}" if ":" not in address else f"[{address}]:{port}"
    if exc.errno in (errno.EACCES, errno.EPERM) and port < PRIVILEGED_BELOW:
        python = os.path.realpath(sys.executable)
        return (
            f"cannot bind {where}: ports below {PRIVILEGED_BELOW} need privileges. Either start "
            "the daemon as root, which binds the ports and then drops to your user "
            "(`sudo taskmuxd run --user $USER`, or install the service with `taskmux daemon "
            "install`); or let Python bind low ports (`sudo setcap "
            f"cap_net_bind_service=+ep {python}`); or use unprivileged ports "
            f"(`taskmux config set {key} {port + 8000 if port + 8000 < 65536 else 0}`)"
        )
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot bind {where}: another program is listening there (see which with "
                f"`ss -lntup 'sport = :{port}'`); stop it or choose another port with "
                f"`taskmux config set {key} PORT`")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot bind {where}: this machine has no such address; fix the address "
                "setting")
    return f"cannot bind {where}: {exc.strerror or exc}"


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _one(address: str, port: int, kind: socket.SocketKind) -> socket.socket:
    s = socket.socket(_family(address), kind)
    try:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if s.family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((address, port))
        if kind == socket.SOCK_STREAM:
            s.listen(BACKLOG)
        s.setblocking(False)
    except BaseException:
        s.close()
        raise
    return s


def bind(role: Role, addresses: list[str], port: int, key: str,
         kind: socket.SocketKind = socket.SOCK_STREAM, refuse: Refuse | None = None) -> Bound:
    """Bind ``port`` on every address; ``port`` 0 picks one free on all of them."""
    for _ in range(_EPHEMERAL_RETRIES if port == 0 else 1):
        bound = _try_bind(role, addresses, port, key, kind, refuse)
        if bound.error != "retry":
            return bound
    return Bound(role, port, error=f"cannot find a port free on all of {', '.join(addresses)}")


def _try_bind(role: Role, addresses: list[str], port: int, key: str,
              kind: socket.SocketKind, refuse: Refuse | None = None) -> Bound:
    out = Bound(role, port)
    for address in addresses:
        why = refuse(address, port) if refuse is not None else None
        if why is not None:
            out.close()
            out.error = f"not binding {key} as root: {why}"
            return out
        try:
            s = _one(address, out.port, kind)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL and len(addresses) > 1:
                out.notes.append(f"{address} is not available on this machine; skipped")
                continue
            if port == 0 and out.sockets and exc.errno == errno.EADDRINUSE:
                out.close()
                out.error = "retry"  # the picked port is taken on another address
                return out
            out.close()
            out.error = advice(out.port, key, exc, address)
            return out
        if out.port == 0:
            out.port = s.getsockname()[1]
        out.sockets.append(s)
        out.addresses.append(address)
    if not out.sockets:
        out.error = f"none of the addresses {', '.join(addresses)} could be bound"
    return out


def bind_proxy(settings: Settings, refuse: Refuse | None = None
               ) -> tuple[Bound | None, Bound | None]:
    if not settings.proxy_enabled:
        return None, None
    https = bind("https", settings.proxy_bind, settings.proxy_https_port, "proxy_https_port",
                 refuse=refuse)
    redirect = None
    if settings.proxy_http_redirect_port:  # 0 turns the redirect off
        redirect = bind("redirect", settings.proxy_bind, settings.proxy_http_redirect_port,
                        "proxy_http_redirect_port", refuse=refuse)
    return https, redirect


DNS_ADDRESS = "127.0.0.1"
DNS_PAIR_TRIES = 20


def bind_dns(settings: Settings, refuse: Refuse | None = None
             ) -> tuple[Bound | None, Bound | None]:
    if settings.host_resolver != "dns_server":
        return None, None
    # TCP on the port UDP got. With port 0 the kernel picks a UDP port whose TCP twin may be
    # taken: then try another pair, a few times.
    for _ in range(DNS_PAIR_TRIES if settings.dns_server_port == 0 else 1):
        udp = bind("dns", [DNS_ADDRESS], settings.dns_server_port, "dns_server_port",
                   socket.SOCK_DGRAM, refuse)
        if not udp.ok:
            return udp, None
        tcp = bind("dns", [DNS_ADDRESS], udp.port, "dns_server_port", socket.SOCK_STREAM,
                   refuse)
        if tcp.ok or settings.dns_server_port != 0:
            return udp, tcp
        udp.close()
        tcp.close()
    return udp, tcp


def bind_all(settings: Settings, refuse: Refuse | None = None) -> Listeners:
    """Bind what the settings ask for; ``refuse`` (as root) vetoes addresses and ports."""
    https, redirect = bind_proxy(settings, refuse)
    udp, tcp = bind_dns(settings, refuse)
    out = Listeners(https, redirect, udp, tcp)
    for b in (https, redirect, udp, tcp):
        if b is not None and b.error:
            log.warning("%s", b.error)
    return out
