"""``ca.*``, ``dns.*`` and ``routes.*`` RPC methods."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from taskmuxctl.protocol import Method
from taskmuxd.errors import ClientError
from taskmuxd.routes import CATCH_ALL, Backend

if TYPE_CHECKING:
    from taskmuxd.daemon import Daemon

TEST_HOOKS_ENV = "TASKMUX_TEST_HOOKS"


def register(daemon: Daemon) -> None:
    add = daemon.methods.add
    proxy = daemon.proxy
    routes = daemon.routes

    async def ca_info() -> dict[str, Any]:
        """The local CA (created on first need) and the leaves minted so far."""
        return proxy.store.info()

    async def ca_status() -> dict[str, Any]:
        """For doctor: does the CA exist, and does the system trust it?"""
        import asyncio
        import os.path

        from cryptography.hazmat.primitives.serialization import Encoding

        from taskmuxd.trust import system_trusts

        path = proxy.store.ca_cert_path
        if not os.path.exists(path):
            return {"path": path, "exists": False, "trusted": False,
                    "summary": "no CA yet (made on first need)"}
        der = proxy.store.ca().cert.public_bytes(Encoding.DER)
        trusted = await asyncio.to_thread(system_trusts, der)
        summary = {True: "trusted by the system store", False: "not in the system store",
                   None: "trust cannot be checked here (see the keychain)"}[trusted]
        return {"path": path, "exists": True, "trusted": trusted, "summary": summary}

    async def ca_mint(project: str | None = None) -> dict[str, Any]:
        """Mint a fresh leaf for ``project``, or for every project with routes."""
        targets = [project] if project else routes.projects()
        minted = []
        for name in targets:
            leaf = proxy.sni.remint(name)
            minted.append({"project": leaf.project, "cert": leaf.cert_path,
                           "key": leaf.key_path, "names": list(leaf.names),
                           "not_after": leaf.not_after.isoformat()})
        return {"minted": minted, "ca": proxy.store.ca_cert_path}

    async def dns_info() -> dict[str, Any]:
        status = daemon.dns.status()
        return {"resolver": daemon.settings.host_resolver, "tld": routes.tld,
                "port": status.get("port"), "bound": status.get("bound", False),
                "hosts_file": daemon.settings.hosts_file, "hostnames": routes.hostnames(),
                "status": status}

    async def routes_list() -> dict[str, Any]:
        out = []
        for project in routes.projects():
            for b in routes.backends(project):
                out.append({"project": b.project, "task": b.task, "host": b.host,
                            "name": b.hostname(routes.tld), "url": proxy.url_for(b),
                            "port": b.port, "state": b.state, "ready": b.ready})
        return {"tld": routes.tld, "https_port": proxy.status()["https_port"], "routes": out}

    add(Method.CA_INFO, ca_info)
    add(Method.CA_MINT, ca_mint)
    add(Method.CA_STATUS, ca_status)
    add(Method.DNS_INFO, dns_info)
    add(Method.ROUTES_LIST, routes_list)
    if os.environ.get(TEST_HOOKS_ENV) == "1":
        _register_test_hooks(daemon)


def _register_test_hooks(daemon: Daemon) -> None:
    """Methods for tests only: fill the route table without projects, probe the privileges."""
    routes = daemon.routes

    async def routes_set(project: str, backends: Annotated[list[dict[str, Any]],
                                                           Field(max_length=1024)]
                         ) -> dict[str, Any]:
        try:
            table = [Backend(project=project, task=str(b["task"]), host=str(b["host"]),
                             port=b.get("port"), state=str(b.get("state", "running")),
                             ready=bool(b.get("ready", True))) for b in backends]
        except KeyError as exc:
            raise ClientError(f"each backend needs {exc.args[0]!r}") from None
        routes.set_project(project, table)
        return {"project": project, "hosts": sorted(b.host for b in table),
                "hostnames": routes.hostnames(), "catch_all": any(
                    b.host == CATCH_ALL for b in table)}

    async def routes_remove(project: str) -> dict[str, Any]:
        routes.remove_project(project)
        return {"projects": routes.projects()}

    async def identity() -> dict[str, Any]:
        """Who the daemon runs as, what its tasks would inherit, and whether it can become
        root again (it tries)."""
        from taskmuxd.privileges import regain_root_attempt

        error = regain_root_attempt()
        return {"regained_root": error is None, "error": error, "uids": os.getresuid(),
                "gids": os.getresgid(), "groups": os.getgroups(),
                "env": {k: os.environ.get(k) for k in ("HOME", "USER", "LOGNAME", "SUDO_UID")},
                "cwd": os.getcwd()}

    daemon.methods.add(Method.ROUTES_SET, routes_set)
    daemon.methods.add(Method.ROUTES_REMOVE, routes_remove)
    daemon.methods.add(Method.DEBUG_IDENTITY, identity)
