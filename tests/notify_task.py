"""A task that speaks sd_notify with the socket module alone (no library), for the tests.

    python notify_task.py READY_AFTER STOP_PINGING_FLAG

It says STATUS=starting, then after READY_AFTER seconds READY=1 with STATUS=serving, and
pings WATCHDOG=1 every WATCHDOG_USEC/4 (when set) until the file STOP_PINGING_FLAG holds its
pid; then it keeps running, silent (a later run, with another pid, pings again).
"""

from __future__ import annotations

import os
import socket
import sys
import time


def send(message: str) -> None:
    path = os.environ["NOTIFY_SOCKET"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(message.encode(), path)


def starved(flag: str) -> bool:
    try:
        with open(flag, encoding="utf-8") as fh:
            return fh.read().strip() == str(os.getpid())
    except OSError:
        return False


def main() -> None:
    ready_after, flag = float(sys.argv[1]), sys.argv[2]
    print("pid", os.getpid(), "socket", os.environ.get("NOTIFY_SOCKET"), flush=True)
    send("STATUS=starting")
    time.sleep(ready_after)
    send("READY=1\nSTATUS=serving 3 clients")
    usec = int(os.environ.get("WATCHDOG_USEC") or 0)
    every = usec / 4e6 if usec else 3600.0
    while True:
        if usec and not starved(flag):
            send("WATCHDOG=1")
        time.sleep(every)


if __name__ == "__main__":
    main()
