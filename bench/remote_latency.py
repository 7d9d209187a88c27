"""What `taskmux --host ssh://... status` costs: the first call (ssh connects and logs in),
calls through the shared connection, and the same command run on that machine itself.

The "machine" is a throwaway user behind the distribution's sshd on a loopback port, as in
tests/test_ssh_host.py (root, openssh-server). Loopback hides the network's round trips:
add them (one for a reused connection, several for a first one) for a real host.

Run by hand: `.venv/bin/python bench/remote_latency.py [--runs N]`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BIN, compile_bytecode, median_ms

PROJECT = 'name = "bench"\n\n[tasks.web]\ncommand = "exec sleep 600"\n\n' \
          '[tasks.worker]\ncommand = "exec sleep 600"\n'


def timed(argv: list[str], env: dict[str, str], **kw: object) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {proc.stderr.strip()}")
    return elapsed


def main() -> int:
    import pytest

    from tests.sshd import close_masters, ssh_lab

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    compile_bytecode()
    try:
        with ssh_lab(users=1, without_taskmux=0) as lab:
            machine = lab.machines[0]
            folder = os.path.join(machine.home, "proj")
            os.makedirs(folder)
            with open(os.path.join(folder, "taskmux.toml"), "w") as fh:
                fh.write(PROJECT)
            os.chown(folder, machine.user.pw_uid, machine.user.pw_gid)
            wrapper = os.path.join(lab.bin, "taskmuxctl")
            started = machine.as_user([wrapper, "start"], cwd=folder)
            if started.returncode != 0:
                raise SystemExit(started.stderr)
            home = tempfile.mkdtemp(prefix="tmxb-", dir="/tmp")
            base = {k: v for k, v in os.environ.items() if not k.startswith("TASKMUX_")}
            env = lab.client_env({**base, "TASKMUX_HOME": home})
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            remote = [f"{BIN}/taskmux", "--host", machine.url, "--json", "-p", "bench",
                      "status"]
            try:
                first = []
                for _ in range(max(3, args.runs // 4)):
                    close_masters(lab, home, machine, lab.client_config)
                    first.append(timed(remote, env))
                timed(remote, env)
                reused = [timed(remote, env) for _ in range(args.runs)]
                local = [timed(["setpriv", f"--reuid={machine.user.pw_uid}",
                                f"--regid={machine.user.pw_gid}", "--clear-groups",
                                wrapper, "--json", "-p", "bench", "status"],
                               machine.env(), cwd=machine.home) for _ in range(args.runs)]
                bare = [timed(["ssh", "-F", lab.client_config, "-o",
                               f"ControlPath={home}/ssh/%C", "-p", str(lab.port), "-l",
                               machine.name, "127.0.0.1", "true"], env)
                        for _ in range(args.runs)]
            finally:
                close_masters(lab, home, machine, lab.client_config)
                subprocess.run(["rm", "-rf", home], check=False)
    except pytest.skip.Exception as exc:
        print(f"skipped: {exc}")
        return 0
    print(f"`taskmux --json -p bench status` (2 running tasks), medians over {args.runs} runs:")
    rows = [("on the machine itself (local socket)", local),
            ("--host, first call (ssh connects)", first),
            ("--host, shared connection reused", reused),
            ("  for scale: `ssh HOST true`, reused", bare)]
    for label, samples in rows:
        print(f"  {label:<42}{median_ms(samples):8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
