"""``ca.*``, ``dns.*`` and ``routes.*`` RPC methods, and the test hooks (``routes.set``...).

Built from the proxy subsystem, the route table, the DNS subsystem's status and the current
settings: never from the daemon itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, get_args

from pydantic import Field

from taskmuxctl.core.errors import ClientError
from taskmuxctl.core.protocol import Method
from taskmuxctl.core.rpctypes import (
    CaInfo,
    CaStatus,
    DnsInfo,
    MintedLeaf,
    MintResult,
    Route,
    RoutesList,
    TaskStateName,
)
from taskmuxd.routes import CATCH_ALL, Backend, RouteTable

if TYPE_CHECKING:
    from taskmuxctl.core.settings import Settings
    from taskmuxd.handlertype import Handler
    from taskmuxd.proxy.subsystem import ProxySubsystem

TEST_HOOKS_ENV = "TASKMUX_TEST_HOOKS"


class ProxyMethods:
    """The ``ca.*``, ``dns.*`` and ``routes.list`` namespace."""

    def __init__(self, proxy: ProxySubsystem, routes: RouteTable,
                 dns_status: Callable[[], dict[str, Any]],
                 settings: Callable[[], Settings]) -> None:
        self.proxy = proxy
        self.routes = routes
        self.dns_status = dns_status
        self.settings = settings

    def handlers(self) -> Mapping[str, Handler]:
        return {Method.CA_INFO: self.ca_info, Method.CA_MINT: self.ca_mint,
                Method.CA_STATUS: self.ca_status, Method.DNS_INFO: self.dns_info,
                Method.ROUTES_LIST: self.routes_list}

    async def ca_info(self) -> CaInfo:
        """The local CA (created on first need) and the leaves minted so far."""
        return self.proxy.store.info()

    async def ca_status(self) -> CaStatus:
        """For doctor: does the CA exist, and does the system trust it?"""
        import asyncio
        import os.path

        from cryptography.hazmat.primitives.serialization import Encoding

        from taskmuxctl.core.system.truststore import system_trusts

        path = self.proxy.store.ca_cert_path
        if not os.path.exists(path):
            return {"path": path, "exists": False, "trusted": False,
                    "summary": "no CA yet (made on first need)"}
        der = self.proxy.store.ca().cert.public_bytes(Encoding.DER)
        trusted = await asyncio.to_thread(system_trusts, der)
        summary = {True: "trusted by the system store", False: "not in the system store",
                   None: "trust cannot be checked here (see the keychain)"}[trusted]
        return {"path": path, "exists": True, "trusted": trusted, "summary": summary}

    async def ca_mint(self, project: str | None = None) -> MintResult:
        """Mint a fresh leaf for ``project``, or for every project with routes."""
        targets = [project] if project else self.routes.projects()
        minted: list[MintedLeaf] = []
        for name in targets:
            leaf = self.proxy.sni.remint(name)
            minted.append({"project": leaf.project, "cert": leaf.cert_path,
                           "key": leaf.key_path, "names": list(leaf.names),
                           "not_after": leaf.not_after.isoformat()})
        return {"minted": minted, "ca": self.proxy.store.ca_cert_path}

    async def dns_info(self) -> DnsInfo:
        status = self.dns_status()
        return {"resolver": self.settings().host_resolver, "tld": self.routes.tld,
                "port": status.get("port"), "bound": status.get("bound", False),
                "hosts_file": self.settings().hosts_file, "hostnames": self.routes.hostnames(),
                "status": status}

    async def routes_list(self) -> RoutesList:
        out: list[Route] = []
        for project in self.routes.projects():
            for b in self.routes.backends(project):
                out.append({"project": b.project, "task": b.task, "host": b.host,
                            "name": b.hostname(self.routes.tld), "url": self.proxy.url_for(b),
                            "port": b.port, "state": b.state, "ready": b.ready})
        return {"tld": self.routes.tld, "https_port": self.proxy.status()["https_port"],
                "routes": out}


def _state(word: object) -> TaskStateName:
    for name in get_args(TaskStateName):
        if word == name:
            return name  # type: ignore[no-any-return]
    raise ClientError(f"a backend's state is one of {', '.join(get_args(TaskStateName))}")


def hooks_enabled() -> bool:
    """The test hooks are served only when the daemon's environment asks for them."""
    return os.environ.get(TEST_HOOKS_ENV) == "1"


class HookMethods:
    """Methods for tests only (``hooks_enabled``): fill the route table without projects,
    probe the privileges."""

    def __init__(self, routes: RouteTable) -> None:
        self.routes = routes

    def handlers(self) -> Mapping[str, Handler]:
        return {Method.ROUTES_SET: self.routes_set, Method.ROUTES_REMOVE: self.routes_remove,
                Method.DEBUG_IDENTITY: self.identity}

    async def routes_set(self, project: str,
                         backends: Annotated[list[dict[str, Any]], Field(max_length=1024)]
                         ) -> dict[str, Any]:
        try:
            table = [Backend(project=project, task=str(b["task"]), host=str(b["host"]),
                             port=b.get("port"), state=_state(b.get("state", "running")),
                             ready=bool(b.get("ready", True))) for b in backends]
        except KeyError as exc:
            raise ClientError(f"each backend needs {exc.args[0]!r}") from None
        self.routes.set_project(project, table)
        return {"project": project, "hosts": sorted(b.host for b in table),
                "hostnames": self.routes.hostnames(), "catch_all": any(
                    b.host == CATCH_ALL for b in table)}

    async def routes_remove(self, project: str) -> dict[str, Any]:
        self.routes.remove_project(project)
        return {"projects": self.routes.projects()}

    async def identity(self) -> dict[str, Any]:
        """Who the daemon runs as, what its tasks would inherit, and whether it can become
        root again (it tries)."""
        from taskmuxd.privileges import regain_root_attempt

        error = regain_root_attempt()
        return {"regained_root": error is None, "error": error, "uids": os.getresuid(),
                "gids": os.getresgid(), "groups": os.getgroups(),
                "env": {k: os.environ.get(k) for k in ("HOME", "USER", "LOGNAME", "SUDO_UID")},
                "cwd": os.getcwd()}
