"""``taskmuxctl dial-stdio``: this machine's ``ctl.sock``, bridged to stdin and stdout.

Another machine runs it through ssh (``ssh box taskmuxctl dial-stdio``) and speaks the same
JSON-RPC lines over the ssh channel as it would over the socket. Bytes pass through unchanged
in both directions. When stdin ends, the socket's sending half is shut (the daemon then
finishes its replies and closes); when the daemon closes, or stdout is gone, the bridge
ends. Stdlib only, and light: it starts once per remote call.
"""

from __future__ import annotations

import _socket
import os
import select

CHUNK = 65536


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def bridge(sock: _socket.socket, fd_in: int = 0, fd_out: int = 1) -> None:
    """Copy ``fd_in`` to ``sock`` and ``sock`` to ``fd_out`` until the daemon closes or
    ``fd_out`` is gone. The socket must be blocking."""
    sock.setblocking(True)
    sfd = sock.fileno()
    poller = select.poll()
    poller.register(sfd, select.POLLIN)
    poller.register(fd_in, select.POLLIN)
    in_open = True
    while True:
        for fd, _events in poller.poll():
            if fd == sfd:
                try:
                    data = sock.recv(CHUNK)
                except OSError:
                    return
                if not data:
                    return
                try:
                    _write_all(fd_out, data)
                except OSError:  # the reader went away: nobody to answer any more
                    return
            elif in_open:
                try:
                    data = os.read(fd_in, CHUNK)
                except OSError:
                    data = b""
                if data:
                    try:
                        sock.sendall(data)
                    except OSError:
                        return
                    continue
                in_open = False
                poller.unregister(fd_in)
                try:
                    sock.shutdown(_socket.SHUT_WR)
                except OSError:
                    return
