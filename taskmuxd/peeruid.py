"""Who is at the other end of a loopback TCP connection: the local user owning the client's
socket, asked of the kernel through sock_diag (Linux; what ``ss -e`` shows).

Every local connection to the proxy or the DNS server comes from 127.0.0.1 or ::1, so a cap
per client address cannot tell one local user from another: a hostile user would use up the
owner's share. Keyed by the client socket's uid instead, each local user has a share of their
own. One netlink request per accepted connection, answered by the kernel at once; anywhere it
cannot be asked (another system, a sandbox without netlink), the address is the key.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import struct
import sys
from typing import Any, Protocol

_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
_ALL_STATES = 0xFFFFFFFF
_NO_COOKIE = 0xFFFFFFFF
_UID_OFFSET = _HEADER.size + 4 + 48 + 12  # inet_diag_msg: flags, sockid, 3 counters, uid


class _Socket(Protocol):  # a socket, or asyncio's TransportSocket
    @property
    def family(self) -> int: ...
    def getpeername(self) -> Any: ...
    def getsockname(self) -> Any: ...


def _packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed.ljust(16, b"\0")


def _is_loopback(address: str) -> bool:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(address).is_loopback
    return False


class PeerUids:
    """``key(sock)``: ``"uid N"`` for a loopback client whose socket's owner the kernel
    names, else the client's address."""

    def __init__(self) -> None:
        self._nl: socket.socket | None = None
        self._usable = sys.platform.startswith("linux")
        self._seq = 0

    def key(self, sock: _Socket) -> str:
        try:
            peer = sock.getpeername()
            local = sock.getsockname()
        except OSError:
            return "unknown"
        address = str(peer[0])
        if self._usable and _is_loopback(address):
            uid = self.uid(sock.family, (address, peer[1]), (str(local[0]), local[1]))
            if uid is not None:
                return f"uid {uid}"
        return address

    def uid(self, family: int, peer: tuple[str, int], local: tuple[str, int]) -> int | None:
        """The uid owning the socket at ``peer`` connected to ``local`` (None: unknown)."""
        try:
            nl = self._socket()
        except OSError:
            self._usable = False  # no sock_diag here: addresses it is
            return None
        try:
            self._seq = (self._seq + 1) & 0xFFFFFFFF
            sockid = (struct.pack("!HH", peer[1], local[1]) + _packed(peer[0])
                      + _packed(local[0]) + struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE))
            request = struct.pack("=BBBxI", family, socket.IPPROTO_TCP, 0, _ALL_STATES) + sockid
            nl.send(_HEADER.pack(_HEADER.size + len(request), _SOCK_DIAG_BY_FAMILY,
                                 _NLM_F_REQUEST, self._seq, 0) + request)
            while True:  # (skip any stale answer to an earlier request)
                reply = nl.recv(8192, socket.MSG_DONTWAIT)
                _, kind, _, seq, _ = _HEADER.unpack_from(reply)
                if seq == self._seq:
                    break
        except (OSError, ValueError, struct.error):
            self.close()
            return None
        if kind != _SOCK_DIAG_BY_FAMILY or len(reply) < _UID_OFFSET + 4:
            return None  # NLMSG_ERROR: the kernel does not know it (or refused)
        uid: int = struct.unpack_from("=I", reply, _UID_OFFSET)[0]
        return uid

    def _socket(self) -> socket.socket:
        if self._nl is None:
            nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG)
            nl.connect((0, 0))
            self._nl = nl
        return self._nl

    def close(self) -> None:
        if self._nl is not None:
            self._nl.close()
            self._nl = None
