"""Shared bits for the bench scripts: a private daemon, timing, medians."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

BIN = os.path.dirname(sys.executable)
PYTHON = sys.executable


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def time_command(argv: list[str], runs: int, env: dict[str, str] | None = None) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)
        out.append(time.perf_counter() - start)
    return out


def compile_bytecode() -> None:
    """Installed packages carry bytecode; an editable checkout with PYTHONDONTWRITEBYTECODE
    does not. Compile it so the figures match an install."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([PYTHON, "-m", "compileall", "-q", os.path.join(root, "taskmuxctl"),
                    os.path.join(root, "taskmuxd")], check=True, stdout=subprocess.DEVNULL)


# A bench daemon never takes the machine's ports 443/80/5454 or its /etc/hosts.
BENCH_CONFIG = ('proxy_https_port = 0\nproxy_http_redirect_port = 0\nhost_resolver = "noop"\n'
                'dns_server_port = 0\n')


@contextlib.contextmanager
def private_daemon(extra_env: dict[str, str] | None = None,
                   config: str = BENCH_CONFIG) -> Iterator[tuple[str, dict[str, str]]]:
    home = tempfile.mkdtemp(prefix="tmxb-", dir="/tmp")
    with open(os.path.join(home, "config.toml"), "w", encoding="utf-8") as fh:
        fh.write(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMUX_")}
    env["TASKMUX_HOME"] = home
    # A tmux server of its own: never the user's default one.
    env["TASKMUX_TMUX_SOCKET"] = f"tmxbench-{os.getpid()}-{os.path.basename(home)}"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra_env or {})
    proc = subprocess.Popen([PYTHON, "-m", "taskmuxd", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = os.path.join(home, "ctl.sock")
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the daemon did not start")
            time.sleep(0.02)
        # It answers before READY (its subsystems not yet up): wait for READY.
        while not daemon_ready(sock):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the daemon did not become ready")
            time.sleep(0.02)
        yield home, env
    finally:
        end_daemon(proc, env["TASKMUX_TMUX_SOCKET"], home)


def end_daemon(proc: subprocess.Popen[bytes], tmux_socket: str, home: str) -> None:
    """Stop a bench's daemon (SIGTERM, then SIGKILL after 15 s), kill its private tmux server
    and remove its home."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    kill_tmux(tmux_socket)
    shutil.rmtree(home, ignore_errors=True)


def daemon_ready(sock_path: str) -> bool:
    """Whether the daemon on ``sock_path`` says it is ready (``daemon.status``)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(sock_path)
            conn.sendall(b'{"jsonrpc": "2.0", "method": "daemon.status", "id": 1}\n')
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    return False
                data += chunk
        return bool(json.loads(data).get("result", {}).get("ready"))
    except (OSError, ValueError):
        return False


def kill_tmux(socket_name: str) -> None:
    """Stop a private tmux server and remove the socket file tmux leaves behind."""
    subprocess.run(["tmux", "-L", socket_name, "kill-server"], capture_output=True, check=False)
    folder = os.path.join(os.environ.get("TMUX_TMPDIR", "/tmp"), f"tmux-{os.getuid()}")
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(folder, socket_name))
