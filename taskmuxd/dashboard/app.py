"""The web dashboard at ``https://taskmux.localhost``: what each URL answers.

Served by the daemon's own proxy (``Proxy.own_sites``) over TLS with its own leaf from the
local CA, HTTP/1.1 only (``site.SiteSide``). Every answer goes through ``security``: the
owner's uid on the connection, the exact Host, and for changes the session cookie, the
Origin and the CSRF token. Data comes through ``RpcServer.call``, the same door (and the
same checks) as the control socket.

URLs: ``/`` and ``/static/*`` (the page: plain HTML, CSS and JavaScript shipped in the
package), ``/session?token=`` (redeems the one-time token of ``taskmux dashboard``, sets the
cookie), ``/api/me``, ``/api/overview``, ``/api/task``, ``/api/logs`` (with ``q`` to
search), ``/api/events`` (server-sent events, live), and ``POST /api/action``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit

from taskmuxctl.core import eventread
from taskmuxctl.core.protocol import Method, RpcError
from taskmuxd.dashboard import logview, security
from taskmuxd.dashboard.exchange import Request, Response, json_response

if TYPE_CHECKING:
    from taskmuxctl.core.eventlog import EventLog
    from taskmuxctl.core.paths import Paths
    from taskmuxctl.core.settings import Settings
    from taskmuxd.dashboard.site import SiteSide
    from taskmuxd.handlertype import Handler
    from taskmuxd.proxy.frontend import Proxy
    from taskmuxd.proxy.subsystem import ProxySubsystem
    from taskmuxd.routes import RouteTable

log = logging.getLogger("taskmuxd.dashboard")

STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/app.css": ("app.css", "text/css; charset=utf-8")}
MAX_STREAMS = 32  # live event streams at once
STREAM_QUEUE = 1000  # events queued per stream before it is cut off
KEEPALIVE = 15.0  # seconds between comments on an idle stream
RECENT_EVENTS = 50  # a task's events shown with it
ACTIONS = {"start": Method.PROJECT_START, "stop": Method.PROJECT_STOP,
           "restart": Method.PROJECT_RESTART}


def _load_static() -> dict[str, tuple[bytes, str]]:
    from importlib import resources as package_files

    folder = package_files.files("taskmuxd.dashboard").joinpath("static")
    return {path: (folder.joinpath(name).read_bytes(), kind)
            for path, (name, kind) in STATIC.items()}


class LocalRpc(Protocol):
    """The daemon's own door to its methods (``RpcServer``): calls go through the same
    checks as every client's."""

    @property
    def owner_uid(self) -> int: ...

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any: ...


