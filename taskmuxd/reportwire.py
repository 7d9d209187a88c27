"""The runner's side of the report door: one message per report on a connection of its own.

A runner tells the daemon what became of its run (``runner.started``, ``runner.exited``,
``runner.notify``). Each report is one JSON-RPC notification sent as a single message on a
``SOCK_SEQPACKET`` connection to ``reports.sock`` beside ``ctl.sock``: connect, send, close;
the daemon (``taskmuxd.reportdoor``) accepts and reads it whole without an RPC stream. A
listening socket queues a hundred connections at once (its backlog), where a datagram socket
queues ten datagrams and wakes every blocked sender at each one read. Where the door is not
there (a daemon of an older version, one still starting, a platform without it) or the report
is too large for it, the report goes to ``ctl.sock`` as before; the runner's record file
speaks when neither answers.

Standard library only (``_socket``) and cheap to import: every runner imports it.
"""

from __future__ import annotations

import _socket

from taskmuxd import runpath

DOOR_NAME = "reports.sock"
MAX_REPORT = 65536  # bytes of one report at most; larger ones take ctl.sock
SEND_SECONDS = 2.0  # a daemon whose backlog stays full this long is not answering


def door_of(ctl_socket: str) -> str:
    """The report door that goes with the control socket ``ctl_socket``."""
    return runpath.join(runpath.dirname(ctl_socket), DOOR_NAME)


def send(door: str, payload: bytes) -> bool:
    """Send one report to the door; whether it was handed over (False: not sent)."""
    if len(payload) > MAX_REPORT:
        return False
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    except (OSError, AttributeError):  # a platform without it: ctl.sock
        return False
    try:
        sock.settimeout(SEND_SECONDS)
        sock.connect(door)
        return sock.send(payload) == len(payload)
    except OSError:
        return False
    finally:
        sock.close()
