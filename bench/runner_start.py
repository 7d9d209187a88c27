"""The CPU one runner costs to start a task (and to stop it), for one or more checkouts.

Run by hand: `.venv/bin/python bench/runner_start.py [--runs N] [--tree PATH ...]`. A
runner (``python -I -S runner_main.py SPEC MARKER``, as tmux starts it in a pane) is started
directly on a spec for ``sleep 3600`` with a stand-in daemon: a report door that takes the
runner's reports. The first figure is the runner's own CPU (user + system, in nanoseconds
from /proc/PID/schedstat) from its exec until its ``runner.started`` report: what each of a
hundred runners costs a cold start of 100 tasks. Then the runner is ended (SIGTERM), as a
stop would: its CPU from then until it exited is the second figure. Checkouts alternate run
by run, so that they share the machine's load; medians are printed beside
``python -I -S -c pass`` (the interpreter's own start-up, the floor) and ``import os``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def schedstat_ms(pid: int) -> float:
    with open(f"/proc/{pid}/schedstat") as fh:
        return int(fh.read().split()[0]) / 1e6


def write_spec(work: str, n: int) -> tuple[str, str]:
    run = os.path.join(work, "run")
    os.makedirs(run, exist_ok=True)
    marker = f"?bench:runnerstart:t:{n}"
    spec = {
        "format": 1, "project": "runnerstart", "task": "t", "run_id": n,
        "command": "sleep 3600", "shell": "/bin/sh", "cwd": work,
        "env": {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": work},
        "log": os.path.join(work, "logs", "t.log"), "log_max_size": 1 << 20,
        "log_max_files": 2, "record": os.path.join(run, "t.json"),
        "socket": os.path.join(work, "ctl.sock"), "marker": marker,
        "stop_grace_period": 2.0, "relaunch_socket": os.path.join(run, "t.relaunch"),
    }
    path = os.path.join(run, "t.spec.json")
    with open(path, "w") as fh:
        json.dump(spec, fh)
    return path, marker


def one_runner(tree: str, work: str, door: socket.socket, n: int) -> tuple[float, float]:
    """The runner's CPU from its exec until its runner.started report, and from then until
    it exited after a SIGTERM (its stop: the task's tree ended, the exit recorded and
    reported), in ms."""
    spec, marker = write_spec(work, n)
    runner = os.path.join(tree, "taskmuxd", "runner_main.py")
    null = os.open(os.devnull, os.O_RDWR)
    try:
        proc = subprocess.Popen([sys.executable, "-I", "-S", runner, spec, marker],
                                stdin=null, stdout=null, stderr=null, env={},
                                start_new_session=True)
    finally:
        os.close(null)
    try:
        door.settimeout(10)
        conn, _ = door.accept()
        cpu = schedstat_ms(proc.pid)
        msg = json.loads(conn.recv(65536))
        conn.close()
        assert msg["method"] == "runner.started", msg
    finally:
        proc.send_signal(signal.SIGTERM)
        # Its exit report waits in the door's backlog (taken below): nothing blocks it.
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0
        door.settimeout(0.01)
        while True:
            try:
                door.accept()[0].close()
            except OSError:
                break
    return cpu, (usage.ru_utime + usage.ru_stime) * 1000 - cpu


def floor(argv: list[str]) -> float:
    pid = os.fork()
    if pid == 0:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1)
        os.execve(argv[0], argv, {})
    _, _, usage = os.wait4(pid, 0)
    return (usage.ru_utime + usage.ru_stime) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--tree", action="append", help="a taskmux checkout (repeatable)")
    args = parser.parse_args()
    trees = [os.path.abspath(x) for x in (args.tree or [HERE])]
    for tree in trees:  # bytecode as an install has it
        subprocess.run([sys.executable, "-m", "compileall", "-q",
                        os.path.join(tree, "taskmuxd"), os.path.join(tree, "taskmuxctl")],
                       check=False, stdout=subprocess.DEVNULL,
                       env={k: v for k, v in os.environ.items()
                            if k != "PYTHONDONTWRITEBYTECODE"})
    work = tempfile.mkdtemp(prefix="tmxrunstart-", dir="/tmp")
    door = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    door.bind(os.path.join(work, "reports.sock"))
    door.listen(16)
    floors = {"python -I -S -c pass": [sys.executable, "-I", "-S", "-c", "pass"],
              "python -I -S -c 'import os'": [sys.executable, "-I", "-S", "-c", "import os"]}
    results: dict[str, list[float]] = {t: [] for t in [*trees, *floors]}
    stops: dict[str, list[float]] = {t: [] for t in trees}
    load0 = os.getloadavg()[0]
    try:
        for n in range(1, args.runs + 1):
            for tree in trees:
                start, stop = one_runner(tree, work, door, n)
                results[tree].append(start)
                stops[tree].append(stop)
            for name, argv in floors.items():
                results[name].append(floor(argv))
    finally:
        door.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"runner start CPU, exec -> runner.started (median of {args.runs}, ms)")
    for name, xs in results.items():
        xs.sort()
        print(f"  {name:48} {statistics.median(xs):7.2f}   (p25 {xs[len(xs) // 4]:.2f})")
    print(f"runner stop CPU, SIGTERM -> exited (median of {args.runs}, ms)")
    for name, xs in stops.items():
        xs.sort()
        print(f"  {name:48} {statistics.median(xs):7.2f}   (p25 {xs[len(xs) // 4]:.2f})")
    print(f"load average (1 min): {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
