"""CPU a daemon start spends from exec until READY, this tree beside a reference commit.

Run by hand: `env -u PYTHONDONTWRITEBYTECODE .venv/bin/python bench/daemon_boot.py
[--runs N] [--ref REV]`. The reference (default: the commit before the start-up work) is
unpacked from git (``git archive``: its taskmuxd and taskmuxctl) into a temporary folder and
run by the same interpreter and installed libraries; only the taskmux sources differ. Runs
alternate between the two trees, so that the machine's load weighs on both alike.

Each run: a private TASKMUX_HOME holding the tests' safe settings (the proxy on a free port,
no plain-HTTP redirect, no DNS server, no hosts file), its own tmux server; ``python -m
taskmuxd run`` is polled with ``daemon.status`` until it answers ``ready: true``; the figure is
the daemon's CPU read then. The daemon is stopped (SIGTERM), its tmux server killed and its
home removed.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import PYTHON, daemon_ready, end_daemon  # noqa: E402

REFERENCE = "dea6084"  # the tree before the daemon's start-up CPU work
SAFE_CONFIG = ('proxy_https_port = 0\nproxy_http_redirect_port = 0\nhost_resolver = "noop"\n'
               'dns_server_port = 0\nhosts_file = "{home}/hosts"\n')


def cpu_s(pid: int) -> tuple[float, float, float]:
    """CPU seconds of ``pid`` so far: user and system (in clock ticks, 10 ms), and their sum
    to the nanosecond (the scheduler's count, over the threads alive, which at READY are all
    the threads the daemon started: its worker threads wait in their pool)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(") ", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
            total += int(fh.read().split()[0])
    return int(fields[11]) / tick, int(fields[12]) / tick, total / 1e9


def one_start(tree: str) -> tuple[float, float, float]:
    """Start a daemon from ``tree``; its (user, system, total) CPU seconds at READY."""
    home = tempfile.mkdtemp(prefix="tmxboot-", dir="/tmp")
    with open(os.path.join(home, "config.toml"), "w", encoding="utf-8") as fh:
        fh.write(SAFE_CONFIG.format(home=home))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TASKMUX_", "NOTIFY_SOCKET", "WATCHDOG_", "TMUX",
                                "PYTHONDONTWRITEBYTECODE"))}
    env.update(TASKMUX_HOME=home, PYTHONPATH=tree,
               TASKMUX_TMUX_SOCKET=f"tmxboot-{os.getpid()}-{os.path.basename(home)}")
    sock = os.path.join(home, "ctl.sock")
    proc = subprocess.Popen([PYTHON, "-m", "taskmuxd", "run"], cwd=tree, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not daemon_ready(sock):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the daemon from {tree} did not become ready")
            time.sleep(0.01)
        return cpu_s(proc.pid)
    finally:
        end_daemon(proc, env["TASKMUX_TMUX_SOCKET"], home)


def compile_tree(tree: str) -> None:
    subprocess.run([PYTHON, "-m", "compileall", "-q", os.path.join(tree, "taskmuxctl"),
                    os.path.join(tree, "taskmuxd")], check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--ref", default=REFERENCE, help="the reference commit (git revision)")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="tmxboot-ref-", dir="/tmp")
    ref_tree = os.path.join(scratch, "tree")
    os.mkdir(ref_tree)
    try:
        archive = subprocess.run(["git", "-C", ROOT, "archive", args.ref, "taskmuxd",
                                  "taskmuxctl"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", ref_tree], input=archive, check=True)
        trees = {f"reference {args.ref}": ref_tree, "this tree": ROOT}
        for tree in trees.values():
            compile_tree(tree)
            one_start(tree)  # warm the page cache
        got: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
        for _ in range(args.runs):
            for name, tree in trees.items():
                got[name].append(one_start(tree))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"daemon CPU from exec to READY, median of {args.runs} starts (ms)")
    print(f"{'':24} {'CPU':>6} {'user':>6} {'sys':>6}")
    totals = []
    for name, samples in got.items():
        total, user, system = (statistics.median(run[i] for run in samples) * 1000
                               for i in (2, 0, 1))
        totals.append(total)
        print(f"{name:24} {total:6.0f} {user:6.0f} {system:6.0f}")
    print(f"this tree / reference: {totals[1] / totals[0]:.2f} "
          f"(CPU: the scheduler's count; user and sys: in 10 ms clock ticks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
