"""Crash -> replacement of two checkouts of taskmux, interleaved crash by crash: a before and an
after measured under the same load, which on a busy machine swings more between two runs of a
bench than the difference looked for.

Run by hand: `.venv/bin/python bench/crash_ab.py --tree OTHER [--crashes N] [--delay S]`.
Two daemons run side by side, this checkout's and OTHER's (its ``taskmuxd``/``taskmuxctl``
first on ``PYTHONPATH``), each with N tasks that wait on a FIFO each; one crash is let go in
one, then one in the other, and so on, alternating which goes first. Each task exits 1 once
and is restarted after ``restart_delay = S`` (0: at once). The figure is bench/peers.py's:
the task's next start line minus its exit line, minus the wait the daemon chose (its
``auto_restart`` event); medians side by side, with the ratio, and the median of the
differences of each pair.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import compile_bytecode
from bench.peers import Taskmux, wait

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Side:
    """One checkout's daemon and its crashing tasks."""

    def __init__(self, tree: str, work: str, n: int, delay: float) -> None:
        self.tree, self.n = tree, n
        self.t = Taskmux(work)
        self.t.env["PYTHONPATH"] = tree
        self.d = os.path.join(work, "d")
        os.makedirs(self.d)
        for i in range(n):
            os.mkfifo(os.path.join(self.d, f"go{i}"))
        d = self.d
        self.body = "".join(
            f'[tasks.c{i}]\ncommand = "echo $(date +%s.%N) >> {d}/starts{i}; '
            f'if [ -f {d}/done{i} ]; then exec sleep 600; fi; read x < {d}/go{i}; '
            f'touch {d}/done{i}; echo $(date +%s.%N) >> {d}/exits{i}; exit 1"\n'
            f'restart_policy = "always"\nrestart_delay = {delay}\n' for i in range(n))

    def start(self) -> None:
        self.t.cold_start()
        self.proj = self.t.project("ab", self.body)
        out = self.t.cli("start", cwd=self.proj)
        assert len(out["results"]) == self.n, out  # type: ignore[arg-type]

    def lines(self, name: str) -> list[float]:
        try:
            with open(os.path.join(self.d, name)) as fh:
                return [float(x) for x in fh.read().split()]
        except OSError:
            return []

    def crash(self, i: int) -> None:
        with open(os.path.join(self.d, f"go{i}"), "w") as fh:
            fh.write("go\n")
        assert wait(lambda: len(self.lines(f"starts{i}")) >= 2, 30), "no replacement"

    def gaps(self) -> list[float]:
        """Per crash, ms from the exit line to the next start line, minus the wait."""
        self.t.cli("stop", cwd=self.proj)
        waits: dict[int, float] = {}
        with open(os.path.join(self.t.home, "events.jsonl")) as fh:
            for line in fh:
                ev = json.loads(line)
                if ev.get("project") == "ab" and ev.get("event") == "auto_restart":
                    waits.setdefault(int(ev["task"][1:]), float(ev["details"]["delay"]))
        return [(self.lines(f"starts{i}")[1] - self.lines(f"exits{i}")[0]
                 - waits.get(i, 0.0)) * 1000 for i in range(self.n)]

    def close(self) -> None:
        self.t.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", required=True, help="the other taskmux checkout")
    parser.add_argument("--crashes", type=int, default=20, help="crashes per checkout")
    parser.add_argument("--delay", type=float, default=1.0, help="restart_delay (seconds)")
    args = parser.parse_args()
    other = os.path.abspath(args.tree)
    compile_bytecode()
    subprocess.run([sys.executable, "-m", "compileall", "-q", other], check=False,
                   env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})
    work = tempfile.mkdtemp(prefix="tmxab-")
    os.chdir(work)  # ``python -m taskmuxd`` puts the working folder first on its path
    sides = [Side(tree, os.path.join(work, name), args.crashes, args.delay)
             for name, tree in (("this", HERE), ("other", other))]
    try:
        for side in sides:
            side.start()
        for i in range(args.crashes):
            for side in sides if i % 2 == 0 else sides[::-1]:
                side.crash(i)
        this, that = (side.gaps() for side in sides)
    finally:
        for side in sides:
            side.close()
        shutil.rmtree(work, ignore_errors=True)
    a, b = statistics.median(this), statistics.median(that)
    paired = statistics.median(x - y for x, y in zip(this, that, strict=True))
    print(f"crashes: {args.crashes} each, interleaved; restart_delay {args.delay}; "
          f"load {os.getloadavg()[0]:.1f}")
    print(f"exit -> next start, minus the wait, median (ms): this {a:.2f}, "
          f"{os.path.basename(other) or other} {b:.2f}, ratio {a / b:.2f}; "
          f"median of paired differences {paired:+.2f}")


if __name__ == "__main__":
    main()
