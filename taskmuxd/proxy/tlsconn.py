"""A TLS transport for the proxy's client side that lets OpenSSL do the socket I/O.

asyncio's own TLS layer (``SSLProtocol``) moves every record through memory BIOs and a
Python state machine; on the proxy's hot path that costs more than the forwarding itself.
Here a non-blocking ``ssl.SSLSocket`` reads and writes the socket from C, and this class only
adapts it to ``asyncio.Transport`` for the protocols in ``forward``: readiness callbacks,
a write buffer with flow control (``pause_writing``/``resume_writing``), ``pause_reading``,
and an orderly close.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from typing import Any

READ_SIZE = 256 * 1024
WRITE_CHUNK = 256 * 1024
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
MAX_READS_PER_WAKEUP = 16
# OpenSSL reads one TLS record at a time, and a record read whole leaves nothing that
# ``pending`` shows, though more records may wait in the socket: one read more finds them
# (else it costs a failed read). A browser sends a page's requests one record each, and
# while the proxy works they pile up: read on while reads beyond the first find records,
# and after one that found none, try again on every PROBE_EVERY-th wake-up only.
PROBE_EVERY = 2


LINGER_BYTES = 1024 * 1024


async def handshake(sock: ssl.SSLSocket) -> None:
    """Complete the server side of the handshake on a non-blocking SSLSocket, waking only
    when the socket is ready (the caller holds the deadline)."""
    loop = asyncio.get_running_loop()
    fd = sock.fileno()
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            await _ready(loop, fd, loop.add_reader, loop.remove_reader)
        except ssl.SSLWantWriteError:
            await _ready(loop, fd, loop.add_writer, loop.remove_writer)


async def _ready(loop: asyncio.AbstractEventLoop, fd: int, add: Any, remove: Any) -> None:
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    add(fd, wake)
    try:
        await fut
    finally:
        remove(fd)


class TlsTransport(asyncio.Transport):
    def __init__(self, loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket,
                 protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self._protocol = protocol
        self._buf: list[bytes] = []
        self._buf_size = 0
        self._chunk: bytes | None = None  # the write OpenSSL asked us to repeat
        self._closing = False
        self._closed = False
        self._reading = False
        self._read_paused = False
        self._writer_on = False
        self._protocol_paused = False
        self._linger = 0.0  # close_lingering: seconds to drain the client after the answer
        self._linger_timer: asyncio.TimerHandle | None = None
        self._linger_bytes = 0
        self._peername = sock.getpeername()
        self._greedy = False  # the last read beyond a wake-up's first found a record
        self._probe = PROBE_EVERY  # wake-ups until reads beyond the first are tried again
        protocol.connection_made(self)
        if not self._closing:
            self._start_reading()

    # -- reading --------------------------------------------------------------------------

    def _start_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_readable)
            if self._sock.pending():  # decrypted bytes waiting: the fd will not say so
                self._loop.call_soon(self._on_readable)

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def _on_readable(self) -> None:
        """Read what the socket holds: record after record while reads beyond the first
        find more (``_greedy``), else one record and what OpenSSL decrypted of it."""
        greedy = self._greedy
        if not greedy:
            self._probe -= 1
            greedy = self._probe <= 0
        for n in range(MAX_READS_PER_WAKEUP):
            if not self._reading or self._closing:
                return
            try:
                data = self._sock.recv(READ_SIZE)
            except (ssl.SSLWantReadError, BlockingIOError):
                if n and greedy:  # a read beyond the first found nothing
                    self._greedy = False
                    self._probe = PROBE_EVERY
                return
            except ssl.SSLWantWriteError:
                self._want_writer()
                return
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            if not data:
                self._stop_reading()
                keep_open = self._protocol.eof_received()
                if not keep_open:
                    self.close()
                return
            if n:
                self._greedy = True
            self._protocol.data_received(data)
            if not greedy and not self._sock.pending():
                return
        self._loop.call_soon(self._on_readable)

    def pause_reading(self) -> None:
        self._read_paused = True
        self._stop_reading()

    def resume_reading(self) -> None:
        if self._read_paused:
            self._read_paused = False
            self._start_reading()

    def is_reading(self) -> bool:
        return self._reading

    # -- writing --------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._closed or not data:
            return
        if self._chunk is None and not self._buf:
            view = memoryview(data)
            while view:
                piece = bytes(view[:WRITE_CHUNK])
                try:
                    self._sock.send(piece)
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    self._chunk = piece
                    self._queue(bytes(view[WRITE_CHUNK:]))
                    self._want_writer()
                    return
                except (ssl.SSLError, OSError) as exc:
                    self._fatal(exc)
                    return
                view = view[WRITE_CHUNK:]
            return
        self._queue(bytes(data))

    def _queue(self, data: bytes) -> None:
        if data:
            self._buf.append(data)
            self._buf_size += len(data)
        self._check_high_water()

    def _want_writer(self) -> None:
        if not self._writer_on:
            self._writer_on = True
            self._loop.add_writer(self._fd, self._on_writable)

    def _on_writable(self) -> None:
        while True:
            if self._chunk is None:
                if not self._buf:
                    break
                data = b"".join(self._buf)
                self._buf.clear()
                self._buf_size = 0
                self._chunk, rest = data[:WRITE_CHUNK], data[WRITE_CHUNK:]
                if rest:
                    self._buf.append(rest)
                    self._buf_size = len(rest)
            try:
                self._sock.send(self._chunk)
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                return
            except (ssl.SSLError, OSError) as exc:
                self._fatal(exc)
                return
            self._chunk = None
        self._writer_on = False
        self._loop.remove_writer(self._fd)
        if self._reading:  # a read may have been waiting for this write (renegotiation)
            self._loop.call_soon(self._on_readable)
        self._check_low_water()
        if self._closing:
            self._flushed()

    def get_write_buffer_size(self) -> int:
        return self._buf_size + (len(self._chunk) if self._chunk else 0)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return LOW_WATER, HIGH_WATER

    def _check_high_water(self) -> None:
        if not self._protocol_paused and self.get_write_buffer_size() > HIGH_WATER:
            self._protocol_paused = True
            self._protocol.pause_writing()

    def _check_low_water(self) -> None:
        if self._protocol_paused and self.get_write_buffer_size() <= LOW_WATER:
            self._protocol_paused = False
            self._protocol.resume_writing()

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError("TLS connections close with close()")

    # -- closing --------------------------------------------------------------------------

    def is_closing(self) -> bool:
        return self._closing or self._closed

    def close(self) -> None:
        if self._closing or self._closed:
            return
        self._closing = True
        self._stop_reading()
        if self._chunk is None and not self._buf:
            self._flushed()

    def close_lingering(self, seconds: float) -> None:
        """Close once what was written is flushed, then read and drop what the client still
        sends for up to ``seconds``. (Closing a socket with unread bytes makes the kernel
        answer with a reset, which can destroy an error page the client has not read yet:
        a 431 for an oversized head would arrive as "connection reset".)"""
        self._linger = seconds
        self.close()

    def _flushed(self) -> None:
        if not self._linger:
            self._finish()
            return
        # End our half (FIN), then drain the raw socket: no decryption, just discarding.
        try:
            socket.socket.shutdown(self._sock, socket.SHUT_WR)
        except OSError:
            self._finish()
            return
        self._loop.add_reader(self._fd, self._drain)
        self._linger_timer = self._loop.call_later(self._linger, self._finish)

    def _drain(self) -> None:
        try:
            data = socket.socket.recv(self._sock, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self._linger_bytes += len(data)
        if not data or self._linger_bytes > LINGER_BYTES:
            self._finish()

    def abort(self) -> None:
        self._closing = True
        self._buf.clear()
        self._chunk = None
        self._finish()

    def _fatal(self, exc: BaseException) -> None:
        self._closing = True
        self._buf.clear()
        self._chunk = None
        self._finish(exc)

    def _finish(self, exc: BaseException | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_reading()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
            self._loop.remove_reader(self._fd)
        if self._writer_on:
            self._writer_on = False
            self._loop.remove_writer(self._fd)
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._loop.call_soon(self._protocol.connection_lost,
                             exc if isinstance(exc, Exception) else None)

    # -- information ----------------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self._peername
        if name == "socket":
            return self._sock
        if name == "sockname":
            with contextlib.suppress(OSError):
                return self._sock.getsockname()
            return default
        if name == "ssl_object":
            return self._sock
        if name == "sslcontext":
            return self._sock.context
        if name == "cipher":
            return self._sock.cipher()
        if name == "peercert":
            return self._sock.getpeercert()
        return default

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol
