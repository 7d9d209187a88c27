"""A stand-in for a service manager (systemd's Restart=on-failure, launchd's KeepAlive on
failure): runs a command, starts it again when it exits with a failure status, stops it on
SIGTERM. It records each start in ``--record`` (one line: start count and pid).

    python tests/fake_service.py --record FILE [--delay S] [--max-starts N] -- COMMAND...

The command runs with TASKMUX_SUPERVISED=fake-service, which is how a daemon learns that a
supervisor will start it again after ``update.restart``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", required=True)
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--max-starts", type=int, default=30)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    stopping = False
    child: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    env = {**os.environ, "TASKMUX_SUPERVISED": "fake-service"}
    starts = 0
    while not stopping and starts < args.max_starts:
        starts += 1
        child = subprocess.Popen(command, env=env)
        with open(args.record, "a") as fh:
            fh.write(f"{starts} {child.pid}\n")
        code = child.wait()
        if code == 0 or stopping:
            break
        time.sleep(args.delay)
    if child is not None and child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
