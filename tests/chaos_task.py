"""The programs the chaos harness runs as tasks (``tests/chaos.py``).

``python3 -S chaos_task.py --chaos-marker=RUN:TASK KIND [ALIVE_FILE]``. The marker is one
exact argument, so a scan of /proc/*/cmdline finds every process of the task (a forked child
keeps it too) and never the ``/bin/sh -c`` wrapper, whose whole command is one argument.

Kinds: ``sleeper`` runs until stopped; ``http`` serves 200 on $PORT; ``crash`` exits 1 after
0.3 s; ``chatty`` writes a line every 5 ms; ``forker`` is the PostgreSQL shape: it ignores
SIGHUP, forks a child that ignores it too, and on SIGTERM/SIGINT ends the child, then itself.
``ALIVE_FILE``, when given, is created once the program is up (for ``health_check``).
"""

from __future__ import annotations

import os
import signal
import sys
import time


def _alive(path: str | None) -> None:
    if path:
        with open(path, "w") as fh:
            fh.write(f"{os.getpid()}\n")


def _serve_http(alive: str | None) -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Ok(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"ok\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Ok)
    _alive(alive)
    server.serve_forever()


def _fork_and_wait(alive: str | None) -> None:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        while True:
            time.sleep(3600)

    def shut_down(signum: int, frame: object) -> None:
        del signum, frame
        try:
            os.kill(child, signal.SIGTERM)
            os.waitpid(child, 0)
        except OSError:
            pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    _alive(alive)
    while True:
        time.sleep(3600)


def main(argv: list[str]) -> None:
    kind = argv[2] if len(argv) > 2 else "sleeper"
    alive = argv[3] if len(argv) > 3 else None
    if kind == "http":
        _serve_http(alive)
    elif kind == "crash":
        time.sleep(0.3)
        sys.exit(1)
    elif kind == "chatty":
        _alive(alive)
        n = 0
        while True:
            n += 1
            print(f"chatty line {n}: the quick brown fox jumps over the lazy dog", flush=True)
            time.sleep(0.005)
    elif kind == "forker":
        _fork_and_wait(alive)
    else:
        _alive(alive)
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except KeyboardInterrupt:
        sys.exit(130)
