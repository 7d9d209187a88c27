"""What watching 100 tasks costs: the daemon's resource sampling and an idle `taskmux top`.

One private daemon runs 4 projects of 25 `sleep` tasks in a private tmux server. Figures,
each over the same idle window:

* the daemon's CPU with sampling every second, then with sampling off (the setting
  `resource_sample_interval = 0`, applied by `config.reload`): the difference is what
  sampling 100 tasks costs; the sampler's own thread time is printed beside it;
* `taskmux top` in a real tmux pane: the time from its start to the first frame listing all
  100 tasks, then its CPU while nothing happens (tasks up for over a minute); beside it the
  reference, polling `taskmux status` for the same 4 projects every 2 s (what one would do
  without `top`).

Run by hand: `.venv/bin/python bench/top_idle.py [--window SECONDS]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BENCH_CONFIG, BIN, compile_bytecode, kill_tmux, private_daemon

PROJECTS = 4
TASKS = 25
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its live children (their own, not reaped ones)."""
    total = cpu_seconds(pid)
    for line in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True,
                               check=False).stdout.split():
        try:
            total += tree_cpu(int(line))
        except OSError:
            continue
    return total


def rpc(sock: str, method: str, params: dict[str, object] | None = None) -> object:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(sock)
        msg = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        s.sendall(json.dumps(msg).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            buf += s.recv(1 << 20)
    return json.loads(buf)["result"]


def daemon_pid(home: str) -> int:
    with open(os.path.join(home, "daemon.pid")) as fh:
        return int(fh.read().split()[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--window", type=float, default=20.0, help="seconds each figure spans")
    args = ap.parse_args()
    compile_bytecode()
    tmux_name = f"tmxb-{uuid.uuid4().hex[:8]}"
    view_name = f"tmxv-{uuid.uuid4().hex[:8]}"
    work = tempfile.mkdtemp(prefix="tmxb-top-")
    config = BENCH_CONFIG + f'tmux_socket = "{tmux_name}"\n'
    try:
        with private_daemon({"TASKMUX_TMUX_SOCKET": tmux_name}, config) as (home, env):
            sock = os.path.join(home, "ctl.sock")
            for p in range(PROJECTS):
                folder = os.path.join(work, f"p{p}")
                os.makedirs(folder)
                with open(os.path.join(folder, "taskmux.toml"), "w") as fh:
                    fh.write(f'name = "bench{p}"\n')
                    for t in range(TASKS):
                        fh.write(f'\n[tasks.t{t:02d}]\ncommand = "exec sleep 3600"\n')
                subprocess.run([os.path.join(BIN, "taskmuxctl"), "start"], cwd=folder, env=env,
                               check=True, stdout=subprocess.DEVNULL)
            pid = daemon_pid(home)
            started_all = time.monotonic()
            time.sleep(3)  # let the starts settle

            def daemon_cost() -> tuple[float, float]:
                before = cpu_seconds(pid)
                own = rpc(sock, "daemon.status")["resources"]["cpu_seconds"]  # type: ignore[index]
                time.sleep(args.window)
                after = cpu_seconds(pid)
                own2 = rpc(sock, "daemon.status")["resources"]["cpu_seconds"]  # type: ignore[index]
                return (after - before) / args.window * 100, (own2 - own) / args.window * 100

            on, thread = daemon_cost()
            with open(os.path.join(home, "config.toml"), "a") as fh:
                fh.write("resource_sample_interval = 0\n")
            rpc(sock, "config.reload")
            off, _ = daemon_cost()
            with open(os.path.join(home, "config.toml"), "w") as fh:
                fh.write(config)
            rpc(sock, "config.reload")

            # top in a real pane, once the tasks are over a minute old (as in daily use;
            # in their first minute the UPTIME column changes at every refresh)
            time.sleep(max(0.0, 65 - (time.monotonic() - started_all)))
            cmd = " ".join([f"TASKMUX_HOME={home}", os.path.join(BIN, "taskmuxctl"), "top"])
            started = time.monotonic()
            subprocess.run(["tmux", "-L", view_name, "new-session", "-d", "-x", "200", "-y",
                            "60", cmd], check=True, env={**env, "TERM": "xterm-256color"})
            first_frame = None
            while time.monotonic() - started < 60:
                screen = subprocess.run(["tmux", "-L", view_name, "capture-pane", "-p"],
                                        capture_output=True, text=True, check=False).stdout
                if f"{PROJECTS * TASKS}/{PROJECTS * TASKS} running" in screen:
                    first_frame = time.monotonic() - started
                    break
                time.sleep(0.01)
            pane_pid = int(subprocess.run(["tmux", "-L", view_name, "display", "-p",
                                           "#{pane_pid}"], capture_output=True, text=True,
                                          check=True).stdout)
            time.sleep(3)
            before = tree_cpu(pane_pid)
            time.sleep(args.window)
            top_cpu = (tree_cpu(pane_pid) - before) / args.window * 100

            # reference: `taskmux status` for every project every 2 s
            rounds = int(args.window // 2)
            usage = os.times()
            spent = -(usage.children_user + usage.children_system)
            for _ in range(rounds):
                for p in range(PROJECTS):
                    subprocess.run([os.path.join(BIN, "taskmuxctl"), "status", "-p",
                                    f"bench{p}"], env=env, stdout=subprocess.DEVNULL,
                                   check=False)
            usage = os.times()
            spent += usage.children_user + usage.children_system
            poll_cpu = spent / (rounds * 2) * 100
    finally:
        kill_tmux(view_name)
        kill_tmux(tmux_name)
    print(f"tasks: {PROJECTS * TASKS} ({PROJECTS} projects), window {args.window:.0f} s")
    print(f"daemon CPU, sampling every 1 s : {on:6.2f}% of a core")
    print(f"daemon CPU, sampling off       : {off:6.2f}% of a core")
    print(f"  sampling's share (difference): {on - off:6.2f}%   sampler thread: {thread:.2f}%")
    ff = f"{first_frame * 1000:.0f} ms" if first_frame is not None else "not seen"
    print(f"top: start to first full frame : {ff}")
    print(f"top idle CPU                   : {top_cpu:6.2f}% of a core")
    print(f"reference: status x{PROJECTS} every 2 s: {poll_cpu:6.2f}% of a core "
          f"(top/reference = {top_cpu / poll_cpu if poll_cpu else float('nan'):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
