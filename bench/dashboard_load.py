"""The web dashboard's first load in headless Chromium, beside `taskmux status`.

A private daemon runs one project of 20 `sleep` tasks. Each load uses a fresh Chromium
profile (a cold cache) and opens the one-time link `taskmux dashboard` would open; the
figure is the page's own `performance.now()` when every task's row is on screen (from the
start of the navigation, the link's redirect and the session cookie included), median of
`--loads`. The reference is the wall time of `taskmux status` for the same project (what
one runs without a dashboard), median of as many runs.

Run by hand: `.venv/bin/python bench/dashboard_load.py [--loads N]` (needs Debian's
`chromium`; the proxy's certificate is accepted with --ignore-certificate-errors).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BENCH_CONFIG, BIN, compile_bytecode, kill_tmux, private_daemon

TASKS = 20
ROWS_SHOWN = ("new Promise((done) => { const check = () => "
              f"document.querySelectorAll('tr.task').length >= {TASKS} ? "
              "done(performance.now()) : requestAnimationFrame(check); check(); })")


def main() -> int:
    from tests.helpers import call
    from tests.test_dashboard_chromium import Browser

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--loads", type=int, default=7)
    args = ap.parse_args()
    compile_bytecode()
    tmux_name = f"tmxb-{uuid.uuid4().hex[:8]}"
    work = tempfile.mkdtemp(prefix="tmxb-dash-")
    loads: list[float] = []
    status: list[float] = []
    try:
        with private_daemon({"TASKMUX_TMUX_SOCKET": tmux_name},
                            BENCH_CONFIG + f'tmux_socket = "{tmux_name}"\n') as (home, env):
            with open(os.path.join(work, "taskmux.toml"), "w") as fh:
                fh.write('name = "dashbench"\n')
                for t in range(TASKS):
                    fh.write(f'\n[tasks.t{t:02d}]\ncommand = "exec sleep 3600"\n')
            taskmuxctl = os.path.join(BIN, "taskmuxctl")
            subprocess.run([taskmuxctl, "start"], cwd=work, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            sock = os.path.join(home, "ctl.sock")
            for _ in range(args.loads):
                link = call(sock, "dashboard.session")["url"]
                browser = Browser()
                try:
                    browser.goto(link)
                    loads.append(float(browser.eval(ROWS_SHOWN)) / 1000)
                finally:
                    browser.close()
            import time

            for _ in range(args.loads):
                start = time.perf_counter()
                subprocess.run([taskmuxctl, "status", "-p", "dashbench"], env=env,
                               stdout=subprocess.DEVNULL, check=True)
                status.append(time.perf_counter() - start)
    finally:
        kill_tmux(tmux_name)
    first = statistics.median(loads) * 1000
    ref = statistics.median(status) * 1000
    print(f"{TASKS} tasks, {args.loads} loads each (medians)")
    print(f"dashboard first load, link to all rows shown: {first:7.0f} ms")
    print(f"reference: taskmux status                   : {ref:7.0f} ms "
          f"(dashboard/status = {first / ref:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
