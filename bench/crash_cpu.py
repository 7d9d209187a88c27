"""CPU per crash -> replacement, and the gap, for taskmux alone: steadier than wall time on a
busy machine.

Run by hand: `.venv/bin/python bench/crash_cpu.py [--crashes N] [--tree PATH]`. N tasks wait
on a FIFO each; one at a time is let go, exits 1 and is restarted (``restart_delay = 0``).
The figures: the CPU time (user + system) spent from the exit until the replacement runs, by
the daemon with its children (tmux clients) and by the private tmux server with its
children (every runner, every task shell), and the gap from the exit to the next start.
``--delay S`` makes each restart wait S seconds (``restart_delay = S``): the gap is then
printed minus the wait the daemon chose (its ``auto_restart`` event), as bench/peers.py does.
``CRASH_CPU_DUMP=FILE`` writes each crash's exit and next start (wall clock) and wait as JSON.
``--tree`` runs another checkout of taskmux (its ``taskmuxd``/``taskmuxctl`` put first on
``PYTHONPATH``), so a before and an after are measured the same way in one sitting.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import compile_bytecode
from bench.hundred_cpu import reaped_ms, run_ms
from bench.peers import Taskmux, children, wait


def cpu_all_ms(pid: int) -> float:
    """The CPU of ``pid``'s threads (schedstat, in ns resolution: the clock ticks of
    /proc/PID/stat lose up to 10 ms per process, as much as a crash costs) plus cutime +
    cstime (its reaped children, in ticks: the mean stays true), in ms."""
    return run_ms(pid) + reaped_ms(pid)


def tree_cpu_ms(pid: int) -> float:
    """The CPU of ``pid`` and of its live descendants (reaped ones are in cutime/cstime)."""
    total = cpu_all_ms(pid)
    for kid in children(pid):
        try:
            total += tree_cpu_ms(kid)
        except OSError:
            pass
    return total


def tmux_server_pid(socket_name: str) -> int:
    out = subprocess.run(["tmux", "-L", socket_name, "display-message", "-p", "#{pid}"],
                         capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crashes", type=int, default=20)
    parser.add_argument("--tree", help="another taskmux checkout to measure")
    parser.add_argument("--delay", type=float, default=0.0, help="restart_delay (seconds)")
    args = parser.parse_args()
    compile_bytecode()
    if args.tree:
        args.tree = os.path.abspath(args.tree)  # the daemon runs in another folder
    work = tempfile.mkdtemp(prefix="tmxcpu-")
    t = Taskmux(work)
    if args.tree:
        subprocess.run([sys.executable, "-m", "compileall", "-q", args.tree], check=False,
                       env={k: v for k, v in os.environ.items()
                            if k != "PYTHONDONTWRITEBYTECODE"})
        t.env["PYTHONPATH"] = args.tree
    os.chdir(work)  # ``python -m taskmuxd`` puts the working folder first on its path
    d = os.path.join(work, "d")
    os.makedirs(d)
    n = args.crashes
    for i in range(n):
        os.mkfifo(os.path.join(d, f"go{i}"))
    body = "".join(
        f'[tasks.c{i}]\ncommand = "echo $(date +%s.%N) >> {d}/starts{i}; '
        f'if [ -f {d}/done{i} ]; then exec sleep 600; fi; read x < {d}/go{i}; '
        f'touch {d}/done{i}; echo $(date +%s.%N) >> {d}/exits{i}; exit 1"\n'
        f'restart_policy = "always"\nrestart_delay = {args.delay}\n' for i in range(n))
    try:
        profile = os.environ.get("CRASH_CPU_PROFILE")  # a cProfile output file for the daemon
        if profile:
            t.proc = subprocess.Popen([sys.executable, "-m", "cProfile", "-o", profile, "-m",
                                       "taskmuxd", "run"], env=t.env)
            assert wait(lambda: os.path.exists(os.path.join(t.home, "ctl.sock")), 20)
            time.sleep(1)
        else:
            t.cold_start()
        assert t.proc is not None
        daemon = t.proc.pid
        proj = t.project("cpu", body)
        out = t.cli("start", cwd=proj)
        assert len(out["results"]) == n, out  # type: ignore[arg-type]
        server = tmux_server_pid(t.socket)

        def lines(name: str) -> list[float]:
            try:
                with open(os.path.join(d, name)) as fh:
                    return [float(x) for x in fh.read().split()]
            except OSError:
                return []

        def started_twice(i: int) -> bool:
            return len(lines(f"starts{i}")) >= 2

        def running(i: int) -> bool:
            path = os.path.join(t.home, "projects", "cpu", "run", f"c{i}.json")
            try:
                with open(path) as fh:
                    rec = json.load(fh)
            except (OSError, ValueError):
                return False
            return bool(rec.get("status") == "running" and rec.get("run_id", 0) >= 2)

        first_runner = {}
        for i in range(n):
            with open(os.path.join(t.home, "projects", "cpu", "run", f"c{i}.json")) as fh:
                first_runner[i] = json.load(fh)["runner_pid"]
        cpus, gaps, daemon_cpus = [], [], []
        stages: list[tuple[float, float, float]] = []
        recorded: list[float] = []  # the old run's exit as its runner recorded it
        for i in range(n):
            d0 = tree_cpu_ms(daemon)
            c0 = d0 + tree_cpu_ms(server)
            with open(os.path.join(d, f"go{i}"), "w") as fh:
                fh.write("go\n")
            assert wait(functools.partial(started_twice, i), 30), "no replacement"
            assert wait(functools.partial(running, i), 10), "the replacement's record"
            d1 = tree_cpu_ms(daemon)
            c1 = d1 + tree_cpu_ms(server)
            cpus.append(c1 - c0)
            daemon_cpus.append(d1 - d0)
            gaps.append(lines(f"starts{i}")[1] - lines(f"exits{i}")[0])
            if os.environ.get("CRASH_CPU_STAGES"):  # the old run's exit record, the new run's
                with open(os.path.join(t.home, "projects", "cpu", "run", f"c{i}.json")) as fh:
                    rec = json.load(fh)
                stages.append((rec.get("started_at") or 0.0, lines(f"exits{i}")[0],
                               lines(f"starts{i}")[1]))
                recorded.append(rec.get("after_at") or 0.0)
            if os.environ.get("CRASH_CPU_SHOW_LOG"):
                with open(os.path.join(t.home, "projects", "cpu", "run", f"c{i}.json")) as fh:
                    print("runner", json.load(fh)["runner_pid"], "first", first_runner[i])
        if os.environ.get("CRASH_CPU_SHOW_LOG"):
            with open(os.path.join(t.home, "projects", "cpu", "logs", f"c{n - 1}.log")) as fh:
                print(fh.read())
            print("exit", lines(f"exits{n - 1}"), "starts", lines(f"starts{n - 1}"))
        t.cli("stop", cwd=proj)
        waits = {}
        with open(os.path.join(t.home, "events.jsonl")) as fh:
            for line in fh:
                ev = json.loads(line)
                if ev.get("project") == "cpu" and ev.get("event") == "auto_restart":
                    waits.setdefault(int(ev["task"][1:]), float(ev["details"]["delay"]))
        dump = os.environ.get("CRASH_CPU_DUMP")  # per crash: the task's exit, its next start
        if dump:
            with open(dump, "w") as fh:
                json.dump([{"task": f"c{i}", "exit": lines(f"exits{i}")[0],
                            "start": lines(f"starts{i}")[1], "wait": waits.get(i, 0.0)}
                           for i in range(n)], fh)
        gaps = [g - waits.get(i, 0.0) for i, g in enumerate(gaps)]
        stages = [(f - waits.get(i, 0.0), e, s - waits.get(i, 0.0))
                  for i, (f, e, s) in enumerate(stages)]
        print(f"crashes: {n}; restart_delay {args.delay}; load {os.getloadavg()[0]:.1f}")
        print(f"CPU per crash -> replacement (daemon + tmux + runners + task), median: "
              f"{statistics.median(cpus):.1f} ms (mean {statistics.mean(cpus):.1f})")
        print(f"  of which the daemon's, median: {statistics.median(daemon_cpus):.1f} ms")
        print(f"exit -> next start, minus the wait, median: "
              f"{statistics.median(gaps) * 1000:.1f} ms")
        if stages:
            print(f"  exit -> the new run forked, median: "
                  f"{statistics.median(f - e for f, e, _ in stages) * 1000:.1f} ms; "
                  f"forked -> its first line: "
                  f"{statistics.median(s - f for f, _, s in stages) * 1000:.1f} ms")
            if all(recorded):  # every replacement came on a grant (its record says so)
                pairs = list(zip(recorded, stages, strict=True))
                print(f"  exit -> its runner's exit record, median: "
                      f"{statistics.median(a - e for a, (_, e, _) in pairs) * 1000:.1f} ms; "
                      f"exit record -> the new run forked, minus the wait: "
                      f"{statistics.median(f - a for a, (f, _, _) in pairs) * 1000:.1f} ms")
    finally:
        t.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
