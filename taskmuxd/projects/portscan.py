"""Free ports for tasks, and who is listening on one (to tell a leftover from a stranger)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import subprocess
import sys
from dataclasses import dataclass


def free_port() -> int:
    """A port free on both loopback addresses right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not in_use(port):
            return port
    raise OSError("no free port found")


def in_use(port: int) -> bool:
    """True when something listens on ``port`` on any local address we can test by binding.

    The test binds with SO_REUSEADDR, as servers do, so that the closed connections a server
    leaves in TIME_WAIT do not count: its restart will bind the port again, and so can we.
    The loopback addresses are tried as well as the wildcards because on BSD and macOS
    SO_REUSEADDR lets a wildcard bind share a port with a listener on a specific address.
    """
    for family, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::"),
                         (socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                s.bind((addr, port))
        except OSError as exc:
            if family == socket.AF_INET6 and exc.errno in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                continue  # no IPv6 here
            return True
    return False


@dataclass(frozen=True)
class Listener:
    pid: int
    uid: int
    pgid: int | None


def listeners(port: int) -> list[Listener]:
    """Processes with a listening TCP socket on ``port`` (Linux: /proc; else lsof)."""
    finder = _linux_listeners if sys.platform.startswith("linux") else _lsof_listeners
    return finder(port)


def _linux_listeners(port: int) -> list[Listener]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as fh:
            next(fh, None)
            for line in fh:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                    inodes.add(inode)
    if not inodes:
        return []
    found: list[Listener] = []
    targets = {f"socket:[{i}]" for i in inodes}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            links = {os.readlink(f"{fd_dir}/{fd}") for fd in os.listdir(fd_dir)}
        except OSError:
            continue
        if links & targets:
            pid = int(entry)
            with contextlib.suppress(OSError):
                found.append(Listener(pid, os.stat(f"/proc/{entry}").st_uid, os.getpgid(pid)))
    return found


def _lsof_listeners(port: int) -> list[Listener]:
    try:
        out = subprocess.run(["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fpu"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    found: list[Listener] = []
    pid = None
    for line in out.splitlines():
        if line.startswith("p"):
            pid = int(line[1:])
        elif line.startswith("u") and pid is not None:
            pgid = None
            with contextlib.suppress(OSError):
                pgid = os.getpgid(pid)
            found.append(Listener(pid, int(line[1:]), pgid))
    return found
