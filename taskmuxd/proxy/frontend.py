"""The proxy's listeners: HTTPS (TLS terminated here, routed by host name) and the plain-HTTP
port that answers every request with a redirect to https."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from taskmuxd.connlimits import ConnectionLimits
from taskmuxd.peeruid import PeerUids
from taskmuxd.proxy import pages, tlsconn
from taskmuxd.proxy.forward import IDLE_TIMEOUT, LINGER, ClientSide
from taskmuxd.proxy.http1 import HEAD_END, MAX_HEAD, NO_BODY, BadMessage, parse_request
from taskmuxd.proxy.proxyview import Client
from taskmuxd.routes import RouteTable, normalize
from taskmuxd.tls import (
    ALERT_UNRECOGNIZED_NAME,
    HelloIncomplete,
    NotTls,
    SniContexts,
    hello_server_name,
)

if TYPE_CHECKING:
    from taskmuxd.proxy.pool import BackendPool

log = logging.getLogger("taskmuxd.proxy")
P = TypeVar("P", bound=asyncio.Protocol)

LOOPBACKS = ("127.0.0.1", "::1")
CONNECT_TIMEOUT = 5.0


async def _connected(loop: asyncio.AbstractEventLoop, address: str, port: int
                     ) -> socket.socket:
    """A socket connected to ``address``:``port`` on loopback, with TCP_NODELAY. (Cheaper than
    ``create_connection``, which a page of module requests does a hundred times over: no
    name resolution, and a connection refused or made at once needs no wait at all.)"""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.connect((address, port))
        except BlockingIOError:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, (address, port))
    except BaseException:
        sock.close()
        raise
    return sock
HANDSHAKE_TIMEOUT = 10.0
STOP_GRACE = 2.0
MAX_HELLO = 16 * 1024
ACCEPT_BACKOFF = 0.5


def nodelay(sock: socket.socket) -> None:
    """Send small writes at once. (asyncio does this only for sockets it made with an
    explicit TCP protocol number, which neither accepted nor pre-bound sockets have.)"""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = sock.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _low_water(sock: socket.socket, size: int) -> None:
    """Make the socket readable only once ``size`` bytes are waiting (or the peer left)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)


