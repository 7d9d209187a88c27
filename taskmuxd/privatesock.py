"""A Unix socket only its owner may connect to: bound under umask 0177, then chmod 0600.

The daemon's control socket and the runners' report door are made this way. The caller holds
the instance lock, so a file already at the path is stale and is replaced.
"""

from __future__ import annotations

import contextlib
import os
import socket


def listen_private(path: str, kind: int, backlog: int) -> socket.socket:
    """A listening ``AF_UNIX`` socket of ``kind`` at ``path``, mode 0600 from the start.
    Raises ``OSError`` (the socket closed) when it cannot be made."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, kind)
    try:
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock
