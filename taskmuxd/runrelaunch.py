"""Relaunch in place: a runner whose task exited waits, briefly, for the daemon's word.

Once a run has ended and its exit is recorded and reported, the runner does not leave its
pane at once: it listens on its own Unix socket (``run/{task}.relaunch``, 0600 in the
project's 0700 ``run/`` folder; the peer's uid is checked too) for the daemon's orders:

- ``{"run": N, "spec": PATH}``: run the task again as run ``N`` from the spec at ``PATH``
  (written by the daemon, with run ``N`` recorded write-ahead, before it says so). The runner
  answers ``ok`` and only then starts the new run, in the same pane, with the same log.
- ``{"hold": S}``: the restart comes later (a backoff): wait S seconds from now instead (at
  most ``HOLD_LIMIT``), so that it too runs in place. With ``"until": T`` (the daemon's
  ``time.monotonic``), until T: the moment the daemon meant, not S after the order came
  (``hold_until``).
- ``{"finish": true}``: end now. The daemon says this with SIGTERM instead (one system call
  rather than a connection, for each of a hundred tasks being stopped), sent only while the
  runner's identity (pid, start time, boot) is still the recorded one.

The runner decides nothing: it never runs anything again on its own. Without an order within
``WAIT_SECONDS`` (or the hold the daemon asked for) it ends as a runner always ended (the
pane stays, dead, until the daemon respawns it); when its exit report could not be delivered
(no daemon) it does not wait at all, as before. A daemon killed after the report is thus
outlived by a waiting runner for at most that wait; its successor adopts the recorded exit
and launches through tmux (``respawn-pane -k`` ends a runner still waiting). A daemon that
heard no ``ok`` (the runner ended, timed out, refused) launches the run the usual way, so an
order lost anywhere costs time, never a second copy.

Standard library only and cheap to import (the runner imports it).
"""

from __future__ import annotations

import _socket
import posix as os  # not os: the runner imports this (see runpath)
import select
import time

from taskmuxctl.core import jsonio

WAIT_SECONDS = 1.0  # how long a runner waits for an order after reporting its exit
HOLD_LIMIT = 65.0  # the longest hold a runner accepts (the longest backoff is 60 s, +10%)
ORDER_LIMIT = 4096  # bytes of one order
ORDER_SECONDS = 1.0  # for the order's bytes once connected, and for the daemon's answer
SUFFIX = ".relaunch"
CLOCK_AGREE = 0.25  # seconds an order's ``until`` may lie before its hold counted here
CLOCK_SLACK = 0.001  # seconds it may lie after (rounding)
SLICE_BELOW = 0.05  # seconds of a wait taken in one select: it ends late by the timer slack


def bind(path: str) -> tuple[_socket.socket, int] | None:
    """The runner's listening socket at ``path`` (replacing a stale one) and the inode of its
    file; None on failure."""
    try:
        os.unlink(path)
    except OSError:
        pass
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        old = os.umask(0o177)
        try:
            sock.bind(path)
        finally:
            os.umask(old)
        sock.listen(4)
        inode = os.stat(path).st_ino
    except OSError:
        sock.close()
        return None
    return sock, inode


def _peer_is_me(conn: _socket.socket) -> bool:
    """Whether the connecting process runs as this user (Linux SO_PEERCRED; elsewhere the
    socket's mode and its folder's are the guard)."""
    opt = getattr(_socket, "SO_PEERCRED", None)
    if opt is None:
        return True
    try:
        cred = conn.getsockopt(_socket.SOL_SOCKET, opt, 12)
    except OSError:
        return False
    return int.from_bytes(cred[4:8], "little") == os.getuid()


def _read_order(conn: _socket.socket) -> dict[str, object] | None:
    conn.settimeout(ORDER_SECONDS)
    data = b""
    try:
        while b"\n" not in data and len(data) < ORDER_LIMIT:
            chunk = conn.recv(ORDER_LIMIT - len(data))
            if not chunk:
                return None
            data += chunk
        order = jsonio.loads(data.split(b"\n", 1)[0])
    except (OSError, ValueError):
        return None
    return order if isinstance(order, dict) else None


def wait_order(sock: _socket.socket, seconds: float, wake_fd: int,
               on_wake: Callable[[], bool]) -> tuple[dict[str, object], _socket.socket] | None:
    """Wait up to ``seconds`` for the daemon's order; the order and its connection (to
    answer on), or None (time out). ``on_wake`` runs when ``wake_fd`` (signals) is readable
    and says whether to give up (the pane closed, the runner was told to end)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            ready, _, _ = select.select([sock.fileno(), wake_fd], [], [], timeout_for(left))
        except InterruptedError:
            continue
        if wake_fd in ready and on_wake():
            return None
        if sock.fileno() not in ready:
            continue
        try:
            fd, _addr = sock._accept()  # type: ignore[attr-defined]  # a descriptor
        except OSError:
            continue
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM, 0, fd)
        if not _peer_is_me(conn):
            conn.close()
            continue
        order = _read_order(conn)
        if order is None:
            conn.close()
            continue
        return order, conn
    return None


def timeout_for(left: float) -> float:
    """The timeout of a select that must not end later than ``left`` seconds from now by
    more than the timer's slack: Linux lets a select(2) or poll(2) end late by 0.1% of its
    timeout (0.5% for a niced process), 1 ms on a 1 s hold, while the claim at its end is
    waited for. A long wait is taken in slices ending early by more than that (1/64); the
    last, under ``SLICE_BELOW``, is late by the timer slack alone (50 us, or what
    ``proctree.timer_slack`` set)."""
    return left if left <= SLICE_BELOW else left - left / 64


def unbind(sock: _socket.socket, path: str, inode: int) -> None:
    """Close the listening socket and remove its file (``inode`` when bound), unless another
    runner of the task has bound the path since (the file is then another one)."""
    sock.close()
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def hold_seconds(order: dict[str, object]) -> float | None:
    """The seconds a hold order asks for (bounded), or None when it is no hold."""
    hold = order.get("hold")
    if isinstance(hold, bool) or not isinstance(hold, int | float):
        return None
    return min(max(float(hold), 0.0), HOLD_LIMIT)


def hold_until(order: dict[str, object], now: float) -> float | None:
    """When a hold order's wait is over (``time.monotonic``), or None when it is no hold: its
    ``until``, on the daemon's monotonic clock, which is this one on one machine (what it
    says is checked: no later than the hold counted from ``now``, and no earlier by more than
    the order's way here may take); else the hold counted from ``now``. So the time the order
    took to come is not added to the wait."""
    hold = hold_seconds(order)
    if hold is None:
        return None
    end = now + hold
    until = order.get("until")
    if isinstance(until, int | float) and not isinstance(until, bool) \
            and end - CLOCK_AGREE <= until <= end + CLOCK_SLACK:
        return float(until)
    return end


def answer(conn: _socket.socket, ok: bool) -> bool:
    """Answer an order; whether the daemon could be told."""
    try:
        conn.settimeout(ORDER_SECONDS)
        conn.sendall(b"ok\n" if ok else b"no\n")
        return True
    except OSError:
        return False
    finally:
        conn.close()


TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
