"""The runner's side of the report door: one datagram per report, no connection.

A runner tells the daemon what became of its run (``runner.started``, ``runner.exited``,
``runner.notify``). Each report is one JSON-RPC notification sent as a single datagram to
``reports.sock`` beside ``ctl.sock``: one system call, no accept, no stream on the daemon's
side (``taskmuxd.reportdoor`` reads them). Where the door is not there (a daemon of an older
version, one still starting, a platform without it) or the report is too large for it, the
report goes to ``ctl.sock`` as before; the runner's record file speaks when neither answers.

Standard library only (``_socket``) and cheap to import: every runner imports it.
"""

from __future__ import annotations

import _socket
import os

DOOR_NAME = "reports.sock"
MAX_REPORT = 65536  # bytes of one report datagram at most; larger ones take ctl.sock
SEND_SECONDS = 2.0  # a daemon whose queue stays full this long is not answering


def door_of(ctl_socket: str) -> str:
    """The report door that goes with the control socket ``ctl_socket``."""
    return os.path.join(os.path.dirname(ctl_socket), DOOR_NAME)


def send(door: str, payload: bytes) -> bool:
    """Send one report to the door; whether the daemon's queue took it (False: not sent)."""
    if len(payload) > MAX_REPORT:
        return False
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    try:
        sock.settimeout(SEND_SECONDS)
        # Connected, so that a full queue at the daemon makes the wait a sleep in poll()
        # (an unconnected datagram socket polls writable and would spin on EAGAIN).
        sock.connect(door)
        return sock.send(payload) == len(payload)
    except OSError:
        return False
    finally:
        sock.close()
