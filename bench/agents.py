"""What the agent-facing commands cost: `env` (direnv runs it on every `cd`), `send`, and the
MCP server (start-up to the first answer, then one tool call).

Run by hand: `.venv/bin/python bench/agents.py [--runs N]`. A private daemon, a private tmux
server and a one-task project; prints medians in milliseconds.
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

from bench.common import (
    BIN,
    PYTHON,
    compile_bytecode,
    kill_tmux,
    median_ms,
    private_daemon,
    time_command,
)

META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}}


def mcp_session(env: dict[str, str], cwd: str, calls: int) -> tuple[float, list[float]]:
    """(seconds from spawn to the server/discover answer, seconds per status call)."""
    start = time.perf_counter()
    proc = subprocess.Popen([f"{BIN}/taskmuxctl", "mcp"], cwd=cwd, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None

    def ask(req_id: int, method: str, params: dict[str, object]) -> None:
        msg = {"jsonrpc": "2.0", "id": req_id, "method": method,
               "params": {**params, "_meta": META}}
        proc.stdin.write(json.dumps(msg).encode() + b"\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        reply = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
        assert "result" in reply, reply

    ask(1, "server/discover", {})
    first = time.perf_counter() - start
    per_call = []
    for i in range(calls):
        t0 = time.perf_counter()
        ask(2 + i, "tools/call", {"name": "status", "arguments": {}})
        per_call.append(time.perf_counter() - t0)
    proc.stdin.close()
    proc.wait(10)
    proc.stdout.close()
    return first, per_call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    compile_bytecode()
    sock = f"tmxbench-{uuid.uuid4().hex[:8]}"
    with private_daemon({"TASKMUX_TMUX_SOCKET": sock}) as (_home, env), \
            tempfile.TemporaryDirectory(prefix="tmxb-proj-") as folder:
        try:
            with open(os.path.join(folder, "taskmux.toml"), "w") as fh:
                fh.write('name = "bench"\n[tasks.app]\ncommand = "cat > /dev/null"\n'
                         '[tasks.web]\ncommand = "sleep 3600"\nhost = "web"\n')
            subprocess.run([f"{BIN}/taskmuxctl", "start"], cwd=folder, env=env, check=True,
                           stdout=subprocess.DEVNULL)
            os.chdir(folder)
            bare = median_ms(time_command([PYTHON, "-c", ""], args.runs, env))
            env_ms = median_ms(time_command([f"{BIN}/taskmuxctl", "env"], args.runs, env))
            send_ms = median_ms(time_command([f"{BIN}/taskmuxctl", "send", "app", "hello"],
                                             args.runs, env))
            paste_ms = median_ms(time_command(
                [f"{BIN}/taskmuxctl", "send", "app", "line one\nline two"], args.runs, env))
            firsts, calls = [], []
            for _ in range(max(args.runs // 3, 3)):
                first, per_call = mcp_session(env, folder, 10)
                firsts.append(first)
                calls.extend(per_call)
        finally:
            kill_tmux(sock)
    print(f"bare interpreter (python -c ''):     {bare:7.1f} ms")
    print(f"taskmux env:                         {env_ms:7.1f} ms")
    print(f"taskmux send (one line + Enter):     {send_ms:7.1f} ms")
    print(f"taskmux send (two-line paste):       {paste_ms:7.1f} ms")
    print(f"mcp: spawn to server/discover reply: {median_ms(firsts):7.1f} ms")
    print(f"mcp: status tool call in a session:  {median_ms(calls):7.1f} ms")


if __name__ == "__main__":
    main()