class Proxy:
    def __init__(self, routes: RouteTable, sni: SniContexts,
                 limits: ConnectionLimits | None = None,
                 handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self.routes = routes
        self.sni = sni
        # Connections held at once, per client and in total (the plain-HTTP ones count
        # too), from accept until close. A client is a local user (by uid) on loopback
        # where the kernel says who it is, else an address.
        self.limits = limits or ConnectionLimits(1024, 512)
        self.peers = PeerUids()
        self.handshake_timeout = handshake_timeout
        self.https_port = 443
        self.requests = 0
        self.redirects = 0
        self.unreachable = 0
        self.backend_failures = 0
        self.task_connects = 0  # connections opened to tasks (both protocols)
        self.clients: set[Client] = set()
        self.pool: BackendPool | None = None  # task connections for HTTP/2 streams
        # The daemon's own site (taskmux.localhost): name -> a protocol factory taking the
        # proxy and the client's key (``taskmuxd.dashboard``).
        self.own_sites: dict[str, Callable[[Proxy, str], asyncio.Protocol]] = {}
        self.connections: set[asyncio.Task[None]] = set()  # handshakes and redirects
        self._servers: list[asyncio.Server] = []
        self._accepting: list[asyncio.Task[None]] = []
        self._listening: list[socket.socket] = []
        # The loopback address a backend port last answered on: dev servers bind 127.0.0.1,
        # ::1 or both, and asking the right one first saves a refused connection per request.
        self._answered_on: dict[int, str] = {}

    # -- serving --------------------------------------------------------------------------

    async def serve_https(self, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            self._listening.append(sock)
            self._accepting.append(asyncio.create_task(self._accept(sock),
                                                       name=f"proxy accept {sock.getsockname()}"))

    async def serve_redirect(self, sockets: list[socket.socket]) -> None:
        for sock in sockets:
            self._servers.append(await asyncio.start_server(self._on_plain, sock=sock,
                                                            limit=MAX_HEAD))

    def sweep(self, now: float) -> int:
        """Close client connections that waited too long for a request; how many."""
        stale = [c for c in self.clients
                 if c.idle_since is not None and now - c.idle_since > IDLE_TIMEOUT]
        for client in stale:
            client.close()
        return len(stale)

    async def close(self) -> None:
        for client in list(self.clients):
            client.close()
        for accepting in self._accepting:
            accepting.cancel()
        if self._accepting:
            await asyncio.wait(self._accepting)
        self._accepting.clear()
        for sock in self._listening:
            sock.close()
        self._listening.clear()
        for server in self._servers:
            server.close()
        self._servers.clear()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=STOP_GRACE)
        if self.pool is not None:
            self.pool.close()
        self.peers.close()

    # -- backends -------------------------------------------------------------------------

    async def connect_backend(self, port: int, factory: Callable[[], P]
                              ) -> tuple[asyncio.Transport, P]:
        """A connection to the task on ``port``, on whichever loopback address it bound."""
        loop = asyncio.get_running_loop()
        first = self._answered_on.get(port, LOOPBACKS[0])
        order = (first, *(a for a in LOOPBACKS if a != first))
        last: OSError | None = None
        for address in order:
            try:
                sock = await _connected(loop, address, port)
            except TimeoutError:
                last = TimeoutError(f"no answer within {CONNECT_TIMEOUT:g}s")
                continue
            except OSError as exc:
                last = exc
                continue
            try:
                transport, protocol = await loop.connect_accepted_socket(factory, sock)
            except BaseException:
                sock.close()
                raise
            self._answered_on[port] = address
            self.task_connects += 1
            return transport, protocol
        assert last is not None
        raise last

    # -- connections ----------------------------------------------------------------------

    async def _accept(self, listening: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listening)
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                log.warning("proxy cannot accept connections: %s", exc)
                await asyncio.sleep(ACCEPT_BACKOFF)
                continue
            client = self.peers.key(conn)
            if not self.limits.admit(client):
                conn.close()  # over the cap: the descriptor is back at once
                continue
            conn.setblocking(False)
            nodelay(conn)
            task = asyncio.create_task(self._on_https(conn, client))
            self.connections.add(task)
            task.add_done_callback(self.connections.discard)

    async def _on_https(self, conn: socket.socket, client: str) -> None:
        """Handshake within the deadline, then hand the connection to a ``ClientSide``
        (which gives its place in ``limits`` back when it closes)."""
        loop = asyncio.get_running_loop()
        tls: ssl.SSLSocket | None = None
        try:
            async with asyncio.timeout(self.handshake_timeout):
                ok, name = await self._hello_acceptable(conn)
                if not ok:
                    self.limits.release(client)
                    return
                tls = self.sni.context.wrap_socket(conn, server_side=True,
                                                   do_handshake_on_connect=False)
                tls.setblocking(False)
                await tlsconn.handshake(tls)
            project = self.routes.project_of(name) if name else None
            side: asyncio.Protocol
            site = self.own_sites.get(name.lower()) if name else None
            if site is not None:
                side = site(self, client)
            elif tls.selected_alpn_protocol() == "h2":
                # Imported on the first HTTP/2 connection, so that daemon start stays fast.
                from taskmuxd.proxy.h2side import H2Side

                side = H2Side(self, client, project)
            else:
                side = ClientSide(self, client, project)
            tlsconn.TlsTransport(loop, tls, side)
        except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
            log.debug("TLS handshake failed: %s", exc)
            (tls or conn).close()
            self.limits.release(client)
        except BaseException:
            (tls or conn).close()
            self.limits.release(client)
            raise

    async def _hello_acceptable(self, conn: socket.socket) -> tuple[bool, str | None]:
        """Peek at the ClientHello; refuse an unknown server name with a TLS alert.
        (Whether to go on, the server name when it could be read.)

        Waiting for the rest of a hello costs nothing: the socket's low-water mark is set
        just past the bytes already there, so the event loop hears of the socket again only
        when more arrive or the client leaves; never a poll."""
        seen = 0
        try:
            while True:
                await _readable(conn)
                try:
                    data = conn.recv(MAX_HELLO, socket.MSG_PEEK)
                except BlockingIOError:
                    continue
                if len(data) <= seen:  # the client left (or broke off) mid-hello
                    conn.close()
                    return False, None
                seen = len(data)
                try:
                    name = hello_server_name(data)
                except HelloIncomplete:
                    if len(data) >= MAX_HELLO:
                        return True, None  # let the TLS layer judge an outsized hello
                    _low_water(conn, len(data) + 1)
                    continue
                except NotTls:
                    return True, None  # the TLS layer answers that properly
                if self.sni.accepts(name):
                    return True, name
                with contextlib.suppress(OSError):
                    conn.send(ALERT_UNRECOGNIZED_NAME)
                conn.close()
                return False, None
        finally:
            if seen and conn.fileno() >= 0:
                with contextlib.suppress(OSError):
                    _low_water(conn, 1)

    async def _on_plain(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        client = self.peers.key(sock) if sock is not None else "unknown"
        if not self.limits.admit(client):
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            while await self._redirect_one(reader, writer):
                pass
        except asyncio.LimitOverrunError:
            writer.write(pages.bad_request(431, "the request head is too large",
                                           html_ok=False, close=True))
            await _linger(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self.connections.discard(task)
            self.limits.release(client)
            writer.close()

    async def _redirect_one(self, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> bool:
        async with asyncio.timeout(IDLE_TIMEOUT):
            data = await reader.readuntil(HEAD_END)
        try:
            req = parse_request(data)
        except BadMessage as exc:
            writer.write(pages.bad_request(exc.status, exc.reason, html_ok=False, close=True))
            await _linger(reader, writer)
            return False
        close = req.close or req.framing != NO_BODY
        name = normalize(req.host)
        tld = self.routes.tld
        if not name or not (name == tld or name.endswith("." + tld)):
            writer.write(pages.response(
                404, "not-a-task-name", f"{name or 'no host'}: not a taskmux name",
                f"This port redirects `*.{tld}` names to https; {name or 'this request'} is "
                "not one.", html_ok=False, close=close))
        else:
            self.redirects += 1
            writer.write(pages.redirect(self.location(name, req.target), close=close))
        await writer.drain()
        return not close

    def location(self, name: str, target: bytes) -> str:
        path = target.decode("latin-1")
        if not path.startswith("/"):
            # absolute-form ("http://host/x") or asterisk-form: keep only the path
            rest = path.split("://", 1)[-1]
            path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        port = "" if self.https_port == 443 else f":{self.https_port}"
        return f"https://{name}{port}{path}"


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After a refusal: send it, end our half, then read and drop what the client still
    sends for a while, so that closing does not become a reset that destroys the answer."""
    with contextlib.suppress(OSError, RuntimeError):  # (TimeoutError is an OSError)
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER):
            dropped = 0
            while dropped < tlsconn.LINGER_BYTES:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                dropped += len(chunk)
