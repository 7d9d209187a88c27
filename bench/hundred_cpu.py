"""CPU and wall time of starting and stopping 100 tasks, for one or more checkouts in turn.

Run by hand: `.venv/bin/python bench/hundred_cpu.py [--rounds N] [--tree PATH ...]`. Each
round starts a private daemon of each checkout in turn (this one when no ``--tree`` is
given; ``.`` names this one), starts 100 ``sleep`` tasks, stops them, and ends the daemon, so
that a before and an after share the machine's load. Per checkout, medians over the rounds:
the wall time of ``taskmux start`` and ``taskmux stop``, the daemon's CPU (user + system)
in each, and the CPU of the private tmux server with its children (every runner and task,
the reaped ones included), which in the stop is the runners' exit path. The start begins
once the daemon is READY (its own boot is the cold-start figure of ``bench/peers.py``).

``--warm`` (for checkouts with warm runners, ``warm_runner_seconds``): the stopped tasks'
runners stay in their windows, and a second start after the stop is measured too (its wall
time, the daemon's CPU, and the CPU of tmux, the runners and the tasks in it). Without it,
a checkout that has warm runners runs with ``warm_runner_seconds = 0``, so that the stop's
figures include every runner's exit, as before.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import compile_bytecode
from bench.peers import Taskmux, children, cpu_ms, wait

N = 100
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_ms(pid: int) -> float:
    """The CPU time of ``pid``'s threads so far, in nanosecond resolution (schedstat): the
    clock ticks of /proc/PID/stat lose up to 10 ms per process, which over a hundred
    runners is as large as what is measured."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
            total += int(fh.read().split()[0])
    return total / 1e6


def reaped_ms(pid: int) -> float:
    """cutime + cstime of ``pid``: the CPU of its children it has reaped, in ms."""
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(") ", 1)[1].split()
    return (int(f[13]) + int(f[14])) * 1000 / os.sysconf("SC_CLK_TCK")


def tree_cpu_ms(pid: int) -> float:
    """The CPU of ``pid`` and of its live descendants, reaped ones included."""
    total = run_ms(pid) + reaped_ms(pid)
    for kid in children(pid):
        try:
            total += tree_cpu_ms(kid)
        except OSError:
            pass
    return total


def server_pid(socket_name: str) -> int | None:
    out = subprocess.run(["tmux", "-L", socket_name, "display-message", "-p", "#{pid}"],
                         capture_output=True, text=True, check=False)
    return int(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None


def one_round(work: str, tree: str, warm: bool) -> dict[str, float]:
    t = Taskmux(work)
    if tree != HERE:
        t.env["PYTHONPATH"] = tree
    with open(os.path.join(tree, "taskmuxctl", "core", "settings.py")) as fh:
        knows_warm = "warm_runner_seconds" in fh.read()
    if knows_warm and not warm:  # the stop's figures include every runner's exit
        with open(os.path.join(t.home, "config.toml"), "a") as fh:
            fh.write("warm_runner_seconds = 0\n")
    os.chdir(work)  # ``python -m taskmuxd`` puts the working folder first on its path
    try:
        t.cold_start()
        assert t.proc is not None
        assert wait(t.ready, 20), "taskmuxd did not become ready"  # its boot is not the start
        daemon = t.proc.pid
        body = "".join(f'[tasks.t{i:03d}]\ncommand = "sleep 3600"\n' for i in range(N))
        proj = t.project(f"hundred{abs(hash(tree)) % 1000}", body)
        server = server_pid(t.socket)
        s0 = tree_cpu_ms(server) if server else 0.0
        c0, t0 = cpu_ms(daemon), time.perf_counter()
        out = t.cli("start", cwd=proj)
        start = time.perf_counter() - t0
        cpu_start = cpu_ms(daemon) - c0
        assert sum(r["action"] == "started" for r in out["results"]) == N, out  # type: ignore
        server = server_pid(t.socket)
        assert server is not None
        s1, own1 = tree_cpu_ms(server), run_ms(server)
        c0, t0 = cpu_ms(daemon), time.perf_counter()
        t.cli("stop", cwd=proj)
        stop = time.perf_counter() - t0
        cpu_stop = cpu_ms(daemon) - c0
        if warm:  # the runners stay in their panes, idle: the next start orders them
            s2, own2 = tree_cpu_ms(server), run_ms(server)
        else:
            wait(lambda: not children(server), 20)  # every runner reaped: its CPU counted
            s2, own2 = run_ms(server) + reaped_ms(server), run_ms(server)
        figures = {"start (ms)": start * 1000, "stop (ms)": stop * 1000,
                   "daemon CPU, start (ms)": cpu_start, "daemon CPU, stop (ms)": cpu_stop,
                   "tmux+runners+tasks CPU, start (ms)": s1 - s0,
                   "tmux+runners CPU, stop (ms)": s2 - s1,
                   "  of which the tmux server itself (ms)": own2 - own1}
        if warm:
            c0, t0 = cpu_ms(daemon), time.perf_counter()
            out = t.cli("start", cwd=proj)
            figures["start again, warm runners (ms)"] = (time.perf_counter() - t0) * 1000
            figures["daemon CPU, start again (ms)"] = cpu_ms(daemon) - c0
            figures["tmux+runners+tasks CPU, start again (ms)"] = tree_cpu_ms(server) - s2
            assert sum(r["action"] == "started" for r in out["results"]) == N, out  # type: ignore
            t.cli("stop", cwd=proj)
        return figures
    finally:
        t.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", action="append", help="a taskmux checkout (repeatable)")
    parser.add_argument("--warm", action="store_true",
                        help="after the stop, start again (warm runners) and stop again; "
                        "only for checkouts that have warm runners")
    args = parser.parse_args()
    trees = [os.path.abspath(x) for x in (args.tree or [HERE])]
    compile_bytecode()
    for tree in trees:
        subprocess.run([sys.executable, "-m", "compileall", "-q", tree], check=False,
                       env={k: v for k, v in os.environ.items()
                            if k != "PYTHONDONTWRITEBYTECODE"})
    work = tempfile.mkdtemp(prefix="tmxhundred-")
    load0 = os.getloadavg()[0]
    results: dict[str, list[dict[str, float]]] = {tree: [] for tree in trees}
    try:
        for _ in range(args.rounds):
            for tree in trees:
                results[tree].append(one_round(work, tree, args.warm))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    names = list(next(iter(results.values()))[0])
    print(f"{'median of ' + str(args.rounds) + ' rounds':38} "
          + " ".join(f"{os.path.basename(t) or t:>14}" for t in trees))
    for name in names:
        print(f"{name:38} " + " ".join(
            f"{statistics.median(r[name] for r in results[t]):14.1f}" for t in trees))
    print(f"load average (1 min): {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
