"""Who notices what, how fast: the ownership figures of issue 11.

Run by hand: `.venv/bin/python bench/ownership.py [--samples 4] [--bound 60]`.

- runner ``kill -9`` → the daemon noticed (the task's first event after the kill, by the
  event log's own timestamps). Target < 100 ms.
- runner ``kill -9`` → the replacement running (its runner record's start), minus the backoff
  the policy chose (the ``auto_restart`` event's delay).
- ``tmux kill-server`` → every task of a 20-task project running again (a new process, seen in
  status and in /proc), once with plain tasks and once with a quarter of them PostgreSQL-shaped
  (they ignore SIGHUP and fork). Target < 2 s.

After each, the copies of each task are counted (``tests/chaos.py``: a PostgreSQL-shaped task
that ignores SIGHUP and outlives its runner is a duplicate). Every project here runs on a
private daemon, TASKMUX_HOME and tmux socket; see ``bench/chaos.py`` for the kill -9 rounds.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import compile_bytecode
from tests.chaos import Chaos, plain_tasks, private_chaos
from tests.chaos_look import TaskSpec, copies, marked_processes


def event_time(ev: dict[str, Any]) -> float:
    stamp = str(ev["time"])  # 2026-11-30T05:13:25.123Z
    return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + float(
        f"0{stamp[19:-1]}")


def events_since(chaos: Chaos, offset: int) -> list[dict[str, Any]]:
    try:
        with open(os.path.join(chaos.home, "events.jsonl"), "rb") as fh:
            fh.seek(offset)
            lines = fh.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return out


def runner_record(chaos: Chaos, task: str) -> dict[str, Any] | None:
    path = os.path.join(chaos.home, "projects", chaos.project, "run", f"{task}.json")
    try:
        with open(path, encoding="utf-8") as fh:
            data: dict[str, Any] = json.load(fh)
            return data
    except (OSError, ValueError):
        return None


def extra_copies(chaos: Chaos) -> int:
    return sum(len(p) - 1 for p in copies(marked_processes(chaos.run)).values() if len(p) > 1)


def fmt_ms(samples: list[float]) -> str:
    if not samples:
        return "no sample"
    return (f"median {statistics.median(samples) * 1000:.0f} ms, max "
            f"{max(samples) * 1000:.0f} ms (n={len(samples)})")


def runner_kills(samples: int, bound: float) -> None:
    tasks = [TaskSpec("plain", "sleeper"), TaskSpec("pgshape", "forker")]
    noticed: list[float] = []
    replaced: list[float] = []
    missed = dups = 0
    with private_chaos(tasks, "owner") as chaos:
        chaos.start_daemon()
        chaos.start_project()
        chaos.wait_all_up()
        for i in range(samples):
            task = tasks[i % len(tasks)].name
            rec = runner_record(chaos, task)
            if not rec or rec.get("status") != "running":
                print(f"  {task}: no running runner record; skipped")
                continue
            offset = os.path.getsize(os.path.join(chaos.home, "events.jsonl"))
            killed = time.time()
            os.kill(int(rec["runner_pid"]), 9)
            seen: float | None = None
            delay: float | None = None
            started: float | None = None
            deadline = time.monotonic() + bound
            while time.monotonic() < deadline and started is None:
                for ev in events_since(chaos, offset):
                    if ev.get("task") != task:
                        continue
                    if seen is None:
                        seen = event_time(ev) - killed
                    if ev.get("event") == "auto_restart" and delay is None:
                        delay = float(ev.get("details", {}).get("delay", 0.0))
                new = runner_record(chaos, task)
                if new and new.get("run_id") != rec.get("run_id") and new.get("started_at"):
                    started = float(new["started_at"]) - killed
                time.sleep(0.005)
            time.sleep(0.5)  # a leftover copy of the old run shows by now
            extra = extra_copies(chaos)
            dups += extra
            text = (f"  {task}: noticed after {seen * 1000:.0f} ms" if seen is not None
                    else f"  {task}: not noticed within {bound:.0f} s")
            if started is not None:
                minus = started - (delay or 0.0)
                replaced.append(minus)
                text += (f"; replacement running after {started * 1000:.0f} ms "
                         f"(backoff {delay or 0.0:.2f} s: {minus * 1000:.0f} ms beyond it)")
            else:
                missed += 1
                text += "; no replacement"
            print(text + f"; duplicate copies now: {extra}", flush=True)
            if seen is not None:
                noticed.append(seen)
            chaos.clear_faults()
            chaos.prepare()
            chaos.wait_all_up(bound)
    print(f"runner kill -9 -> noticed: {fmt_ms(noticed)}; not noticed within {bound:.0f} s: "
          f"{samples - len(noticed)} (target < 100 ms)")
    print(f"runner kill -9 -> replacement running, minus the backoff: {fmt_ms(replaced)}; "
          f"no replacement: {missed}; duplicate copies left: {dups}")


def tmux_kills(samples: int, bound: float, count: int, forkers: bool) -> None:
    took: list[float] = []
    dups = 0
    shape = "a quarter of them PostgreSQL-shaped" if forkers else "all plain sleepers"
    print(f"tmux kill-server, {count} tasks, {shape}:", flush=True)
    with private_chaos(plain_tasks(count, forkers), "twenty") as chaos:
        chaos.start_daemon()
        chaos.start_project()
        chaos.wait_all_up()
        for _ in range(samples):
            before = {t["name"]: t["pid"] for t in chaos.status()["tasks"]}
            t0 = time.monotonic()
            subprocess.run(["tmux", "-L", chaos.tmux_socket, "kill-server"],
                           capture_output=True, check=False)
            back: float | None = None
            while time.monotonic() - t0 < bound:
                try:
                    st = chaos.status()
                except (OSError, RuntimeError):
                    continue
                live = copies(marked_processes(chaos.run))
                if all(t["state"] == "running" and t["pid"] and t["pid"] != before[t["name"]]
                       and live.get(t["name"]) for t in st["tasks"]):
                    back = time.monotonic() - t0
                    break
                time.sleep(0.01)
            time.sleep(0.5)
            extra = extra_copies(chaos)
            dups += extra
            if back is None:
                st = chaos.status()
                down = sorted(f"{t['name']}({t['state']})" for t in st["tasks"]
                              if t["state"] != "running")
                print(f"  not all running again within {bound:.0f} s; down: "
                      f"{', '.join(down) or 'none (but old pids or no process)'}; "
                      f"duplicate copies: {extra}", flush=True)
            else:
                took.append(back)
                print(f"  all {count} running again after {back * 1000:.0f} ms; duplicate "
                      f"copies: {extra}", flush=True)
            chaos.clear_faults()
            chaos.prepare()
            chaos.wait_all_up(bound)
    print(f"tmux kill-server -> all {count} tasks ({shape}) running again: {fmt_ms(took)}; "
          f"not within "
          f"{bound:.0f} s: {samples - len(took)}; duplicate copies left: {dups} "
          f"(target < 2 s, 0 duplicates)")


def _interrupt(signum: int, frame: object) -> None:
    del signum, frame
    raise KeyboardInterrupt  # so that everything started is cleaned up on the way out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=4, help="samples of each (default 4)")
    parser.add_argument("--bound", type=float, default=60.0,
                        help="seconds to wait for a notice or a comeback (default 60)")
    parser.add_argument("--tasks", type=int, default=20,
                        help="tasks in the tmux kill-server project (default 20)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    compile_bytecode()
    runner_kills(args.samples, args.bound)
    tmux_kills(args.samples, args.bound, args.tasks, forkers=False)
    tmux_kills(args.samples, args.bound, args.tasks, forkers=True)


if __name__ == "__main__":
    main()
