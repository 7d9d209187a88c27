"""How long `taskmuxctl --json daemon status` takes, next to a bare interpreter and supervisorctl.

Run by hand: `.venv/bin/python bench/cli_latency.py [--runs N]`. It pip-installs supervisor
into a throwaway virtual environment, starts supervisord there, and times everything in one run.
Target: taskmuxctl at most 2x the bare interpreter.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BIN, PYTHON, compile_bytecode, median_ms, private_daemon, time_command

SUPERVISORD_CONF = """
[unix_http_server]
file={dir}/supervisor.sock
[supervisord]
logfile={dir}/supervisord.log
pidfile={dir}/supervisord.pid
nodaemon=false
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{dir}/supervisor.sock
[program:sleeper]
command=sleep 3600
"""


def supervisor(workdir: str) -> tuple[list[str], subprocess.Popen[bytes] | None]:
    venv = os.path.join(workdir, "venv")
    subprocess.run([PYTHON, "-m", "venv", venv], check=True)
    subprocess.run([f"{venv}/bin/pip", "install", "-q", "supervisor"], check=True,
                   stdout=subprocess.DEVNULL)
    conf = os.path.join(workdir, "supervisord.conf")
    with open(conf, "w") as fh:
        fh.write(SUPERVISORD_CONF.format(dir=workdir))
    subprocess.run([f"{venv}/bin/supervisord", "-c", conf], check=True)
    ctl = [f"{venv}/bin/supervisorctl", "-c", conf, "status"]
    deadline = time.monotonic() + 20
    while subprocess.run(ctl, stdout=subprocess.DEVNULL, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("supervisord did not start")
        time.sleep(0.1)
    return ctl, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--no-supervisor", action="store_true")
    args = parser.parse_args()
    compile_bytecode()
    workdir = tempfile.mkdtemp(prefix="tmxbench-")
    ctl: list[str] | None = None
    try:
        if not args.no_supervisor:
            ctl, _ = supervisor(workdir)
        with private_daemon() as (_home, env):
            ctl_env = {**os.environ, **env}
            time_command([f"{BIN}/taskmuxctl", "--json", "daemon", "status"], 5, ctl_env)
            rows = [
                ("python -c pass (same interpreter)", [PYTHON, "-c", "pass"]),
                ("taskmuxctl --json daemon status", [f"{BIN}/taskmuxctl", "--json", "daemon",
                                                     "status"]),
                ("python -m taskmuxctl --json daemon status",
                 [PYTHON, "-m", "taskmuxctl", "--json", "daemon", "status"]),
                ("shim without re (installed layout)",
                 [PYTHON, "-c", "import sys; from taskmuxctl.cli import main; sys.exit(main())",
                  "--json", "daemon", "status"]),
            ]
            if ctl:
                rows.append(("supervisorctl status", ctl))
            results = {}
            # Interleave the commands so drift in machine load hits all of them alike.
            samples: dict[str, list[float]] = {name: [] for name, _ in rows}
            for _ in range(args.runs):
                for name, argv in rows:
                    samples[name] += time_command(argv, 1, ctl_env)
            for name, _ in rows:
                results[name] = median_ms(samples[name])
        base = results["python -c pass (same interpreter)"]
        print(f"median of {args.runs} runs each")
        for name, value in results.items():
            print(f"  {name:<45} {value:7.2f} ms   {value / base:5.2f}x bare")
    finally:
        if ctl:
            subprocess.run([*ctl[:-1], "shutdown"], stdout=subprocess.DEVNULL, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
