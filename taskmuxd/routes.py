"""Which task answers at which host name: the table the projects code fills and the proxy,
the certificate store and the DNS side read.

Names are ``{host}.{project}.{tld}``; ``host = "@"`` is the apex ``{project}.{tld}`` and
``host = "*"`` catches every other name under the project (a specific host wins over it).
Lookups ignore case and a trailing dot. ``set_project`` is called on every task state change,
so it only swaps one project's small dict; lookups are two dict probes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskmuxctl.core.rpctypes import TaskStateName

log = logging.getLogger("taskmuxd.routes")

APEX = "@"
CATCH_ALL = "*"
MAX_CACHED = 4096


@dataclass(frozen=True)
class Backend:
    """One task that answers HTTP at a host name of its project."""

    project: str
    task: str
    host: str  # "api", "@" (the apex) or "*" (catch-all under the project)
    port: int | None  # the task's $PORT; None if not assigned
    state: TaskStateName  # the task's state, for the 502 page and ``routes.list``
    ready: bool  # forward only when True (running, and healthy if it has health checks)

    def hostname(self, tld: str) -> str | None:
        """The concrete name this backend answers at, or None for the catch-all."""
        if self.host == CATCH_ALL:
            return None
        if self.host == APEX:
            return f"{self.project}.{tld}".lower()
        return f"{self.host}.{self.project}.{tld}".lower()


def url(name: str, https_port: int | None) -> str:
    """The https URL of a host name, with the port when it is not 443."""
    port = "" if https_port in (None, 0, 443) else f":{https_port}"
    return f"https://{name}{port}/"


def normalize(hostname: str) -> str:
    """Lower case, without a trailing dot or a ``:port``."""
    name = hostname.strip().lower()
    if name.startswith("["):  # an IPv6 literal, "[::1]:443"
        return name[: name.find("]") + 1] if "]" in name else name
    if name.count(":") == 1:
        name = name.split(":", 1)[0]
    return name.rstrip(".")


class RouteTable:
    """Host name → backend, per project."""

    def __init__(self, tld: str = "localhost") -> None:
        self.tld = normalize(tld)
        self._suffix = "." + self.tld
        # project (lower case) -> {host label or "@"/"*" -> Backend}
        self._projects: dict[str, dict[str, Backend]] = {}
        self._subscribers: list[Callable[[], None]] = []
        # Host header as sent -> answer; the proxy asks once per request. Cleared on change.
        self._cache: dict[str, tuple[str | None, Backend | None]] = {}

    # -- writing (the projects code) -------------------------------------------------------

    def set_project(self, project: str, backends: list[Backend]) -> None:
        """Replace every route of ``project`` (an empty list keeps the project known)."""
        key = project.lower()
        hosts: dict[str, Backend] = {}
        for backend in backends:
            host = backend.host.lower()
            if host in hosts:
                log.warning("project %s: tasks %s and %s both claim host %r; %s wins",
                            project, hosts[host].task, backend.task, host, hosts[host].task)
                continue
            hosts[host] = backend
        if self._projects.get(key) == hosts:
            return
        self._projects[key] = hosts
        self._notify()

    def remove_project(self, project: str) -> None:
        if self._projects.pop(project.lower(), None) is not None:
            self._notify()

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after every change (from the event loop's thread)."""
        self._subscribers.append(callback)

    def _notify(self) -> None:
        self._cache.clear()
        for callback in list(self._subscribers):
            try:
                callback()
            except Exception:
                log.exception("route subscriber %r failed", callback)

    # -- reading (proxy, certificates, DNS) ------------------------------------------------

    def project_of(self, hostname: str) -> str | None:
        """The project label a name falls under (``x.{project}.{tld}``), known or not."""
        name = normalize(hostname)
        if not name.endswith(self._suffix):
            return None
        labels = name[: -len(self._suffix)]
        if not labels:
            return None
        return labels.rsplit(".", 1)[-1]

    def lookup(self, hostname: str) -> tuple[str | None, Backend | None]:
        """(the project the name falls under if it is known, the backend answering there).

        ``hostname`` may carry a port and a trailing dot, as a Host header does."""
        hit = self._cache.get(hostname)
        if hit is not None:
            return hit
        answer = self._lookup(hostname)
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[hostname] = answer
        return answer

    def _lookup(self, hostname: str) -> tuple[str | None, Backend | None]:
        project = self.project_of(hostname)
        if project is None:
            return None, None
        hosts = self._projects.get(project)
        if hosts is None:
            return None, None
        name = normalize(hostname)
        sub = name[: -len(self._suffix) - len(project)].rstrip(".")
        if not sub:
            return project, hosts.get(APEX)
        backend = hosts.get(sub)
        if backend is None:
            backend = hosts.get(CATCH_ALL)
        return project, backend

    def knows(self, project: str) -> bool:
        return project.lower() in self._projects

    def backends(self, project: str) -> list[Backend]:
        return list(self._projects.get(project.lower(), {}).values())

    def projects(self) -> list[str]:
        return sorted(self._projects)

    def hostnames(self) -> list[str]:
        """Concrete names for /etc/hosts: the apex of every project that has routes and each
        named host (never the catch-all, which no hosts file can express)."""
        names: set[str] = set()
        for project, hosts in self._projects.items():
            if hosts:
                names.add(f"{project}.{self.tld}")
            for backend in hosts.values():
                name = backend.hostname(self.tld)
                if name is not None:
                    names.add(name)
        return sorted(names)
