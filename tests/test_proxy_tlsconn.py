"""The proxy's TLS transport (``tlsconn``) on a real loopback TLS 1.3 connection: records
that pile up in the socket are read in one wake-up once a read beyond the first found one;
a read beyond the first that finds nothing is tried again only every ``PROBE_EVERY``-th
wake-up."""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import socket
import ssl
import struct
import termios
from pathlib import Path

from taskmuxd import certs
from taskmuxd.proxy import tlsconn

RECORD = b"r" * 50  # (a request's HEADERS frame, about)
RECORD_WIRE = 5 + len(RECORD) + 1 + 16  # (TLS 1.3: header, content type, AEAD tag)


def _contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    now = dt.datetime.now(dt.UTC)
    leaf = certs.new_leaf(certs.new_ca(now), ["a.localhost"], now)
    cert, key = tmp_path / "leaf.pem", tmp_path / "leaf.key"
    cert.write_bytes(leaf.cert_pem())
    key.write_bytes(leaf.key_pem())
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(cert), str(key))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.minimum_version = ssl.TLSVersion.TLSv1_3
    return server, client


class Counted(tlsconn.TlsTransport):
    wakes = 0

    def _on_readable(self) -> None:
        self.wakes += 1
        super()._on_readable()


class Collect(asyncio.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.wanted = 0
        self.arrived: asyncio.Future[None] | None = None

    def expect(self, size: int) -> asyncio.Future[None]:
        self.wanted = len(self.data) + size
        self.arrived = asyncio.get_running_loop().create_future()
        return self.arrived

    def data_received(self, data: bytes) -> None:
        self.data += data
        if self.arrived is not None and len(self.data) >= self.wanted \
                and not self.arrived.done():
            self.arrived.set_result(None)


async def _queued(fd: int, size: int) -> None:
    """Until the socket ``fd`` holds ``size`` bytes unread."""
    while True:
        held = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
        if held >= size:
            return
        await asyncio.sleep(0.001)


def test_records_that_pile_up_are_read_in_one_wake_up_after_a_probe(tmp_path: Path) -> None:
    server_ctx, client_ctx = _contexts(tmp_path)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        port = listener.getsockname()[1]

        def connect() -> ssl.SSLSocket:
            return client_ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), 10))

        connecting = asyncio.ensure_future(asyncio.to_thread(connect))
        conn, _ = await loop.sock_accept(listener)
        tls = server_ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        tls.setblocking(False)
        await asyncio.wait_for(tlsconn.handshake(tls), 10)
        client = await asyncio.wait_for(connecting, 10)
        reads = [0]
        recv = tls.recv

        def counted(size: int) -> bytes:
            reads[0] += 1
            return recv(size)

        tls.recv = counted  # type: ignore[method-assign]
        try:
            # Ten records in the socket before the transport reads any.
            for _ in range(10):
                client.sendall(RECORD)
            await asyncio.wait_for(_queued(tls.fileno(), 10 * RECORD_WIRE), 10)
            protocol = Collect()
            arrived = protocol.expect(10 * len(RECORD))
            transport = Counted(loop, tls, protocol)
            await asyncio.wait_for(arrived, 10)
            assert protocol.data == RECORD * 10
            # One record a wake-up until the probe, which reads the rest and finds nothing
            # after them: one failed read.
            probe = tlsconn.PROBE_EVERY
            assert transport.wakes == probe
            assert reads[0] == 10 + 1
            # One record at a time: no read beyond it until the next probe.
            for n in range(1, probe + 1):
                arrived = protocol.expect(len(RECORD))
                client.sendall(RECORD)
                await asyncio.wait_for(arrived, 10)
                assert reads[0] == 11 + n + (1 if n == probe else 0)
            transport.close()
        finally:
            client.close()
            listener.close()
            tls.close()

    asyncio.run(main())
