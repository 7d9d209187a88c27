"""taskmux beside supervisord and pm2, in one run: crash -> replacement, start and stop of 100
tasks, daemon cold start, daemon RSS and per-task PSS with 100 tasks.

Run by hand: `.venv/bin/python bench/peers.py [--no-peers] [--samples N] [--runs N]`. It
installs supervisor (pip, into a throwaway venv) and pm2 (npm, into a throwaway folder); a
peer that cannot be installed is left out, saying so. Every tool runs on private state (its own
home, socket and tmux server) and is stopped at the end.

How each figure is taken, the same way for every tool:

- crash -> replacement: the task is ``sh -c`` that appends its start time to a file, sleeps
  0.3 s, appends its exit time and exits 1; the figure is the next start minus the exit, minus
  the wait the tool was configured to take (each tool at its smallest wait).
- start / stop 100: from the command (``taskmux start``, ``supervisorctl start all``,
  ``pm2 start``) until it returns with every task alive (or gone); taskmux's begins once
  its daemon is READY (its boot is the cold-start figure). "start 100 again" is a second
  start after the stop: for taskmux, one whose stopped tasks' runners wait warm in their
  windows (``warm_runner_seconds``).
- cold start: from exec of the daemon until it answers a request on its socket.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BENCH_CONFIG, BIN, PYTHON, compile_bytecode, kill_tmux

N = 100
PARTS = ("cold", "hundred", "crash")  # what --only can pick
CRASHER = ('echo $(date +%s.%N) >> {d}/starts; sleep 0.3; echo $(date +%s.%N) >> {d}/exits; '
           'exit 1')


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        return next((int(line.split()[1]) for line in fh if line.startswith("Pss:")), 0)


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        return next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)


def cpu_ms(pid: int) -> float:
    """User + system CPU time of ``pid`` so far: steadier than the wall clock on a busy
    machine."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def gaps(folder: str, samples: int, timeout: float) -> list[float]:
    """Start-after-exit gaps of the crashing task, once ``samples`` of them are in."""
    def read(name: str) -> list[float]:
        with contextlib.suppress(OSError), open(os.path.join(folder, name)) as fh:
            return [float(x) for x in fh.read().split()]
        return []

    wait(lambda: len(read("starts")) > samples, timeout)
    starts, exits = read("starts"), read("exits")
    return [starts[i + 1] - exits[i] for i in range(min(len(exits), len(starts) - 1))]


def answers_unix(path: str, request: bytes) -> bool:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.settimeout(2)
        s.connect(path)
        s.sendall(request)
        return bool(s.recv(1))
    except OSError:
        return False
    finally:
        s.close()


class Figures(dict[str, dict[str, float]]):
    def put(self, tool: str, what: str, value: float) -> None:
        self.setdefault(what, {})[tool] = value


# -- taskmux ----------------------------------------------------------------------------------

