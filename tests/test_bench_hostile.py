"""bench/hostile.py runs: a quick pass of its malformed-RPC attack against a real daemon ends
with the summary table, whatever the daemon under test gets wrong (the bench reports holes,
it does not fail on them)."""

from __future__ import annotations

import os
import subprocess

from tests.helpers import PYTHON, REPO


def test_the_hostile_bench_runs_its_rpc_attack_and_prints_the_summary() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKMUX_", "TMUX"))}
    proc = subprocess.run(
        [PYTHON, os.path.join(REPO, "bench", "hostile.py"), "--quick", "--only", "rpc",
         "--rpc-messages", "200"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "== (a) 200 malformed control-socket messages ==" in out, out
    assert "replies well-formed: " in out and " expected" in out, out
    assert "owner's ping during the attack: median" in out, out
    summary = out.split("== summary", 1)[1].splitlines()
    header = next(line for line in summary if line.startswith("attack"))
    row = next(line for line in summary if line.startswith("rpc: 200"))
    alive = header.index("alive")
    assert row[alive:].split()[0] in ("yes", "NO"), row
