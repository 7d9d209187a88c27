"""taskmux's DNS server on asyncio: UDP datagrams and TCP (two-byte length prefixed).

TCP connections are capped, in total and per client (a local user by uid, see ``peeruid``;
else an address): one over the cap is closed as soon as it is accepted. A connection that
waits longer than the idle timeout for its next query is closed. So idle connections cannot
use up the daemon's descriptors.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, cast

from taskmuxd.connlimits import ConnectionLimits
from taskmuxd.dns.answers import Answerer
from taskmuxd.peeruid import PeerUids

log = logging.getLogger("taskmuxd.dns")

TCP_IDLE_TIMEOUT = 10.0
MAX_TCP_MESSAGE = 65535


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, answerer: Answerer) -> None:
        self.answerer = answerer
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        reply = self.answerer.answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("DNS UDP error: %s", exc)


class DnsServer:
    def __init__(self, answerer: Answerer, limits: ConnectionLimits | None = None,
                 idle_timeout: float = TCP_IDLE_TIMEOUT) -> None:
        self.answerer = answerer
        self.limits = limits or ConnectionLimits(128, 32)  # per local user (uid) or address
        self.peers = PeerUids()
        self.idle_timeout = idle_timeout
        self._udp: list[asyncio.DatagramTransport] = []
        self._tcp: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[Any]] = set()

    async def serve(self, udp: list[socket.socket], tcp: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        for sock in udp:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(self.answerer),
                                                               sock=sock)
            self._udp.append(transport)
        for sock in tcp:
            self._tcp.append(await asyncio.start_server(self._on_tcp, sock=sock))

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        client = self.peers.key(sock) if sock is not None else "unknown"
        if not self.limits.admit(client):
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                async with asyncio.timeout(self.idle_timeout):
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    message = await reader.readexactly(size)
                reply = self.answerer.answer(message)
                if reply is None:
                    break
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass
        finally:
            self._connections.discard(task)
            self.limits.release(client)
            writer.close()

    async def close(self) -> None:
        for transport in self._udp:
            transport.close()
        self._udp.clear()
        for server in self._tcp:
            server.close()
        self._tcp.clear()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(list(self._connections), timeout=2)
        self.peers.close()
