"""Supervision figures: starting 100 tasks, runner memory, daemon memory and idle CPU, and
the time from a crash to the replacement running (minus the backoff the policy chose).

Run by hand: `.venv/bin/python bench/tasks.py [--skip-supervisor] [--idle SECONDS]`.
Targets: 100 tasks running in < 2 s; runner PSS < 5 MB; daemon RSS < 50 MB with 20 projects of
5 tasks, idle CPU < 0.5% of a core; crash-to-replacement median < 100 ms.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BIN, PYTHON, compile_bytecode, kill_tmux


def cli(env: dict[str, str], *args: str, cwd: str | None = None) -> dict[str, object]:
    out = subprocess.run([f"{BIN}/taskmux", "--json", *args], env=env, cwd=cwd,
                         capture_output=True, text=True, check=False)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write(folder: str, text: str) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "taskmux.toml"), "w") as fh:
        fh.write(text)
    return folder


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Env:
    def __init__(self) -> None:
        self.home = tempfile.mkdtemp(prefix="tmxb-", dir="/tmp")
        self.work = tempfile.mkdtemp(prefix="tmxbw-")
        self.socket = f"tmxbench-{os.getpid()}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMUX_")}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env.update(TASKMUX_HOME=self.home, TASKMUX_TMUX_SOCKET=self.socket)

    def daemon_pid(self) -> int:
        return int(cli(self.env, "daemon", "status")["pid"])  # type: ignore[call-overload]

    def close(self) -> None:
        subprocess.run([f"{BIN}/taskmux", "daemon", "stop"], env=self.env,
                       capture_output=True, check=False)
        kill_tmux(self.socket)
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)


def start_100(e: Env) -> float:
    tasks = "".join(f"[tasks.t{i:03d}]\ncommand = \"sleep 3600\"\n" for i in range(100))
    proj = write(os.path.join(e.work, "hundred"), f'name = "hundred"\n{tasks}')
    cli(e.env, "daemon", "start")
    t0 = time.perf_counter()
    out = cli(e.env, "start", cwd=proj)
    elapsed = time.perf_counter() - t0
    assert "results" in out, out
    running = [r for r in out["results"] if r["action"] == "started"]  # type: ignore[union-attr]
    assert len(running) == 100, out
    return elapsed


def supervisord_100(workdir: str) -> float | None:
    venv = os.path.join(workdir, "sv")
    try:
        subprocess.run([PYTHON, "-m", "venv", venv], check=True)
        subprocess.run([f"{venv}/bin/pip", "install", "-q", "supervisor"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except subprocess.CalledProcessError:
        return None
    conf = os.path.join(workdir, "sv.conf")
    progs = "".join(f"[program:t{i:03d}]\ncommand=sleep 3600\nautostart=false\nstartsecs=0\n"
                    for i in range(100))
    with open(conf, "w") as fh:
        fh.write(f"[unix_http_server]\nfile={workdir}/sv.sock\n[supervisord]\n"
                 f"logfile={workdir}/sv.log\npidfile={workdir}/sv.pid\n"
                 "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = "
                 "supervisor.rpcinterface:make_main_rpcinterface\n[supervisorctl]\n"
                 f"serverurl=unix://{workdir}/sv.sock\n{progs}")
    subprocess.run([f"{venv}/bin/supervisord", "-c", conf], check=True)
    ctl = [f"{venv}/bin/supervisorctl", "-c", conf]
    try:
        deadline = time.monotonic() + 20
        while subprocess.run([*ctl, "status"], capture_output=True).returncode not in (0, 3):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)
        t0 = time.perf_counter()
        subprocess.run([*ctl, "start", "all"], capture_output=True, check=False)
        return time.perf_counter() - t0
    finally:
        subprocess.run([*ctl, "shutdown"], capture_output=True, check=False)


def runner_pss(e: Env) -> float:
    runs = os.path.join(e.home, "projects", "hundred", "run")
    pids = []
    for name in os.listdir(runs):
        if name.endswith(".json") and not name.endswith(".spec.json"):
            with open(os.path.join(runs, name)) as fh:
                pids.append(int(json.load(fh)["runner_pid"]))
    return statistics.median(pss_kb(p) for p in pids) / 1024


def many_projects(e: Env, idle: float) -> tuple[float, float]:
    cli(e.env, "stop", "-p", "hundred")
    cli(e.env, "daemon", "unregister", "hundred")
    for p in range(20):
        tasks = "".join(f"[tasks.t{i}]\ncommand = \"sleep 3600\"\n" for i in range(5))
        proj = write(os.path.join(e.work, f"proj{p:02d}"), f'name = "proj{p:02d}"\n{tasks}')
        cli(e.env, "start", cwd=proj)
    pid = e.daemon_pid()
    time.sleep(2)
    rss = rss_kb(pid) / 1024
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(idle)
    cpu = (cpu_seconds(pid) - c0) / (time.monotonic() - t0) * 100
    return rss, cpu


def crash_latency(e: Env, samples: int) -> list[float]:
    proj = write(os.path.join(e.work, "crashy"),
                 'name = "crashy"\n[tasks.c]\ncommand = "sleep 0.3; exit 1"\n'
                 'restart_policy = "always"\nrestart_backoff = 1.0\nmax_restarts = 1000\n')
    cli(e.env, "start", cwd=proj)
    record = os.path.join(e.home, "projects", "crashy", "run", "c.json")
    events_path = os.path.join(e.home, "events.jsonl")
    out: list[float] = []
    seen_runs: dict[int, dict[str, float]] = {}
    deadline = time.monotonic() + samples * 3 + 20
    while len(seen_runs) < samples + 2 and time.monotonic() < deadline:
        try:
            with open(record) as fh:
                rec = json.load(fh)
        except (OSError, ValueError):
            continue
        run = seen_runs.setdefault(int(rec["run_id"]), {})
        if rec.get("started_at"):
            run["started"] = float(rec["started_at"])
        if rec.get("exited_at"):
            run["exited"] = float(rec["exited_at"])
        time.sleep(0.01)
    delays = []
    with open(events_path) as fh:
        for line in fh:
            ev = json.loads(line)
            if ev["project"] == "crashy" and ev["event"] == "auto_restart":
                delays.append(float(ev["details"]["delay"]))
    runs = sorted(seen_runs)
    for i, (a, b) in enumerate(itertools.pairwise(runs)):
        if "exited" in seen_runs[a] and "started" in seen_runs[b] and i < len(delays):
            out.append(seen_runs[b]["started"] - seen_runs[a]["exited"] - delays[a - 1])
    cli(e.env, "stop", cwd=proj)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-supervisor", action="store_true")
    parser.add_argument("--idle", type=float, default=60.0)
    parser.add_argument("--samples", type=int, default=15)
    args = parser.parse_args()
    compile_bytecode()
    e = Env()
    try:
        took = start_100(e)
        print(f"start -> 100 independent tasks running: {took:.2f} s")
        if not args.skip_supervisor:
            sv = supervisord_100(e.work)
            if sv is not None:
                print(f"  supervisorctl start all (100 programs), same machine: {sv:.2f} s")
        print(f"runner PSS per task (median of 100): {runner_pss(e):.2f} MB")
        lat = crash_latency(e, args.samples)
        if lat:
            print(f"crash -> replacement running, minus the chosen backoff: median "
                  f"{statistics.median(lat) * 1000:.0f} ms (n={len(lat)}, max "
                  f"{max(lat) * 1000:.0f} ms)")
        rss, cpu = many_projects(e, args.idle)
        print(f"daemon with 20 projects x 5 tasks: RSS {rss:.1f} MB; idle CPU over "
              f"{args.idle:.0f} s: {cpu:.3f}% of a core")
    finally:
        e.close()


if __name__ == "__main__":
    main()