class Taskmux:
    name = "taskmux"

    def __init__(self, work: str) -> None:
        self.home = tempfile.mkdtemp(prefix="tmxp-", dir="/tmp")
        self.work = work
        self.socket = f"tmxpeers-{os.getpid()}"
        with open(os.path.join(self.home, "config.toml"), "w") as fh:
            fh.write(BENCH_CONFIG)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMUX_")}
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env.update(TASKMUX_HOME=self.home, TASKMUX_TMUX_SOCKET=self.socket)
        self.proc: subprocess.Popen[bytes] | None = None
        self.cpu = self.cpu_start = self.cpu_stop = self.again = self.cpu_again = 0.0

    def cli(self, *args: str, cwd: str | None = None) -> dict[str, object]:
        out = subprocess.run([f"{BIN}/taskmux", "--json", *args], env=self.env, cwd=cwd,
                             capture_output=True, text=True, check=False)
        return dict(json.loads(out.stdout.strip().splitlines()[-1]))

    def project(self, name: str, body: str) -> str:
        folder = os.path.join(self.work, name)
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "taskmux.toml"), "w") as fh:
            fh.write(f'name = "{name}"\n{body}')
        return folder

    def cold_start(self) -> float:
        """exec -> the first answer to daemon.ping."""
        sock = os.path.join(self.home, "ctl.sock")
        ping = b'{"jsonrpc":"2.0","method":"daemon.ping","id":1}\n'
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([PYTHON, "-m", "taskmuxd", "run"], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait(lambda: answers_unix(sock, ping), 20), "taskmuxd did not answer"
        took = time.perf_counter() - t0
        self.cpu = cpu_ms(self.proc.pid)
        return took

    def stop_daemon(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)
            self.proc = None

    def ready(self) -> bool:
        """Whether the daemon has every subsystem up (it answers before: the cold start)."""
        sock = os.path.join(self.home, "ctl.sock")
        s = socket.socket(socket.AF_UNIX)
        try:
            s.settimeout(2)
            s.connect(sock)
            s.sendall(b'{"jsonrpc":"2.0","method":"daemon.status","id":1}\n')
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return bool(json.loads(data).get("result", {}).get("ready"))
        except (OSError, ValueError):
            return False
        finally:
            s.close()

    def start_stop_100(self) -> tuple[float, float, float, float]:
        tasks = "".join(f'[tasks.t{i:03d}]\ncommand = "sleep 3600"\n' for i in range(N))
        proj = self.project("hundred", tasks)
        assert self.proc is not None
        # The daemon's own start is the cold-start figure: the start of 100 begins once it is
        # READY (else it includes the end of the daemon's boot, which it waits for).
        assert wait(self.ready, 20), "taskmuxd did not become ready"
        c0, t0 = cpu_ms(self.proc.pid), time.perf_counter()
        out = self.cli("start", cwd=proj)
        start = time.perf_counter() - t0
        self.cpu_start = cpu_ms(self.proc.pid) - c0
        started = [r for r in out["results"] if r["action"] == "started"]  # type: ignore
        assert len(started) == N, out
        daemon_rss = rss_kb(self.proc.pid) / 1024
        pss = self.task_pss(proj)
        c0, t0 = cpu_ms(self.proc.pid), time.perf_counter()
        self.cli("stop", cwd=proj)
        stop = time.perf_counter() - t0
        self.cpu_stop = cpu_ms(self.proc.pid) - c0
        c0, t0 = cpu_ms(self.proc.pid), time.perf_counter()  # again: the runners are warm
        out = self.cli("start", cwd=proj)
        self.again = time.perf_counter() - t0
        self.cpu_again = cpu_ms(self.proc.pid) - c0
        assert sum(r["action"] == "started" for r in out["results"]) == N, out  # type: ignore
        self.cli("stop", cwd=proj)
        return start, stop, daemon_rss, pss

    def task_pss(self, proj: str) -> float:
        """Per task: the runner plus the program, median over the tasks (MB)."""
        run = os.path.join(self.home, "projects", "hundred", "run")
        per = []
        for name in os.listdir(run):
            if name.endswith(".json") and not name.endswith(".spec.json"):
                with open(os.path.join(run, name)) as fh:
                    rec = json.load(fh)
                with contextlib.suppress(OSError):
                    per.append(pss_kb(int(rec["runner_pid"])) + pss_kb(int(rec["pid"])))
        return median([p / 1024 for p in per])

    def crash(self, samples: int, wait: str, per_streak: int = 3) -> list[tuple[float, float]]:
        """(gap, the wait taskmux chose) per restart; ``wait``: the task's restart settings.
        Streaks of ``per_streak`` restarts, each in a project of its own, so that each
        begins with a first restart."""
        out: list[tuple[float, float]] = []
        streak = 0
        while len(out) < samples:
            streak += 1
            d = tempfile.mkdtemp(dir=self.work)
            name = f"crashy{streak}{abs(hash(wait)) % 1000}"
            proj = self.project(name, f'[tasks.c]\ncommand = "{CRASHER.format(d=d)}"\n'
                                f'restart_policy = "always"\n{wait}\n'
                                "max_restarts = 100000\n")
            if "results" not in self.cli("start", cwd=proj):
                return []  # this version refuses the settings asked for
            raw = gaps(d, per_streak, 30)
            self.cli("stop", cwd=proj)
            self.cli("daemon", "unregister", name)
            delays = []
            with open(os.path.join(self.home, "events.jsonl")) as fh:
                for line in fh:
                    ev = json.loads(line)
                    if ev["project"] == name and ev["event"] == "auto_restart":
                        delays.append(float(ev["details"]["delay"]))
            out += list(zip(raw, delays, strict=False))[:per_streak]
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_daemon()
        kill_tmux(self.socket)
        shutil.rmtree(self.home, ignore_errors=True)


# -- supervisord ------------------------------------------------------------------------------

class Supervisord:
    name = "supervisord"

    def __init__(self, work: str) -> None:
        self.work = os.path.join(work, "sv")
        os.makedirs(self.work)
        venv = os.path.join(self.work, "venv")
        subprocess.run([PYTHON, "-m", "venv", venv], check=True)
        subprocess.run([f"{venv}/bin/pip", "install", "-q", "supervisor"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.bin = f"{venv}/bin"
        self.conf = os.path.join(self.work, "sv.conf")
        self.sock = os.path.join(self.work, "sv.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.cpu = self.cpu_start = self.cpu_stop = self.again = self.cpu_again = 0.0

    def configure(self, programs: str) -> None:
        with open(self.conf, "w") as fh:
            fh.write(f"[unix_http_server]\nfile={self.sock}\n[supervisord]\n"
                     f"logfile={self.work}/sv.log\npidfile={self.work}/sv.pid\n"
                     # its programs' AUTO logs: in the bench's folder (removed at the end),
                     # not one pair per program per run left in /tmp
                     f"childlogdir={self.work}\n"
                     "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = "
                     "supervisor.rpcinterface:make_main_rpcinterface\n[supervisorctl]\n"
                     f"serverurl=unix://{self.sock}\n{programs}")

    def ctl(self, *args: str) -> None:
        subprocess.run([f"{self.bin}/supervisorctl", "-c", self.conf, *args],
                       capture_output=True, check=False)

    def cold_start(self) -> float:
        self.configure("")
        body = b"<?xml version='1.0'?><methodCall><methodName>supervisor.getState" \
               b"</methodName></methodCall>"
        req = (b"POST /RPC2 HTTP/1.0\r\nContent-Type: text/xml\r\nContent-Length: "
               + str(len(body)).encode() + b"\r\n\r\n" + body)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen([f"{self.bin}/supervisord", "-n", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait(lambda: answers_unix(self.sock, req), 20), "supervisord did not answer"
        took = time.perf_counter() - t0
        self.cpu = cpu_ms(self.proc.pid)
        return took

    def stop_daemon(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
            self.proc = None

    def run_with(self, programs: str) -> None:
        self.stop_daemon()
        self.configure(programs)
        self.cold_start_with_current()

    def cold_start_with_current(self) -> None:
        self.proc = subprocess.Popen([f"{self.bin}/supervisord", "-n", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert wait(lambda: os.path.exists(self.sock), 20)
        time.sleep(0.3)

    def start_stop_100(self) -> tuple[float, float, float, float]:
        self.run_with("".join(f"[program:t{i:03d}]\ncommand=sleep 3600\nautostart=false\n"
                              "startsecs=0\n" for i in range(N)))
        assert self.proc is not None
        c0, t0 = cpu_ms(self.proc.pid), time.perf_counter()
        self.ctl("start", "all")
        start = time.perf_counter() - t0
        self.cpu_start = cpu_ms(self.proc.pid) - c0
        kids = children(self.proc.pid)
        assert len(kids) == N, len(kids)
        rss = rss_kb(self.proc.pid) / 1024
        pss = median([pss_kb(k) / 1024 for k in kids])
        c0, t0 = cpu_ms(self.proc.pid), time.perf_counter()
        self.ctl("stop", "all")
        stop = time.perf_counter() - t0
        self.cpu_stop = cpu_ms(self.proc.pid) - c0
        c0, t0 = cpu_ms(self.proc.pid), time.perf_counter()
        self.ctl("start", "all")
        self.again = time.perf_counter() - t0
        self.cpu_again = cpu_ms(self.proc.pid) - c0
        self.ctl("stop", "all")
        return start, stop, rss, pss

    def crash(self, samples: int) -> list[float]:
        d = tempfile.mkdtemp(dir=self.work)
        command = CRASHER.format(d=d).replace("%", "%%")  # supervisord expands %(name)s
        self.run_with(f"[program:c]\ncommand=sh -c '{command}'\nautostart=true\n"
                      "autorestart=true\nstartsecs=0\nstartretries=100000\n")
        out = gaps(d, samples, samples * 4 + 20)
        self.ctl("stop", "all")
        return out

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_daemon()


# -- pm2 --------------------------------------------------------------------------------------

class Pm2:
    name = "pm2"

    def __init__(self, work: str) -> None:
        self.work = os.path.join(work, "pm2")
        os.makedirs(self.work)
        subprocess.run(["npm", "install", "--silent", "--prefix", self.work, "pm2"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.bin = os.path.join(self.work, "node_modules", ".bin", "pm2")
        self.env = {**os.environ, "PM2_HOME": os.path.join(self.work, "home")}

    def pm2(self, *args: str) -> str:
        return subprocess.run([self.bin, *args], env=self.env, capture_output=True, text=True,
                              check=False).stdout

    def cold_start(self) -> float:
        """``pm2 ping`` with no daemon: the CLI starts the daemon and waits for its answer."""
        self.pm2("kill")
        t0 = time.perf_counter()
        self.pm2("ping")
        return time.perf_counter() - t0

    def daemon_pid(self) -> int:
        with open(os.path.join(self.env["PM2_HOME"], "pm2.pid")) as fh:
            return int(fh.read())

    def ecosystem(self, apps: list[dict[str, object]]) -> str:
        path = os.path.join(self.work, "eco.config.js")
        with open(path, "w") as fh:
            fh.write("module.exports = " + json.dumps({"apps": apps}) + ";\n")
        return path

    def start_stop_100(self) -> tuple[float, float, float, float]:
        eco = self.ecosystem([{"name": f"t{i:03d}", "script": "sleep", "args": "3600",
                               "interpreter": "none", "autorestart": False}
                              for i in range(N)])
        t0 = time.perf_counter()
        self.pm2("start", eco)
        start = time.perf_counter() - t0
        pid = self.daemon_pid()
        kids = children(pid)
        rss = rss_kb(pid) / 1024
        pss = median([pss_kb(k) / 1024 for k in kids])
        t0 = time.perf_counter()
        self.pm2("stop", "all")
        stop = time.perf_counter() - t0
        self.pm2("delete", "all")
        return start, stop, rss, pss

    def crash(self, samples: int) -> list[float]:
        d = tempfile.mkdtemp(dir=self.work)
        eco = self.ecosystem([{"name": "c", "script": "sh", "args": ["-c", CRASHER.format(d=d)],
                               "interpreter": "none", "autorestart": True,
                               "restart_delay": 0, "min_uptime": 0, "max_restarts": 100000}])
        self.pm2("start", eco)
        out = gaps(d, samples, samples * 4 + 20)
        self.pm2("delete", "all")
        return out

    def close(self) -> None:
        self.pm2("kill")


@contextlib.contextmanager
def peer(make: Callable[[], object], name: str) -> Iterator[object | None]:
    try:
        tool = make()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"({name} left out: {exc})")
        yield None
        return
    try:
        yield tool
    finally:
        tool.close()  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-peers", action="store_true", help="taskmux alone")
    parser.add_argument("--samples", type=int, default=12, help="crashes per tool")
    parser.add_argument("--runs", type=int, default=5, help="cold starts per tool")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts to run (of {', '.join(PARTS)})")
    parser.add_argument("--stop-only", type=int, default=0, metavar="N",
                        help="only start and stop 100 tasks, N times per tool (medians)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(PARTS):
        parser.error(f"unknown part(s): {', '.join(sorted(only - set(PARTS)))}")
    compile_bytecode()
    if args.stop_only:
        stop_only(args.stop_only, args.no_peers)
        return
    work = tempfile.mkdtemp(prefix="tmxpeers-")
    fig = Figures()
    try:
        t = Taskmux(work)
        try:
            colds, cpus = [], []
            for _ in range(args.runs if "cold" in only else 0):
                colds.append(t.cold_start())
                cpus.append(t.cpu)
                t.stop_daemon()
            if colds:
                fig.put("taskmux", "daemon cold start until it answers (ms)",
                        median(colds) * 1000)
                fig.put("taskmux", "  its CPU time until it answers (ms)", median(cpus))
            t.cold_start()
            if "hundred" in only:
                start, stop, rss, pss = t.start_stop_100()
                fig.put("taskmux", f"start {N} tasks until all alive (ms)", start * 1000)
                fig.put("taskmux", f"stop {N} tasks until all gone (ms)", stop * 1000)
                fig.put("taskmux", f"  daemon CPU, start {N} (ms)", t.cpu_start)
                fig.put("taskmux", f"  daemon CPU, stop {N} (ms)", t.cpu_stop)
                fig.put("taskmux", f"start {N} again after the stop (ms)", t.again * 1000)
                fig.put("taskmux", f"  daemon CPU, start {N} again (ms)", t.cpu_again)
                fig.put("taskmux", f"daemon RSS with {N} tasks (MB)", rss)
                fig.put("taskmux", "per-task PSS, runner + program (MB)", pss)
            if "crash" in only:
                # The smallest wait this version allows: restart_delay = 0 (older: backoff 1).
                pairs = t.crash(args.samples, "restart_delay = 0\nrestart_backoff = 1.0") \
                    or t.crash(args.samples, "restart_backoff = 1.0")
                fig.put("taskmux", "crash -> replacement, minus the wait (ms)",
                        median([g - w for g, w in pairs]) * 1000)
                first = [g for g, w in pairs if w == min(w for _, w in pairs)]
                fig.put("taskmux", "crash -> replacement, smallest wait (ms)",
                        median(first) * 1000)
        finally:
            t.close()
        if not args.no_peers:
            with peer(lambda: Supervisord(work), "supervisord") as sv:
                if isinstance(sv, Supervisord):
                    colds, cpus = [], []
                    for _ in range(args.runs if "cold" in only else 0):
                        colds.append(sv.cold_start())
                        cpus.append(sv.cpu)
                        sv.stop_daemon()
                    if colds:
                        fig.put("supervisord", "daemon cold start until it answers (ms)",
                                median(colds) * 1000)
                        fig.put("supervisord", "  its CPU time until it answers (ms)",
                                median(cpus))
                    if "hundred" in only:
                        start, stop, rss, pss = sv.start_stop_100()
                        fig.put("supervisord", f"start {N} tasks until all alive (ms)",
                                start * 1000)
                        fig.put("supervisord", f"stop {N} tasks until all gone (ms)",
                                stop * 1000)
                        fig.put("supervisord", f"  daemon CPU, start {N} (ms)", sv.cpu_start)
                        fig.put("supervisord", f"  daemon CPU, stop {N} (ms)", sv.cpu_stop)
                        fig.put("supervisord", f"start {N} again after the stop (ms)",
                                sv.again * 1000)
                        fig.put("supervisord", f"  daemon CPU, start {N} again (ms)",
                                sv.cpu_again)
                        fig.put("supervisord", f"daemon RSS with {N} tasks (MB)", rss)
                        fig.put("supervisord", "per-task PSS, runner + program (MB)", pss)
                    if "crash" in only:
                        lat = sv.crash(args.samples)  # its wait is 0: both figures are one
                        for what in ("minus the wait", "smallest wait"):
                            fig.put("supervisord", f"crash -> replacement, {what} (ms)",
                                    median(lat) * 1000)
            with peer(lambda: Pm2(work), "pm2") as pm:
                if isinstance(pm, Pm2):
                    colds = []
                    for _ in range(args.runs if "cold" in only else 0):
                        colds.append(pm.cold_start())
                    if colds:
                        fig.put("pm2", "daemon cold start until it answers (ms)",
                                median(colds) * 1000)
                    if "hundred" in only:
                        start, stop, rss, pss = pm.start_stop_100()
                        fig.put("pm2", f"start {N} tasks until all alive (ms)", start * 1000)
                        fig.put("pm2", f"stop {N} tasks until all gone (ms)", stop * 1000)
                        fig.put("pm2", f"daemon RSS with {N} tasks (MB)", rss)
                        fig.put("pm2", "per-task PSS, runner + program (MB)", pss)
                    if "crash" in only:
                        lat = pm.crash(args.samples)  # restart_delay 0: both figures are one
                        for what in ("minus the wait", "smallest wait"):
                            fig.put("pm2", f"crash -> replacement, {what} (ms)",
                                    median(lat) * 1000)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        show(fig)


def stop_only(times: int, no_peers: bool) -> None:
    """Start and stop 100 tasks ``times`` times with each tool; the medians side by side,
    with the machine's load average when the run began and ended."""
    work = tempfile.mkdtemp(prefix="tmxpeers-")
    fig = Figures()
    load0 = os.getloadavg()[0]

    def put(tool: str, runs: list[tuple[float, float, float, float]], cpus: list[float],
            cpu_starts: list[float]) -> None:
        fig.put(tool, f"start {N} tasks until all alive (ms), median",
                median([r[0] for r in runs]) * 1000)
        fig.put(tool, f"stop {N} tasks until all gone (ms), median",
                median([r[1] for r in runs]) * 1000)
        fig.put(tool, f"stop {N}: fastest of {times} (ms)", min(r[1] for r in runs) * 1000)
        fig.put(tool, f"  daemon CPU, start {N} (ms), median", median(cpu_starts))
        fig.put(tool, f"  daemon CPU, stop {N} (ms), median", median(cpus))

    try:
        t = Taskmux(work)
        try:
            t.cold_start()
            runs, cpus, cpu_starts = [], [], []
            for _ in range(times):
                runs.append(t.start_stop_100())
                cpus.append(t.cpu_stop)
                cpu_starts.append(t.cpu_start)
            put("taskmux", runs, cpus, cpu_starts)
        finally:
            t.close()
        if not no_peers:
            with peer(lambda: Supervisord(work), "supervisord") as sv:
                if isinstance(sv, Supervisord):
                    runs, cpus, cpu_starts = [], [], []
                    for _ in range(times):
                        runs.append(sv.start_stop_100())
                        cpus.append(sv.cpu_stop)
                        cpu_starts.append(sv.cpu_start)
                    put("supervisord", runs, cpus, cpu_starts)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        show(fig)
        print(f"load average (1 min): {load0:.2f} at the start, {os.getloadavg()[0]:.2f} "
              "at the end")


def show(fig: Figures) -> None:
    tools = ["taskmux", "supervisord", "pm2"]
    print(f"{'figure':46} " + " ".join(f"{t:>12}" for t in tools) + "   ratios (taskmux / peer)")
    for what, by in fig.items():
        cells = " ".join(f"{by[t]:12.1f}" if t in by else f"{'-':>12}" for t in tools)
        ratios = ", ".join(f"{by['taskmux'] / by[t]:.2f}x {t}" for t in tools[1:]
                           if t in by and "taskmux" in by and by[t])
        print(f"{what:46} {cells}   {ratios}")


if __name__ == "__main__":
    main()
