"""The control-socket and taskmux.toml attacks of issue 12, repeated against a private daemon.

Run by hand: `.venv/bin/python bench/hostile_rpc.py [--messages N]`. Sends N malformed messages
of every shape (each reply must be strict JSON and a valid JSON-RPC response), the huge
batches (80,000 notifications; 1.5 million integers), then makes a project's taskmux.toml a
FIFO, 4,000 unknown keys and a 5,000-task chain while another client pings. Prints the
replies counted, the time each refusal took, the ping latency during each attack, and the
daemon's resident memory before, at its peak and at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import BIN, kill_tmux, private_daemon

PING = b'{"jsonrpc":"2.0","method":"daemon.ping","id":1'
NOTE = b'{"jsonrpc":"2.0","method":"daemon.ping"}'
SHAPES = [
    b'{"jsonrpc":"2.0","method":"daemon.ping","id":NaN}',
    PING + b',"params":{"delay":Infinity}}',
    PING + b',"params":{"delay":1e400}}',
    PING + b',"params":{"delay":-1}}',
    PING + b',"params":{"delay":true}}',
    PING + b',"params":{"bogus":1}}',
    b"[" * 999 + b"]" * 999,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"jsonrpc":"2.0","method":',
    b"\xff\xfe",
    b"[]",
    b"[1,2,3]",
    b'"str"',
    b"{}",
    PING + b"} trailing",
    NOTE,
    b"[" + b",".join([PING + b"}"] * 101) + b"]",
]


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} in a reply")


def valid(reply: Any) -> bool:
    if isinstance(reply, list):
        return bool(reply) and all(valid(r) for r in reply)
    return (isinstance(reply, dict) and reply.get("jsonrpc") == "2.0" and "id" in reply
            and (set(reply) == {"jsonrpc", "result", "id"}
                 or (set(reply) == {"jsonrpc", "error", "id"}
                     and isinstance(reply["error"].get("code"), int))))


def exchange(sock_path: str, payload: bytes) -> list[bytes]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(120)
        s.connect(sock_path)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while chunk := s.recv(1 << 16):
            buf += chunk
    return [line for line in buf.split(b"\n") if line.strip()]


def call(sock_path: str, method: str, params: dict[str, Any] | None = None) -> Any:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": 1, "params": params or {}}
    [line] = exchange(sock_path, json.dumps(msg).encode() + b"\n")
    return json.loads(line).get("result")


def memory(pid: int) -> dict[str, int]:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        fields = dict(line.split(":", 1) for line in fh)
    return {k: int(fields[k].split()[0]) // 1024 for k in ("VmRSS", "VmHWM")}


def ping_while(sock_path: str, done: Callable[[], bool], timeout: float = 60) -> str:
    samples = []
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        t = time.perf_counter()
        call(sock_path, "daemon.ping")
        samples.append((time.perf_counter() - t) * 1000)
        if done():
            break
    return (f"done in {time.monotonic() - start:.2f} s; owner's ping median "
            f"{statistics.median(samples):.1f} ms, max {max(samples):.1f} ms "
            f"({len(samples)} pings)")


def attack_socket(sock: str, pid: int, messages: int) -> None:
    rounds = max(1, messages // len(SHAPES))
    good = total = 0
    start = time.monotonic()
    for _ in range(rounds):
        for line in exchange(sock, b"\n".join(SHAPES) + b"\n"):
            total += 1
            try:
                good += valid(json.loads(line, parse_constant=_not_json))
            except ValueError:
                pass
    print(f"{rounds * len(SHAPES)} malformed messages in {time.monotonic() - start:.1f} s: "
          f"{total} replies, {good} well-formed; memory {memory(pid)} MiB")
    huge = {"80,000 notifications": b"[" + b",".join([NOTE] * 80_000) + b"]\n",
            "1.5M integers": b"[" + b",".join([b"1"] * 1_500_000) + b"]\n"}
    for name, payload in huge.items():
        t = time.perf_counter()
        replies = exchange(sock, payload)
        took = (time.perf_counter() - t) * 1000
        print(f"batch of {name} ({len(payload) / 1e6:.1f} MB): {len(replies)} reply line(s) "
              f"of {sum(map(len, replies))} bytes in {took:.0f} ms; memory {memory(pid)} MiB")


def attack_config(sock: str, env: dict[str, str], pid: int) -> None:
    proj = tempfile.mkdtemp(prefix="tmxb-proj-", dir="/tmp")
    path = os.path.join(proj, "taskmux.toml")

    def write(text: str) -> None:
        with open(path + ".new", "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(path + ".new", path)

    def state() -> dict[str, Any]:
        return dict(call(sock, "project.status", {"project": "hostile"}) or {})

    try:
        write('name = "hostile"\n[tasks.app]\ncommand = "sleep 600"\n')
        subprocess.run([os.path.join(BIN, "taskmuxctl"), "start"], env=env, cwd=proj,
                       capture_output=True, check=True, timeout=60)
        os.unlink(path)
        os.mkfifo(path)
        print("taskmux.toml a FIFO:", ping_while(sock, lambda: state().get("state") == "error"))
        os.unlink(path)
        write('name = "hostile"\n' + "".join(f"unknown_{i} = {i}\n" for i in range(4000)))
        print("4,000 unknown keys:", ping_while(sock, lambda: "4000 problems" in str(
            state().get("config_error"))))
        write('name = "hostile"\n[tasks.app]\ncommand = "sleep 600"\n' + "".join(
            f'[tasks.t{i}]\ncommand = "true"\nauto_start = false\n'
            + (f'depends_on = ["t{i - 1}"]\n' if i else "") for i in range(4999)))
        print("5,000 tasks in a chain:", ping_while(
            sock, lambda: state().get("state") == "ok" and len(state()["tasks"]) == 5000, 120))
        print(f"memory {memory(pid)} MiB")
        subprocess.run([os.path.join(BIN, "taskmuxctl"), "stop"], env=env, cwd=proj,
                       capture_output=True, check=False, timeout=60)
    finally:
        subprocess.run(["rm", "-rf", proj], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args()
    tmux = f"tmxb-{uuid.uuid4().hex[:8]}"
    try:
        with private_daemon({"TASKMUX_TMUX_SOCKET": tmux}) as (home, env):
            sock = os.path.join(home, "ctl.sock")
            time.sleep(0.5)
            pid = call(sock, "daemon.status")["pid"]
            print(f"baseline memory {memory(pid)} MiB")
            attack_socket(sock, pid, args.messages)
            attack_config(sock, env, pid)
            alive = call(sock, "daemon.ping") == {"pong": True}
            print(f"daemon alive: {alive}; final memory {memory(pid)} MiB (VmHWM is the peak)")
    finally:
        kill_tmux(tmux)


if __name__ == "__main__":
    main()