class Dashboard:
    """The web dashboard, a daemon subsystem on the proxy's port. ``recent_events`` is the
    event hub's ring of recent events; ``task_known`` says whether a project has a task."""

    name = "dashboard"  # as a daemon subsystem (its section in daemon.status)

    def __init__(self, paths: Paths, routes: RouteTable, proxy: ProxySubsystem, rpc: LocalRpc,
                 events: EventLog, recent_events: Callable[[], Iterable[dict[str, Any]]],
                 task_known: Callable[[str, str], bool]) -> None:
        self.paths = paths
        self.routes = routes
        self.proxy = proxy
        self.rpc = rpc
        self.events = events
        self.recent_events = recent_events
        self.task_known = task_known
        self.sessions = security.Sessions()
        self._static: dict[str, tuple[bytes, str]] | None = None  # read at the first use
        self.streams = 0
        self.requests = 0
        self.refused = 0
        self._context: tuple[ssl.SSLContext, float] | None = None

    # -- wiring ---------------------------------------------------------------------------

    @property
    def tld(self) -> str:
        return self.routes.tld

    @property
    def port(self) -> int:
        return int(self.proxy.proxy.https_port)

    @property
    def site(self) -> str:
        return security.site_name(self.tld)

    def url(self, path: str = "/") -> str:
        return security.origin(self.tld, self.port) + path

    def attach(self) -> None:
        """Claim the dashboard's name in the proxy: SNI, certificate, and the connections."""
        self.proxy.sni.own[self.site] = self.context
        self.proxy.proxy.own_sites[self.site] = self.protocol

    def context(self) -> ssl.SSLContext:
        """TLS for the dashboard's name: its own leaf, HTTP/1.1 only (renewed when due)."""
        now = time.time()
        if self._context is not None and self._context[1] > now:
            return self._context[0]
        from taskmuxd.certs import LEAF_RENEW_BEFORE

        leaf = self.proxy.store.leaf(self.site.split(".", 1)[0])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_alpn_protocols(["http/1.1"])
        ctx.load_cert_chain(leaf.cert_path, leaf.key_path)
        self._context = (ctx, (leaf.not_after - LEAF_RENEW_BEFORE).timestamp())
        return ctx

    def protocol(self, proxy: Proxy, client: str) -> SiteSide:
        from taskmuxd.dashboard.site import SiteSide  # h11, with the first connection

        return SiteSide(self, proxy, client)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def settings_changed(self, old: Any, new: Any) -> None:
        del old, new

    def status(self) -> dict[str, Any]:
        return {"url": self.url(), "requests": self.requests, "refused": self.refused,
                "streams": self.streams, "sessions": len(self.sessions.sessions)}

    # -- answering ------------------------------------------------------------------------

    async def respond(self, req: Request) -> Response:
        self.requests += 1
        owner = self.rpc.owner_uid
        if not security.peer_ok(req.client, owner):
            self.refused += 1
            return _text(403, "this dashboard serves only the user who runs the taskmux "
                              "daemon, from this machine")
        if not security.host_ok(req.header("host"), self.tld, self.port):
            self.refused += 1
            return _text(421, f"wrong Host: this is {security.authority(self.tld, self.port)}")
        parts = urlsplit(req.target)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        session = self.sessions.find(security.cookie_value(req.header("cookie")), owner,
                                     time.time())
        if req.method == "POST":
            why = security.change_allowed(session, req.header("origin"),
                                          req.header(security.CSRF_HEADER), self.tld,
                                          self.port)
            if why is not None:
                self.refused += 1
                return json_response(403, {"error": why})
            if path == "/api/action":
                return await self._action(req.body)
            return json_response(404, {"error": "no such URL"})
        if req.method != "GET":
            return json_response(405, {"error": "GET or POST only"})
        if path in STATIC:
            if self._static is None:
                self._static = _load_static()
            body, kind = self._static[path]
            return Response(200, body, kind)
        if path == "/session":
            return self._redeem(query.get("token", ""), owner)
        if path == "/api/me":
            return json_response(200, {"session": session is not None,
                                       "csrf": session.csrf if session else None,
                                       "origin": security.origin(self.tld, self.port)})
        if path == "/api/overview":
            return json_response(200, await self._overview())
        if path == "/api/task":
            return await self._task(query)
        if path == "/api/logs":
            return await self._logs(query)
        if path == "/api/events":
            return self._events(query)
        return json_response(404, {"error": "no such URL"})

    def _redeem(self, token: str, owner: int) -> Response:
        sid = self.sessions.redeem(token, owner, time.time())
        if sid is None:
            return _text(403, "this link was used already or has expired; run "
                              "`taskmux dashboard` again")
        return Response(303, b"", "text/plain", [("location", "/"),
                                                 ("set-cookie", security.set_cookie(sid))])

    async def _overview(self) -> dict[str, Any]:
        rpc = self.rpc
        out = []
        for p in (await rpc.call(Method.PROJECT_LIST))["projects"]:
            try:
                out.append(await rpc.call(Method.PROJECT_STATUS, {"project": p["name"]}))
            except RpcError as exc:
                out.append({"project": p["name"], "tasks": [], "config_error": exc.message})
        return {"projects": out, "time": time.time()}

    async def _task(self, query: dict[str, str]) -> Response:
        project, task = query.get("project"), query.get("task")
        if not project or not task:
            return json_response(400, {"error": "project and task are required"})
        try:
            info = await self.rpc.call(Method.TASK_INSPECT,
                                              {"project": project, "task": task})
        except RpcError as exc:
            return json_response(404, {"error": exc.message})
        recent = [e for e in self.recent_events()
                  if eventread.matches(e, project, task, None)][-RECENT_EVENTS:]
        return json_response(200, {"task": info["task"], "events": recent})

    async def _logs(self, query: dict[str, str]) -> Response:
        project, task = query.get("project", ""), query.get("task", "")
        if not self.task_known(project, task):
            return json_response(404, {"error": "no such task"})
        path = self.paths.task_log(project, task)
        lines = await asyncio.to_thread(logview.tail, path, query.get("q", ""),
                                        logview.clamp(query.get("n")))
        return json_response(200, {"project": project, "task": task, "path": path,
                                   "lines": lines})

    async def _action(self, body: bytes) -> Response:
        try:
            data = json.loads(body)
            verb, project, task = data["action"], data["project"], data["task"]
            method = ACTIONS[verb]
            assert isinstance(project, str) and isinstance(task, str)
        except (ValueError, KeyError, TypeError, AssertionError):
            return json_response(400, {"error": 'send {"action": "start"|"stop"|"restart", '
                                                '"project": ..., "task": ...}'})
        try:
            out = await self.rpc.call(method, {"project": project, "tasks": [task]})
        except RpcError as exc:
            return json_response(409, {"error": exc.message, "code": exc.code})
        return json_response(200, out)

    def _events(self, query: dict[str, str]) -> Response:
        if self.streams >= MAX_STREAMS:
            return json_response(503, {"error": "too many live streams"})
        project = query.get("project") or None
        return Response(200, content_type="text/event-stream",
                        stream=lambda: self._stream(project))

    async def _stream(self, project: str | None) -> AsyncGenerator[bytes, None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(STREAM_QUEUE)

        def offer(rec: dict[str, Any]) -> None:
            if project is not None and rec.get("project") != project:
                return
            try:
                queue.put_nowait(rec)
            except asyncio.QueueFull:  # a reader that fell behind: end; the browser retries
                unlisten()
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)

        unlisten = self.events.subscribe(offer)
        self.streams += 1
        try:
            yield b"retry: 2000\n\n"
            while True:
                try:
                    rec = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if rec is None:
                    return
                data = json.dumps(rec, separators=(",", ":"), default=str)
                yield f"id: {rec.get('id', '')}\nevent: task\ndata: {data}\n\n".encode()
        finally:
            self.streams -= 1
            with contextlib.suppress(ValueError):  # already removed by offer
                unlisten()


def _text(status: int, message: str) -> Response:
    return Response(status, (message + "\n").encode(), "text/plain; charset=utf-8")


def enabled(settings: Settings) -> bool:
    """The dashboard is served when the proxy serves (it lives on the proxy's port)."""
    return settings.proxy_enabled


class DashboardMethods:
    """The ``dashboard.*`` namespace; ``dash`` None when the proxy (and so the dashboard) is
    off."""

    def __init__(self, dash: Dashboard | None) -> None:
        self.dash = dash

    def handlers(self) -> Mapping[str, Handler]:
        return {Method.DASHBOARD_SESSION: self.session}

    async def session(self) -> dict[str, Any]:
        """A one-time link that opens the dashboard with a session (good for two minutes,
        once)."""
        dash = self.dash
        if dash is None:
            from taskmuxctl.core.errors import ClientError

            raise ClientError("the dashboard is served by the proxy, which is off "
                              "(proxy_enabled = false)")
        token = dash.sessions.issue(time.time())
        return {"url": dash.url(f"/session?token={token}"), "dashboard": dash.url(),
                "expires_in": security.TOKEN_TTL}
