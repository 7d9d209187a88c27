"""What `taskmux fleet status` costs over 3 and over 10 machines: the first survey (ssh
connects to each) and later ones (shared connections reused).

The machines are throwaway users behind the distribution's sshd on a loopback port, each
with its own daemon running a project of two tasks (as in tests/test_ssh_host.py; root,
openssh-server). Loopback hides network round trips; the machines share this one's CPUs.

Run by hand: `.venv/bin/python bench/fleet_status.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BIN, compile_bytecode, median_ms

PROJECT = 'name = "bench"\n\n[tasks.web]\ncommand = "exec sleep 600"\n\n' \
          '[tasks.worker]\ncommand = "exec sleep 600"\n'


def main() -> int:
    import pytest

    from tests.sshd import close_masters, ssh_lab

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    compile_bytecode()
    figures: list[tuple[str, float, float]] = []
    try:
        with ssh_lab(users=10, without_taskmux=0) as lab:
            for machine in lab.machines:
                folder = os.path.join(machine.home, "proj")
                os.makedirs(folder)
                with open(os.path.join(folder, "taskmux.toml"), "w") as fh:
                    fh.write(PROJECT)
                os.chown(folder, machine.user.pw_uid, machine.user.pw_gid)
                started = machine.as_user([os.path.join(lab.bin, "taskmuxctl"), "start"],
                                          cwd=folder)
                if started.returncode != 0:
                    raise SystemExit(started.stderr)
            for count in (3, 10):
                home = tempfile.mkdtemp(prefix="tmxb-", dir="/tmp")
                base = {k: v for k, v in os.environ.items() if not k.startswith("TASKMUX_")}
                env = lab.client_env({**base, "TASKMUX_HOME": home})
                env.pop("PYTHONDONTWRITEBYTECODE", None)
                machines = lab.machines[:count]
                try:
                    for m in machines:
                        subprocess.run([f"{BIN}/taskmux", "fleet", "add", m.name, m.url],
                                       env=env, check=True, capture_output=True)
                    argv = [f"{BIN}/taskmux", "--json", "fleet", "status"]

                    def once(argv: list[str] = argv, env: dict[str, str] = env) -> float:
                        t0 = time.perf_counter()
                        proc = subprocess.run(argv, env=env, capture_output=True, text=True,
                                              timeout=120)
                        elapsed = time.perf_counter() - t0
                        out = json.loads(proc.stdout)
                        if proc.returncode != 0 or not out["all_ok"]:
                            raise SystemExit(proc.stdout + proc.stderr)
                        return elapsed

                    cold = []
                    for _ in range(args.runs):
                        for m in machines:
                            close_masters(lab, home, m, lab.client_config)
                        cold.append(once())
                    warm = [once() for _ in range(args.runs)]
                    figures.append((f"{count} machines", median_ms(cold), median_ms(warm)))
                finally:
                    for m in machines:
                        close_masters(lab, home, m, lab.client_config)
                    shutil.rmtree(home, ignore_errors=True)
    except pytest.skip.Exception as exc:
        print(f"skipped: {exc}")
        return 0
    print(f"`taskmux --json fleet status`, medians over {args.runs} runs:")
    print(f"  {'':<14}{'first (ssh connects)':>22}{'connections reused':>22}")
    for label, cold_ms, warm_ms in figures:
        print(f"  {label:<14}{cold_ms:19.0f} ms{warm_ms:19.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
