"""Who is on the other end of a Unix socket: SO_PEERCRED (Linux), LOCAL_PEERCRED (macOS/BSD)."""

from __future__ import annotations

import socket
import struct
import sys
from typing import NamedTuple


class Peer(NamedTuple):
    pid: int | None
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer:
    """The credentials of ``sock``'s peer. Raises OSError when the platform cannot tell."""
    if hasattr(socket, "SO_PEERCRED"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        return Peer(pid, uid, gid)
    if sys.platform == "darwin" or "bsd" in sys.platform:
        # struct xucred { u_int cr_version; uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16]; }
        sol_local, local_peercred = 0, 0x001
        fmt = "IIh2x16I"
        raw = sock.getsockopt(sol_local, local_peercred, struct.calcsize(fmt))
        fields = struct.unpack(fmt, raw)
        return Peer(None, fields[1], fields[3])
    raise OSError("this platform cannot report a Unix socket peer's credentials")
