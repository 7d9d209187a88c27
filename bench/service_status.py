"""What a service manager adds to `taskmuxctl --json daemon status`.

Run by hand: `.venv/bin/python bench/service_status.py [--runs N]`. Times status with no
service installed, with one installed whose manager is a canned `systemctl` (a shell script:
the client's own cost), and, when this machine can run a private systemd user manager (root;
see tests/systemd_user_manager.py), with the real `systemctl --user` asking a real manager.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BIN, PYTHON, compile_bytecode, median_ms, private_daemon, time_command

CANNED = """#!/bin/sh
cat <<'OUT'
LoadState=loaded
ActiveState=active
SubState=running
UnitFileState=enabled
MainPID=1
NRestarts=0
ExecMainCode=0
ExecMainStatus=0
ExecMainExitTimestamp=
OUT
"""
STATUS = [f"{BIN}/taskmuxctl", "--json", "daemon", "status"]


def canned_service(home: str, workdir: str) -> dict[str, str]:
    bin_dir = os.path.join(workdir, "bin")
    os.makedirs(bin_dir)
    with open(os.path.join(bin_dir, "systemctl"), "w") as fh:
        fh.write(CANNED)
    os.chmod(os.path.join(bin_dir, "systemctl"), 0o755)
    unit = os.path.join(workdir, "taskmuxd@.service")
    open(unit, "w").close()
    with open(os.path.join(home, "service.json"), "w") as fh:
        json.dump({"format": 1, "manager": "systemd", "scope": "system",
                   "unit": "taskmuxd@root.service", "unit_file": unit, "user": "root",
                   "uid": 0, "domain": "system"}, fh)
    return {"PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}


def real_manager(runs: int) -> float | None:
    if os.geteuid() != 0:
        return None
    from tests.systemd_user_manager import Unavailable, UserManager

    base = tempfile.mkdtemp(prefix="tmxsd-", dir="/tmp")
    home = tempfile.mkdtemp(prefix="tmxb-", dir="/tmp")
    try:
        mgr = UserManager(base).start()
    except Unavailable:
        return None
    env = {**mgr.env, "TASKMUX_HOME": home, "TASKMUX_SERVICE_MANAGER": "systemd"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    try:
        subprocess.run([f"{BIN}/taskmuxctl", "daemon", "install", "--user-unit"], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        time_command(STATUS, 3, env)
        value = median_ms(time_command(STATUS, runs, env))
        subprocess.run([f"{BIN}/taskmuxctl", "daemon", "uninstall"], env=env,
                       stdout=subprocess.DEVNULL, check=False)
        return value
    finally:
        mgr.stop()
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=60)
    args = parser.parse_args()
    compile_bytecode()
    workdir = tempfile.mkdtemp(prefix="tmxbench-")
    try:
        with private_daemon() as (_home, env), private_daemon() as (svc_home, svc_env):
            plain_env = {**os.environ, **env}
            service_env = {**os.environ, **svc_env, **canned_service(svc_home, workdir)}
            rows = [("python -c pass", [PYTHON, "-c", "pass"], plain_env),
                    ("daemon status, no service", STATUS, plain_env),
                    ("daemon status, service (canned systemctl)", STATUS, service_env),
                    ("the canned systemctl alone", [os.path.join(workdir, "bin", "systemctl")],
                     service_env)]
            for _, argv, row_env in rows:
                time_command(argv, 3, row_env)
            # Interleaved, so that drift in the machine's load hits every row alike.
            samples: dict[str, list[float]] = {name: [] for name, _, _ in rows}
            for _ in range(args.runs):
                for name, argv, row_env in rows:
                    samples[name] += time_command(argv, 1, row_env)
        real = real_manager(args.runs)
        print(f"median of {args.runs} runs each")
        for name, values in samples.items():
            print(f"  {name:<48} {median_ms(values):7.2f} ms")
        if real is not None:
            print(f"  {'daemon status, service (real systemctl --user)':<48} {real:7.2f} ms")
        else:
            print("  (no private systemd user manager here: real-systemctl row skipped)")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
