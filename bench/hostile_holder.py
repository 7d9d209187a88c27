"""Opens many TCP connections to a port and holds them, for bench/hostile.py; it runs as a
throwaway user, so that the daemon sees them come from another local uid.

Run as `python hostile_holder.py SPEC_JSON`, SPEC = {"host", "port", "count", "send" (hex bytes
to send on each connection, e.g. half a TLS ClientHello; "" for idle), "connect_budget",
"hold_max"}. It prints one JSON line once the connections are open, holds them until a line
(or end of file) arrives on stdin or hold_max passes, prints one JSON line saying how many the
server closed meanwhile, and exits. Standard library only.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import select
import socket
import sys
import time


def raise_nofile(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        soft = new
    return int(soft)


def _count(errors: dict[str, int], code: int | None, fallback: str) -> None:
    name = errno.errorcode.get(code or 0, fallback)
    errors[name] = errors.get(name, 0) + 1


def open_all(host: str, port: int, count: int, budget: float, payload: bytes
             ) -> tuple[list[socket.socket], dict[str, int]]:
    """Start every connection at once (non-blocking), wait up to ``budget`` for them."""
    errors: dict[str, int] = {}
    pending: dict[int, socket.socket] = {}
    for _ in range(count):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:  # out of descriptors: hold what is open
            _count(errors, exc.errno, str(exc))
            break
        s.setblocking(False)
        code = s.connect_ex((host, port))
        if code not in (0, errno.EINPROGRESS):
            _count(errors, code, str(code))
            s.close()
            continue
        pending[s.fileno()] = s
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLOUT)
    opened: list[socket.socket] = []
    deadline = time.monotonic() + budget
    while pending and time.monotonic() < deadline:
        for fd, _event in poller.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            s = pending.pop(fd)
            poller.unregister(fd)
            code = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                _count(errors, code, str(code))
                s.close()
                continue
            if payload:
                try:
                    s.send(payload)
                except OSError as exc:
                    _count(errors, exc.errno, type(exc).__name__)
                    s.close()
                    continue
            opened.append(s)
    if pending:
        errors["connect timed out"] = len(pending)
        for s in pending.values():
            s.close()
    return opened, errors


def closed_by_server(socks: list[socket.socket]) -> int:
    closed = 0
    for s in socks:
        try:
            s.recv(4096, socket.MSG_PEEK)  # end of file, or an answer (a TLS alert)
            closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def main() -> None:
    spec = json.loads(sys.argv[1])
    limit = raise_nofile(int(spec["count"]) + 64)
    start = time.monotonic()
    socks, errors = open_all(spec["host"], int(spec["port"]), int(spec["count"]),
                             float(spec["connect_budget"]), bytes.fromhex(spec["send"]))
    print(json.dumps({"opened": len(socks), "errors": errors, "uid": os.getuid(),
                      "nofile": limit, "seconds": round(time.monotonic() - start, 3)}),
          flush=True)
    select.select([sys.stdin], [], [], float(spec["hold_max"]))
    print(json.dumps({"closed_by_server": closed_by_server(socks), "held": len(socks)}),
          flush=True)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
