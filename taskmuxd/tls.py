"""The proxy's TLS side: one server context per project, chosen by SNI.

The listening context has no certificate of its own; its SNI callback switches the connection
to the named project's context, minting the project's leaf the first time. A name that is not
under a known project (or no name at all) ends the handshake with an ``unrecognized_name``
alert rather than a certificate the client would reject anyway.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from collections.abc import Callable

from taskmuxd.certstore import CertStore, Leaf, utcnow
from taskmuxd.routes import RouteTable

log = logging.getLogger("taskmuxd.tls")

ALPN = ["h2", "http/1.1"]  # HTTP/2 first: browsers multiplex a page's requests on it


def _server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    return ctx


class SniContexts:
    def __init__(self, store: CertStore, routes: RouteTable) -> None:
        self.store = store
        self.routes = routes
        self._by_project: dict[str, tuple[ssl.SSLContext, dt.datetime]] = {}
        self.handshakes_refused = 0
        # Names the daemon serves itself (the dashboard): name -> its context (own leaf, own
        # ALPN), looked up before any project.
        self.own: dict[str, Callable[[], ssl.SSLContext]] = {}
        self.context = _server_context()
        self.context.sni_callback = self._on_sni

    def project_context(self, project: str, now: dt.datetime | None = None) -> ssl.SSLContext:
        """The context serving ``project``'s leaf, minting or renewing it when due."""
        now = now or utcnow()
        cached = self._by_project.get(project)
        if cached is not None and cached[1] > now:
            return cached[0]
        leaf = self.store.leaf(project, now)
        return self._load(leaf, now)

    def _load(self, leaf: Leaf, now: dt.datetime) -> ssl.SSLContext:
        ctx = _server_context()
        ctx.load_cert_chain(leaf.cert_path, leaf.key_path)
        # Renew through the store once the leaf enters its renewal window.
        from taskmuxd.certs import LEAF_RENEW_BEFORE

        self._by_project[leaf.project] = (ctx, leaf.not_after - LEAF_RENEW_BEFORE)
        return ctx

    def remint(self, project: str) -> Leaf:
        """Mint a fresh leaf now (``ca mint``) and serve it to new connections."""
        now = utcnow()
        leaf = self.store.leaf(project, now, force=True)
        self._load(leaf, now)
        return leaf

    def forget(self) -> None:
        """Drop cached contexts (after the CA changed)."""
        self._by_project.clear()

    def prepare(self) -> None:
        """Mint what the known projects need, off the handshake path."""
        for project in self.routes.projects():
            try:
                self.project_context(project)
            except Exception:
                log.exception("cannot prepare the certificate of project %s", project)

    def accepts(self, server_name: str | None) -> bool:
        """Whether a handshake for ``server_name`` can be served (else it is refused)."""
        if server_name and server_name.lower() in self.own:
            return True
        if server_name:
            project = self.routes.project_of(server_name)
            if project is not None and self.routes.knows(project):
                return True
        self.handshakes_refused += 1
        log.debug("TLS handshake for %s refused: no such project",
                  server_name or "(no server name)")
        return False

    def _on_sni(self, sslobj: ssl.SSLObject, server_name: str | None,
                _ctx: ssl.SSLContext) -> int | None:
        if not self.accepts(server_name):
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        own = self.own.get((server_name or "").lower())
        if own is not None:
            try:
                sslobj.context = own()
            except Exception:
                log.exception("no certificate for %s", server_name)
                return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
            return None
        project = self.routes.project_of(server_name or "")
        assert project is not None
        try:
            sslobj.context = self.project_context(project)
        except Exception:
            log.exception("no certificate for %s", server_name)
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None


# -- reading the server name before the handshake ---------------------------------------------
#
# asyncio's TLS layer closes the socket without sending the alert OpenSSL produced when a
# handshake fails, so a refusal from the SNI callback would look like a dropped connection.
# The proxy therefore peeks at the ClientHello, refuses unknown names itself with a real
# ``unrecognized_name`` alert, and only hands known ones to asyncio.

ALERT_UNRECOGNIZED_NAME = bytes([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70])  # fatal, 112
_RECORD_HEADER = 5
_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_SNI_EXTENSION = 0x0000
_HOST_NAME = 0x00


class HelloIncomplete(Exception):
    """More bytes are needed to see the whole ClientHello."""


class NotTls(Exception):
    """The bytes are not a TLS ClientHello (let the TLS layer say so)."""


def hello_server_name(data: bytes) -> str | None:
    """The server name in the ClientHello at the start of ``data`` (None: the client sent
    none). Raises HelloIncomplete or NotTls."""
    if len(data) < _RECORD_HEADER:
        raise HelloIncomplete()
    if data[0] != _HANDSHAKE:
        raise NotTls()
    # The ClientHello may span several records; join their payloads.
    payload = bytearray()
    pos = 0
    while True:
        if len(data) < pos + _RECORD_HEADER:
            raise HelloIncomplete()
        if data[pos] != _HANDSHAKE:
            raise NotTls()
        size = int.from_bytes(data[pos + 3:pos + 5], "big")
        end = pos + _RECORD_HEADER + size
        payload += data[pos + _RECORD_HEADER:min(end, len(data))]
        if len(payload) >= 4:
            if payload[0] != _CLIENT_HELLO:
                raise NotTls()
            need = 4 + int.from_bytes(payload[1:4], "big")
            if len(payload) >= need:
                return _sni(bytes(payload[4:need]))
        if end > len(data):
            raise HelloIncomplete()
        pos = end


def _sni(hello: bytes) -> str | None:
    try:
        pos = 2 + 32  # version, random
        pos += 1 + hello[pos]  # session id
        pos += 2 + int.from_bytes(hello[pos:pos + 2], "big")  # cipher suites
        pos += 1 + hello[pos]  # compression methods
        if pos >= len(hello):
            return None  # no extensions at all
        end = pos + 2 + int.from_bytes(hello[pos:pos + 2], "big")
        pos += 2
        while pos + 4 <= end:
            kind = int.from_bytes(hello[pos:pos + 2], "big")
            size = int.from_bytes(hello[pos + 2:pos + 4], "big")
            body = hello[pos + 4:pos + 4 + size]
            pos += 4 + size
            if kind != _SNI_EXTENSION:
                continue
            i = 2  # the list's length
            while i + 3 <= len(body):
                name_type = body[i]
                length = int.from_bytes(body[i + 1:i + 3], "big")
                if name_type == _HOST_NAME:
                    return body[i + 3:i + 3 + length].decode("ascii")
                i += 3 + length
            return None
    except (IndexError, UnicodeDecodeError):
        raise NotTls() from None
    return None
