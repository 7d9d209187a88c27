"""Chaos: ``kill -9`` of the daemon at random moments, and what each one broke.

Run by hand: `.venv/bin/python bench/chaos.py [--rounds 100] [--seed N]`.

A private daemon (temporary TASKMUX_HOME, safe settings, its own tmux socket) supervises a
project of 16 tasks: health checks by URL and by command, crash loops, a chatty logger,
PostgreSQL-shaped forkers that ignore SIGHUP, tasks with ``restart_policy = "no"``. Each round
kills the daemon idle, 0-500 ms after a ``start``, ``restart`` or ``stop`` of several tasks, or
just after a crash loop's exit or relaunch; starts a new daemon; waits until nothing is
starting or stopping; then counts duplicate task processes, lost tasks, tasks reported dead
while running and corrupt state files (``tests/chaos.py`` says exactly how). Target: 0 of each
in every round. The figures of ``bench/ownership.py`` complete the picture.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import compile_bytecode
from tests.chaos import KINDS, Totals, private_chaos


def _interrupt(signum: int, frame: object) -> None:
    del signum, frame
    raise KeyboardInterrupt  # so that everything started is cleaned up on the way out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=100, help="rounds (default 100)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"moments to kill at, comma-separated (default {','.join(KINDS)})")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        parser.error(f"unknown moment(s) {', '.join(unknown)}; choose from {', '.join(KINDS)}")
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    compile_bytecode()
    totals = Totals()
    with private_chaos() as chaos:
        print(f"seed {seed}; home {chaos.home}; tmux -L {chaos.tmux_socket}; "
              f"{len(chaos.tasks)} tasks; run id {chaos.run}", flush=True)
        chaos.start_daemon()
        chaos.start_project()
        if not chaos.wait_all_up():
            print(f"warning: not every task was fine before the first round: "
                  f"{chaos.look().describe()}", flush=True)
        t0 = time.monotonic()
        for n in range(1, args.rounds + 1):
            r = chaos.round(n, rng.choice(kinds), rng)
            totals.rounds.append(r)
            print(r.line(), flush=True)
        took = time.monotonic() - t0
    print()
    print(totals.table())
    print(f"{len(totals.rounds)} rounds in {took:.0f} s")
    return 1 if any(r.findings.total for r in totals.rounds) else 0


if __name__ == "__main__":
    sys.exit(main())
