"""A task's ``NOTIFY_SOCKET``: the datagram socket its runner owns for one run.

The socket is bound under the project's ``run/`` folder (0700) and made 0600, so only the
user can reach it; on Linux every datagram also carries its sender's credentials
(``SO_PASSCRED``), and only a process of the task's own tree counts (a descendant of the
runner, its subreaper, with the user's uid). As under systemd, a sender that has exited and
been reaped before its datagram is read cannot be placed, and is refused: send from a process
that stays up (the task's own), not from a helper that exits at once. A datagram larger than
``MAX_DATAGRAM`` is dropped whole, not cut; at most ``MAX_PER_TURN`` are read per turn of the
runner's loop, so a flood can delay, never starve, the relay of the task's output.

Standard library only (``_socket``, not ``socket``: the runner keeps its imports small).
"""

from __future__ import annotations

import _socket
import posix as os  # not os: the runner imports this (see runpath)
import sys

from taskmuxd import proctree
from taskmuxd.notifyproto import MAX_DATAGRAM, parse

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

MAX_PER_TURN = 64
CREDS = hasattr(_socket, "SO_PASSCRED") and hasattr(_socket, "SCM_CREDENTIALS")
UCRED_SIZE = 12  # struct ucred: pid, uid, gid (32 bits each)


def bind(path: str) -> _socket.socket:
    """A non-blocking datagram socket at ``path`` (a stale one is replaced), mode 0600."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        if CREDS:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_PASSCRED, 1)
        sock.bind(path)
        os.chmod(path, 0o600)
    except OSError:
        sock.close()
        raise
    return sock


def sender(ancdata: list[tuple[int, int, bytes]]) -> tuple[int, int] | None:
    """(pid, uid) from a datagram's SCM_CREDENTIALS, or None when it carries none."""
    for level, kind, data in ancdata:
        if level == _socket.SOL_SOCKET and CREDS and kind == _socket.SCM_CREDENTIALS \
                and len(data) >= UCRED_SIZE:
            pid = int.from_bytes(data[0:4], sys.byteorder, signed=True)
            uid = int.from_bytes(data[4:8], sys.byteorder, signed=False)
            return pid, uid
    return None


def in_task_tree(pid: int, root: int) -> bool:
    return pid != root and proctree.is_descendant(pid, root)


class Receiver:
    """Reads what a task sends; counts (never raises on) what it refuses."""

    def __init__(self, sock: _socket.socket, allowed: Callable[[int], bool]) -> None:
        self.sock = sock
        self.allowed = allowed  # does this sender pid belong to the task?
        self.uid = os.getuid()
        self.refused = 0
        self.last_refusal = ""

    def fileno(self) -> int:
        return self.sock.fileno()

    def refuse(self, why: str) -> None:
        self.refused += 1
        self.last_refusal = why

    def receive(self) -> list[dict[str, str]]:
        """The assignments of each acceptable datagram waiting now (at most MAX_PER_TURN)."""
        out: list[dict[str, str]] = []
        space = _socket.CMSG_SPACE(UCRED_SIZE) if CREDS else 0
        for _ in range(MAX_PER_TURN):
            try:
                data, ancdata, flags, _addr = self.sock.recvmsg(MAX_DATAGRAM + 1, space)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.refuse(f"receive failed: {exc}")
                break
            if flags & _socket.MSG_TRUNC or len(data) > MAX_DATAGRAM:
                self.refuse(f"a datagram over {MAX_DATAGRAM} bytes")
                continue
            if CREDS:
                who = sender(ancdata)
                if who is None:
                    self.refuse("a datagram without credentials")
                    continue
                pid, uid = who
                if uid != self.uid:
                    self.refuse(f"a datagram from uid {uid}")
                    continue
                if not self.allowed(pid):
                    self.refuse(f"a datagram from pid {pid}, not one of the task's processes")
                    continue
            fields = parse(data)
            if not fields:
                self.refuse("a datagram with no KEY=VALUE line taskmux knows")
                continue
            out.append(fields)
        return out

    def close(self, path: str | None) -> None:
        self.sock.close()
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass
