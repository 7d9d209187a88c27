"""How long the demo project takes from `taskmux start` until every task is ready.

Run by hand: `.venv/bin/python -m bench.demo_ready [RUNS]`. A private daemon (own home, own
tmux server, no machine ports) starts `examples/demo` with `taskmux start --wait` (which
returns once what it started is healthy, dependencies gated), then stops it; repeated RUNS
times. The reference, in the same run, is the floor the tasks themselves set: the api and then
the web (which waits for the api) started directly by this script and polled every 10 ms until
their health URLs answer as the project file expects. The ratio is taskmux's cost over that.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from bench.common import BIN, compile_bytecode, median_ms, private_daemon

DEMO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    "examples", "demo")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(url: str, expect: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return expect in resp.read().decode()
    except OSError:
        return False


def direct_once(folder: str) -> float:
    """The api, then the web, each started as a plain child and polled until healthy."""
    procs = []
    start = time.perf_counter()
    try:
        api_port = free_port()
        procs.append(subprocess.Popen([sys.executable, "api.py"], cwd=folder,
                                      env={**os.environ, "PORT": str(api_port)},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while not healthy(f"http://127.0.0.1:{api_port}/health", '"ok": true'):
            time.sleep(0.01)
        web_port = free_port()
        procs.append(subprocess.Popen([sys.executable, "web.py"], cwd=folder,
                                      env={**os.environ, "PORT": str(web_port),
                                           "API_URL": f"http://127.0.0.1:{api_port}"},
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while not healthy(f"http://127.0.0.1:{web_port}/", "taskmux demo"):
            time.sleep(0.01)
        return time.perf_counter() - start
    finally:
        for p in procs:
            p.terminate()
            p.wait()


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    compile_bytecode()
    folder = tempfile.mkdtemp(prefix="tmxdemo-")
    project = os.path.join(folder, "demo")
    shutil.copytree(DEMO, project)
    taskmux = os.path.join(BIN, "taskmux")
    ours: list[float] = []
    floor: list[float] = []
    try:
        with private_daemon() as (_home, env):
            for _ in range(runs):
                start = time.perf_counter()
                done = subprocess.run([taskmux, "start", "--wait", "--timeout", "60"],
                                      cwd=project, env=env, capture_output=True, text=True)
                elapsed = time.perf_counter() - start
                if done.returncode != 0:
                    raise SystemExit(f"start --wait failed: {done.stdout}{done.stderr}")
                ours.append(elapsed)
                subprocess.run([taskmux, "stop"], cwd=project, env=env, capture_output=True)
                floor.append(direct_once(project))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    mine, ref = median_ms(ours), median_ms(floor)
    print(f"demo project, start until every task is ready, median of {runs}:")
    print(f"  taskmux start --wait          {mine:8.1f} ms")
    print(f"  api then web, started by hand {ref:8.1f} ms   (the tasks' own floor)")
    print(f"  ratio                         {mine / ref:8.2f}x")


if __name__ == "__main__":
    main()
