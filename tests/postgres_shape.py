"""A task shaped like PostgreSQL's postmaster, for containment tests.

``python postgres_shape.py PIDS_FILE [--chatty]``: ignores SIGHUP (postgres reads it as
"reload"), forks a child that ignores it too, appends one line ``PARENT CHILD`` to PIDS_FILE
and sleeps. SIGINT or SIGTERM end the child and then the parent with exit code 7, so that a
test can tell the task's own exit from anything else. ``--chatty`` prints a line every 50 ms.
"""

from __future__ import annotations

import os
import signal
import sys
import time

EXIT_CODE = 7


def main() -> None:
    path = sys.argv[1]
    chatty = "--chatty" in sys.argv[2:]
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        while True:
            time.sleep(60)

    def stop(_sig: int, _frame: object) -> None:
        os.kill(child, signal.SIGTERM)  # our own unreaped child: its pid is still ours
        os.waitpid(child, 0)
        os._exit(EXIT_CODE)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    with open(path, "a", encoding="ascii") as fh:
        fh.write(f"{os.getpid()} {child}\n")
    tick = 0
    while True:
        if chatty:
            print(f"tick {tick}", flush=True)
            tick += 1
        time.sleep(0.05 if chatty else 60)


if __name__ == "__main__":
    main()
